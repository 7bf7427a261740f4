"""What the built-in server protocols share: content types, compression, envelopes.

Connect, gRPC and gRPC-Web read the same request headers in different names and
frame messages the same way; the rules they have in common are written here
once, and ``connect.py`` and ``grpc.py`` keep only what differs.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Codec, Payload, decoder, encoder
from protoc_gen_connect_python.runtime.compression import IDENTITY, Compression
from protoc_gen_connect_python.runtime.context import RequestContext
from protoc_gen_connect_python.runtime.envelope import (
    FLAG_COMPRESSED,
    EnvelopeDecoder,
    decode_payload,
    encode_message,
    message_framer,
)
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.server.call import (
    CoreView,
    Endpoint,
    Head,
    RawHeaders,
    ServerCall,
    ServerProtocol,
    check_response,
    to_raw,
)


def request_compression(name: str | None, core: CoreView) -> Compression | None:
    """The algorithm a request body is compressed with; None for identity."""
    if not name or name == IDENTITY:
        return None
    comp = core.compressions.get(name)
    if comp is None:
        raise ConnectError(
            Code.UNIMPLEMENTED,
            f"unknown compression {name!r}: supported encodings are "
            f"{core.accept_encoding or IDENTITY}",
        )
    return comp


def response_compression(accept: str | None, core: CoreView) -> Compression | None:
    """The algorithm to compress the response with, from the client's accept list."""
    return core.response_compression(accept) if accept else None


def parse_deadline(value: str | None, parse: Callable[[str], float]) -> float | None:
    """The monotonic deadline of a timeout header; a malformed one is the client's error."""
    if value is None:
        return None
    try:
        return time.monotonic() + parse(value)
    except ValueError as e:
        raise ConnectError(Code.INVALID_ARGUMENT, str(e)) from None


class CodecProtocol(ServerProtocol):
    """A protocol whose media types follow from the codec name.

    ``accept`` holds the response header that lists the encodings the server
    accepts, or nothing when it accepts none (``compressions=()``); it and
    every content-type header are computed once.
    """

    def __init__(self, core: CoreView, accept_header: bytes) -> None:
        names = core.accept_encoding.encode("latin-1")
        self.accept: tuple[tuple[bytes, bytes], ...] = (
            ((accept_header, names),) if names else ()
        )
        self._ct: dict[str, tuple[bytes, bytes]] = {}

    @abc.abstractmethod
    def content_type(self, codec_name: str) -> str:
        """The media type of this protocol for ``codec_name``."""

    def content_types(self, codec_names: Iterable[str]) -> list[str]:
        """The media types for these codecs, for ``Accept-Post``."""
        return [self.content_type(n) for n in codec_names]

    def content_type_header(self, codec: Codec) -> tuple[bytes, bytes]:
        """The precomputed response content-type pair for ``codec``."""
        pair = self._ct.get(codec.name)
        if pair is None:
            pair = (b"content-type", self.content_type(codec.name).encode())
            self._ct[codec.name] = pair
        return pair


class EnvelopeCall(ServerCall):
    """A call whose request and response bodies are sequences of envelopes."""

    __slots__ = ("_decode", "_decoder", "_proto", "_recv_comp", "_send_comp")

    _client_flag: ClassVar[int]
    """An envelope flag clients must not send."""
    _client_flag_error: ClassVar[tuple[Code, str]]
    """The error for a request envelope with that flag."""
    _incomplete_code: ClassVar[Code]
    """The code for a request body that ends inside an envelope."""
    _encoding_header: ClassVar[bytes]
    """The response header naming the message compression."""

    def __init__(
        self,
        core: CoreView,
        endpoint: Endpoint,
        codec: Codec | None,
        ctx: RequestContext,
        head: Head,
        proto: CodecProtocol,
    ) -> None:
        # Not super(): on 3.11 it costs about 1k instructions per call.
        ServerCall.__init__(self, core, endpoint, codec, ctx, head)
        self._proto = proto
        self._recv_comp: Compression | None = None
        self._send_comp: Compression | None = None
        self._decoder = EnvelopeDecoder(core.options.read_max_bytes)
        self._decode = None if codec is None else decoder(codec)

    def feed(self, data: bytes) -> Iterator[Message]:
        """Decode the request messages completed by ``data``, as they are taken."""
        # Split now (the decoder's state moves on with every read), decode later.
        return self._messages(self._decoder.feed_views(data))

    def _messages(self, frames: list[tuple[int, Payload]]) -> Iterator[Message]:
        decode = self._decode
        assert decode is not None
        limit = self.core.options.read_max_bytes
        for flags, payload in frames:
            if flags & ~FLAG_COMPRESSED:
                raise self._flags_error(flags)
            payload = decode_payload(flags, payload, self._recv_comp, limit)
            yield decode(payload, self.endpoint.spec.input)

    def _flags_error(self, flags: int) -> ConnectError:
        # Requests may set only the compressed bit; the others are defined
        # for responses (end of stream, trailers) or not at all.
        if flags & self._client_flag:
            return ConnectError(*self._client_flag_error)
        return ConnectError(
            Code.INTERNAL, f"protocol error: invalid envelope flags 0x{flags:02x}"
        )

    def close_input(self) -> None:
        """Fail if the body ended inside a message."""
        self._decoder.close(self._incomplete_code)

    @property
    def input_needed(self) -> int:
        """Bytes still missing from the next envelope header or payload."""
        return self._decoder.needed

    def stream_head(self) -> tuple[int, RawHeaders]:
        """200, content type, encodings and the handler's headers."""
        assert self.codec is not None
        headers: RawHeaders = [self._proto.content_type_header(self.codec)]
        if self._send_comp is not None:
            headers.append(
                (self._encoding_header, self._send_comp.name.encode("latin-1"))
            )
        headers.extend(self._proto.accept)
        extra = self.ctx._response_headers
        if extra:
            headers.extend(to_raw(extra))
        return 200, headers

    def encode_stream_message(self, message: Message) -> bytes:
        """One envelope, compressed when large enough."""
        assert self.codec is not None
        check_response(self.endpoint.spec, message)
        opts = self.core.options
        return encode_message(
            self.codec.encode(message),
            self._send_comp,
            opts.compress_min_bytes,
            opts.send_max_bytes,
        )

    def stream_framer(self) -> Callable[[Message, list[bytes]], int]:
        """One closure per stream: no option or compression lookups per message."""
        assert self.codec is not None
        opts = self.core.options
        spec = self.endpoint.spec
        output = spec.output
        encode = encoder(self.codec)

        def encode_checked(message: Message) -> bytes:
            if type(message) is not output:
                check_response(spec, message)
            return encode(message)

        return message_framer(
            encode_checked,
            self._send_comp,
            opts.compress_min_bytes,
            opts.send_max_bytes,
        )
