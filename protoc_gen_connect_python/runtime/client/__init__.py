"""Async and sync clients, their options and the transport interface they use.

Most code needs only ``AsyncClient`` / ``SyncClient`` (or the generated clients
built on them), importable from ``protoc_gen_connect_python.runtime``. The names
here are for custom transports and protocol work.
"""

from protoc_gen_connect_python.runtime.client.capture import ResponseCapture
from protoc_gen_connect_python.runtime.client.config import (
    ClientConfig,
    ConnectionOptions,
)
from protoc_gen_connect_python.runtime.client.connect import ConnectProtocol
from protoc_gen_connect_python.runtime.client.core import (
    ClientProtocol,
    HTTPRequest,
    UnaryResponse,
)
from protoc_gen_connect_python.runtime.client.http1_transport import (
    AsyncHTTP1Transport,
    SyncHTTP1Transport,
)
from protoc_gen_connect_python.runtime.client.http2_transport import (
    AsyncHTTP2Transport,
)
from protoc_gen_connect_python.runtime.client.inprocess import (
    ASGITransport,
    WSGITransport,
)
from protoc_gen_connect_python.runtime.client.transport import (
    AsyncResponse,
    AsyncTransport,
    PyqwestAsyncTransport,
    PyqwestSyncTransport,
    SyncResponse,
    SyncTransport,
)

__all__ = [
    "ASGITransport",
    "AsyncHTTP1Transport",
    "AsyncHTTP2Transport",
    "AsyncResponse",
    "AsyncTransport",
    "ClientConfig",
    "ClientProtocol",
    "ConnectProtocol",
    "ConnectionOptions",
    "HTTPRequest",
    "PyqwestAsyncTransport",
    "PyqwestSyncTransport",
    "ResponseCapture",
    "SyncHTTP1Transport",
    "SyncResponse",
    "SyncTransport",
    "UnaryResponse",
    "WSGITransport",
]
