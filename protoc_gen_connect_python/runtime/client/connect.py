"""The client side of the Connect protocol, without I/O.

Beside ``grpc.py``: both subclass :class:`ClientProtocol` (``core.py``);
``protocols.py`` picks one for a config.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.client.config import ClientConfig
from protoc_gen_connect_python.runtime.client.core import (
    USER_AGENT,
    ClientProtocol,
    EnvelopeResponseStream,
    HTTPRequest,
    PreparedMethod,
    ResponseStream,
    UnaryResponse,
    decode_error,
    with_response,
)
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Codec, codec_for
from protoc_gen_connect_python.runtime.compression import Compression
from protoc_gen_connect_python.runtime.envelope import (
    FLAG_COMPRESSED,
    FLAG_END_STREAM,
    decode_payload,
)
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers, HeadersInput
from protoc_gen_connect_python.runtime.method import Idempotency, MethodSpec
from protoc_gen_connect_python.runtime.protocol import connect


class ConnectProtocol(ClientProtocol):
    """The Connect protocol: unary as plain HTTP, streams as enveloped bodies."""

    name = "connect"

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        accept = ", ".join(c.name for c in config.accept_compression)
        codec = self.codec.name
        common: list[tuple[str, str]] = [("user-agent", USER_AGENT)]
        common.extend(config.headers.multi_items())
        unary = [
            ("content-type", connect.unary_content_type(codec)),
            (connect.VERSION_HEADER, connect.PROTOCOL_VERSION),
        ]
        stream = [
            ("content-type", connect.stream_content_type(codec)),
            (connect.VERSION_HEADER, connect.PROTOCOL_VERSION),
        ]
        if accept:
            unary.append((connect.UNARY_ACCEPT_ENCODING, accept))
            stream.append((connect.STREAM_ACCEPT_ENCODING, accept))
        if config.send_compression is not None:
            stream.append((connect.STREAM_ENCODING, config.send_compression.name))
        self._unary_base = unary + common
        self._stream_base = stream + common
        # A GET carries the protocol version and codec in its query string.
        self._get_base = [h for h in self._unary_base if h[0] != "content-type"]
        self._get_base = [h for h in self._get_base if h[0] != connect.VERSION_HEADER]
        self._unary_ct = connect.unary_content_type(codec)
        self._stream_ct = connect.stream_content_type(codec)

    def _prepare(self, spec: MethodSpec[Any, Any]) -> PreparedMethod:
        return PreparedMethod(
            spec,
            self.config.base_url + spec.procedure,
            self._unary_base,
            self._stream_base,
            self.config.use_get and spec.idempotency is Idempotency.NO_SIDE_EFFECTS,
        )

    # -- unary ---------------------------------------------------------------

    def unary_request(
        self,
        pm: PreparedMethod,
        message: Message,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> HTTPRequest:
        """POST the encoded message, or GET it in the query string when allowed."""
        cfg = self.config
        data = self.codec.encode(message)
        encoding: str | None = None
        comp = cfg.send_compression
        if comp is not None and len(data) >= cfg.compress_min_bytes:
            data = comp.compress(data)
            encoding = comp.name
        if cfg.send_max_bytes and len(data) > cfg.send_max_bytes:
            raise ConnectError(
                Code.RESOURCE_EXHAUSTED,
                f"message size {len(data)} exceeds send limit {cfg.send_max_bytes}",
            )
        if pm.get_allowed:
            url = (
                pm.url + "?" + connect.encode_get_query(data, self.codec.name, encoding)
            )
            if len(url) <= cfg.get_url_max_bytes:
                return HTTPRequest(
                    "GET",
                    url,
                    self._merge_headers(
                        self._get_base, headers, timeout, connect.TIMEOUT_HEADER
                    ),
                    None,
                    timeout,
                )
        out = self._merge_headers(
            pm.unary_headers, headers, timeout, connect.TIMEOUT_HEADER
        )
        if encoding is not None:
            out.append((connect.UNARY_ENCODING, encoding))
        return HTTPRequest("POST", pm.url, out, data, timeout, pm.unary_prefix)

    def _decompress(self, encoding: str | None, data: bytes) -> bytes:
        comp = self.response_compression(encoding, None)
        if comp is None:
            return data
        return comp.decompress(data, self.config.read_max_bytes) if data else data

    def unary_response(
        self,
        pm: PreparedMethod,
        status: int,
        headers: Headers,
        body: bytes,
        trailers: Headers,
    ) -> UnaryResponse[Any]:
        """Decode a unary response; raise its error for anything but a good 200."""
        prefix = connect.TRAILER_PREFIX
        for k in headers:
            if k.startswith(prefix):
                head, trailer_part = connect.split_unary_trailers(headers)
                break
        else:
            head, trailer_part = headers, Headers()
        ctype = headers.get("content-type", "")
        if status != 200:
            raise self._unary_error(status, headers, ctype, body)
        if ctype != self._unary_ct:
            self._check_content_type(ctype, connect.UNARY_PREFIX, head, trailer_part)
        encoding = headers.get(connect.UNARY_ENCODING)
        data = self._decompress(encoding, body) if encoding else body
        try:
            msg = self.codec.decode(data, pm.output)
        except ConnectError as e:
            raise with_response(decode_error(e), head, trailer_part) from None
        return UnaryResponse(msg, head, trailer_part)

    def _unary_error(
        self, status: int, headers: Headers, ctype: str, body: bytes
    ) -> ConnectError:
        if ctype.split(";", 1)[0].strip().lower() == connect.ERROR_CONTENT_TYPE:
            try:
                body = self._decompress(headers.get(connect.UNARY_ENCODING), body)
            except ConnectError:
                body = b""
            err = connect.parse_error_body(body, status, headers)
        else:
            # Not a Connect error body (a proxy's page, say): the status decides.
            err = ConnectError(Code.from_http_status(status), f"HTTP status {status}")
        head, trailers = connect.split_unary_trailers(headers)
        return with_response(err, head, trailers)

    def _check_content_type(
        self, ctype: str, prefix: str, head: Headers, trailers: Headers
    ) -> None:
        base = ctype.split(";", 1)[0].strip().lower()
        if base.startswith(prefix):
            codec = codec_for(ctype[len(prefix) :])
            if codec is not None and codec.name == self.codec.name:
                return
            # A protocol response in another codec: the server misbehaves.
            code = Code.INTERNAL
        else:
            code = Code.UNKNOWN
        err = ConnectError(
            code, f"invalid content-type {ctype!r}; expecting {prefix}{self.codec.name}"
        )
        raise with_response(err, head, trailers)

    # -- streams -------------------------------------------------------------

    def stream_request(
        self,
        pm: PreparedMethod,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> HTTPRequest:
        """POST with ``application/connect+<codec>``; the body is streamed."""
        return HTTPRequest(
            "POST",
            pm.url,
            self._merge_headers(
                pm.stream_headers, headers, timeout, connect.TIMEOUT_HEADER
            ),
            None,
            timeout,
            pm.stream_prefix,
        )

    def response_stream(
        self, pm: PreparedMethod, status: int, headers: Headers
    ) -> ResponseStream:
        """Validate the streaming response head and return its body decoder."""
        if status != 200:
            err = ConnectError(Code.from_http_status(status), f"HTTP status {status}")
            raise with_response(err, headers)
        ctype = headers.get("content-type", "")
        if ctype != self._stream_ct:
            self._check_content_type(ctype, connect.STREAM_PREFIX, headers, Headers())
        comp = self.response_compression(headers.get(connect.STREAM_ENCODING), headers)
        return ConnectResponseStream(
            self.codec, pm.output, comp, self.config.read_max_bytes, headers
        )


class ConnectResponseStream(EnvelopeResponseStream):
    """Envelopes of messages, then one end-of-stream envelope with JSON."""

    __slots__ = ("_done", "_error")

    def __init__(
        self,
        codec: Codec,
        output: type[Message],
        compression: Compression | None,
        read_max_bytes: int,
        headers: Headers,
    ) -> None:
        super().__init__(codec, output, compression, read_max_bytes, headers)
        self._done = False
        self._error: ConnectError | None = None

    @property
    def done(self) -> bool:
        """Whether the end-of-stream message has been read."""
        return self._done

    def feed(self, data: bytes) -> list[Any]:
        """Decode the messages completed by ``data``."""
        if self._done:
            if data:
                raise with_response(
                    ConnectError(
                        Code.INTERNAL,
                        "protocol error: data after the end-of-stream message",
                    ),
                    self.headers,
                )
            return []
        out: list[Any] = []
        for flags, payload in self._decoder.feed(data):
            if self._done:
                raise with_response(
                    ConnectError(
                        Code.INTERNAL,
                        "protocol error: message after the end-of-stream message",
                    ),
                    self.headers,
                )
            if flags & ~(FLAG_COMPRESSED | FLAG_END_STREAM):
                # Bits no version of the protocol defines: framing we cannot trust.
                raise with_response(
                    ConnectError(
                        Code.INTERNAL,
                        f"protocol error: invalid envelope flags 0x{flags:02x}",
                    ),
                    self.headers,
                )
            if flags & FLAG_END_STREAM:
                self._end(flags, payload)
                continue
            out.append(self._message(flags, payload))
        return out

    def _end(self, flags: int, payload: bytes) -> None:
        payload = decode_payload(flags, payload, self._comp, self._limit)
        err, trailers = connect.parse_end_stream(payload)
        self._done = True
        self.trailers = trailers
        if err is not None:
            self._error = with_response(err, self.headers, trailers)

    def finish(self, http_trailers: Headers) -> Headers:
        """Return the end-of-stream trailers or raise its error."""
        if self._error is not None:
            raise self._error
        if self._done and self._decoder.pending:
            raise with_response(
                ConnectError(
                    Code.INTERNAL,
                    "protocol error: data after the end-of-stream message",
                ),
                self.headers,
            )
        if not self._done:
            self._decoder.close(Code.INTERNAL)
            raise with_response(
                ConnectError(
                    Code.INTERNAL,
                    "protocol error: missing end-of-stream message",
                ),
                self.headers,
            )
        return self.trailers
