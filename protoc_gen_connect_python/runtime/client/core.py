"""The client side of a protocol, without I/O.

The async and sync clients are thin shells: they ask a :class:`ClientProtocol`
what to send (:class:`HTTPRequest`), hand it to a transport, and feed what comes
back (status, headers, body chunks, trailers) into the protocol again, which
turns it into messages or a :class:`ConnectError`. Everything the Connect
protocol says about a client lives here, once; gRPC and gRPC-Web are further
subclasses of :class:`ClientProtocol` (``client/grpc.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.client.config import ClientConfig
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Codec, codec_for
from protoc_gen_connect_python.runtime.compression import IDENTITY, Compression
from protoc_gen_connect_python.runtime.envelope import (
    FLAG_COMPRESSED,
    FLAG_END_STREAM,
    EnvelopeDecoder,
    decode_payload,
    encode_message,
)
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import (
    Headers,
    HeadersInput,
    format_connect_timeout,
)
from protoc_gen_connect_python.runtime.method import Idempotency, MethodSpec
from protoc_gen_connect_python.runtime.protocol import connect

O = TypeVar("O", bound=Message)  # noqa: E741

USER_AGENT = "protoc-gen-connect-python/0.1.0"


class RequestPrefix:
    """What every request to one method starts with, for transports to cache.

    Each request that carries the same prefix object has this ``method`` and
    ``url``, and its first ``count`` headers are the same names and values: a
    transport may encode that part once (the HTTP/1.1 transport does) and
    append only the rest. Compared by identity.
    """

    __slots__ = ("count", "method", "url")

    def __init__(self, method: str, url: str, count: int) -> None:
        self.method = method
        self.url = url
        self.count = count


class HTTPRequest:
    """One HTTP request as the protocol wants it sent.

    ``body`` is the whole body for unary calls; for streams it is None and the
    shell streams envelopes from :meth:`ClientProtocol.encode_stream_message`.
    ``timeout`` is the call's timeout in seconds, for transports that bound it.
    ``prefix``, when set, says which part of the request is the same for every
    call of the method (see :class:`RequestPrefix`); transports may ignore it.
    """

    __slots__ = ("body", "headers", "method", "prefix", "timeout", "url")

    def __init__(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeout: float | None,
        prefix: RequestPrefix | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"HTTPRequest({self.method} {self.url})"


class UnaryResponse(Generic[O]):
    """A unary result with the response headers and trailers."""

    __slots__ = ("headers", "message", "trailers")

    def __init__(self, message: O, headers: Headers, trailers: Headers) -> None:
        self.message = message
        self.headers = headers
        self.trailers = trailers

    def __repr__(self) -> str:
        return f"UnaryResponse({type(self.message).__name__})"


class PreparedMethod:
    """What a client computes once per method: URL and constant request headers."""

    __slots__ = (
        "get_allowed",
        "output",
        "spec",
        "stream_headers",
        "stream_prefix",
        "unary_headers",
        "unary_prefix",
        "url",
    )

    def __init__(
        self,
        spec: MethodSpec[Any, Any],
        url: str,
        unary_headers: list[tuple[str, str]],
        stream_headers: list[tuple[str, str]],
        get_allowed: bool,
    ) -> None:
        self.spec = spec
        self.output: type[Message] = spec.output
        self.url = url
        self.unary_headers = unary_headers
        self.stream_headers = stream_headers
        self.get_allowed = get_allowed
        # Both are POSTs to ``url`` that start with these header lists.
        self.unary_prefix = RequestPrefix("POST", url, len(unary_headers))
        self.stream_prefix = RequestPrefix("POST", url, len(stream_headers))


class ResponseStream(ABC):
    """Turns the body of a streaming response into messages, incrementally."""

    headers: Headers
    trailers: Headers

    @abstractmethod
    def feed(self, data: bytes) -> list[Any]:
        """Add body bytes; return the messages now complete.

        After the end of the stream is seen, ``done`` is true and the remaining
        outcome comes from :meth:`finish`.
        """

    @property
    @abstractmethod
    def done(self) -> bool:
        """Whether the protocol's end of stream has been read."""

    @abstractmethod
    def finish(self, http_trailers: Headers) -> Headers:
        """The body has ended: return the trailers or raise the call's error."""


def decode_error(err: ConnectError) -> ConnectError:
    """The error for a response message that does not parse: the server's fault."""
    if err.code is Code.INVALID_ARGUMENT:
        return ConnectError(Code.INTERNAL, err.message)
    return err


class ClientProtocol(ABC):
    """The rules of one wire protocol, as seen from a client."""

    name: str

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.codec: Codec = config.codec
        self._decompressors = config.decompressors
        self._prepared: dict[MethodSpec[Any, Any], PreparedMethod] = {}

    def prepare(self, spec: MethodSpec[Any, Any]) -> PreparedMethod:
        """The per-method constants, computed on first use and cached."""
        pm = self._prepared.get(spec)
        if pm is None:
            pm = self._prepare(spec)
            self._prepared[spec] = pm
        return pm

    @abstractmethod
    def _prepare(self, spec: MethodSpec[Any, Any]) -> PreparedMethod: ...

    @abstractmethod
    def unary_request(
        self,
        pm: PreparedMethod,
        message: Message,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> HTTPRequest:
        """The request of a unary call, body included."""

    @abstractmethod
    def unary_response(
        self,
        pm: PreparedMethod,
        status: int,
        headers: Headers,
        body: bytes,
        trailers: Headers,
    ) -> UnaryResponse[Any]:
        """The result of a unary call from the complete response, or raise."""

    @abstractmethod
    def stream_request(
        self,
        pm: PreparedMethod,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> HTTPRequest:
        """The head of a streaming call; the body is a sequence of envelopes."""

    def encode_stream_message(self, message: Message) -> bytes:
        """One request message of a stream: encoded, maybe compressed, framed."""
        cfg = self.config
        return encode_message(
            self.codec.encode(message),
            cfg.send_compression,
            cfg.compress_min_bytes,
            cfg.send_max_bytes,
        )

    @abstractmethod
    def response_stream(
        self, pm: PreparedMethod, status: int, headers: Headers
    ) -> ResponseStream:
        """Check a streaming response's head; return the decoder for its body."""

    def response_compression(
        self, encoding: str | None, metadata: Headers | None
    ) -> Compression | None:
        """The decompressor a response names; None for identity; raise if unknown."""
        if not encoding or encoding == IDENTITY:
            return None
        comp = self._decompressors.get(encoding)
        if comp is None:
            err = ConnectError(
                Code.INTERNAL,
                f"unknown encoding {encoding!r}; accepted encodings are "
                f"{', '.join(self._decompressors) or 'identity'}",
            )
            raise err if metadata is None else with_response(err, metadata)
        return comp

    @property
    def unary_read_limit(self) -> int:
        """The most body bytes a unary response may have on the wire (0: no limit)."""
        return self.config.read_max_bytes

    def _merge_headers(
        self,
        base: list[tuple[str, str]],
        headers: HeadersInput | None,
        timeout: float | None,
        timeout_header: str,
        timeout_value: str | None = None,
    ) -> list[tuple[str, str]]:
        out = base.copy()
        if headers:
            pairs: Iterable[tuple[str, str]]
            if isinstance(headers, Headers):
                pairs = headers.multi_items()
            elif hasattr(headers, "items"):
                pairs = headers.items()
            else:
                pairs = headers
            out.extend(pairs)
        if timeout is not None:
            out.append(
                (timeout_header, timeout_value or format_connect_timeout(timeout))
            )
        return out


# What a broken transport looks like: a reset stream or a lost connection.
_TRANSPORT_CODES = (Code.CANCELED, Code.UNAVAILABLE)


def past_deadline(
    err: ConnectError, deadline: float | None, now: float
) -> ConnectError:
    """The error to report for ``err`` when the call's deadline may have passed.

    A server or proxy that gives up on a call at its deadline often just
    resets the stream (gRPC servers send RST_STREAM with CANCEL) or closes the
    connection. Once the client's own deadline (``deadline``, on the same clock
    as ``now``) has passed, such a transport error is reported as
    ``deadline_exceeded``, which is what happened. Other codes are kept.
    """
    if deadline is None or now < deadline or err.code not in _TRANSPORT_CODES:
        return err
    late = ConnectError(
        Code.DEADLINE_EXCEEDED,
        f"deadline exceeded ({err.message})" if err.message else "deadline exceeded",
        metadata=err.metadata,
    )
    late.response_headers = err.response_headers
    late.response_trailers = err.response_trailers
    return late


def read_limit_error(limit: int) -> ConnectError:
    """The error for a response body larger than the read limit."""
    return ConnectError(
        Code.RESOURCE_EXHAUSTED,
        f"response is larger than configured max {limit} bytes",
    )


class UnaryBody:
    """A unary response body that arrives in more than one chunk.

    Shells read the first chunk themselves (most bodies have one) and hand
    the rest here, which refuses the body as soon as it passes ``limit``
    (0: no limit) rather than after it has all been buffered.
    """

    __slots__ = ("_limit", "_parts", "_size")

    def __init__(self, first: bytes, limit: int) -> None:
        self._parts = [first]
        self._size = len(first)
        self._limit = limit

    def add(self, chunk: bytes) -> None:
        """Append a chunk; raise ``resource_exhausted`` once past the limit."""
        self._parts.append(chunk)
        self._size += len(chunk)
        if self._limit and self._size > self._limit:
            raise read_limit_error(self._limit)

    def join(self) -> bytes:
        """The whole body."""
        return b"".join(self._parts)


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


def merge_metadata(head: Headers, trailers: Headers) -> Headers:
    """Headers then trailers, as an error's metadata."""
    out = head.copy()
    out.extend(trailers)
    return out


def with_response(
    err: ConnectError, head: Headers, trailers: Headers | None = None
) -> ConnectError:
    """Record on ``err`` the response headers and trailers it arrived with.

    ``metadata`` gets both, merged; ``response_headers`` and
    ``response_trailers`` keep them apart.
    """
    err.response_headers = head
    if trailers:
        err.response_trailers = trailers
        err.metadata = merge_metadata(head, trailers)
    else:
        err.metadata = head
    return err


class EnvelopeResponseStream(ResponseStream):
    """What every enveloped response body needs: codec, decompressor, limits."""

    __slots__ = (
        "_codec",
        "_comp",
        "_decoder",
        "_limit",
        "_output",
        "headers",
        "trailers",
    )

    def __init__(
        self,
        codec: Codec,
        output: type[Message],
        compression: Compression | None,
        read_max_bytes: int,
        headers: Headers,
    ) -> None:
        self._codec = codec
        self._output = output
        self._comp = compression
        self._limit = read_max_bytes
        self._decoder = EnvelopeDecoder(read_max_bytes)
        self.headers = headers
        self.trailers = Headers()

    def _message(self, flags: int, payload: bytes) -> Message:
        """One message envelope's payload, decompressed and decoded."""
        raw = decode_payload(flags, payload, self._comp, self._limit)
        try:
            return self._codec.decode(raw, self._output)
        except ConnectError as e:
            raise decode_error(e) from None


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


def make_protocol(config: ClientConfig) -> ClientProtocol:
    """The protocol implementation a config asks for."""
    if config.protocol == "connect":
        return ConnectProtocol(config)
    # Imported here: the gRPC module builds on this one.
    from protoc_gen_connect_python.runtime.client import grpc

    if config.protocol == "grpc":
        return grpc.GRPCProtocol(config)
    if config.protocol == "grpc-web":
        return grpc.GRPCWebProtocol(config)
    raise ValueError(f"unsupported protocol {config.protocol!r}")


def no_message_error() -> ConnectError:
    """A call that must answer with one message ended without it."""
    return ConnectError(
        Code.UNIMPLEMENTED, "protocol error: the response stream has no message"
    )


def too_many_messages_error() -> ConnectError:
    """A call that must answer with one message sent a second one."""
    return ConnectError(
        Code.UNIMPLEMENTED,
        "protocol error: the response stream has more than one message",
    )


def single_response(messages: list[Any], pending: bool) -> Any:
    """The one message a unary or client-stream call must produce."""
    if not messages:
        raise no_message_error()
    if len(messages) > 1 or pending:
        raise too_many_messages_error()
    return messages[0]
