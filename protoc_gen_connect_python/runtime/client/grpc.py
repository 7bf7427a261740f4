"""The client side of gRPC and gRPC-Web, without I/O.

Both protocols send every call, unary or not, as a POST whose body is a
sequence of envelopes, and end the response with a status: gRPC in HTTP/2
trailers, gRPC-Web in a last envelope flagged 0x80 whose payload is a header
block. Either may instead answer with a *trailers-only* response, whose status
is in the response headers and whose body is empty. The wire rules shared with
the server (content types, ``grpc-message`` encoding, ``google.rpc.Status``)
are in :mod:`protoc_gen_connect_python.runtime.protocol.grpc`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
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
    single_response,
    with_response,
)
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Codec
from protoc_gen_connect_python.runtime.compression import Compression
from protoc_gen_connect_python.runtime.envelope import (
    FLAG_COMPRESSED,
    FLAG_TRAILERS,
    decode_payload,
)
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import (
    Headers,
    HeadersInput,
    format_grpc_timeout,
)
from protoc_gen_connect_python.runtime.method import MethodSpec
from protoc_gen_connect_python.runtime.protocol import grpc as wire

# Status fields: read by the protocol, not shown to users as trailers.
_STATUS_KEYS = (wire.STATUS, wire.MESSAGE, wire.DETAILS)
# Room for the envelope headers and a gRPC-Web trailers block in a unary body.
_UNARY_OVERHEAD = 64 * 1024


def _user_trailers(raw: Headers) -> Headers:
    if not any(k in raw for k in _STATUS_KEYS):
        return raw
    out = raw.copy()
    for k in _STATUS_KEYS:
        out.pop(k, None)
    return out


class GRPCProtocol(ClientProtocol):
    """gRPC over HTTP/2: envelopes both ways, the status in HTTP trailers."""

    name = "grpc"
    web = False

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        self._content_type = wire.content_type(self.web, self.codec.name)
        base: list[tuple[str, str]] = [("content-type", self._content_type)]
        if self.web:
            # Browsers own User-Agent; gRPC-Web peers look here as well.
            base.append(("x-user-agent", USER_AGENT))
        else:
            # Required by gRPC: lets servers detect proxies that drop trailers.
            base.append(("te", "trailers"))
        if config.send_compression is not None:
            base.append((wire.ENCODING, config.send_compression.name))
        accept = ", ".join(c.name for c in config.accept_compression)
        if accept:
            base.append((wire.ACCEPT_ENCODING, accept))
        base.append(("user-agent", USER_AGENT))
        base.extend(config.headers.multi_items())
        self._base = base

    def _prepare(self, spec: MethodSpec[Any, Any]) -> PreparedMethod:
        # gRPC has no GET: every call is a POST of envelopes.
        url = self.config.base_url + spec.procedure
        return PreparedMethod(spec, url, self._base, self._base, False)

    @property
    def unary_read_limit(self) -> int:
        """The read limit applies per message; allow for framing and trailers."""
        limit = self.config.read_max_bytes
        return limit + _UNARY_OVERHEAD if limit else 0

    def _request(
        self,
        pm: PreparedMethod,
        headers: HeadersInput | None,
        timeout: float | None,
        body: bytes | None,
    ) -> HTTPRequest:
        value = None if timeout is None else format_grpc_timeout(timeout)
        out = self._merge_headers(
            pm.stream_headers, headers, timeout, wire.TIMEOUT_HEADER, value
        )
        return HTTPRequest("POST", pm.url, out, body, timeout, pm.stream_prefix)

    def unary_request(
        self,
        pm: PreparedMethod,
        message: Message,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> HTTPRequest:
        """POST the one request message as a single envelope."""
        return self._request(pm, headers, timeout, self.encode_stream_message(message))

    def unary_response(
        self,
        pm: PreparedMethod,
        status: int,
        headers: Headers,
        body: bytes,
        trailers: Headers,
    ) -> UnaryResponse[Any]:
        """Exactly one message and an OK status, or the call's error."""
        stream = self.response_stream(pm, status, headers)
        messages = stream.feed(body) if body else []
        user_trailers = stream.finish(trailers)
        try:
            message = single_response(messages, False)
        except ConnectError as e:
            raise with_response(e, headers, user_trailers) from None
        return UnaryResponse(message, headers, user_trailers)

    def stream_request(
        self,
        pm: PreparedMethod,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> HTTPRequest:
        """The head of a streaming call; the body is streamed envelopes."""
        return self._request(pm, headers, timeout, None)

    def response_stream(
        self, pm: PreparedMethod, status: int, headers: Headers
    ) -> ResponseStream:
        """Check the response head; return the decoder for its body.

        A head carrying ``grpc-status`` may be a trailers-only response. That
        is decided by the body: only if it is empty and no HTTP trailers follow
        does the status in the head count; otherwise the head is checked like
        any other and the status comes from the trailers.
        """
        maybe_trailers_only = wire.STATUS in headers
        comp = None if maybe_trailers_only else self._check_head(status, headers)
        return GRPCResponseStream(
            self.codec,
            pm.output,
            comp,
            self.config.read_max_bytes,
            headers,
            web=self.web,
            head_check=partial(self._check_head, status, headers)
            if maybe_trailers_only
            else None,
        )

    def _check_head(self, status: int, headers: Headers) -> Compression | None:
        """Raise for a head that does not start a gRPC body; its decompressor."""
        if status != 200:
            # Not from a gRPC server (a proxy, say): the HTTP status decides.
            err = ConnectError(Code.from_http_status(status), f"HTTP status {status}")
            raise with_response(err, headers)
        ctype = headers.get("content-type", "")
        if ctype != self._content_type:
            media = ctype.split(";", 1)[0].strip().lower()
            codec = wire.codec_from_content_type(media, self.web)
            if codec is None:
                err = ConnectError(
                    Code.UNKNOWN,
                    f"invalid content-type {ctype!r}; expecting {self._content_type}",
                )
                raise with_response(err, headers)
            if codec != self.codec.name:
                err = ConnectError(
                    Code.INTERNAL,
                    f"response codec {codec!r} differs from the request's "
                    f"{self.codec.name!r}",
                )
                raise with_response(err, headers)
        return self.response_compression(headers.get(wire.ENCODING), headers)


class GRPCWebProtocol(GRPCProtocol):
    """gRPC-Web: gRPC over any HTTP version, the status in a 0x80 envelope."""

    name = "grpc-web"
    web = True


class GRPCResponseStream(EnvelopeResponseStream):
    """Envelopes of messages; the status from trailers (or the 0x80 envelope)."""

    __slots__ = ("_block", "_head_check", "_web")

    def __init__(
        self,
        codec: Codec,
        output: type[Message],
        compression: Compression | None,
        read_max_bytes: int,
        headers: Headers,
        *,
        web: bool,
        head_check: Callable[[], Compression | None] | None = None,
    ) -> None:
        super().__init__(codec, output, compression, read_max_bytes, headers)
        self._web = web
        # Set while the head may be a trailers-only response: the checks (and
        # the decompressor) of an ordinary head, run once a body shows up.
        self._head_check = head_check
        self._block: Headers | None = None

    def _not_trailers_only(self) -> None:
        check = self._head_check
        if check is not None:
            self._head_check = None
            self._comp = check()

    @property
    def done(self) -> bool:
        """Whether the gRPC-Web trailers envelope has been read."""
        return self._block is not None

    def _protocol_error(self, what: str) -> ConnectError:
        return with_response(
            ConnectError(Code.INTERNAL, f"protocol error: {what}"), self.headers
        )

    def feed(self, data: bytes) -> list[Any]:
        """Decode the messages completed by ``data``."""
        if not data:
            return []
        if self._head_check is not None:
            # A body: the status in the head does not count.
            self._not_trailers_only()
        if self._block is not None:
            if data:
                raise self._protocol_error("data after the trailers")
            return []
        out: list[Any] = []
        for flags, payload in self._decoder.feed(data):
            if self._block is not None:
                raise self._protocol_error("message after the trailers")
            if self._web and flags & FLAG_TRAILERS:
                self._block = self._parse_block(flags, payload)
                continue
            if flags & ~FLAG_COMPRESSED:
                raise self._protocol_error(f"invalid envelope flags 0x{flags:02x}")
            out.append(self._message(flags, payload))
        return out

    def _parse_block(self, flags: int, payload: bytes) -> Headers:
        payload = decode_payload(flags, payload, self._comp, self._limit)
        try:
            return wire.parse_trailers_block(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise self._protocol_error(f"invalid trailers: {e}") from None

    def finish(self, http_trailers: Headers) -> Headers:
        """Return the trailers of an OK call or raise the call's error."""
        trailers_only = self._head_check is not None and not http_trailers
        if self._head_check is not None and http_trailers:
            # Real trailers follow: the status in the head does not count.
            self._not_trailers_only()
        if trailers_only:
            raw = self.headers
        elif self._block is not None:
            raw = self._block
        else:
            # gRPC; or gRPC-Web from a peer that used real HTTP trailers.
            raw = http_trailers
        if wire.STATUS not in raw:
            if self._web and self._block is None and not self._decoder.pending:
                raise self._protocol_error("missing trailers")
            missing = ConnectError(
                Code.INTERNAL,
                "protocol error: missing grpc-status"
                + (" (incomplete message)" if self._decoder.pending else ""),
            )
            raise with_response(missing, self.headers, raw)
        err = wire.error_from_trailers(raw)
        trailers = _user_trailers(raw)
        self.trailers = trailers
        if err is not None:
            if trailers_only:
                # One block of headers that are the trailers.
                raise with_response(err, Headers(), trailers)
            raise with_response(err, self.headers, trailers)
        if self._decoder.pending:
            raise self._protocol_error("incomplete envelope")
        return trailers
