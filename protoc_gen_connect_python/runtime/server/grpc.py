"""gRPC and gRPC-Web on the server: one call class, two ways to end a call.

gRPC sends the status in HTTP trailers (or, for an error before any message,
in the headers of a trailers-only response); gRPC-Web sends the same trailers
as a 0x80-flagged envelope at the end of the body, which any HTTP/1.1 or WSGI
server can carry.
"""

from __future__ import annotations

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Codec
from protoc_gen_connect_python.runtime.context import RequestContext
from protoc_gen_connect_python.runtime.envelope import FLAG_TRAILERS, encode_envelope
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import parse_grpc_timeout
from protoc_gen_connect_python.runtime.method import StreamType
from protoc_gen_connect_python.runtime.protocol import grpc as wire
from protoc_gen_connect_python.runtime.server.base import (
    CodecProtocol,
    EnvelopeCall,
    parse_deadline,
    request_compression,
    response_compression,
)
from protoc_gen_connect_python.runtime.server.call import (
    CoreView,
    Endpoint,
    Head,
    RawHeaders,
    Reply,
    ServerCall,
    to_raw,
)


class GRPCProtocol(CodecProtocol):
    """``application/grpc[+codec]`` (``web=False``) or ``application/grpc-web[+codec]``."""

    def __init__(self, core: CoreView, *, web: bool) -> None:
        super().__init__(core, b"grpc-accept-encoding")
        self.web = web
        self.name = "grpc-web" if web else "grpc"

    def codec_name(self, media_type: str) -> str | None:
        """The codec of the media type, or None when it is another protocol's."""
        return wire.codec_from_content_type(media_type, self.web)

    def handles(self, stream_type: StreamType) -> bool:
        """Every kind of method."""
        return True

    def content_type(self, codec_name: str) -> str:
        """``application/grpc+proto``, ``application/grpc-web+proto``, ..."""
        return wire.content_type(self.web, codec_name)

    def new_call(
        self,
        core: CoreView,
        endpoint: Endpoint,
        codec: Codec | None,
        ctx: RequestContext,
        head: Head,
        query: str | None,
    ) -> ServerCall:
        """A gRPC or gRPC-Web call."""
        return GRPCCall(core, endpoint, codec, ctx, head, self)


class GRPCCall(EnvelopeCall):
    """One gRPC or gRPC-Web call of any kind."""

    __slots__ = ()

    _proto: GRPCProtocol
    _client_flag = FLAG_TRAILERS
    _client_flag_error = (
        Code.INTERNAL,
        "protocol error: trailers frame from the client",
    )
    _incomplete_code = Code.INTERNAL
    _encoding_header = b"grpc-encoding"

    @property
    def needs_trailers(self) -> bool:  # type: ignore[override]
        """gRPC needs HTTP trailers; gRPC-Web carries them in the body."""
        return not self._proto.web

    def parse_head(self) -> None:
        """Timeout and encodings."""
        core = self.core
        h = self.head
        self.ctx.deadline = parse_deadline(
            h.get(wire.TIMEOUT_HEADER), parse_grpc_timeout
        )
        self._recv_comp = request_compression(h.get(wire.ENCODING), core)
        self._send_comp = response_compression(h.get(wire.ACCEPT_ENCODING), core)

    @property
    def unary_body_limit(self) -> int:
        """The message limit plus its envelope header."""
        limit = self.core.options.read_max_bytes
        return limit + 5 if limit else 0

    def decode_unary(self, body: bytes) -> Message:
        """Exactly one enveloped message."""
        msgs = list(self.feed(body))
        self.close_input()
        if len(msgs) != 1:
            raise ConnectError(
                Code.UNIMPLEMENTED,
                f"protocol error: unary request has {len(msgs)} messages",
            )
        return msgs[0]

    def encode_unary(self, message: Message) -> Reply:
        """Head, one message, and the OK status."""
        status, headers = self.stream_head()
        body = self.encode_stream_message(message)
        end, trailers = self.encode_stream_end(None)
        return Reply(status, headers, body + end, trailers)

    def encode_error(self, err: ConnectError) -> Reply:
        """Head, no messages, and the status in trailers (a frame for gRPC-Web).

        Not a trailers-only response: ASGI cannot end an HTTP/2 stream on its
        HEADERS frame, and an empty DATA frame before the status confuses
        clients.
        """
        status, headers = self.stream_head()
        end, trailers = self.encode_stream_end(err)
        return Reply(status, headers, end, trailers)

    def encode_refusal(self, err: ConnectError) -> Reply:
        """Trailers-only: the status in the headers, for servers without trailers."""
        codec = self.codec
        headers = [self._proto.content_type_header(codec)] if codec else []
        headers.extend(self._proto.accept)
        extra = self.ctx._response_headers
        if extra:
            headers.extend(to_raw(extra))
        headers.extend(to_raw(wire.status_trailers(err, self.ctx.response_trailers)))
        return Reply(200, headers)

    def encode_stream_end(
        self, err: ConnectError | None
    ) -> tuple[bytes, RawHeaders | None]:
        """gRPC: HTTP trailers; gRPC-Web: the 0x80 trailers frame."""
        trailers = wire.status_trailers(err, self.ctx.response_trailers)
        if self._proto.web:
            block = wire.encode_trailers_block(trailers)
            return encode_envelope(FLAG_TRAILERS, block), None
        return b"", to_raw(trailers)
