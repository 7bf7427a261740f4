"""The sync client: the blocking twin of the async shell over the same core."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import pyqwest
from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.client.base import (
    ClientBase,
    SendState,
    StreamBase,
    UnaryScope,
    received,
    recorded,
    sending,
)
from protoc_gen_connect_python.runtime.client.capture import captured
from protoc_gen_connect_python.runtime.client.config import ClientConfig
from protoc_gen_connect_python.runtime.client.core import (
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


def _body(
    encode: Callable[[Message], bytes],
    reqs: Message | Iterable[Any],
    state: SendState,
) -> Iterator[bytes]:
    """The request messages of a stream, encoded, as the transport pulls them."""
    state.started = True
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
        state.error = e
        raise


class SyncStream(StreamBase[O], Iterator[O]):
    """Messages of a server or bidi stream, read as they arrive.

    The call starts on the first ``next()`` (or on ``with``). ``headers`` holds
    the response headers once the response has started and ``trailers`` the
    trailers once the stream has ended. :meth:`close` (from any thread) or
    leaving the ``with`` block early cancels the call, and so does dropping
    the stream unfinished (``break`` out of a ``for`` loop).

    The sync client is half duplex: request messages are sent as the transport
    pulls them (from one of its threads), and responses are read afterwards.
    """

    _client: SyncClient
    _requests: Message | Iterable[Any]
    _resp: SyncResponse | None = None
    _closed = False
    """Set by :meth:`close` while the call was still running."""
    _woken: threading.Event | None = None
    """Set by :meth:`close` to end a wait before a retry."""

    def __iter__(self) -> SyncStream[O]:
        return self

    def __next__(self) -> O:
        if self._pending:
            return self._pending.popleft()
        if self._finished:
            if self._closed:
                raise _canceled_error()
            raise StopIteration
        while True:
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
                failed = err or e
                delay = self._retry_delay(failed, time.monotonic())
                if delay is None:
                    self._end(err or e)
                    if err is None:
                        raise
                    raise err from None
            try:
                self._retry(failed, delay)
            except BaseException as e:
                self._end(e)
                raise

    def _retry(self, error: BaseException, delay: float) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        self._next_attempt(error)
        # close(), from any thread, ends the wait at once: it sets _closed,
        # then the event, so one of the two checks here sees it.
        self._woken = woken = threading.Event()
        if not self._closed:
            woken.wait(delay)
        if self._closed:
            # Closed from another thread while waiting: no new attempt.
            raise _canceled_error()

    def _start(self) -> None:
        req = self._start_request(time.monotonic)
        body = (
            None if self._single else _body(self._encoder(), self._requests, self._sent)
        )
        resp = self._client._transport.send(req, body)
        self._resp = resp
        if self._finished:
            # Closed (from the request iterator or another thread) while the
            # request was sent: _end may have missed this response.
            resp.close()
            raise _canceled_error()
        self._response_head(resp.status, resp.headers)

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
        self._received = True
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
            if self._woken is not None:
                self._woken.set()

    def __del__(self) -> None:
        # Dropped unfinished (a break out of ``for``): cancel the call.
        if not self._finished and self._resp is not None:
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

    _transport_methods = ("send", "close")

    @staticmethod
    def _is_pyqwest(transport: object) -> bool:
        return isinstance(transport, pyqwest.SyncHTTPTransport)

    def _open_transport(
        self,
        config: ClientConfig,
        transport: SyncTransport | pyqwest.SyncHTTPTransport | None,
    ) -> SyncTransport:
        return sync_transport_for(config, transport)

    def _init_shell(self) -> None:
        # Set by close(): unary calls waiting to retry stop waiting.
        self._woken = threading.Event()

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
            timeout = self._timeout_for(timeout)
            if self._retry is not None:
                return self._retried_unary(method, request, headers, timeout)
            if not self._plain:
                return self._intercepted_unary(method, request, headers, timeout)
        proto = self._protocol
        pm = proto.prepare(method)
        req = proto.unary_request(pm, request, headers, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            resp = self._transport.send(req, None)
        except ConnectError as e:
            # Re-raised as is, it keeps its cause (a refused connection, say).
            late = self._transport_error(e, deadline)
            if late is e:
                raise
            raise late from None
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
            late = self._transport_error(e, deadline)
            if late is e:
                raise
            raise late from None
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

    def _retried_unary(
        self,
        method: MethodSpec[Any, Any],
        request: Message,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> UnaryResponse[Any]:
        clock = time.monotonic
        attempts = self._attempts(method, timeout, clock())
        assert attempts is not None
        while True:
            try:
                if self._plain:
                    res = self._unary(method, request, headers, timeout, True)
                else:
                    res = self._intercepted_unary(method, request, headers, timeout)
            except ConnectError as e:
                if self._closed:
                    raise
                self._woken.wait(attempts.wait_or_raise(e, clock()))
                if self._closed:
                    raise _canceled_error() from None
                timeout = attempts.time_left(clock())
            else:
                attempts.succeeded()
                return res

    def _intercepted_unary(
        self,
        method: MethodSpec[Any, Any],
        request: Message,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> UnaryResponse[Any]:
        def send(msg: Message, c: ClientCall) -> UnaryResponse[Any]:
            msg = sending(self, c, msg)
            res = self._unary(method, msg, c.request_headers, c.timeout, True)
            return received(self, c, recorded(c, res))

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
        self._woken.set()
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
