"""The Connect protocol on the server: unary (POST and GET) and streaming calls.

The wire rules themselves (error JSON, end-of-stream message, GET query) live in
``runtime.protocol.connect`` and are shared with the clients; this module holds
the per-call state machines the app shells drive.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Codec
from protoc_gen_connect_python.runtime.compression import Compression
from protoc_gen_connect_python.runtime.context import RequestContext
from protoc_gen_connect_python.runtime.envelope import (
    FLAG_END_STREAM,
    encode_envelope,
)
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers, parse_connect_timeout
from protoc_gen_connect_python.runtime.method import StreamType
from protoc_gen_connect_python.runtime.protocol import connect as wire
from protoc_gen_connect_python.runtime.server.base import (
    CodecProtocol,
    EnvelopeCall,
    parse_deadline,
    request_compression,
    response_compression,
)
from protoc_gen_connect_python.runtime.server.call import (
    CONTENT_LENGTHS,
    CoreView,
    Endpoint,
    Head,
    RawHeaders,
    Reply,
    ServerCall,
    check_response,
    content_length,
    to_raw,
)

PROTOCOL = "connect"

_CT_ERROR = (b"content-type", b"application/json")


def _add_headers(out: RawHeaders, headers: Headers | None) -> None:
    if headers:
        out.extend(to_raw(headers))


def _add_trailers(out: RawHeaders, trailers: Headers | None) -> None:
    # Unary responses have no trailers: they travel as prefixed headers.
    if trailers:
        for k, v in trailers.multi_items():
            out.append(
                ((wire.TRAILER_PREFIX + k).encode("latin-1"), v.encode("latin-1"))
            )


class ConnectUnaryProtocol(CodecProtocol):
    """Connect unary: ``application/<codec>`` POST, or GET with query parameters."""

    name = PROTOCOL

    def __init__(self, core: CoreView) -> None:
        super().__init__(core, b"accept-encoding")
        # (codec, compression) -> response head; both are long-lived app objects.
        self._heads: dict[
            tuple[Codec, Compression | None], tuple[tuple[bytes, bytes], ...]
        ] = {}

    def unary_head(
        self, codec: Codec, comp: Compression | None
    ) -> tuple[tuple[bytes, bytes], ...]:
        """The constant start of a successful response's headers, made once.

        Content type, content encoding (when compressed) and accepted encodings.
        """
        key = (codec, comp)
        head = self._heads.get(key)
        if head is None:
            pairs = [self.content_type_header(codec)]
            if comp is not None:
                pairs.append((b"content-encoding", comp.name.encode("latin-1")))
            pairs.extend(self.accept)
            head = self._heads[key] = tuple(pairs)
        return head

    def codec_name(self, media_type: str) -> str | None:
        """The codec of ``application/<codec>``."""
        if media_type.startswith(wire.UNARY_PREFIX):
            return media_type[len(wire.UNARY_PREFIX) :]
        return None

    def handles(self, stream_type: StreamType) -> bool:
        """Only unary methods."""
        return stream_type is StreamType.UNARY

    def content_type(self, codec_name: str) -> str:
        """``application/proto``, ``application/json``, ..."""
        return wire.unary_content_type(codec_name)

    def new_call(
        self,
        core: CoreView,
        endpoint: Endpoint,
        codec: Codec | None,
        ctx: RequestContext,
        head: Head,
        query: str | None,
    ) -> ServerCall:
        """A unary call; ``query`` is set for GET requests."""
        return ConnectUnaryCall(core, endpoint, codec, ctx, head, self, query)


class ConnectUnaryCall(ServerCall):
    """One Connect unary call."""

    __slots__ = ("_proto", "_query", "_recv_comp", "_send_comp")

    def __init__(
        self,
        core: CoreView,
        endpoint: Endpoint,
        codec: Codec | None,
        ctx: RequestContext,
        head: Head,
        proto: ConnectUnaryProtocol,
        query: str | None,
    ) -> None:
        # Not super(): on 3.11 it costs about 1k instructions per call.
        ServerCall.__init__(self, core, endpoint, codec, ctx, head)
        self._proto = proto
        self._query = query
        self._recv_comp: Compression | None = None
        self._send_comp: Compression | None = None

    def parse_head(self) -> None:
        """Check version, timeout and encodings (from headers or the GET query)."""
        core = self.core
        h = self.head
        opts = core.options
        if self._query is not None:
            q = wire.parse_get_query(self._query, opts.require_connect_protocol_header)
            codec = core.codecs.get(q.codec)
            if codec is None:
                raise core.reject_415()
            self.codec = codec
            self._recv_comp = request_compression(q.compression, core)
            limit = opts.read_max_bytes
            if limit and len(q.message) > limit:
                raise ConnectError(
                    Code.RESOURCE_EXHAUSTED,
                    f"request message is larger than configured max {limit} bytes",
                )
            self.preread = q.message
        else:
            version = h.get(wire.VERSION_HEADER)
            if version != wire.PROTOCOL_VERSION:
                wire.check_protocol_version(
                    version, opts.require_connect_protocol_header
                )
            encoding = h.get(wire.UNARY_ENCODING)
            if encoding:
                self._recv_comp = request_compression(encoding, core)
        # The common request has neither a timeout nor an accept list.
        timeout = h.get(wire.TIMEOUT_HEADER)
        if timeout is not None:
            self.ctx.deadline = parse_deadline(timeout, parse_connect_timeout)
        accept = h.get(wire.UNARY_ACCEPT_ENCODING)
        if accept:
            self._send_comp = core.response_compression(accept)

    def decode_unary(self, body: bytes) -> Message:
        """Decompress (bounded) and unmarshal the body."""
        if self._recv_comp is not None:
            body = self._recv_comp.decompress(body, self.core.options.read_max_bytes)
        assert self.codec is not None
        msg: Message = self.codec.decode(body, self.endpoint.spec.input)
        return msg

    def encode_unary(self, message: Message) -> Reply:
        """200 with the marshaled (maybe compressed) message; trailers as headers."""
        codec = self.codec
        assert codec is not None
        if type(message) is not self.endpoint.spec.output:
            check_response(self.endpoint.spec, message)
        opts = self.core.options
        data = codec.encode(message)
        size = len(data)
        comp = self._send_comp
        if comp is not None:
            if size >= opts.compress_min_bytes:
                data = comp.compress(data)
                size = len(data)
            else:
                comp = None
        if opts.send_max_bytes and size > opts.send_max_bytes:
            raise ConnectError(
                Code.RESOURCE_EXHAUSTED,
                f"response message size {size} exceeds send limit "
                f"{opts.send_max_bytes}",
            )
        proto = self._proto
        head = proto._heads.get((codec, comp)) or proto.unary_head(codec, comp)
        length = CONTENT_LENGTHS.get(size) or content_length(size)
        ctx = self.ctx
        if not (ctx._response_headers or ctx._response_trailers):
            return Reply(200, [*head, length], data)
        headers = list(head)
        _add_headers(headers, ctx._response_headers)
        _add_trailers(headers, ctx._response_trailers)
        headers.append(length)
        return Reply(200, headers, data)

    def encode_error(self, err: ConnectError) -> Reply:
        """The mapped HTTP status with the JSON error body."""
        body = wire.error_body(err)
        headers: RawHeaders = [_CT_ERROR, *self._proto.accept]
        ctx = self.ctx
        _add_headers(headers, ctx._response_headers)
        _add_headers(headers, err.metadata)
        _add_trailers(headers, ctx._response_trailers)
        headers.append(content_length(len(body)))
        return Reply(err.code.http_status, headers, body)

    # Unary calls never stream; the shells do not call these.
    def feed(self, data: bytes) -> Iterator[Message]:  # pragma: no cover
        """Not used for unary calls."""
        raise NotImplementedError

    def close_input(self) -> None:  # pragma: no cover
        """Not used for unary calls."""
        raise NotImplementedError

    @property
    def input_needed(self) -> int:  # pragma: no cover
        """Not used for unary calls."""
        raise NotImplementedError

    def stream_head(self) -> tuple[int, RawHeaders]:  # pragma: no cover
        """Not used for unary calls."""
        raise NotImplementedError

    def encode_stream_message(self, message: Message) -> bytes:  # pragma: no cover
        """Not used for unary calls."""
        raise NotImplementedError

    def encode_stream_end(
        self, err: ConnectError | None
    ) -> tuple[bytes, RawHeaders | None]:  # pragma: no cover
        """Not used for unary calls."""
        raise NotImplementedError


class ConnectStreamProtocol(CodecProtocol):
    """Connect streaming: ``application/connect+<codec>`` POST with envelopes."""

    name = PROTOCOL

    def __init__(self, core: CoreView) -> None:
        super().__init__(core, b"connect-accept-encoding")

    def codec_name(self, media_type: str) -> str | None:
        """The codec of ``application/connect+<codec>``."""
        if media_type.startswith(wire.STREAM_PREFIX):
            return media_type[len(wire.STREAM_PREFIX) :]
        return None

    def handles(self, stream_type: StreamType) -> bool:
        """The three streaming kinds."""
        return stream_type is not StreamType.UNARY

    def content_type(self, codec_name: str) -> str:
        """``application/connect+proto``, ..."""
        return wire.stream_content_type(codec_name)

    def new_call(
        self,
        core: CoreView,
        endpoint: Endpoint,
        codec: Codec | None,
        ctx: RequestContext,
        head: Head,
        query: str | None,
    ) -> ServerCall:
        """A streaming call."""
        return ConnectStreamCall(core, endpoint, codec, ctx, head, self)


class ConnectStreamCall(EnvelopeCall):
    """One Connect streaming call (client, server or bidi)."""

    __slots__ = ()

    _client_flag = FLAG_END_STREAM
    _client_flag_error = (
        Code.INVALID_ARGUMENT,
        "protocol error: end-of-stream message from the client",
    )
    _incomplete_code = Code.INVALID_ARGUMENT
    _encoding_header = b"connect-content-encoding"

    def parse_head(self) -> None:
        """Check version, timeout and stream encodings."""
        core = self.core
        h = self.head
        wire.check_protocol_version(
            h.get(wire.VERSION_HEADER),
            core.options.require_connect_protocol_header,
        )
        self._recv_comp = request_compression(h.get(wire.STREAM_ENCODING), core)
        self.ctx.deadline = parse_deadline(
            h.get(wire.TIMEOUT_HEADER), parse_connect_timeout
        )
        self._send_comp = response_compression(h.get(wire.STREAM_ACCEPT_ENCODING), core)

    def decode_unary(self, body: bytes) -> Message:  # pragma: no cover
        """Not used: streaming methods read through ``feed``."""
        raise NotImplementedError

    def encode_unary(self, message: Message) -> Reply:  # pragma: no cover
        """Not used: streaming methods answer through ``encode_stream_*``."""
        raise NotImplementedError

    def encode_stream_end(
        self, err: ConnectError | None
    ) -> tuple[bytes, RawHeaders | None]:
        """The end-of-stream envelope: error (if any) and trailers as JSON."""
        payload = wire.end_stream_payload(err, self.ctx.response_trailers)
        return encode_envelope(FLAG_END_STREAM, payload), None

    def encode_error(self, err: ConnectError) -> Reply:
        """Streams always answer 200; the error travels in the end-of-stream message."""
        if self.codec is None:  # pragma: no cover - set by the protocol
            raise err
        status, headers = self.stream_head()
        body, _ = self.encode_stream_end(err)
        return Reply(status, headers, body)
