"""The ASGI app: a thin shell that moves bytes between ASGI events and the core."""

from __future__ import annotations

import asyncio
import contextlib
import time
import types
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    MutableMapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.context import SENT, RequestContext
from protoc_gen_connect_python.runtime.envelope import JOIN_MAX
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers
from protoc_gen_connect_python.runtime.interceptors import AsyncServerInterceptor
from protoc_gen_connect_python.runtime.server.core import (
    DEADLINE_GRACE,
    DRAIN_MAX_BYTES,
    DRAIN_SECONDS,
    HEAD_NAMES,
    NOT_FOUND,
    Endpoint,
    Head,
    HTTPReject,
    RawHeaders,
    Reply,
    ServerCall,
    ServerCore,
    ServerOptions,
    aclose_iterator,
    answer_first,
    check_drain,
    client_gone,
    deadline_exceeded,
    declared_over,
    drain_first,
    escaped_route,
    logger,
    request_cut,
    shutting_down,
)
from protoc_gen_connect_python.runtime.service import AsyncService
from protoc_gen_connect_python.runtime.shutdown import DRAIN, install_signal_hooks

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from protoc_gen_connect_python.runtime.server.core import ServerOptionsKwargs

Scope = MutableMapping[str, Any]
Message_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message_]]
Send = Callable[[Message_], Awaitable[None]]

_DEADLINE = "deadline"
_DISCONNECT = "disconnect"
_SHUTDOWN = "shutdown"
_CUT = "cut"
"""The body ended early: the client may still read an answer (half-closed)."""

_HEAD_NAMES = {n.encode("latin-1"): n for n in HEAD_NAMES}


_VALUES: dict[bytes, str] = {}


def _value(v: bytes) -> str:
    s = v.decode("latin-1")
    if len(v) <= 64 and len(_VALUES) < 1024:  # bounded: at most 64 KiB
        _VALUES[v] = s
    return s


def _head(raw: Sequence[tuple[bytes, bytes]]) -> Head:
    """The headers the protocols read, in one pass (ASGI names are lower case)."""
    head: Head = {}
    names = _HEAD_NAMES
    # Values repeat from call to call (content type, version, lengths): a
    # lookup is cheaper than decoding each again.
    values = _VALUES
    for k, v in raw:
        name = names.get(k)
        if name is not None and name not in head:
            head[name] = values.get(v) or _value(v)
    return head


class _ScopeSource:
    """Reads what the protocols did not need from the scope, when asked."""

    __slots__ = ()

    def headers(self, scope: Scope) -> Headers:
        return Headers.from_raw(scope["headers"])

    def peer(self, scope: Scope) -> str | None:
        client = scope.get("client")
        return f"{client[0]}:{client[1]}" if client else None

    def query(self, scope: Scope) -> str:
        qs: bytes = scope.get("query_string", b"")
        return qs.decode("latin-1")


_SCOPE = _ScopeSource()


class _Guard:
    """Cancels the task serving a call when its deadline passes or the client leaves.

    Running the handler in the request's own task and cancelling that task
    costs a timer for the deadline and, once the body is read, one watcher task
    for ``http.disconnect``; the reason is recorded so the shell can tell our
    cancellation from the server's. A unary handler that returns without
    suspending needs neither; one that suspends gets its watcher after a short
    grace period (``watch_later``), so quick handlers pay one timer, not a task.
    """

    __slots__ = ("_done", "_task", "_timer", "_watcher", "reason")

    def __init__(self) -> None:
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.TimerHandle | asyncio.Task[None] | None = None
        self._done = False
        self.reason: str | None = None

    def arm(self, deadline: float) -> None:
        """End the call ``DEADLINE_GRACE`` after the client's ``deadline``."""
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = asyncio.current_task()
        self._timer = loop.call_later(
            max(0.0, deadline + DEADLINE_GRACE - time.monotonic()), self.fire, _DEADLINE
        )

    def bind(self) -> None:
        """Cancel the current task when fired, whoever fires it."""
        self._task = asyncio.current_task()

    def watch(self, receive: Receive) -> None:
        """Listen for ``http.disconnect``; only once nothing else calls receive."""
        if self._watcher is None and not self._done:
            if self._task is None:
                self._task = asyncio.current_task()
            self._watcher = asyncio.ensure_future(self._watch(receive))

    def watch_later(self, receive: Receive) -> None:
        """``watch`` unless the call is over within ``_WATCH_AFTER`` seconds."""
        if self._watcher is None and not self._done:
            if self._task is None:
                self._task = asyncio.current_task()
            self._watcher = asyncio.get_running_loop().call_later(
                _WATCH_AFTER, self._start_watch, receive
            )

    def _start_watch(self, receive: Receive) -> None:
        self._watcher = None
        self.watch(receive)

    async def _watch(self, receive: Receive) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                self.fire(_DISCONNECT)
                return

    def fire(self, reason: str) -> None:
        if self.reason is None and not self._done:
            task = self._task
            if task is None:
                # From inside the call's own task (a reader saw the disconnect).
                task = self._task = asyncio.current_task()
            if task is not None:
                self.reason = reason
                task.cancel()

    def disarm(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()

    def absorb(self) -> None:
        """Forget our own cancellation once handled (3.11+ keeps a count)."""
        self.disarm()
        uncancel = getattr(self._task, "uncancel", None)
        if uncancel is not None:
            uncancel()

    def cancelled(self) -> str | None:
        """After a CancelledError: our reason, absorbed; None if it was not ours."""
        reason = self.reason
        if reason is None:
            self.disarm()
        else:
            self.absorb()
        return reason


_WATCH_AFTER = 0.05
"""Seconds a unary handler may run before a disconnect watcher is started."""


@types.coroutine
def _resume(it: Generator[Any, None, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Finish awaiting ``it``, already started and suspended on ``pending``.

    What ``await`` does, for a coroutine whose first step ran by hand: values
    and exceptions (a cancellation) from the task go to it, its yields to the
    task.
    """
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            it.close()
            raise
        except BaseException as exc:
            try:
                pending = it.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                pending = it.send(sent)
            except StopIteration as done:
                return done.value


async def _disconnected(guard: _Guard) -> None:
    # Turn a disconnect noticed by a reader into the same cancellation path;
    # the call then fails (canceled), never ends as if the body were whole.
    guard.fire(_CUT)
    await asyncio.sleep(0)
    raise request_cut()  # pragma: no cover


async def _read_body(
    receive: Receive, msg: Message_, call: ServerCall, guard: _Guard
) -> bytes:
    """The whole request body, from its first event ``msg`` on."""
    limit = call.unary_body_limit
    if msg["type"] != "http.request":
        await _disconnected(guard)
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body", False):
        if limit and len(body) > limit:
            raise call.body_too_large()
        return body
    chunks = [body]
    size = len(body)
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            await _disconnected(guard)
        chunk = msg.get("body", b"")
        size += len(chunk)
        if limit and size > limit:
            raise call.body_too_large()
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def _drain(receive: Receive) -> bool:
    """Read and drop the rest of a request body the reply did not need.

    A response that ends while the client is still sending breaks on some
    servers: hypercorn closes an HTTP/1.1 connection at once (the client may
    lose the response in the reset), and over HTTP/2 fails the whole connection
    when data arrives for a stream whose response finished. The shells send the
    reply up to its last event, drain, and then end it. Draining stops at the
    end of the body, after ``DRAIN_MAX_BYTES`` or after ``DRAIN_SECONDS``, so
    a client that waits for the end of the response before it stops sending
    costs a bounded wait. False if the client went away.
    """
    try:
        return await asyncio.wait_for(_drain_body(receive), DRAIN_SECONDS)
    except asyncio.TimeoutError:
        return True


async def _drain_body(receive: Receive) -> bool:
    size = 0
    while size <= DRAIN_MAX_BYTES:
        msg = await receive()
        if msg["type"] != "http.request":
            return False
        if not msg.get("more_body", False):
            break
        size += len(msg.get("body", b""))
    return True


class _Requests(AsyncIterator[Message]):
    """Request messages of a streaming call, read from ``receive`` on demand.

    Reading only when the handler asks keeps memory flat and gives HTTP/1.1
    clients back-pressure; it never waits for the whole body before the handler
    may answer, so half-duplex and full-duplex clients both work.
    """

    __slots__ = ("_call", "_guard", "_pending", "_receive", "eof")

    def __init__(self, receive: Receive, call: ServerCall, guard: _Guard) -> None:
        self._receive = receive
        self._call = call
        self._guard = guard
        self._pending: Iterator[Message] = iter(())
        self.eof = False
        """Whether the whole request body was received."""

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Message:
        while True:
            m = next(self._pending, None)
            if m is not None:
                return m
            if self.eof:
                raise StopAsyncIteration
            msg = await self._receive()
            if msg["type"] != "http.request":
                self.eof = True  # nothing more will come
                await _disconnected(self._guard)
            last = not msg.get("more_body", False)
            # Before feeding, which may fail: a body received whole needs no drain.
            self.eof = last
            self._pending = self._call.feed(msg.get("body", b""))
            if last:
                self._guard.watch(self._receive)
                self._call.close_input()


async def _send_reply(send: Send, reply: Reply) -> None:
    trailers = reply.trailers
    if trailers is None:
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": reply.headers,
            }
        )
        await send({"type": "http.response.body", "body": reply.body})
        return
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": reply.headers,
            "trailers": True,
        }
    )
    # With the trailers extension the body still ends with more_body=False.
    await send({"type": "http.response.body", "body": reply.body})
    await send({"type": "http.response.trailers", "headers": trailers})


async def _send_reply_draining(
    send: Send, receive: Receive, reply: Reply, length: str | None
) -> None:
    """``_send_reply`` for a request whose body was not read to its end."""
    start = {
        "type": "http.response.start",
        "status": reply.status,
        "headers": reply.headers,
        "trailers": reply.trailers is not None,
    }
    await _end_draining(send, receive, start, reply.body, reply.trailers, length)


async def _end_draining(
    send: Send,
    receive: Receive,
    start: Message_ | None,
    body: bytes,
    trailers: RawHeaders | None,
    length: str | None,
) -> None:
    """Send the rest of a response (``start`` unless sent), draining the request.

    In the order ``drain_first`` says; gRPC's status comes with the trailers,
    after the drain either way.
    """
    if drain_first(length):
        if not await _drain(receive):
            return
        if start is not None:
            await send(start)
        await send({"type": "http.response.body", "body": body})
    else:
        if start is not None:
            await send(start)
        if body:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if not await _drain(receive):
            return
        await send({"type": "http.response.body", "body": b""})
    if trailers is not None:
        await send({"type": "http.response.trailers", "headers": trailers})


class _StreamHead:
    """The head of a streaming response: sent once, early if the handler asks.

    ``flush`` is the handler's ``ctx.send_headers()``: it starts the send in a
    task of its own at once (the handler need not await it), and ``start``,
    which the shell awaits before the first body event, waits for that task
    instead of sending again, so events keep their order.
    """

    __slots__ = ("_call", "_send", "_task", "sent")

    def __init__(self, send: Send, call: ServerCall) -> None:
        self._send = send
        self._call = call
        self._task: asyncio.Future[None] | None = None
        self.sent = False

    @property
    def begun(self) -> bool:
        """Whether the head was sent or is being sent."""
        return self.sent or self._task is not None

    def flush(self) -> Awaitable[None]:
        if self.sent:
            return SENT
        if self._task is None:
            self._task = asyncio.ensure_future(_start_response(self._send, self._call))
        # Shielded: a handler cancelled while awaiting it must not cancel the
        # send half-way; the shell still waits for it in ``start``.
        return asyncio.shield(self._task)

    async def start(self) -> None:
        task = self._task
        if task is not None:
            await asyncio.shield(task)
        elif not self.sent:
            await _start_response(self._send, self._call)
        self.sent = True


class ASGIApp:
    """Serves async service instances over ASGI (uvicorn, hypercorn, pyvoy, ...).

    ``ASGIApp(*services, interceptors=(...), **options)`` where ``services`` are
    instances of generated ``FooService`` subclasses and ``options`` are the
    fields of ``ServerOptions``. Mount it under a prefix anywhere an ASGI app
    goes (Starlette/FastAPI ``Mount``): the prefix is taken from ``root_path``.
    """

    def __init__(
        self,
        *services: AsyncService,
        interceptors: Sequence[AsyncServerInterceptor] = (),
        **options: Unpack[ServerOptionsKwargs],
    ) -> None:
        for s in services:
            if not isinstance(s, AsyncService):
                raise TypeError(
                    f"{type(s).__name__} is not an async service; "
                    "serve sync services with WSGIApp"
                )
        self.options = ServerOptions(**options)
        self._core = ServerCore(services, self.options, interceptors, is_async=True)
        self._routes = self._core.routes
        self._warned_trailers = False
        self._open: set[_Guard] = set()
        """The guards of the streams being served, ended at the drain's end."""
        self._unary_calls = 0
        """Unary calls being served, which lifespan shutdown waits for."""
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point."""
        # HTTP requests are served in this frame: one coroutine less per call.
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send, self._started, self._stopping)
            else:
                await _not_http(scope, receive, send)
            return
        if self._loop is None:
            # Mounted in a framework that keeps lifespan to itself.
            self._started()
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        ep = self._routes.get(path)
        head = _head(scope["headers"])
        if ep is not None and escaped_route(scope.get("raw_path"), ep):
            ep = None
        if ep is None:
            await _send_reply_draining(
                send, receive, NOT_FOUND, head.get("content-length")
            )
            return
        try:
            call = self._core.start(ep, scope["method"], head, _SCOPE, scope)
        except HTTPReject as r:
            await _send_reply_draining(
                send, receive, r.reply, head.get("content-length")
            )
            return
        if call.needs_trailers and "http.response.trailers" not in scope.get(
            "extensions", {}
        ):
            await _send_reply_draining(
                send, receive, self._no_trailers(call), head.get("content-length")
            )
            return
        if ep.unary is not None:
            self._unary_calls += 1
            try:
                await self._unary(ep, call, receive, send, scope)
            finally:
                self._unary_calls -= 1
        else:
            await self._stream(ep, call, receive, send)

    def _started(self) -> None:
        # The server's signal handlers are in place by lifespan startup (or
        # the first request).
        install_signal_hooks()
        self._follow_drain()

    async def _stopping(self) -> None:
        # Lifespan shutdown: servers send it once they stopped accepting
        # (some only after their connections closed); streams still open get
        # the rest of the grace, plus a moment to send their end. Unary calls
        # still running are waited for as long: a server may send this before
        # its own wait for them is over (hypercorn, when a connection of the
        # worker failed) and cancel whatever still runs once it is answered.
        DRAIN.begin()
        self._follow_drain()
        left = DRAIN.remaining(self.options.shutdown_grace)
        until = time.monotonic() + (left or 0.0) + 1.0
        while (self._open or self._unary_calls) and time.monotonic() < until:
            await asyncio.sleep(0.05)

    def _follow_drain(self) -> None:
        """End this app's open streams at the drain's end, in this event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop

        def begun() -> None:
            # From the drain's thread, or from this loop's own (lifespan).
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._schedule_end)

        DRAIN.on_begin(begun)

    def _schedule_end(self) -> None:
        left = DRAIN.remaining(self.options.shutdown_grace)
        assert self._loop is not None and left is not None
        self._loop.call_later(left, self._end_streams)

    def _end_streams(self) -> None:
        for guard in list(self._open):
            guard.fire(_SHUTDOWN)

    def _no_trailers(self, call: ServerCall) -> Reply:
        if not self._warned_trailers:
            self._warned_trailers = True
            logger.warning(
                "this ASGI server does not support HTTP trailers "
                "(the http.response.trailers extension); %s requests are refused",
                call.ctx.protocol,
            )
        err = ConnectError(
            Code.UNIMPLEMENTED,
            f"the server cannot send HTTP trailers, which {call.ctx.protocol} needs",
        )
        if call.endpoint.ends:
            call.end(err)
        return call.encode_refusal(err)

    async def _unary(
        self,
        ep: Endpoint,
        call: ServerCall,
        receive: Receive,
        send: Send,
        scope: Scope,
    ) -> None:
        # The guard is made only when something needs it (a deadline, a body
        # in several events, a handler that suspends): most calls need none.
        guard: _Guard | None = None
        ctx = call.ctx
        unread = True
        err: ConnectError | None = None
        length = call.head.get("content-length")
        try:
            call.parse_head()
            if DRAIN.started is not None:
                check_drain(self.options.shutdown_grace)
            if ctx.deadline is not None:
                guard = _Guard()
                guard.arm(ctx.deadline)
            for hook in ep.hooks:
                await hook(ctx)
            limit = call.unary_body_limit
            if declared_over(length, limit):
                if answer_first(scope.get("http_version", "1.1")):
                    length = None  # answer first, then drain (bounded)
                raise call.body_too_large()
            # The body is read to its end even for a Connect GET, whose message
            # came in the query: an HTTP/2 client may end a GET's stream with
            # an empty DATA frame after the HEADERS, and a reply that ended
            # first makes hypercorn fail the whole connection on that frame.
            msg = await receive()
            body = msg.get("body", b"")
            if (
                msg["type"] != "http.request"
                or msg.get("more_body", False)
                or (limit and len(body) > limit)
            ):
                # Not the usual whole body in one event: the careful reader.
                guard = guard or _Guard()
                body = await _read_body(receive, msg, call, guard)
            if call.preread is not None:
                body = call.preread
            unread = False
            request = call.decode_unary(body)
            assert ep.unary is not None
            # One step by hand: a handler that returns without suspending (the
            # common case) never needs a disconnect watcher.
            steps = ep.unary(request, ctx).__await__()
            try:
                pending = steps.send(None)
            except StopIteration as done:
                response = done.value
            else:
                guard = guard or _Guard()
                guard.watch_later(receive)
                response = await _resume(steps, pending)
            if guard is not None:
                guard.disarm()
            reply = call.encode_unary(response)
        except asyncio.CancelledError:
            reason = None if guard is None else guard.cancelled()
            if reason is None or reason == _DISCONNECT:
                if ep.ends:
                    call.end(client_gone())
                if reason is None:
                    raise
                return
            if reason == _CUT:
                unread = False  # nothing more will come
                err = request_cut()
            elif reason == _DEADLINE:
                err = deadline_exceeded()
            else:
                err = shutting_down()
            reply = call.encode_error(err)
        except HTTPReject as r:
            if guard is not None:
                guard.disarm()
            err = r.error()
            reply = r.reply
        except Exception as e:
            if guard is not None:
                guard.disarm()
            err = self._core.to_error(e, ep)
            reply = call.encode_error(err)
        if ep.ends:
            call.end(err)
        if unread:
            await _send_reply_draining(send, receive, reply, length)
        elif reply.trailers is None:
            # The usual unary reply, sent from this frame.
            await send(
                {
                    "type": "http.response.start",
                    "status": reply.status,
                    "headers": reply.headers,
                }
            )
            await send({"type": "http.response.body", "body": reply.body})
        else:
            await _send_reply(send, reply)

    async def _stream(
        self, ep: Endpoint, call: ServerCall, receive: Receive, send: Send
    ) -> None:
        guard = _Guard()
        ctx = call.ctx
        head = _StreamHead(send, call)
        err: ConnectError | None = None
        requests: _Requests | None = None
        responses: AsyncIterator[Message] | None = None
        try:
            try:
                call.parse_head()
                if DRAIN.started is not None:
                    raise shutting_down()
                guard.bind()
                self._open.add(guard)
                self._follow_drain()  # a no-op unless the loop is new
                if ctx.deadline is not None:
                    guard.arm(ctx.deadline)
                for hook in ep.hooks:
                    await hook(ctx)
                assert ep.stream is not None
                requests = _Requests(receive, call, guard)
                ctx._head_sender = head.flush
                responses = ep.stream(requests, ctx)
                await _send_messages(responses, call.stream_framer(), head, send, ctx)
            finally:
                self._open.discard(guard)
                ctx._head_sender = None
                if responses is not None:
                    await aclose_iterator(responses)
        except asyncio.CancelledError:
            reason = guard.cancelled()
            if reason is None:
                # The server cancelled the call (its own shutdown timeout):
                # end the stream with a code rather than cut it.
                if ep.ends:
                    call.end(shutting_down())
                await _end_cut(call, head, send)
                raise
            if reason == _DISCONNECT:
                if ep.ends:
                    call.end(client_gone())
                return
            if reason == _CUT:
                err = request_cut()
            elif reason == _DEADLINE:
                err = deadline_exceeded()
            else:
                err = shutting_down()
        except HTTPReject as r:
            guard.disarm()
            if ep.ends:
                call.end(r.error())
            await _send_reply_draining(
                send, receive, r.reply, call.head.get("content-length")
            )
            return
        except Exception as e:
            err = self._core.to_error(e, ep)
        guard.disarm()
        if ep.ends:
            call.end(err)
        unread = requests is None or not requests.eof
        if not head.begun and err is not None:
            reply = call.encode_error(err)
            if unread:
                await _send_reply_draining(
                    send, receive, reply, call.head.get("content-length")
                )
            else:
                await _send_reply(send, reply)
            return
        body, trailers = call.encode_stream_end(err)
        if unread:
            start = None
            if head.begun:
                await head.start()
            else:
                start = _stream_start(call)
            await _end_draining(
                send, receive, start, body, trailers, call.head.get("content-length")
            )
            return
        await head.start()
        await send({"type": "http.response.body", "body": body})
        if trailers is not None:
            await send({"type": "http.response.trailers", "headers": trailers})


JOIN_SECONDS = 0.001
"""How long a message may wait for others ready after it, counted from the
start of the handler step that made it."""

_join_clock: Callable[[], float] = time.monotonic
"""The clock ``JOIN_SECONDS`` is measured with; tests replace it with their own."""


async def _send_messages(
    responses: AsyncIterator[Message],
    frame: Callable[[Message, list[bytes]], int],
    head: _StreamHead,
    send: Send,
    ctx: RequestContext,
) -> None:
    """Send the framed response messages of a stream as they come.

    Messages a handler yields one after another without waiting in between
    share one body event, up to ``JOIN_MAX`` bytes: each event costs the
    server a write of its own, and servers that copy it through a native
    layer (granian, pyvoy) send half again as much this way. Nothing waits
    while the handler waits: its steps are run by hand (as ``await`` would),
    and what was held is sent as soon as one suspends. A handler slow between
    messages gets each sent alone: a batch goes out once ``JOIN_SECONDS`` have
    passed since the step that made its first message began. With
    ``ctx.buffer_hint`` set, a batch waits for ``JOIN_MAX`` bytes or the end.
    """
    anext = responses.__anext__
    held: list[bytes] = []
    size = 0
    now = _join_clock
    began = first = now()
    try:
        while True:
            step = anext().__await__()
            try:
                pending = step.send(None)
            except StopIteration as done:
                msg = done.value
            except StopAsyncIteration:
                break
            else:
                if held and not ctx.buffer_hint:
                    out, held, size = held, [], 0
                    try:
                        await _send_body(head, send, out)
                    except BaseException:
                        _abandon(step)
                        raise
                try:
                    msg = await _resume(step, pending)
                except StopAsyncIteration:
                    break
            if not held:
                first = began
            size += frame(msg, held)
            began = now()
            if size >= JOIN_MAX or (
                began - first >= JOIN_SECONDS and not ctx.buffer_hint
            ):
                out, held, size = held, [], 0
                await _send_body(head, send, out)
    except Exception:
        # What the handler yielded before it failed still goes out first.
        if held:
            await _send_body(head, send, held)
        raise
    if held:
        await _send_body(head, send, held)


async def _send_body(head: _StreamHead, send: Send, pieces: list[bytes]) -> None:
    if not head.sent:
        await head.start()
    body = b"".join(pieces)
    await send({"type": "http.response.body", "body": body, "more_body": True})


def _abandon(step: Generator[Any, None, Any]) -> None:
    """End a handler step left waiting because sending failed.

    As a handler run in a task of its own would be: cancelled where it waits.
    """
    try:
        step.throw(asyncio.CancelledError())
    except BaseException:
        return
    step.close()  # pragma: no cover - the handler went on after its cancellation


async def _end_cut(call: ServerCall, head: _StreamHead, send: Send) -> None:
    """Best effort, briefly: ``unavailable`` for a stream the server cancels."""

    async def end() -> None:
        err = shutting_down()
        if not head.begun:
            await _send_reply(send, call.encode_error(err))
            return
        await head.start()
        body, trailers = call.encode_stream_end(err)
        await send({"type": "http.response.body", "body": body})
        if trailers is not None:
            await send({"type": "http.response.trailers", "headers": trailers})

    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(end(), 1.0)


def _stream_start(call: ServerCall) -> Message_:
    """The ``http.response.start`` event of a streaming response."""
    status, head = call.stream_head()
    return {
        "type": "http.response.start",
        "status": status,
        "headers": head,
        "trailers": call.needs_trailers,
    }


async def _start_response(send: Send, call: ServerCall) -> None:
    """Send the head of a streaming response."""
    await send(_stream_start(call))


async def _not_http(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.close", "code": 1003})


async def _lifespan(
    receive: Receive,
    send: Send,
    started: Callable[[], None],
    stopping: Callable[[], Awaitable[None]],
) -> None:
    # Answering lets servers that require lifespan start; the events hook the
    # graceful shutdown in.
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            started()
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await stopping()
            await send({"type": "lifespan.shutdown.complete"})
            return
