"""The protocol interface of the server: the leaf module protocols build on.

``ServerProtocol`` recognizes a request and makes a ``ServerCall``, the sans-IO
state of one call that the shells (``asgi.py``, ``wsgi.py``) drive; ``Reply`` is a
whole response, ``Endpoint`` one route. The protocols (``connect.py``,
``grpc.py``) see the app's core only through ``CoreView``; ``protocols.py``
lists the default ones and ``core.py`` builds them. Nothing here imports the
rest of the server.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Codec
from protoc_gen_connect_python.runtime.compression import Compression
from protoc_gen_connect_python.runtime.context import RequestContext
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers
from protoc_gen_connect_python.runtime.method import Idempotency, MethodSpec, StreamType
from protoc_gen_connect_python.runtime.server.options import ServerOptions

logger = logging.getLogger("protoc_gen_connect_python.server")
"""Where handler exceptions that are not ConnectError are logged, with traceback."""


RawHeaders = list[tuple[bytes, bytes]]
"""Header pairs as ASGI sends them: lower-case names, latin-1 bytes."""


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


EndHook = Callable[[RequestContext, ConnectError | None], None]
"""An interceptor's ``on_end``."""


class CoreView(Protocol):
    """What a protocol and its calls read of the app's ``ServerCore``.

    A structural type, so that the protocols need not import the core that
    builds them (``core.py`` imports ``protocols.py``, never the reverse).
    """

    options: ServerOptions
    codecs: dict[str, Codec]
    compressions: dict[str, Compression]
    accept_encoding: str
    """Comma-separated supported algorithms, as sent in accept-encoding headers."""

    def response_compression(self, accept: str | None) -> Compression | None:
        """The algorithm to compress the response with, from the client's accept list."""
        ...

    def reject_415(self) -> HTTPReject:
        """The 415 refusal listing every supported content type."""
        ...


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
        core: CoreView,
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
        core: CoreView,
        endpoint: Endpoint,
        codec: Codec | None,
        ctx: RequestContext,
        head: Head,
        query: str | None,
    ) -> ServerCall:
        """A call object for one request; must not raise."""


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
