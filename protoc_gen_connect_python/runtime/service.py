"""Base classes of the generated handler classes."""

from __future__ import annotations

from typing import ClassVar

from protoc_gen_connect_python.runtime.method import ServiceSpec


class _Service:
    """What async and sync handler classes share."""

    service_spec: ClassVar[ServiceSpec]

    def served_with(self, services: tuple[ServiceSpec, ...]) -> None:
        """Called by each app that serves this instance, as the app is built.

        ``services`` are the specs of every service that app serves, this one
        included. Does nothing by default; a service that describes the others
        (reflection) overrides it.
        """


class AsyncService(_Service):
    """Base of generated async handler classes (``FooService``).

    Subclass the generated class and override the methods you implement; the rest
    answer ``unimplemented``. Serve instances with ``ASGIApp``.
    """


class SyncService(_Service):
    """Base of generated sync handler classes (``FooServiceSync``); serve with ``WSGIApp``."""
