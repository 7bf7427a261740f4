"""How clients move bytes: a small transport interface, its implementations, the choice.

A transport sends one :class:`HTTPRequest` (whose body is bytes or an iterator of
chunks) and returns a response whose body is read chunk by chunk, followed by
its trailers. It knows nothing of RPC; failures of the network or of HTTP itself
are raised as :class:`ConnectError` (``unavailable``, ``deadline_exceeded``...).

The interface is defined in ``interface.py`` and re-exported here.
Implement :class:`AsyncTransport` or :class:`SyncTransport` to run clients over
another HTTP stack, or to test without a network.

Three implementations come with the runtime: the pure-Python HTTP/1.1
transports of ``http1_transport.py``, used for HTTP/1.1 (``http://`` without
``http_version``, or ``http_version="1.1"``); the pure-Python HTTP/2 transport
of ``http2_transport.py``, used by the async client for ``http_version="2"``
(and so for gRPC, which defaults to it); and pyqwest's, for the sync client's
HTTP/2, for HTTP/3 (QUIC) and for ``https://`` without ``http_version``, where
ALPN picks the version. :func:`async_transport_for` and
:func:`sync_transport_for` choose.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

import pyqwest

from protoc_gen_connect_python.runtime.client.config import ClientConfig
from protoc_gen_connect_python.runtime.client.http1_transport import (
    AsyncHTTP1Transport,
    SyncHTTP1Transport,
)
from protoc_gen_connect_python.runtime.client.http2_transport import (
    AsyncHTTP2Transport,
)
from protoc_gen_connect_python.runtime.client.interface import (
    AsyncResponse as AsyncResponse,
)
from protoc_gen_connect_python.runtime.client.interface import (
    AsyncTransport as AsyncTransport,
)
from protoc_gen_connect_python.runtime.client.interface import HTTPRequest
from protoc_gen_connect_python.runtime.client.interface import (
    SyncResponse as SyncResponse,
)
from protoc_gen_connect_python.runtime.client.interface import (
    SyncTransport as SyncTransport,
)
from protoc_gen_connect_python.runtime.client.timers import idle_error
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers

_T = TypeVar("_T", pyqwest.HTTPTransport, pyqwest.SyncHTTPTransport)


# -- pyqwest -------------------------------------------------------------------

# RST_STREAM codes to RPC codes, as the gRPC HTTP/2 mapping defines them.
_STREAM_ERROR_CODES = {
    pyqwest.StreamErrorCode.REFUSED_STREAM: Code.UNAVAILABLE,
    pyqwest.StreamErrorCode.CANCEL: Code.CANCELED,
    pyqwest.StreamErrorCode.ENHANCE_YOUR_CALM: Code.RESOURCE_EXHAUSTED,
    pyqwest.StreamErrorCode.INADEQUATE_SECURITY: Code.PERMISSION_DENIED,
}


def map_transport_error(
    e: Exception, idle: float | None = None, deadline: float | None = None
) -> ConnectError:
    """The RPC error for an exception raised by pyqwest.

    pyqwest raises the same ``TimeoutError`` for its ``read_timeout`` and for
    the call's timeout: with ``idle`` (the read-idle timeout it was given),
    one that comes before ``deadline`` (``time.monotonic()``) is the former.
    """
    if isinstance(e, ConnectError):
        return e
    # Our own words: pyqwest's texts name its internals; the exception stays
    # the error's __cause__ (raise ... from e) for logs and debuggers.
    if isinstance(e, pyqwest.StreamError):
        code = _STREAM_ERROR_CODES.get(e.code, Code.INTERNAL)
        name = getattr(e.code, "name", str(e.code))
        message = f"the server reset the stream ({name})"
    elif isinstance(e, pyqwest.ConnectTimeout):
        code, message = Code.UNAVAILABLE, "could not connect to the server in time"
    elif isinstance(e, TimeoutError):
        if idle is not None and (deadline is None or time.monotonic() < deadline):
            return idle_error(idle)
        code, message = Code.DEADLINE_EXCEEDED, "the call's deadline passed"
    elif isinstance(e, ConnectionRefusedError):
        code, message = Code.UNAVAILABLE, "the server refused the connection"
    elif isinstance(e, (pyqwest.WriteError, BrokenPipeError)):
        code, message = Code.UNAVAILABLE, "the connection failed while sending"
    elif isinstance(e, (pyqwest.ReadError, pyqwest.RemoteProtocolError)):
        code, message = Code.UNAVAILABLE, "the connection failed while receiving"
    elif isinstance(e, ConnectionError):
        code, message = Code.UNAVAILABLE, "the connection to the server failed"
    else:
        code, message = Code.UNKNOWN, "the HTTP client failed"
    return ConnectError(code, message)


def _headers(h: pyqwest.Headers) -> Headers:
    return Headers(h.items())


def _version(config: ClientConfig) -> pyqwest.HTTPVersion | None:
    if config.http_version == "3":
        return pyqwest.HTTPVersion.HTTP3
    if config.http_version == "2":
        return pyqwest.HTTPVersion.HTTP2
    if config.http_version == "1.1":
        return pyqwest.HTTPVersion.HTTP1
    return None


def _transport_options(config: ClientConfig) -> dict[str, object]:
    """pyqwest's options for ``config``; of ``config.connection`` it takes the
    connect, read-idle and pool-idle timeouts and the cap on connections."""
    if config.protocol == "grpc" and config.http_version == "3":
        # pyqwest's HTTP/3 responses end with the last DATA frame: the trailers
        # after it, where gRPC puts its status, never reach the caller.
        raise ValueError(
            'protocol "grpc" over http_version="3" needs response trailers,'
            " which pyqwest's HTTP/3 client does not deliver; use HTTP/2, or"
            ' protocol "connect" or "grpc-web" over HTTP/3'
        )
    options: dict[str, object] = {
        "tls_ca_cert": config.tls_ca_cert,
        # A CA given explicitly replaces the system's trust store.
        "tls_include_system_certs": config.tls_ca_cert is None,
        "tls_cert": config.tls_cert,
        "tls_key": config.tls_key,
        "http_version": _version(config),
        # Compression is the protocol's business: bodies must arrive as sent so
        # that limits apply to what came over the wire.
        "enable_gzip": False,
        "enable_brotli": False,
        "enable_zstd": False,
        "follow_redirects": False,
        "connect_timeout": config.connection.connect_timeout,
        "read_timeout": config.connection.read_idle_timeout,
        "pool_idle_timeout": config.connection.pool_idle_timeout,
    }
    cap = config.connection.max_connections_per_host
    if cap is not None:
        # Only when asked: pyqwest before 0.12 has no such option.
        options["max_connections_per_address"] = cap
    return options


def _pyqwest(kind: type[_T], config: ClientConfig) -> _T:
    """A pyqwest transport of ``kind`` for ``config``."""
    try:
        return kind(**_transport_options(config))  # type: ignore[arg-type]
    except TypeError:
        if config.connection.max_connections_per_host is None:
            raise
        raise ValueError(
            "max_connections_per_host needs pyqwest 0.12 or later for the"
            " pyqwest transport"
        ) from None


class _PyqwestResponse:
    """Status, headers and trailers of a pyqwest response, either kind."""

    __slots__ = ("_deadline", "_idle", "_resp", "headers", "status")

    def __init__(
        self,
        resp: pyqwest.Response | pyqwest.SyncResponse,
        idle: float | None,
        deadline: float | None,
    ) -> None:
        self._resp = resp
        self._idle = idle
        self._deadline = deadline
        self.status = resp.status
        self.headers = _headers(resp.headers)

    def _error(self, e: Exception) -> ConnectError:
        return map_transport_error(e, self._idle, self._deadline)

    @property
    def trailers(self) -> Headers:
        return _headers(self._resp.trailers)


class _PyqwestAsyncResponse(_PyqwestResponse):
    __slots__ = ("_it",)

    _resp: pyqwest.Response

    def __init__(self, resp: pyqwest.Response, idle: float | None) -> None:
        # The async client's deadline cancels the call: a timeout is pyqwest's.
        super().__init__(resp, idle, None)
        self._it = resp.content.__aiter__()

    async def read(self) -> bytes:
        try:
            chunk = await self._it.__anext__()
        except StopAsyncIteration:
            return b""
        except Exception as e:
            raise self._error(e) from e
        return bytes(chunk)

    async def aclose(self) -> None:
        await self._resp.aclose()


class PyqwestAsyncTransport:
    """:class:`AsyncTransport` over one ``pyqwest.HTTPTransport`` (a connection pool).

    Pass ``transport`` to share an existing pyqwest transport; it is then not
    closed by :meth:`aclose`.
    """

    def __init__(
        self, config: ClientConfig, transport: pyqwest.HTTPTransport | None = None
    ) -> None:
        self._owned = transport is None
        self._t = transport or _pyqwest(pyqwest.HTTPTransport, config)
        # A shared pyqwest transport keeps its own read timeout.
        self._idle = config.connection.read_idle_timeout if self._owned else None

    async def send(
        self, request: HTTPRequest, body: AsyncIterator[bytes] | None
    ) -> AsyncResponse:
        """Execute ``request``; returns when the response head has arrived."""
        req = pyqwest.Request(
            request.method,
            request.url,
            pyqwest.Headers(request.headers),
            body if body is not None else request.body,
        )
        try:
            resp = await self._t.execute(req)
        except Exception as e:
            raise map_transport_error(e, self._idle) from e
        return _PyqwestAsyncResponse(resp, self._idle)

    async def aclose(self) -> None:
        """Close the pool, when this object created it."""
        if self._owned:
            await self._t.aclose()


class _PyqwestSyncResponse(_PyqwestResponse):
    __slots__ = ("_cm", "_it")

    def __init__(
        self,
        cm: AbstractContextManager[pyqwest.SyncResponse],
        resp: pyqwest.SyncResponse,
        idle: float | None,
        deadline: float | None,
    ) -> None:
        super().__init__(resp, idle, deadline)
        self._cm = cm
        self._it = iter(resp.content)

    def read(self) -> bytes:
        try:
            chunk = next(self._it)
        except StopIteration:
            return b""
        except Exception as e:
            raise self._error(e) from e
        return bytes(chunk)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


class PyqwestSyncTransport:
    """:class:`SyncTransport` over one ``pyqwest.SyncHTTPTransport``."""

    def __init__(
        self,
        config: ClientConfig,
        transport: pyqwest.SyncHTTPTransport | None = None,
    ) -> None:
        self._owned = transport is None
        self._t = transport or _pyqwest(pyqwest.SyncHTTPTransport, config)
        self._client = pyqwest.SyncClient(self._t)
        self._idle = config.connection.read_idle_timeout if self._owned else None

    def send(self, request: HTTPRequest, body: Iterator[bytes] | None) -> SyncResponse:
        """Execute ``request``, bounded by its timeout; returns at the response head."""
        deadline = (
            None if request.timeout is None else time.monotonic() + request.timeout
        )
        try:
            cm = self._client.stream(
                request.method,
                request.url,
                request.headers,
                body if body is not None else request.body,
                timeout=request.timeout,
            )
            resp = cm.__enter__()
        except Exception as e:
            raise map_transport_error(e, self._idle, deadline) from e
        return _PyqwestSyncResponse(cm, resp, self._idle, deadline)

    def close(self) -> None:
        """Close the pool, when this object created it."""
        if self._owned:
            self._t.close()


# -- the choice ------------------------------------------------------------------


def uses_http1(config: ClientConfig) -> bool:
    """Whether the default transport of a client is the pure-Python HTTP/1.1 one.

    It is when the client speaks HTTP/1.1 for sure: ``http_version="1.1"``, or
    no ``http_version`` with an ``http://`` URL. HTTP/2 goes to the pure-Python
    HTTP/2 transport (async client) or to pyqwest (sync client); HTTP/3, and
    ``https://`` without ``http_version`` (ALPN), go to pyqwest.
    """
    if config.http_version == "1.1":
        return True
    return config.http_version is None and config.base_url.startswith("http://")


def async_transport_for(
    config: ClientConfig,
    transport: AsyncTransport | pyqwest.HTTPTransport | None,
) -> AsyncTransport:
    """The transport of an async client: the one given, or the default for ``config``."""
    if isinstance(transport, pyqwest.HTTPTransport):
        return PyqwestAsyncTransport(config, transport)
    if transport is not None:
        return transport
    if uses_http1(config):
        return AsyncHTTP1Transport(config)
    if config.http_version == "2":
        return AsyncHTTP2Transport(config)
    return PyqwestAsyncTransport(config)


def sync_transport_for(
    config: ClientConfig,
    transport: SyncTransport | pyqwest.SyncHTTPTransport | None,
) -> SyncTransport:
    """The transport of a sync client: the one given, or the default for ``config``."""
    if isinstance(transport, pyqwest.SyncHTTPTransport):
        return PyqwestSyncTransport(config, transport)
    if transport is not None:
        return transport
    if uses_http1(config):
        return SyncHTTP1Transport(config)
    return PyqwestSyncTransport(config)
