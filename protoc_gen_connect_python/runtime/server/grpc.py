"""gRPC and gRPC-Web on the server: one call class, two ways to end a call.

gRPC sends the status in HTTP trailers (or, for an error before any message,
in the headers of a trailers-only response); gRPC-Web sends the same trailers
as a 0x80-flagged envelope at the end of the body, which any HTTP/1.1 or WSGI
server can carry.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Codec
from protoc_gen_connect_python.runtime.compression import (
    IDENTITY,
    Compression,
    negotiate,
)
from protoc_gen_connect_python.runtime.context import RequestContext
from protoc_gen_connect_python.runtime.envelope import (
    FLAG_TRAILERS,
    EnvelopeDecoder,
    decode_payload,
    encode_envelope,
    encode_message,
)
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers, parse_grpc_timeout
from protoc_gen_connect_python.runtime.method import StreamType
from protoc_gen_connect_python.runtime.protocol import grpc as wire
from protoc_gen_connect_python.runtime.server.core import (
    Endpoint,
    RawHeaders,
    Reply,
    ServerCall,
    ServerProtocol,
    to_raw,
)

if TYPE_CHECKING:
    from protoc_gen_connect_python.runtime.server.core import ServerCore


class GRPCProtocol(ServerProtocol):
    """``application/grpc[+codec]`` (``web=False``) or ``application/grpc-web[+codec]``."""

    def __init__(self, core: ServerCore, *, web: bool) -> None:
        self.web = web
        self.name = "grpc-web" if web else "grpc"
        self.accept = (b"grpc-accept-encoding", core.accept_encoding.encode("latin-1"))
        self._ct: dict[str, tuple[bytes, bytes]] = {}

    def codec_name(self, media_type: str) -> str | None:
        """The codec of the media type, or None when it is another protocol's."""
        return wire.codec_from_content_type(media_type, self.web)

    def handles(self, stream_type: StreamType) -> bool:
        """Every kind of method."""
        return True

    def content_types(self, codec_names: Iterable[str]) -> list[str]:
        """``application/grpc+proto``, ..."""
        return [wire.content_type(self.web, n) for n in codec_names]

    def content_type_header(self, codec: Codec) -> tuple[bytes, bytes]:
        """The response content-type pair for ``codec``."""
        pair = self._ct.get(codec.name)
        if pair is None:
            pair = (b"content-type", wire.content_type(self.web, codec.name).encode())
            self._ct[codec.name] = pair
        return pair

    def new_call(
        self,
        core: ServerCore,
        endpoint: Endpoint,
        codec: Codec | None,
        headers: Headers,
        peer: str | None,
        query: str | None,
    ) -> ServerCall:
        """A gRPC or gRPC-Web call."""
        ctx = RequestContext(endpoint.spec, self.name, headers, peer=peer)
        return GRPCCall(core, endpoint, codec, ctx, self)


class GRPCCall(ServerCall):
    """One gRPC or gRPC-Web call of any kind."""

    __slots__ = ("_decoder", "_proto", "_recv_comp", "_send_comp")

    def __init__(
        self,
        core: ServerCore,
        endpoint: Endpoint,
        codec: Codec | None,
        ctx: RequestContext,
        proto: GRPCProtocol,
    ) -> None:
        super().__init__(core, endpoint, codec, ctx)
        self._proto = proto
        self._recv_comp: Compression | None = None
        self._send_comp: Compression | None = None
        self._decoder = EnvelopeDecoder(core.options.read_max_bytes)

    @property
    def needs_trailers(self) -> bool:  # type: ignore[override]
        """gRPC needs HTTP trailers; gRPC-Web carries them in the body."""
        return not self._proto.web

    def parse_head(self) -> None:
        """Timeout and encodings."""
        core = self.core
        h = self.ctx.request_headers
        timeout = h.get(wire.TIMEOUT_HEADER)
        if timeout is not None:
            try:
                self.ctx.deadline = time.monotonic() + parse_grpc_timeout(timeout)
            except ValueError as e:
                raise ConnectError(Code.INVALID_ARGUMENT, str(e)) from None
        name = h.get(wire.ENCODING)
        if name and name != IDENTITY:
            comp = core.compressions.get(name)
            if comp is None:
                raise ConnectError(
                    Code.UNIMPLEMENTED,
                    f"unknown compression {name!r}: supported encodings are "
                    f"{core.accept_encoding or IDENTITY}",
                )
            self._recv_comp = comp
        accept = h.get(wire.ACCEPT_ENCODING)
        if accept:
            chosen = negotiate(accept, core.compressions)
            if chosen is not None:
                self._send_comp = core.compressions[chosen]

    @property
    def unary_body_limit(self) -> int:
        """The message limit plus its envelope header."""
        limit = self.core.options.read_max_bytes
        return limit + 5 if limit else 0

    def decode_unary(self, body: bytes) -> Message:
        """Exactly one enveloped message."""
        msgs = self.feed(body)
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
        headers.append(self._proto.accept)
        if self.ctx.response_headers:
            headers.extend(to_raw(self.ctx.response_headers))
        headers.extend(to_raw(wire.status_trailers(err, self.ctx.response_trailers)))
        return Reply(200, headers)

    def feed(self, data: bytes) -> list[Message]:
        """Decode every request message completed by ``data``."""
        assert self.codec is not None
        out: list[Message] = []
        limit = self.core.options.read_max_bytes
        for flags, payload in self._decoder.feed(data):
            if flags & FLAG_TRAILERS:
                raise ConnectError(
                    Code.INTERNAL, "protocol error: trailers frame from the client"
                )
            payload = decode_payload(flags, payload, self._recv_comp, limit)
            out.append(self.codec.decode(payload, self.endpoint.spec.input))
        return out

    def close_input(self) -> None:
        """Fail if the body ended inside a message."""
        self._decoder.close(Code.INTERNAL)

    @property
    def input_needed(self) -> int:
        """Bytes still missing from the next envelope part."""
        return self._decoder.needed

    def stream_head(self) -> tuple[int, RawHeaders]:
        """200, content type, encodings and the handler's headers."""
        assert self.codec is not None
        headers: RawHeaders = [self._proto.content_type_header(self.codec)]
        if self._send_comp is not None:
            headers.append((b"grpc-encoding", self._send_comp.name.encode("latin-1")))
        headers.append(self._proto.accept)
        if self.ctx.response_headers:
            headers.extend(to_raw(self.ctx.response_headers))
        return 200, headers

    def encode_stream_message(self, message: Message) -> bytes:
        """One envelope, compressed when large enough."""
        assert self.codec is not None
        opts = self.core.options
        return encode_message(
            self.codec.encode(message),
            self._send_comp,
            opts.compress_min_bytes,
            opts.send_max_bytes,
        )

    def encode_stream_end(
        self, err: ConnectError | None
    ) -> tuple[bytes, RawHeaders | None]:
        """gRPC: HTTP trailers; gRPC-Web: the 0x80 trailers frame."""
        trailers = wire.status_trailers(err, self.ctx.response_trailers)
        if self._proto.web:
            block = wire.encode_trailers_block(trailers)
            return encode_envelope(FLAG_TRAILERS, block), None
        return b"", to_raw(trailers)
