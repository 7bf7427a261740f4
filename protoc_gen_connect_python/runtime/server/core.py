"""The server logic both apps share, free of I/O.

``ServerCore`` turns service instances into a route table, picks the protocol of
each request from its HTTP method and content type, and hands the app shell a
``ServerCall``: a protocol-specific object that parses the request head, decodes
request messages and encodes the response (head, messages, end, errors) as
plain bytes. The ASGI and WSGI shells only move those bytes and run the handler,
awaiting it or not; every decision is made here or in the protocol modules.

Adding a protocol means one ``ServerProtocol`` subclass (how to recognize its
content types, which stream kinds it serves, how to make a call object) and one
``ServerCall`` subclass (both in ``call.py``; see ``connect.py``), listed in
``protocols.py``.
"""

from __future__ import annotations

import http
import inspect
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from typing import Any, Protocol, cast

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime import allocator
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import CODECS, Codec
from protoc_gen_connect_python.runtime.compression import (
    COMPRESSIONS,
    Compression,
    negotiate,
)
from protoc_gen_connect_python.runtime.context import RequestContext, RequestView
from protoc_gen_connect_python.runtime.deadline import INBOUND
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.interceptors import (
    AsyncServerInterceptor,
    SyncServerInterceptor,
    overrides_on_end,
    overrides_on_request,
)
from protoc_gen_connect_python.runtime.iterators import (
    aclose_iterator as aclose_iterator,
)
from protoc_gen_connect_python.runtime.iterators import close_iterator as close_iterator
from protoc_gen_connect_python.runtime.method import StreamType
from protoc_gen_connect_python.runtime.server import connect

# Defined in the leaf modules; re-exported for code that imports them from here.
from protoc_gen_connect_python.runtime.server.call import (
    CONTENT_LENGTHS as CONTENT_LENGTHS,
)
from protoc_gen_connect_python.runtime.server.call import HEAD_NAMES as HEAD_NAMES
from protoc_gen_connect_python.runtime.server.call import EndHook as EndHook
from protoc_gen_connect_python.runtime.server.call import Endpoint as Endpoint
from protoc_gen_connect_python.runtime.server.call import Head as Head
from protoc_gen_connect_python.runtime.server.call import HTTPReject as HTTPReject
from protoc_gen_connect_python.runtime.server.call import RawHeaders as RawHeaders
from protoc_gen_connect_python.runtime.server.call import Reply as Reply
from protoc_gen_connect_python.runtime.server.call import ServerCall as ServerCall
from protoc_gen_connect_python.runtime.server.call import (
    ServerProtocol as ServerProtocol,
)
from protoc_gen_connect_python.runtime.server.call import (
    check_response as check_response,
)
from protoc_gen_connect_python.runtime.server.call import (
    content_length as content_length,
)
from protoc_gen_connect_python.runtime.server.call import logger as logger
from protoc_gen_connect_python.runtime.server.call import run_end_hooks as run_end_hooks
from protoc_gen_connect_python.runtime.server.call import to_raw as to_raw
from protoc_gen_connect_python.runtime.server.options import MiB as MiB
from protoc_gen_connect_python.runtime.server.options import (
    ServerOptions as ServerOptions,
)
from protoc_gen_connect_python.runtime.server.options import (
    ServerOptionsKwargs as ServerOptionsKwargs,
)
from protoc_gen_connect_python.runtime.server.protocols import default_protocols
from protoc_gen_connect_python.runtime.shutdown import DRAIN


class RequestSource(RequestView, Protocol):
    """A shell's view of its request object: headers, peer and query on demand."""

    def query(self, src: Any) -> str:
        """The raw query string (for Connect GET)."""
        ...


def client_gone() -> ConnectError:
    """How ``on_end`` hooks see a call whose client went away."""
    return ConnectError(Code.CANCELED, "the client went away")


DRAIN_MAX_BYTES = 8 * 1024 * 1024
"""The most of an unread request body the shells read and drop after a reply."""
DRAIN_SECONDS = 2.0
"""How long the shells wait for more of an unread request body."""


def drain_first(length: str | None) -> bool:
    """Whether to drain an unread request body before the last reply bytes.

    A body of a declared, moderate length: the client has committed to
    sending it, and one that sees the response end early may cut its request
    short of the declared length, which servers treat as an error of the
    stream (Envoy over HTTP/3) or of the whole connection (hypercorn's h2).
    Otherwise the last bytes go first, so a client that waits for the answer
    before it stops sending gets it, and the drain follows.
    """
    return length is not None and length.isdigit() and int(length) <= DRAIN_MAX_BYTES


def declared_over(length: str | None, limit: int) -> bool:
    """Whether a request's Content-Length is over ``limit`` (0 = no limit).

    Such a unary request is refused before any of its body is read: the
    answer does not depend on the bytes, and the client may send nothing
    until it sees one (``Expect: 100-continue``, or a body that never comes).
    ``answer_first`` says whether the shells send the answer before they
    drain the body.
    """
    return (
        bool(limit) and length is not None and length.isdigit() and int(length) > limit
    )


def answer_first(http_version: str) -> bool:
    """Whether a body refused for its declared length is answered before it
    is drained: over HTTP/1.x (``"1.1"``, ``"HTTP/1.1"``), where clients
    wait for an answer before they send (``Expect: 100-continue``).

    Over HTTP/2 and later the drain comes first, bounded as every drain is:
    Go's client stops sending a request body once it sees the response
    head, short of its declared length, and hypercorn answers that by
    closing the whole connection (docs/server.md, "Server notes").
    """
    return http_version.removeprefix("HTTP/").startswith("1")


def body_cut_short() -> ConnectError:
    """invalid_argument for a body that ended before its declared length.

    Never a handler run on part of a request: a WSGI server hands over what
    arrived and then an empty read, as at a real end.
    """
    return ConnectError(
        Code.INVALID_ARGUMENT, "request body ended before its declared length"
    )


def read_failed(exc: BaseException) -> ConnectError:
    """canceled for a request body the server could not read to its end.

    A peer that resets or goes away mid-request is not a server error: one
    line at DEBUG, no traceback.
    """
    logger.debug("request body read failed (%s): client gone", type(exc).__name__)
    return request_cut()


def request_cut() -> ConnectError:
    """canceled for a request whose body ended early (reset, or the client
    closed its side): the handler's work on part of it must not succeed."""
    return ConnectError(Code.CANCELED, "the request ended before its body did")


_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in http.HTTPStatus}
_STATUS_LINES[499] = "499 Client Closed Request"


def status_line(status: int) -> str:
    """A WSGI status line (``"200 OK"``)."""
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"{status} Unknown"


# ---------------------------------------------------------------------------
# Handler adapters: every streaming kind in one shape
# ---------------------------------------------------------------------------


def _missing() -> ConnectError:
    return ConnectError(Code.UNIMPLEMENTED, "protocol error: missing request message")


def _extra() -> ConnectError:
    return ConnectError(
        Code.UNIMPLEMENTED, "protocol error: more than one request message"
    )


async def _async_single(requests: AsyncIterator[Message]) -> Message:
    first: Message | None = None
    async for m in requests:
        if first is not None:
            raise _extra()
        first = m
    if first is None:
        raise _missing()
    return first


def _sync_single(requests: Iterator[Message]) -> Message:
    first: Message | None = None
    for m in requests:
        if first is not None:
            raise _extra()
        first = m
    if first is None:
        raise _missing()
    return first


def _async_server_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def stream(
        requests: AsyncIterator[Message], ctx: RequestContext
    ) -> AsyncIterator[Message]:
        request = await _async_single(requests)
        responses = fn(request, ctx)
        if inspect.isawaitable(responses):
            # Tolerate ``async def`` handlers that return an async iterator.
            responses = await responses
        try:
            async for r in responses:
                yield r
        finally:
            await aclose_iterator(responses)

    return stream


def _async_client_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def stream(
        requests: AsyncIterator[Message], ctx: RequestContext
    ) -> AsyncIterator[Message]:
        yield await fn(requests, ctx)

    return stream


def _sync_server_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    def stream(requests: Iterator[Message], ctx: RequestContext) -> Iterator[Message]:
        request = _sync_single(requests)
        responses = fn(request, ctx)
        try:
            yield from responses
        finally:
            close_iterator(responses)

    return stream


def _sync_client_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    def stream(requests: Iterator[Message], ctx: RequestContext) -> Iterator[Message]:
        yield fn(requests, ctx)

    return stream


# ---------------------------------------------------------------------------
# The current call, for the clients a handler calls out with
# ---------------------------------------------------------------------------
# Each handler step runs with the call marked as the inbound one (see
# runtime/deadline.py), interceptors included, and only while it runs: the
# shells and whatever the server does between steps never see it.


# The context variable's own methods, bound once: this runs for every call
# and every streamed message.
_enter, _leave = INBOUND.set, INBOUND.reset


def _sync_in_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a unary handler or ``on_request``; the context comes last) in its call."""

    def run(*args: Any) -> Any:
        token = _enter(args[-1])
        try:
            return fn(*args)
        finally:
            _leave(token)

    return run


def _async_in_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`_sync_in_call` for coroutine functions."""

    async def run(*args: Any) -> Any:
        token = _enter(args[-1])
        try:
            return await fn(*args)
        finally:
            _leave(token)

    return run


def _stream_in_call(
    fn: Callable[..., Any], steps: Callable[[Any, RequestContext], Any]
) -> Callable[..., Any]:
    """``fn`` (a streaming handler) in its call: made there, every step run there."""
    make = _sync_in_call(fn)

    def stream(requests: Any, ctx: RequestContext) -> Any:
        return steps(make(requests, ctx), ctx)

    return stream


def _sync_steps_in_call(
    responses: Iterable[Message], ctx: RequestContext
) -> Iterator[Message]:
    it = iter(responses)
    try:
        while True:
            token = _enter(ctx)
            try:
                msg = next(it)
            except StopIteration:
                return
            finally:
                _leave(token)
            yield msg
    finally:
        token = _enter(ctx)
        try:
            close_iterator(it)
        finally:
            _leave(token)


async def _async_steps_in_call(
    responses: AsyncIterable[Message], ctx: RequestContext
) -> AsyncIterator[Message]:
    it = responses.__aiter__()
    try:
        while True:
            token = _enter(ctx)
            try:
                msg = await it.__anext__()
            except StopAsyncIteration:
                return
            finally:
                _leave(token)
            yield msg
    finally:
        token = _enter(ctx)
        try:
            await aclose_iterator(it)
        finally:
            _leave(token)


# ---------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------


def _build_endpoints(
    services: Sequence[object],
    interceptors: Sequence[AsyncServerInterceptor | SyncServerInterceptor],
    is_async: bool,
) -> dict[str, Endpoint]:
    routes: dict[str, Endpoint] = {}
    in_call = _async_in_call if is_async else _sync_in_call
    hooks = tuple(
        in_call(i.on_request) for i in interceptors if overrides_on_request(i)
    )
    ends = tuple(i.on_end for i in reversed(interceptors) if overrides_on_end(i))
    for svc in services:
        spec = getattr(type(svc), "service_spec", None)
        if spec is None:
            raise TypeError(
                f"{type(svc).__name__} is not a service: subclass a generated "
                "service class"
            )
        for m in spec.methods:
            if m.procedure in routes:
                raise ValueError(f"two services implement {m.procedure}")
            fn = getattr(svc, m.python_name)
            if is_async and not (
                inspect.iscoroutinefunction(fn)
                or m.stream_type in (StreamType.SERVER_STREAM, StreamType.BIDI_STREAM)
            ):
                raise TypeError(
                    f"{type(svc).__name__}.{m.python_name} is not async: serve sync "
                    "services with WSGIApp"
                )
            unary: Callable[..., Any] | None = None
            stream: Callable[..., Any] | None = None
            st = m.stream_type
            if st is StreamType.UNARY:
                unary = fn
                for i in reversed(interceptors):
                    unary = i.wrap_unary(cast(Any, unary))
                unary = in_call(unary)
            else:
                if st is StreamType.SERVER_STREAM:
                    stream = (
                        _async_server_stream if is_async else _sync_server_stream
                    )(fn)
                elif st is StreamType.CLIENT_STREAM:
                    stream = (
                        _async_client_stream if is_async else _sync_client_stream
                    )(fn)
                else:
                    stream = fn
                for i in reversed(interceptors):
                    stream = i.wrap_stream(cast(Any, stream))
                stream = _stream_in_call(
                    stream, _async_steps_in_call if is_async else _sync_steps_in_call
                )
            routes[m.procedure] = Endpoint(m, unary, stream, hooks, ends)
    return routes


class ServerCore:
    """Routes, options and protocol selection for one app (sync or async)."""

    def __init__(
        self,
        services: Sequence[object],
        options: ServerOptions,
        interceptors: Sequence[AsyncServerInterceptor | SyncServerInterceptor],
        *,
        is_async: bool,
        protocols: Sequence[ServerProtocol] | None = None,
    ) -> None:
        if not services:
            raise ValueError("an app needs at least one service")
        self.options = options
        self.routes = _build_endpoints(services, interceptors, is_async)
        # Tell each service what else the app serves (reflection asks);
        # _build_endpoints has checked that every one has a spec.
        specs = tuple(getattr(type(s), "service_spec", None) for s in services)
        for s in services:
            served_with = getattr(s, "served_with", None)
            if served_with is not None:
                served_with(specs)
        if options.prime_allocator:
            allocator.prime_allocator()

        codecs: dict[str, Codec] = dict(CODECS)
        for c in options.codecs:
            codecs[c.name] = c
        self.codecs = codecs

        if options.compressions is None:
            comps: dict[str, Compression] = dict(COMPRESSIONS)
        else:
            comps = {}
            for comp in options.compressions:
                if isinstance(comp, str):
                    if comp not in COMPRESSIONS:
                        raise ValueError(
                            f"unknown compression {comp!r}; available: "
                            f"{', '.join(COMPRESSIONS)}"
                        )
                    comps[comp] = COMPRESSIONS[comp]
                else:
                    comps[comp.name] = comp
        self.compressions = comps
        self.accept_encoding = ",".join(comps)
        """Comma-separated supported algorithms, as sent in accept-encoding headers."""

        self.connect_unary = connect.ConnectUnaryProtocol(self)
        self.protocols: tuple[ServerProtocol, ...] = tuple(
            protocols
            if protocols is not None
            else default_protocols(self, self.connect_unary)
        )
        accept_post = ", ".join(
            t for p in self.protocols for t in p.content_types(sorted(codecs))
        )
        self._reply_415_headers: RawHeaders = [
            (b"accept-post", accept_post.encode("latin-1")),
            (b"content-length", b"0"),
        ]
        # content type -> (protocol, codec), for unary and for streaming
        # methods; bounded below.
        self._by_content_type: tuple[
            dict[str, tuple[ServerProtocol, Codec] | None],
            dict[str, tuple[ServerProtocol, Codec] | None],
        ] = ({}, {})
        # accept-encoding value -> negotiated algorithm; bounded below.
        self._negotiated: dict[str, Compression | None] = {}

    # -- request start -----------------------------------------------------

    def start(
        self,
        endpoint: Endpoint,
        method: str,
        head: Head,
        source: RequestSource,
        src: Any,
    ) -> ServerCall:
        """The call object for a routed request; raises HTTPReject (405, 415).

        ``head`` holds the ``HEAD_NAMES`` headers; ``source`` reads the rest of
        the request ``src`` (all headers, peer, query) when needed. A refusal
        has been shown to the interceptors' ``on_end`` hooks already.
        """
        if method == "POST":
            ct = head.get("content-type", "")
            cache = self._by_content_type[endpoint.unary is None]
            try:
                hit = cache[ct]
            except KeyError:
                hit = self._classify(ct, endpoint.spec.stream_type)
                if len(cache) < 256:
                    cache[ct] = hit
            if hit is None:
                raise self._refuse(
                    endpoint,
                    Reply(415, list(self._reply_415_headers)),
                    head,
                    source,
                    src,
                )
            proto, codec = hit
            ctx = RequestContext._from_view(endpoint.spec, proto.name, source, src)
            return proto.new_call(self, endpoint, codec, ctx, head, None)
        if method == "GET" and endpoint.allow_get:
            proto = self.connect_unary
            ctx = RequestContext._from_view(endpoint.spec, proto.name, source, src)
            return proto.new_call(self, endpoint, None, ctx, head, source.query(src))
        allow = [
            (b"allow", endpoint.allow.encode("ascii")),
            (b"content-length", b"0"),
        ]
        raise self._refuse(endpoint, Reply(405, allow), head, source, src)

    def _refuse(
        self,
        endpoint: Endpoint,
        reply: Reply,
        head: Head,
        source: RequestSource,
        src: Any,
    ) -> HTTPReject:
        """The refusal to raise, once the ``on_end`` hooks have seen it."""
        reject = HTTPReject(reply)
        if not endpoint.ends:
            return reject
        # No protocol matched: name the likeliest one from the content type.
        ct = head.get("content-type", "").lower()
        protocol = (
            "grpc-web"
            if ct.startswith("application/grpc-web")
            else "grpc"
            if ct.startswith("application/grpc")
            else "connect"
        )
        ctx = RequestContext._from_view(endpoint.spec, protocol, source, src)
        run_end_hooks(endpoint.ends, ctx, reject.error())
        return reject

    def _classify(
        self, content_type: str, stream_type: StreamType
    ) -> tuple[ServerProtocol, Codec] | None:
        media = content_type.partition(";")[0].strip().lower()
        for p in self.protocols:
            name = p.codec_name(media)
            if name is None or not p.handles(stream_type):
                continue
            codec = self.codecs.get(name)
            if codec is None:
                continue
            params = content_type.partition(";")[2].replace(" ", "").lower()
            if params and params != "charset=utf-8":
                continue
            return p, codec
        return None

    def response_compression(self, accept: str | None) -> Compression | None:
        """The algorithm to compress the response with, from the client's accept list."""
        if not accept:
            return None
        try:
            return self._negotiated[accept]
        except KeyError:
            pass
        name = negotiate(accept, self.compressions)
        comp = None if name is None else self.compressions[name]
        if len(self._negotiated) < 256:
            self._negotiated[accept] = comp
        return comp

    def reject_415(self) -> HTTPReject:
        """The 415 refusal listing every supported content type."""
        return HTTPReject(Reply(415, list(self._reply_415_headers)))

    # -- errors ---------------------------------------------------------------

    def to_error(self, exc: BaseException, endpoint: Endpoint) -> ConnectError:
        """The ConnectError sent for an exception raised while serving a call.

        Anything that is not a ConnectError is logged with its traceback and
        sent as ``unknown`` with a generic message, unless the app exposes
        internal errors.
        """
        if isinstance(exc, ConnectError):
            return exc
        logger.error(
            "unhandled exception serving %s", endpoint.spec.procedure, exc_info=exc
        )
        if self.options.expose_internal_errors:
            return ConnectError(Code.UNKNOWN, f"{type(exc).__name__}: {exc}")
        return ConnectError(Code.UNKNOWN, "internal error")


def deadline_exceeded() -> ConnectError:
    """The error sent when a call outlives its timeout."""
    return ConnectError(Code.DEADLINE_EXCEEDED, "the call exceeded its deadline")


DEADLINE_GRACE = 0.005
"""Seconds past ``ctx.deadline`` before the server itself ends a call.

Clients round their timeout header down (to milliseconds, for Connect), so
the deadline seen here can fall just before the client's own. Answering
``deadline_exceeded`` at that moment races the client's timer: ASGI servers
write a reply's head and body separately, and a client whose timer fires
between the two has read a head but no error body. A little later, the client
has always given up first, and its own ``deadline_exceeded`` stands.
Handlers see the client's deadline unchanged.
"""


def shutting_down() -> ConnectError:
    """The error of a call refused, or a stream ended, because the server stops."""
    return ConnectError(
        Code.UNAVAILABLE, "the server is shutting down; retry on another instance"
    )


def check_drain(grace: float) -> None:
    """Raise ``unavailable`` once shutdown began ``grace`` seconds ago.

    Unary calls the server still hands over while it drains (a request on a
    kept-alive connection) are served until then: they are short, and the
    server chose to accept them. Streams are refused from the start.
    """
    started = DRAIN.started
    if started is not None and time.monotonic() >= started + grace:
        raise shutting_down()


def check_deadline(ctx: RequestContext) -> None:
    """Raise deadline_exceeded when the call is past its deadline (sync apps)."""
    if ctx.deadline is not None and time.monotonic() >= ctx.deadline + DEADLINE_GRACE:
        raise deadline_exceeded()


def escaped_route(raw_path: bytes | None, endpoint: Endpoint) -> bool:
    """Whether a request routed to ``endpoint`` spelled its procedure with
    percent-escapes (``%2F`` for the slash, ...).

    Routes match the decoded path the server gives; a procedure name never
    needs an escape, so one whose raw path differs is not found, as it would
    not be by a server that routes on the raw path. ``raw_path`` may carry a
    query string, and a prefix the app is mounted under may be escaped. None
    when the server gives no raw path: the decoded one is all there is.
    """
    if raw_path is None or b"%" not in raw_path:
        return False
    return not raw_path.partition(b"?")[0].endswith(endpoint.raw_procedure)


NOT_FOUND = Reply(404, [(b"content-length", b"0")])
"""The reply to an unknown procedure: a plain 404, as Connect specifies."""


def call_hooks_sync(
    hooks: Iterable[Callable[[RequestContext], Any]], ctx: RequestContext
) -> None:
    """Run ``on_request`` hooks of sync interceptors."""
    for h in hooks:
        h(ctx)


async def call_hooks_async(
    hooks: Iterable[Callable[[RequestContext], Awaitable[None]]], ctx: RequestContext
) -> None:
    """Run ``on_request`` hooks of async interceptors."""
    for h in hooks:
        await h(ctx)
