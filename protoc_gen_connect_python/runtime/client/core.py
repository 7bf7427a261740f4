"""The client side of a protocol, without I/O.

The async and sync clients are thin shells: they ask a :class:`ClientProtocol`
what to send (:class:`HTTPRequest`), hand it to a transport, and feed what comes
back (status, headers, body chunks, trailers) into the protocol again, which
turns it into messages or a :class:`ConnectError`. What every protocol shares
lives here, once; the protocols are subclasses of :class:`ClientProtocol`:
Connect in ``client/connect.py``, gRPC and gRPC-Web in ``client/grpc.py``, and
``client/protocols.py`` picks one for a config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, TypeVar

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.client.call import UnaryResponse as UnaryResponse
from protoc_gen_connect_python.runtime.client.config import ClientConfig
from protoc_gen_connect_python.runtime.client.interface import (
    HTTPRequest as HTTPRequest,
)
from protoc_gen_connect_python.runtime.client.interface import (
    RequestPrefix as RequestPrefix,
)
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Codec
from protoc_gen_connect_python.runtime.compression import IDENTITY, Compression
from protoc_gen_connect_python.runtime.envelope import (
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
from protoc_gen_connect_python.runtime.method import MethodSpec

O = TypeVar("O", bound=Message)  # noqa: E741

USER_AGENT = "protoc-gen-connect-python/0.1.0"


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
