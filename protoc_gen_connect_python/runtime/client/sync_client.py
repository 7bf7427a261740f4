"""The sync client: the blocking twin of the async shell over the same core."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

import pyqwest
from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.client.config import (
    DEFAULT_COMPRESS_MIN_BYTES,
    DEFAULT_GET_URL_MAX_BYTES,
    DEFAULT_READ_MAX_BYTES,
    ClientConfig,
    HTTPVersionName,
    PEMInput,
    Protocol,
    build_config,
)
from protoc_gen_connect_python.runtime.client.core import (
    ClientProtocol,
    ResponseStream,
    UnaryResponse,
    make_protocol,
    read_limit_error,
)
from protoc_gen_connect_python.runtime.client.interceptors import (
    ClientCall,
    ClientInterceptor,
    has_hooks,
    wraps_unary,
)
from protoc_gen_connect_python.runtime.client.transport import (
    PyqwestSyncTransport,
    SyncResponse,
    SyncTransport,
)
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Codec
from protoc_gen_connect_python.runtime.compression import Compression
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers, HeadersInput
from protoc_gen_connect_python.runtime.method import MethodSpec

__all__ = ["SyncClient", "SyncStream"]

I = TypeVar("I", bound=Message)  # noqa: E741
O = TypeVar("O", bound=Message)  # noqa: E741


def _as_error(e: BaseException) -> ConnectError:
    if isinstance(e, ConnectError):
        return e
    if isinstance(e, (GeneratorExit, KeyboardInterrupt)):
        return ConnectError(Code.CANCELED, "call canceled")
    return ConnectError(Code.UNKNOWN, f"{type(e).__name__}: {e}")


class SyncStream(Iterator[O]):
    """Messages of a server or bidi stream, read as they arrive.

    The call starts on the first ``next()`` (or on ``with``). ``headers`` holds
    the response headers once the response has started and ``trailers`` the
    trailers once the stream has ended. :meth:`close` (from any thread) or
    leaving the ``with`` block early cancels the call.

    The sync client is half duplex: request messages are sent as the transport
    pulls them (from one of its threads), and responses are read afterwards.
    """

    headers: Headers
    trailers: Headers

    def __init__(
        self,
        client: SyncClient,
        method: MethodSpec[Any, O],
        requests: Message | Iterable[Any],
        single: bool,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> None:
        self.headers = Headers()
        self.trailers = Headers()
        self._client = client
        self._method = method
        self._requests = requests
        self._single = single
        self._call_headers = headers
        self._timeout = timeout
        self._resp: SyncResponse | None = None
        self._decoder: ResponseStream | None = None
        self._pending: deque[O] = deque()
        self._finished = False
        self._send_error: BaseException | None = None
        self._call: ClientCall | None = None

    def __iter__(self) -> SyncStream[O]:
        return self

    def __next__(self) -> O:
        if self._pending:
            return self._pending.popleft()
        if self._finished:
            raise StopIteration
        try:
            return self._next()
        except StopIteration:
            raise
        except BaseException as e:
            err = self._send_error if isinstance(e, ConnectError) else None
            self._end(err or e)
            if err is None:
                raise
            raise err from None

    def _start(self) -> None:
        client = self._client
        proto = client._protocol
        timeout = self._timeout
        headers = self._call_headers
        if client._hooks:
            call = ClientCall(self._method, Headers(headers or ()), timeout)
            for i in client._hooks:
                i.on_start(call)
            self._call = call
            headers, timeout = call.request_headers, call.timeout
        pm = proto.prepare(self._method)
        req = proto.stream_request(pm, headers, timeout)
        body: Iterator[bytes] | None = None
        if self._single:
            req.body = proto.encode_stream_message(self._requests)  # type: ignore[arg-type]
        else:
            body = self._body(proto)
        resp = client._transport.send(req, body)
        self._resp = resp
        self.headers = resp.headers
        if self._call is not None:
            self._call.response_headers = resp.headers
        self._decoder = proto.response_stream(pm, resp.status, resp.headers)

    def _body(self, proto: ClientProtocol) -> Iterator[bytes]:
        encode = proto.encode_stream_message
        try:
            for m in self._requests:  # type: ignore[union-attr]
                yield encode(m)
        except Exception as e:
            # Raised in the transport's thread; reported to the caller instead.
            self._send_error = e
            raise

    def _next(self) -> O:
        if self._resp is None:
            self._start()
        resp = self._resp
        decoder = self._decoder
        assert resp is not None and decoder is not None
        pending = self._pending
        while not pending:
            chunk = resp.read()
            if not chunk:
                self.trailers = decoder.finish(resp.trailers)
                self._end(None)
                raise StopIteration
            pending.extend(decoder.feed(chunk))
        return pending.popleft()

    def _end(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._pending.clear()
        if self._resp is not None:
            self._resp.close()
        if self._call is not None:
            self._call.response_trailers = self.trailers
            err = None if error is None else _as_error(error)
            for i in self._client._hooks:
                i.on_end(self._call, err)

    def close(self) -> None:
        """Stop reading and cancel the call if it is still running."""
        if not self._finished:
            self._end(ConnectError(Code.CANCELED, "stream closed by the client"))

    def __enter__(self) -> SyncStream[O]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncClient:
    """Base of generated sync clients; also usable directly with method specs.

    Takes the same options as :class:`AsyncClient`. One client holds one
    connection pool and may be shared between threads; close it with
    :meth:`close` or ``with``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        protocol: Protocol = "connect",
        codec: str | Codec = "proto",
        send_compression: str | Compression | None = None,
        accept_compression: Sequence[str | Compression] | None = None,
        compress_min_bytes: int = DEFAULT_COMPRESS_MIN_BYTES,
        read_max_bytes: int = DEFAULT_READ_MAX_BYTES,
        send_max_bytes: int = 0,
        timeout: float | None = None,
        headers: HeadersInput | None = None,
        use_get: bool = False,
        get_url_max_bytes: int = DEFAULT_GET_URL_MAX_BYTES,
        http_version: HTTPVersionName | None = None,
        tls_ca_cert: PEMInput | None = None,
        tls_cert: PEMInput | None = None,
        tls_key: PEMInput | None = None,
        transport: SyncTransport | pyqwest.SyncHTTPTransport | None = None,
        interceptors: Sequence[ClientInterceptor] = (),
    ) -> None:
        config = build_config(
            base_url,
            protocol=protocol,
            codec=codec,
            send_compression=send_compression,
            accept_compression=accept_compression,
            compress_min_bytes=compress_min_bytes,
            read_max_bytes=read_max_bytes,
            send_max_bytes=send_max_bytes,
            timeout=timeout,
            headers=headers,
            use_get=use_get,
            get_url_max_bytes=get_url_max_bytes,
            http_version=http_version,
            tls_ca_cert=tls_ca_cert,
            tls_cert=tls_cert,
            tls_key=tls_key,
            interceptors=interceptors,
        )
        self._config = config
        self._protocol: ClientProtocol = make_protocol(config)
        if transport is None or isinstance(transport, pyqwest.SyncHTTPTransport):
            self._transport: SyncTransport = PyqwestSyncTransport(config, transport)
        else:
            self._transport = transport
        self._hooks = tuple(i for i in config.interceptors if has_hooks(i))
        self._wrappers = tuple(
            i for i in config.interceptors if wraps_unary(i, sync=True)
        )
        self._plain = not (self._hooks or self._wrappers)

    @property
    def base_url(self) -> str:
        """The URL that procedure paths are appended to."""
        return self._config.base_url

    @property
    def config(self) -> ClientConfig:
        """The resolved options of this client."""
        return self._config

    def call_unary(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> O:
        """Call a unary method and return its response message."""
        return self.call_unary_detailed(
            method, request, headers=headers, timeout=timeout
        ).message

    def call_unary_detailed(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> UnaryResponse[O]:
        """Call a unary method; the result also holds response headers and trailers."""
        if timeout is None:
            timeout = self._config.timeout
        if self._plain:
            return self._unary(method, request, headers, timeout)
        return self._intercepted_unary(method, request, headers, timeout)

    def _unary(
        self,
        method: MethodSpec[Any, Any],
        request: Message,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> UnaryResponse[Any]:
        proto = self._protocol
        pm = proto.prepare(method)
        req = proto.unary_request(pm, request, headers, timeout)
        resp = self._transport.send(req, None)
        limit = proto.unary_read_limit
        try:
            body = resp.read()
            if body:
                chunk = resp.read()
                if chunk:
                    parts = [body, chunk]
                    size = len(body) + len(chunk)
                    while chunk:
                        if limit and size > limit:
                            raise read_limit_error(limit)
                        chunk = resp.read()
                        parts.append(chunk)
                        size += len(chunk)
                    body = b"".join(parts)
            if limit and len(body) > limit:
                raise read_limit_error(limit)
            trailers = resp.trailers
        finally:
            resp.close()
        return proto.unary_response(pm, resp.status, resp.headers, body, trailers)

    def _intercepted_unary(
        self,
        method: MethodSpec[Any, Any],
        request: Message,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> UnaryResponse[Any]:
        call = ClientCall(method, Headers(headers or ()), timeout)
        for i in self._hooks:
            i.on_start(call)

        def send(msg: Message, c: ClientCall) -> UnaryResponse[Any]:
            res = self._unary(method, msg, c.request_headers, c.timeout)
            c.response_headers = res.headers
            c.response_trailers = res.trailers
            return res

        chain: Any = send
        for i in reversed(self._wrappers):
            chain = partial(i.intercept_unary_sync, chain)
        try:
            res: UnaryResponse[Any] = chain(request, call)
        except BaseException as e:
            err = _as_error(e)
            for i in self._hooks:
                i.on_end(call, err)
            raise
        for i in self._hooks:
            i.on_end(call, None)
        return res

    def call_client_stream(
        self,
        method: MethodSpec[I, O],
        requests: Iterable[I],
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> O:
        """Send a stream of requests and return the single response."""
        if timeout is None:
            timeout = self._config.timeout
        stream = SyncStream(self, method, requests, False, headers, timeout)
        result: O | None = None
        with stream:
            for msg in stream:
                if result is not None:
                    raise ConnectError(
                        Code.UNIMPLEMENTED,
                        "protocol error: the response stream has more than one message",
                    )
                result = msg
        if result is None:
            raise ConnectError(
                Code.UNIMPLEMENTED,
                "protocol error: the response stream has no message",
                metadata=stream.headers,
            )
        return result

    def call_server_stream(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> SyncStream[O]:
        """Send one request and iterate the responses."""
        if timeout is None:
            timeout = self._config.timeout
        return SyncStream(self, method, request, True, headers, timeout)

    def call_bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: Iterable[I],
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> SyncStream[O]:
        """Send a stream of requests, then iterate the responses (half duplex)."""
        if timeout is None:
            timeout = self._config.timeout
        return SyncStream(self, method, requests, False, headers, timeout)

    def close(self) -> None:
        """Release the connections this client owns."""
        self._transport.close()

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_C = TypeVar("_C", bound=SyncClient)
