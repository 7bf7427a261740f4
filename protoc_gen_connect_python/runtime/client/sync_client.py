"""The sync client: the blocking twin of the async shell over the same core."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import pyqwest
from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.client.base import (
    ClientBase,
    StreamBase,
    UnaryScope,
    recorded,
)
from protoc_gen_connect_python.runtime.client.capture import captured
from protoc_gen_connect_python.runtime.client.config import ClientConfig
from protoc_gen_connect_python.runtime.client.core import (
    ClientProtocol,
    UnaryBody,
    UnaryResponse,
    past_deadline,
    read_limit_error,
)
from protoc_gen_connect_python.runtime.client.interceptors import ClientCall
from protoc_gen_connect_python.runtime.client.transport import (
    SyncResponse,
    SyncTransport,
    sync_transport_for,
)
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.envelope import joined
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import HeadersInput
from protoc_gen_connect_python.runtime.method import MethodSpec

__all__ = ["SyncClient", "SyncStream"]

I = TypeVar("I", bound=Message)  # noqa: E741
O = TypeVar("O", bound=Message)  # noqa: E741


def _canceled_error() -> ConnectError:
    return ConnectError(Code.CANCELED, "call canceled by the client")


class SyncStream(StreamBase[O], Iterator[O]):
    """Messages of a server or bidi stream, read as they arrive.

    The call starts on the first ``next()`` (or on ``with``). ``headers`` holds
    the response headers once the response has started and ``trailers`` the
    trailers once the stream has ended. :meth:`close` (from any thread) or
    leaving the ``with`` block early cancels the call.

    The sync client is half duplex: request messages are sent as the transport
    pulls them (from one of its threads), and responses are read afterwards.
    """

    _client: SyncClient
    _requests: Message | Iterable[Any]
    _resp: SyncResponse | None = None
    _closed = False
    """Set by :meth:`close` while the call was still running."""

    def __iter__(self) -> SyncStream[O]:
        return self

    def __next__(self) -> O:
        if self._pending:
            return self._pending.popleft()
        if self._finished:
            if self._closed:
                raise _canceled_error()
            raise StopIteration
        try:
            return self._next()
        except StopIteration:
            raise
        except BaseException as e:
            if self._closed:
                # Whatever the interrupted read raised, the caller closed it.
                self._end(e)
                raise _canceled_error() from None
            err = self._failure(e, time.monotonic())
            self._end(err or e)
            if err is None:
                raise
            raise err from None

    def _start(self) -> None:
        req = self._start_request(time.monotonic)
        body = None if self._single else self._body(self._client._protocol)
        resp = self._client._transport.send(req, body)
        self._resp = resp
        if self._finished:
            # Closed (from the request iterator or another thread) while the
            # request was sent: _end may have missed this response.
            resp.close()
            raise _canceled_error()
        self._response_head(resp.status, resp.headers)

    def _body(self, proto: ClientProtocol) -> Iterator[bytes]:
        encode = proto.encode_stream_message
        reqs = self._requests
        try:
            if isinstance(reqs, (list, tuple)):
                # All there already: nothing can wait behind a message held
                # to share a write with the next ones.
                yield from joined(map(encode, reqs))
                return
            for m in reqs:  # type: ignore[union-attr]
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
        if not self._finishing():
            return
        if self._resp is not None:
            self._resp.close()
        self._report_end(error)

    def close(self) -> None:
        """Stop reading and cancel the call if it is still running.

        Safe from any thread: a read blocked in another thread is interrupted.
        Once a running call is closed, reading raises ``canceled``.
        """
        if not self._finished:
            self._closed = True
            self._end(_canceled_error())

    def __enter__(self) -> SyncStream[O]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncClient(ClientBase[SyncTransport, pyqwest.SyncHTTPTransport]):
    """Base of generated sync clients; also usable directly with method specs.

    Takes the same options as :class:`AsyncClient`. One client holds one
    connection pool and may be shared between threads; close it with
    :meth:`close` or ``with``.
    """

    _sync = True
    _canceled = (GeneratorExit, KeyboardInterrupt)
    _closed = False

    def _open_transport(
        self,
        config: ClientConfig,
        transport: SyncTransport | pyqwest.SyncHTTPTransport | None,
    ) -> SyncTransport:
        return sync_transport_for(config, transport)

    def call_unary(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> O:
        """Call a unary method and return its response message."""
        res: UnaryResponse[O] = self._unary(method, request, headers, timeout)
        return captured(res)

    def call_unary_detailed(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> UnaryResponse[O]:
        """Call a unary method; the result also holds response headers and trailers."""
        return self._unary(method, request, headers, timeout)

    def _unary(
        self,
        method: MethodSpec[Any, Any],
        request: Message,
        headers: HeadersInput | None,
        timeout: float | None,
        chained: bool = False,
    ) -> UnaryResponse[Any]:
        # At the end of an interceptor chain the call's timeout is final: None
        # there means none, not the client's default.
        if not chained:
            if timeout is None:
                timeout = self._config.timeout
            if not self._plain:
                return self._intercepted_unary(method, request, headers, timeout)
        proto = self._protocol
        pm = proto.prepare(method)
        req = proto.unary_request(pm, request, headers, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            resp = self._transport.send(req, None)
        except ConnectError as e:
            raise self._transport_error(e, deadline) from None
        limit = proto.unary_read_limit
        try:
            body = resp.read()
            if body and (chunk := resp.read()):
                rest = UnaryBody(body, limit)
                while chunk:
                    rest.add(chunk)
                    chunk = resp.read()
                body = rest.join()
            if limit and len(body) > limit:
                raise read_limit_error(limit)
            trailers = resp.trailers
        except ConnectError as e:
            raise self._transport_error(e, deadline) from None
        finally:
            resp.close()
        if self._closed:
            raise _canceled_error()
        return proto.unary_response(pm, resp.status, resp.headers, body, trailers)

    def _transport_error(
        self, err: ConnectError, deadline: float | None
    ) -> ConnectError:
        """What to report for a unary call the transport failed."""
        if self._closed:
            return _canceled_error()
        return past_deadline(err, deadline, time.monotonic())

    def _intercepted_unary(
        self,
        method: MethodSpec[Any, Any],
        request: Message,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> UnaryResponse[Any]:
        def send(msg: Message, c: ClientCall) -> UnaryResponse[Any]:
            res = self._unary(method, msg, c.request_headers, c.timeout, True)
            return recorded(c, res)

        with UnaryScope(self, method, headers, timeout) as call:
            return self._chain(send)(request, call)

    def call_client_stream(
        self,
        method: MethodSpec[I, O],
        requests: Iterable[I],
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> O:
        """Send a stream of requests and return the single response."""
        return captured(
            self.call_client_stream_detailed(
                method, requests, headers=headers, timeout=timeout
            )
        )

    def call_client_stream_detailed(
        self,
        method: MethodSpec[I, O],
        requests: Iterable[I],
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> UnaryResponse[O]:
        """Send a stream of requests; the single response with headers and trailers."""
        stream = SyncStream(self, method, requests, False, headers, timeout)
        with stream:
            for msg in stream:
                stream._keep_only(msg)
        return stream._only_response()

    def call_server_stream(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> SyncStream[O]:
        """Send one request and iterate the responses."""
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
        return SyncStream(self, method, requests, False, headers, timeout)

    def close(self) -> None:
        """Release the connections this client owns and cancel calls in flight.

        Safe from any thread. Unary calls still running fail with ``canceled``
        (their connection is closed, which the server sees as a disconnect),
        and so do calls started afterwards. Streams are closed by their own
        :meth:`SyncStream.close`.
        """
        self._closed = True
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
