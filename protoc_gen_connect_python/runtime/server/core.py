"""The server logic both apps share, free of I/O.

``ServerCore`` turns service instances into a route table, picks the protocol of
each request from its HTTP method and content type, and hands the app shell a
``ServerCall``: a protocol-specific object that parses the request head, decodes
request messages and encodes the response (head, messages, end, errors) as
plain bytes. The ASGI and WSGI shells only move those bytes and run the handler,
awaiting it or not; every decision is made here or in the protocol modules.

Adding a protocol means one ``ServerProtocol`` subclass (how to recognize its
content types, which stream kinds it serves, how to make a call object) and one
``ServerCall`` subclass; see ``connect.py``.
"""

from __future__ import annotations

import abc
import http
import inspect
import logging
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
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, cast

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
from protoc_gen_connect_python.runtime.headers import Headers
from protoc_gen_connect_python.runtime.interceptors import (
    AsyncServerInterceptor,
    SyncServerInterceptor,
    overrides_on_end,
    overrides_on_request,
)
from protoc_gen_connect_python.runtime.method import (
    Idempotency,
    MethodSpec,
    StreamType,
)
from protoc_gen_connect_python.runtime.shutdown import DRAIN

logger = logging.getLogger("protoc_gen_connect_python.server")
"""Where handler exceptions that are not ConnectError are logged, with traceback."""

RawHeaders = list[tuple[bytes, bytes]]
"""Header pairs as ASGI sends them: lower-case names, latin-1 bytes."""

MiB = 1024 * 1024

HEAD_NAMES = (
    "content-type",
    "content-length",
    "connect-protocol-version",
    "connect-timeout-ms",
    "content-encoding",
    "accept-encoding",
    "connect-content-encoding",
    "connect-accept-encoding",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
)
"""The request headers the built-in protocols read (``ServerCall.head``).

The shells pick these out of the request in one pass, so a call never decodes
or stores the rest unless the handler reads ``ctx.request_headers``.
"""

Head = dict[str, str]
"""The first value of each ``HEAD_NAMES`` header present, by lower-case name."""


class RequestSource(RequestView, Protocol):
    """A shell's view of its request object: headers, peer and query on demand."""

    def query(self, src: Any) -> str:
        """The raw query string (for Connect GET)."""
        ...


@dataclass(frozen=True)
class ServerOptions:
    """Settings shared by ``ASGIApp`` and ``WSGIApp``; pass them as keywords."""

    read_max_bytes: int = 4 * MiB
    """Largest request message accepted, compressed and again decompressed
    (0 = no limit). Checked before the bytes are buffered."""
    send_max_bytes: int = 0
    """Largest response message sent, after compression (0 = no limit). A
    handler's own output is trusted by default, as in gRPC."""
    compress_min_bytes: int = 1024
    """Responses smaller than this are sent uncompressed; compressing them costs
    more than it saves."""
    compressions: tuple[str | Compression, ...] | None = None
    """Accepted and offered algorithms, by name or object, in order of
    preference; None means every one available (gzip, and br and zstd when
    their packages are installed). An empty tuple means identity only."""
    codecs: tuple[Codec, ...] = ()
    """Codecs in addition to the built-in ``proto`` and ``json`` (a codec with
    one of those names replaces the built-in one)."""
    require_connect_protocol_header: bool = False
    """Reject Connect requests without ``Connect-Protocol-Version`` (or, for GET,
    the ``connect=v1`` query parameter), which proves the caller is a Connect
    client and not a plain HTTP form post."""
    expose_internal_errors: bool = False
    """Send the text of exceptions that are not ConnectError to clients. Off by
    default: such text may leak internals. They are logged either way."""
    prime_allocator: bool = True
    """Let the C allocator keep large blocks for reuse from the start (see
    ``runtime.allocator.prime_allocator``); it is a setting of the whole
    process."""
    shutdown_grace: float = 10.0
    """Seconds streams may run on once shutdown began (SIGTERM, lifespan
    shutdown); those still open then end with ``unavailable``. Keep it below
    the server's own limit (gunicorn's ``--graceful-timeout``, hypercorn's
    ``--graceful-timeout``, uvicorn's ``--timeout-graceful-shutdown``)."""


class ServerOptionsKwargs(TypedDict, total=False):
    """``ServerOptions`` fields as keyword arguments of the app constructors."""

    read_max_bytes: int
    send_max_bytes: int
    compress_min_bytes: int
    compressions: tuple[str | Compression, ...] | None
    codecs: tuple[Codec, ...]
    require_connect_protocol_header: bool
    expose_internal_errors: bool
    prime_allocator: bool
    shutdown_grace: float


class Reply:
    """A complete response whose bytes are known: status, headers, body, trailers.

    ``trailers`` is None unless the protocol sends HTTP trailers (gRPC).
    """

    __slots__ = ("body", "headers", "status", "trailers")

    def __init__(
        self,
        status: int,
        headers: RawHeaders,
        body: bytes = b"",
        trailers: RawHeaders | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.trailers = trailers


class HTTPReject(Exception):
    """A request refused at the HTTP level (404, 405, 415), before any protocol."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply

    def error(self) -> ConnectError:
        """The refusal as the code a client infers from its HTTP status."""
        status = self.reply.status
        return ConnectError(
            Code.from_http_status(status), f"refused with HTTP status {status}"
        )


def client_gone() -> ConnectError:
    """How ``on_end`` hooks see a call whose client went away."""
    return ConnectError(Code.CANCELED, "the client went away")


EndHook = Callable[[RequestContext, ConnectError | None], None]
"""An interceptor's ``on_end``."""


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


CONTENT_LENGTHS: dict[int, tuple[bytes, bytes]] = {}


def content_length(size: int) -> tuple[bytes, bytes]:
    """The ``content-length`` header pair for ``size``.

    Reply sizes repeat; one pair object per size saves formatting the number
    and, in WSGI, hashing a new value to find its decoded form.
    """
    pair = CONTENT_LENGTHS.get(size)
    if pair is None:
        pair = (b"content-length", b"%d" % size)
        if len(CONTENT_LENGTHS) < 1024:
            CONTENT_LENGTHS[size] = pair
    return pair


def status_line(status: int) -> str:
    """A WSGI status line (``"200 OK"``)."""
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"{status} Unknown"


def to_raw(headers: Headers) -> RawHeaders:
    """``Headers`` as raw pairs."""
    return [
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.multi_items()
    ]


# ---------------------------------------------------------------------------
# Protocol interface
# ---------------------------------------------------------------------------


class ServerCall(abc.ABC):
    """One call under one protocol: the sans-IO state the app shells drive.

    The shell calls ``parse_head`` first (it may raise ConnectError, or
    HTTPReject), then ``decode_unary`` with the buffered body (or ``preread``)
    for unary methods, or ``feed``/``close_input`` with body chunks for streaming
    ones. It answers with ``encode_unary`` or ``encode_error`` (nothing sent yet),
    or ``stream_head``, ``encode_stream_message`` and ``encode_stream_end``.
    """

    __slots__ = ("codec", "core", "ctx", "endpoint", "head", "preread")

    def end(self, error: ConnectError | None) -> None:
        """Run the interceptors' ``on_end`` hooks: the call ends with ``error``.

        The shells call it once per call, when the outcome is known and before
        the last bytes go out, if ``endpoint.ends`` is not empty.
        """
        run_end_hooks(self.endpoint.ends, self.ctx, error)

    needs_trailers = False
    """Whether the protocol needs HTTP trailers (gRPC): WSGI needs a server extension."""

    def __init__(
        self,
        core: ServerCore,
        endpoint: Endpoint,
        codec: Codec | None,
        ctx: RequestContext,
        head: Head,
    ) -> None:
        self.core = core
        self.endpoint = endpoint
        self.codec = codec
        self.ctx = ctx
        self.head = head
        """The request headers the protocol reads (see ``HEAD_NAMES``)."""
        self.preread: bytes | None = None
        """The request body when it did not come in the HTTP body (Connect GET)."""

    @abc.abstractmethod
    def parse_head(self) -> None:
        """Validate the request head; set the deadline and compression."""

    @property
    def unary_body_limit(self) -> int:
        """Largest request body accepted for a unary call (0 = no limit)."""
        return self.core.options.read_max_bytes

    def body_too_large(self) -> ConnectError:
        """The error for a unary body over ``unary_body_limit``.

        It names the configured message limit, which is what the client can
        act on, not the body limit, which may allow for framing (gRPC).
        """
        limit = self.core.options.read_max_bytes
        return ConnectError(
            Code.RESOURCE_EXHAUSTED,
            f"request message is larger than configured max {limit} bytes",
        )

    @abc.abstractmethod
    def decode_unary(self, body: bytes) -> Message:
        """The request message of a unary call from its whole body."""

    @abc.abstractmethod
    def encode_unary(self, message: Message) -> Reply:
        """The whole response of a successful unary call."""

    @abc.abstractmethod
    def encode_error(self, err: ConnectError) -> Reply:
        """The whole response for an error when nothing was sent yet."""

    def encode_refusal(self, err: ConnectError) -> Reply:
        """A whole error response that needs no HTTP trailers (gRPC: trailers-only)."""
        return self.encode_error(err)

    @abc.abstractmethod
    def feed(self, data: bytes) -> Iterator[Message]:
        """Request messages completed by ``data`` (streaming methods).

        Each is decoded as it is taken, so a read that completes many never
        holds them all decoded at once.
        """

    @abc.abstractmethod
    def close_input(self) -> None:
        """The request body ended; raise if it ended mid-message."""

    @property
    @abc.abstractmethod
    def input_needed(self) -> int:
        """How many bytes the next message still needs (blocking readers use it)."""

    @abc.abstractmethod
    def stream_head(self) -> tuple[int, RawHeaders]:
        """Status and headers of a streaming response."""

    @abc.abstractmethod
    def encode_stream_message(self, message: Message) -> bytes:
        """One framed response message."""

    def stream_framer(self) -> Callable[[Message, list[bytes]], int]:
        """``encode_stream_message`` as the quickest callable for this call.

        The shells ask once, after ``parse_head``, and call it per message
        with the pieces of their next write: it adds the framed message to
        them and returns its size.
        """
        encode = self.encode_stream_message

        def frame(message: Message, out: list[bytes]) -> int:
            data = encode(message)
            out.append(data)
            return len(data)

        return frame

    @abc.abstractmethod
    def encode_stream_end(
        self, err: ConnectError | None
    ) -> tuple[bytes, RawHeaders | None]:
        """The last body bytes and, for protocols with HTTP trailers, the trailers."""


class ServerProtocol(abc.ABC):
    """A wire protocol the server speaks, recognized by content type."""

    name: str
    """The protocol name handlers see as ``ctx.protocol``."""

    @abc.abstractmethod
    def codec_name(self, media_type: str) -> str | None:
        """The codec named by a lower-case media type without parameters, or None."""

    @abc.abstractmethod
    def handles(self, stream_type: StreamType) -> bool:
        """Whether this protocol serves methods of this kind."""

    @abc.abstractmethod
    def content_types(self, codec_names: Iterable[str]) -> list[str]:
        """The media types it accepts, for ``Accept-Post``."""

    @abc.abstractmethod
    def new_call(
        self,
        core: ServerCore,
        endpoint: Endpoint,
        codec: Codec | None,
        ctx: RequestContext,
        head: Head,
        query: str | None,
    ) -> ServerCall:
        """A call object for one request; must not raise."""


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


async def aclose_iterator(it: object) -> None:
    """Close an async generator (or anything with ``aclose``); others are left be."""
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()


def close_iterator(it: object) -> None:
    """Close a generator (or anything with ``close``)."""
    close = getattr(it, "close", None)
    if close is not None:
        close()


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


@dataclass(eq=False)
class Endpoint:
    """One route: the method spec and its handler, adapted and intercepted."""

    spec: MethodSpec[Any, Any]
    unary: Callable[..., Any] | None
    """``(request, ctx) -> response`` (awaitable for async apps), unary methods."""
    stream: Callable[..., Any] | None
    """``(requests, ctx) -> responses``, streaming methods."""
    hooks: tuple[Callable[[RequestContext], Any], ...]
    """Interceptors' ``on_request`` hooks, in order."""
    ends: tuple[EndHook, ...] = ()
    """Interceptors' ``on_end`` hooks, innermost interceptor first."""
    allow_get: bool = field(init=False)
    allow: str = field(init=False)
    """The ``Allow`` header of a 405 reply."""
    raw_procedure: bytes = field(init=False)
    """The procedure as it ends an unescaped request path."""

    def __post_init__(self) -> None:
        self.raw_procedure = self.spec.procedure.encode("ascii")
        self.allow_get = (
            self.spec.stream_type is StreamType.UNARY
            and self.spec.idempotency is Idempotency.NO_SIDE_EFFECTS
        )
        self.allow = "GET, POST" if self.allow_get else "POST"


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
        from protoc_gen_connect_python.runtime.server import connect, grpc

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
            else (
                grpc.GRPCProtocol(self, web=True),
                grpc.GRPCProtocol(self, web=False),
                connect.ConnectStreamProtocol(self),
                self.connect_unary,
            )
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


def check_response(spec: MethodSpec[Any, Any], message: object) -> None:
    """Refuse a handler's response that is not the method's output message.

    A message of another type would be sent as if it were one (the bytes of
    one protobuf message parse as another, often silently), so the call fails
    with ``internal`` instead, and the mistake is logged.
    """
    output = spec.output
    if type(message) is output or isinstance(message, output):
        return
    logger.error(
        "%s: the handler produced a %s, not a %s; the call fails with internal",
        spec.procedure,
        type(message).__qualname__,
        output.__qualname__,
    )
    raise ConnectError(
        Code.INTERNAL, "the server produced a response of the wrong type"
    )


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


def run_end_hooks(
    ends: Iterable[EndHook], ctx: RequestContext, error: ConnectError | None
) -> None:
    """Run ``on_end`` hooks; one that fails is logged and the others still run."""
    for end in ends:
        try:
            end(ctx, error)
        except Exception:
            logger.exception(
                "an interceptor's on_end failed for %s", ctx.method.procedure
            )


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
