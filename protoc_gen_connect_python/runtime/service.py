"""Base classes of the generated handler classes."""

from __future__ import annotations

from typing import ClassVar

from protoc_gen_connect_python.runtime.method import ServiceSpec


class AsyncService:
    """Base of generated async handler classes (``FooService``).

    Subclass the generated class and override the methods you implement; the rest
    answer ``unimplemented``. Serve instances with ``ASGIApp``.
    """

    service_spec: ClassVar[ServiceSpec]


class SyncService:
    """Base of generated sync handler classes (``FooServiceSync``); serve with ``WSGIApp``."""

    service_spec: ClassVar[ServiceSpec]
