"""The apps the conformance server serves, importable as ``conformance_apps:asgi``.

Servers that load the app by import string in another process (pyvoy runs it
inside Envoy, gunicorn and granian in workers) cannot be handed an object, so
the settings travel in environment variables that ``server.py`` sets:

``CONFORMANCE_READ_MAX_BYTES``
    the request's ``message_receive_limit``, or unset for the default.

Importing this module generates the conformance code if needed.
"""

from __future__ import annotations

import os

import conformance_gen

conformance_gen.ensure_generated()

from conformance_service import Conformance, ConformanceSync  # noqa: E402

from protoc_gen_connect_python.runtime.server import (  # noqa: E402
    ASGIApp,
    ServerOptions,
    WSGIApp,
)

READ_MAX_BYTES_ENV = "CONFORMANCE_READ_MAX_BYTES"


def _read_max_bytes() -> int:
    value = os.environ.get(READ_MAX_BYTES_ENV)
    return int(value) if value else ServerOptions().read_max_bytes


def make_asgi() -> ASGIApp:
    """A fresh ASGI app with the settings from the environment."""
    return ASGIApp(Conformance(), read_max_bytes=_read_max_bytes())


def make_wsgi() -> WSGIApp:
    """A fresh WSGI app with the settings from the environment."""
    return WSGIApp(ConformanceSync(), read_max_bytes=_read_max_bytes())


asgi = make_asgi()
wsgi = make_wsgi()
