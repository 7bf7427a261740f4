"""The async client: a thin shell that drives the protocol core over a transport."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
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
    HTTPRequest,
    UnaryBody,
    UnaryResponse,
    past_deadline,
    read_limit_error,
)
from protoc_gen_connect_python.runtime.client.interceptors import ClientCall
from protoc_gen_connect_python.runtime.client.transport import (
    AsyncResponse,
    AsyncTransport,
    async_transport_for,
)
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers, HeadersInput
from protoc_gen_connect_python.runtime.method import MethodSpec

__all__ = ["AsyncClient", "AsyncStream", "UnaryResponse"]

I = TypeVar("I", bound=Message)  # noqa: E741
O = TypeVar("O", bound=Message)  # noqa: E741


def _closed_error() -> ConnectError:
    return ConnectError(Code.CANCELED, "stream closed by the client")


_closing: set[asyncio.Task[None]] = set()
"""Closes of dropped streams still running (the loop holds tasks weakly)."""


async def _quiet_close(resp: AsyncResponse) -> None:
    # Nobody is left to hear how closing a dropped stream went.
    with contextlib.suppress(Exception):
        await resp.aclose()


def _close_soon(resp: AsyncResponse) -> None:
    task = asyncio.ensure_future(_quiet_close(resp))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _body(
    encode: Callable[[Message], bytes],
    reqs: Message | AsyncIterable[Any] | Iterable[Any],
    state: SendState,
) -> AsyncIterator[bytes]:
    """The request messages of a stream, encoded, as the transport pulls them."""
    state.started = True
    try:
        if isinstance(reqs, AsyncIterable):
            it = reqs.__aiter__()
            try:
                async for m in it:
                    yield encode(m)
            finally:
                # The caller's async generator must not be left suspended.
                aclose = getattr(it, "aclose", None)
                if aclose is not None:
                    await aclose()
        else:
            for m in reqs:  # type: ignore[union-attr]
                yield encode(m)
    except Exception as e:
        state.error = e
        raise


def _deadline_error() -> ConnectError:
    return ConnectError(Code.DEADLINE_EXCEEDED, "deadline exceeded")


class _Deadline:
    """Bounds a block by an instant on the loop's clock.

    When the instant passes, the task is cancelled (which cancels the HTTP
    request it awaits) and the block raises ``deadline_exceeded`` instead.
    """

    __slots__ = ("_fired", "_handle", "_task", "when")

    def __init__(self, when: float | None) -> None:
        self.when = when
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._fired = False

    def __enter__(self) -> _Deadline:
        if self.when is None:
            return self
        loop = asyncio.get_running_loop()
        if self.when <= loop.time():
            raise _deadline_error()
        self._task = asyncio.current_task()
        self._fired = False
        self._handle = loop.call_at(self.when, self._fire)
        return self

    def _fire(self) -> None:
        if self._task is not None:
            self._fired = True
            self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if not self._fired:
            if isinstance(exc, ConnectError) and self.when is not None:
                late = past_deadline(exc, self.when, asyncio.get_running_loop().time())
                if late is not exc:
                    raise late from None
            return
        self._fired = False
        task = self._task
        # On 3.11+ a cancellation requested by someone else still wins.
        if (
            sys.version_info >= (3, 11)
            and task is not None
            and task.uncancel() > 0
            and exc_type is not None
        ):
            return
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            raise _deadline_error() from None


class AsyncStream(StreamBase[O], AsyncIterator[O]):
    """Messages of a server or bidi stream, read as they arrive.

    The call starts on the first ``__anext__`` (or on ``async with``).
    ``headers`` holds the response headers once the response has started and
    ``trailers`` the trailers once the stream has ended. Leaving the ``async
    with`` block or calling :meth:`aclose` early cancels the call, and so does
    dropping the stream unfinished (``break`` out of ``async for``): the
    request is reset as soon as the event loop runs again.
    """

    _client: AsyncClient
    _requests: Message | AsyncIterable[Any] | Iterable[Any]
    _resp: AsyncResponse | None = None
    _loop: asyncio.AbstractEventLoop

    def __aiter__(self) -> AsyncStream[O]:
        return self

    async def __anext__(self) -> O:
        if self._pending:
            return self._pending.popleft()
        if self._finished:
            raise StopAsyncIteration
        while True:
            try:
                if self._resp is None:
                    # The deadline is known only once the call starts, and it
                    # bounds the first read as well as sending the request.
                    req = self._start_request(asyncio.get_running_loop().time)
                    with _Deadline(self._deadline):
                        await self._send(req)
                        return await self._next()
                with _Deadline(self._deadline):
                    return await self._next()
            except StopAsyncIteration:
                raise
            except BaseException as e:
                # _Deadline has already reported transport errors past the deadline.
                err = self._failure(e, None)
                failed = err or e
                delay = self._retry_delay(failed, asyncio.get_running_loop().time())
                if delay is None:
                    await self._end(err or e)
                    if err is None:
                        raise
                    raise err from None
            try:
                await self._retry(failed, delay)
            except BaseException as e:
                await self._end(e)
                raise

    async def _retry(self, error: BaseException, delay: float) -> None:
        if self._resp is not None:
            await self._resp.aclose()
            self._resp = None
        self._next_attempt(error)
        await asyncio.sleep(delay)

    async def _send(self, req: HTTPRequest) -> None:
        self._loop = asyncio.get_running_loop()
        body = (
            None if self._single else _body(self._encoder(), self._requests, self._sent)
        )
        resp = await self._client._transport.send(req, body)
        self._resp = resp
        self._response_head(resp.status, resp.headers)

    async def _next(self) -> O:
        resp = self._resp
        decoder = self._decoder
        assert resp is not None and decoder is not None
        pending = self._pending
        while not pending:
            chunk = await resp.read()
            if not chunk:
                self.trailers = decoder.finish(resp.trailers)
                await self._end(None)
                raise StopAsyncIteration
            pending.extend(decoder.feed(chunk))
        self._received = True
        return pending.popleft()

    async def _end(self, error: BaseException | None) -> None:
        if not self._finishing():
            return
        if self._resp is not None:
            await self._resp.aclose()
        elif not self._single:
            # Never started: still close the caller's async generator, unless
            # the transport is pulling from it right now (a deadline passed
            # while the head was awaited): closing it would raise, and the
            # transport's pull, when it ends, closes it through _body.
            aclose = getattr(self._requests, "aclose", None)
            if aclose is not None and not getattr(self._requests, "ag_running", False):
                await aclose()
        self._report_end(error)

    async def aclose(self) -> None:
        """Stop reading and cancel the call if it is still running."""
        if not self._finished:
            await self._end(_closed_error())

    def __del__(self) -> None:
        # Dropped unfinished (a break out of ``async for``): cancel the call.
        # Closing awaits, so it runs on the loop; the interceptors hear now.
        resp = self._resp
        if self._finished or resp is None or not self._finishing():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(_close_soon, resp)
        self._report_end(_closed_error())

    async def __aenter__(self) -> AsyncStream[O]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncClient(ClientBase[AsyncTransport, pyqwest.HTTPTransport]):
    """Base of generated async clients; also usable directly with method specs.

    One client holds one connection pool: create it once, share it, and close
    it with :meth:`aclose` or ``async with``. See ``docs/client.md`` for every
    option.
    """

    _sync = False
    _canceled = (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt)

    _transport_methods = ("send", "aclose")

    @staticmethod
    def _is_pyqwest(transport: object) -> bool:
        return isinstance(transport, pyqwest.HTTPTransport)

    def _open_transport(
        self,
        config: ClientConfig,
        transport: AsyncTransport | pyqwest.HTTPTransport | None,
    ) -> AsyncTransport:
        return async_transport_for(config, transport)

    async def call_unary(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> O:
        """Call a unary method and return its response message."""
        res: UnaryResponse[O] = await self._unary(method, request, headers, timeout)
        return captured(res)

    async def call_unary_detailed(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> UnaryResponse[O]:
        """Call a unary method; the result also holds response headers and trailers."""
        return await self._unary(method, request, headers, timeout)

    async def _unary(
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
                return await self._retried_unary(method, request, headers, timeout)
            if not self._plain:
                return await self._intercepted_unary(method, request, headers, timeout)
        proto = self._protocol
        pm = proto.prepare(method)
        req = proto.unary_request(pm, request, headers, timeout)
        if timeout is None:
            resp = await self._transport.send(req, None)
            status, head, body, trailers = await self._read_all(resp)
        else:
            when = asyncio.get_running_loop().time() + timeout
            with _Deadline(when):
                resp = await self._transport.send(req, None)
                status, head, body, trailers = await self._read_all(resp)
        return proto.unary_response(pm, status, head, body, trailers)

    async def _read_all(
        self, resp: AsyncResponse
    ) -> tuple[int, Headers, bytes, Headers]:
        limit = self._protocol.unary_read_limit
        try:
            body = await resp.read()
            if body and (chunk := await resp.read()):
                rest = UnaryBody(body, limit)
                while chunk:
                    rest.add(chunk)
                    chunk = await resp.read()
                body = rest.join()
            if limit and len(body) > limit:
                raise read_limit_error(limit)
            return resp.status, resp.headers, body, resp.trailers
        finally:
            await resp.aclose()

    async def _retried_unary(
        self,
        method: MethodSpec[Any, Any],
        request: Message,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> UnaryResponse[Any]:
        clock = asyncio.get_running_loop().time
        attempts = self._attempts(method, timeout, clock())
        assert attempts is not None
        while True:
            try:
                if self._plain:
                    res = await self._unary(method, request, headers, timeout, True)
                else:
                    res = await self._intercepted_unary(
                        method, request, headers, timeout
                    )
            except ConnectError as e:
                await asyncio.sleep(attempts.wait_or_raise(e, clock()))
                timeout = attempts.time_left(clock())
            else:
                attempts.succeeded()
                return res

    async def _intercepted_unary(
        self,
        method: MethodSpec[Any, Any],
        request: Message,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> UnaryResponse[Any]:
        async def send(msg: Message, c: ClientCall) -> UnaryResponse[Any]:
            msg = sending(self, c, msg)
            res = await self._unary(method, msg, c.request_headers, c.timeout, True)
            return received(self, c, recorded(c, res))

        with UnaryScope(self, method, headers, timeout) as call:
            return await self._chain(send)(request, call)

    async def call_client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> O:
        """Send a stream of requests and return the single response."""
        res = await self.call_client_stream_detailed(
            method, requests, headers=headers, timeout=timeout
        )
        return captured(res)

    async def call_client_stream_detailed(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> UnaryResponse[O]:
        """Send a stream of requests; the single response with headers and trailers."""
        stream = AsyncStream(self, method, requests, False, headers, timeout)
        async with stream:
            async for msg in stream:
                stream._keep_only(msg)
        return stream._only_response()

    def call_server_stream(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> AsyncStream[O]:
        """Send one request and iterate the responses."""
        return AsyncStream(self, method, request, True, headers, timeout)

    def call_bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> AsyncStream[O]:
        """Send a stream of requests while iterating the responses.

        Over HTTP/2 both directions flow at once. Over HTTP/1.1 the exchange is
        half duplex: most servers answer only after the requests have ended.
        """
        return AsyncStream(self, method, requests, False, headers, timeout)

    async def aclose(self) -> None:
        """Release the connections this client owns."""
        await self._transport.aclose()

    async def __aenter__(self: _C) -> _C:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


_C = TypeVar("_C", bound=AsyncClient)
