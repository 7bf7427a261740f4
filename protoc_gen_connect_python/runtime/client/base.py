"""What the async and sync clients share: options, protocol, interceptors, stream state.

Everything here runs without awaiting, so both shells use it as is; they add
only the I/O (sending, reading, closing), their clocks and, for the async
client, the timer that cancels a call at its deadline.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime import allocator, deadline
from protoc_gen_connect_python.runtime.client.config import (
    DEFAULT_COMPRESS_MIN_BYTES,
    DEFAULT_GET_URL_MAX_BYTES,
    DEFAULT_READ_MAX_BYTES,
    ClientConfig,
    ConnectionOptions,
    HTTPVersionName,
    PEMInput,
    Protocol,
    build_config,
)
from protoc_gen_connect_python.runtime.client.core import (
    ClientProtocol,
    HTTPRequest,
    PreparedMethod,
    ResponseStream,
    UnaryResponse,
    no_message_error,
    past_deadline,
    too_many_messages_error,
    with_response,
)
from protoc_gen_connect_python.runtime.client.interceptors import (
    ClientCall,
    ClientInterceptor,
    has_hooks,
    unary_wrapper_name,
    watches_messages,
    wraps_unary,
)
from protoc_gen_connect_python.runtime.client.protocols import make_protocol
from protoc_gen_connect_python.runtime.client.retry import (
    Attempts,
    RetryPolicy,
    make_throttle,
)
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers, HeadersInput
from protoc_gen_connect_python.runtime.method import MethodSpec

if TYPE_CHECKING:
    from protoc_gen_connect_python.runtime.codec import Codec
    from protoc_gen_connect_python.runtime.compression import Compression

O = TypeVar("O", bound=Message)  # noqa: E741
M = TypeVar("M", bound=Message)
_T = TypeVar("_T")  # the transport interface the client drives
_P = TypeVar("_P")  # the pyqwest transport it can wrap
_N = TypeVar("_N")  # the innermost step of a unary interceptor chain


def as_error(
    e: BaseException, canceled: tuple[type[BaseException], ...]
) -> ConnectError:
    """What interceptors' ``on_end`` sees for an exception ending a call."""
    if isinstance(e, ConnectError):
        return e
    if isinstance(e, canceled):
        return ConnectError(Code.CANCELED, "call canceled")
    return ConnectError(Code.UNKNOWN, f"{type(e).__name__}: {e}")


def recorded(call: ClientCall, res: UnaryResponse[O]) -> UnaryResponse[O]:
    """``res``, once its headers and trailers are noted on ``call``."""
    call.response_headers = res.headers
    call.response_trailers = res.trailers
    return res


def received(
    client: ClientBase[Any, Any], call: ClientCall, res: UnaryResponse[O]
) -> UnaryResponse[O]:
    """``res``, once the interceptors' ``on_receive`` have seen its message."""
    for i in client._watchers:
        i.on_receive(call, res.message)
    return res


def sending(client: ClientBase[Any, Any], call: ClientCall, message: M) -> M:
    """``message``, once the interceptors' ``on_send`` have seen it."""
    for i in client._watchers:
        i.on_send(call, message)
    return message


def _watched_encode(
    encode: Callable[[Message], bytes],
    client: ClientBase[Any, Any],
    call: ClientCall,
    message: Message,
) -> bytes:
    return encode(sending(client, call, message))


class WatchedResponse(ResponseStream):
    """A response decoder whose messages the interceptors' ``on_receive`` see."""

    def __init__(
        self, inner: ResponseStream, call: ClientCall, watchers: Sequence[Any]
    ) -> None:
        self._inner = inner
        self._call = call
        self._watchers = watchers

    def feed(self, data: bytes) -> list[Any]:
        messages = self._inner.feed(data)
        for m in messages:
            for i in self._watchers:
                i.on_receive(self._call, m)
        return messages

    @property
    def done(self) -> bool:
        return self._inner.done

    def finish(self, http_trailers: Headers) -> Headers:
        return self._inner.finish(http_trailers)


class UnaryScope:
    """One intercepted unary call: ``on_start`` on creation, ``on_end`` on exit."""

    __slots__ = ("_client", "call")

    def __init__(
        self,
        client: ClientBase[Any, Any],
        method: MethodSpec[Any, Any],
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> None:
        self._client = client
        self.call = client._start_call(method, headers, timeout)

    def __enter__(self) -> ClientCall:
        return self.call

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client._end_call(self.call, exc)


class SendState:
    """How far a stream's request body got; shared with the body generator.

    The generator holds this rather than the stream, so that a stream its
    caller dropped can be collected (and its call canceled) while a transport
    still holds the body.
    """

    __slots__ = ("error", "started")

    def __init__(self) -> None:
        self.started = False
        """Whether the transport began to pull request messages."""
        self.error: BaseException | None = None
        """What the caller's request iterator raised, if it failed."""


class ClientBase(Generic[_T, _P]):
    """The constructor and per-client state of :class:`AsyncClient` and :class:`SyncClient`."""

    _sync: ClassVar[bool]
    """Which unary wrapper of the interceptors this client runs."""
    _canceled: ClassVar[tuple[type[BaseException], ...]]
    """Exceptions that mean the caller canceled the call."""
    _transport_methods: ClassVar[tuple[str, str]]
    """What a custom transport for this client must have: send and close."""

    def __init__(
        self,
        base_url: str,
        *,
        protocol: Protocol = "connect",
        codec: str | Codec = "proto",
        send_compression: str | Compression | None = None,
        accept_compression: Sequence[str | Compression] | None = None,
        compress_min_bytes: int = DEFAULT_COMPRESS_MIN_BYTES,
        read_max_bytes: int = DEFAULT_READ_MAX_BYTES,
        send_max_bytes: int = 0,
        timeout: float | None = None,
        headers: HeadersInput | None = None,
        use_get: bool = False,
        get_url_max_bytes: int = DEFAULT_GET_URL_MAX_BYTES,
        http_version: HTTPVersionName | None = None,
        tls_ca_cert: PEMInput | None = None,
        tls_cert: PEMInput | None = None,
        tls_key: PEMInput | None = None,
        transport: _T | _P | None = None,
        interceptors: Sequence[ClientInterceptor] = (),
        prime_allocator: bool = True,
        retry: RetryPolicy | None = None,
        propagate_deadline: bool = True,
        connection: ConnectionOptions | None = None,
    ) -> None:
        config = build_config(
            base_url,
            protocol=protocol,
            codec=codec,
            send_compression=send_compression,
            accept_compression=accept_compression,
            compress_min_bytes=compress_min_bytes,
            read_max_bytes=read_max_bytes,
            send_max_bytes=send_max_bytes,
            timeout=timeout,
            headers=headers,
            use_get=use_get,
            get_url_max_bytes=get_url_max_bytes,
            http_version=http_version,
            tls_ca_cert=tls_ca_cert,
            tls_cert=tls_cert,
            tls_key=tls_key,
            interceptors=interceptors,
            retry=retry,
            propagate_deadline=propagate_deadline,
            connection=connection,
        )
        if not isinstance(prime_allocator, bool):
            raise ValueError(
                f"prime_allocator must be True or False: {prime_allocator!r}"
            )
        self._check_transport(transport)
        # A setting of the whole process, not of this client: not in the config.
        if prime_allocator:
            allocator.prime_allocator()
        self._config = config
        self._protocol: ClientProtocol = make_protocol(config)
        self._transport: _T = self._open_transport(config, transport)
        self._hooks = tuple(i for i in config.interceptors if has_hooks(i))
        self._watchers = tuple(i for i in self._hooks if watches_messages(i))
        self._wrappers = tuple(
            i for i in config.interceptors if wraps_unary(i, sync=self._sync)
        )
        self._wrapper_name = unary_wrapper_name(self._sync)
        # Decided once: calls without interceptors skip all of their machinery.
        self._plain = not (self._hooks or self._wrappers)
        self._retry = config.retry
        self._throttle = make_throttle(config.retry)
        self._init_shell()

    def _init_shell(self) -> None:
        """Set up what one shell needs besides the shared state (nothing here)."""

    def _check_transport(self, transport: object) -> None:
        """Refuse a ``transport`` this client cannot drive, at build time."""
        if transport is None or self._is_pyqwest(transport):
            return
        send, close = self._transport_methods
        missing = [
            m for m in (send, close) if not callable(getattr(transport, m, None))
        ]
        kind = "sync" if self._sync else "async"
        if missing:
            raise ValueError(
                f"transport must be a {kind} transport with {send}() and {close}()"
                f" (or a pyqwest transport), not {type(transport).__name__}"
            )
        if inspect.iscoroutinefunction(getattr(transport, send)) == self._sync:
            raise ValueError(
                f"transport {type(transport).__name__} is not a {kind} transport:"
                f" its send() must {'not ' if self._sync else ''}be a coroutine"
                " function"
            )

    @staticmethod
    def _is_pyqwest(transport: object) -> bool:
        raise NotImplementedError

    def _timeout_for(self, timeout: float | None) -> float | None:
        """A call's timeout: its own or the client's, bounded by the inherited deadline.

        Raises ``deadline_exceeded`` when the handler this call is made from
        has no time left.
        """
        if timeout is None:
            timeout = self._config.timeout
        return deadline.outbound_timeout(timeout, self._config.propagate_deadline)

    def _attempts(
        self, method: MethodSpec[Any, Any], timeout: float | None, now: float
    ) -> Attempts | None:
        """The retry state of a call starting at ``now``, if this client retries."""
        if self._retry is None:
            return None
        return Attempts(
            self._retry,
            self._throttle,
            method,
            None if timeout is None else now + timeout,
        )

    def _open_transport(self, config: ClientConfig, transport: _T | _P | None) -> _T:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        """The URL that procedure paths are appended to."""
        return self._config.base_url

    @property
    def config(self) -> ClientConfig:
        """The resolved options of this client."""
        return self._config

    def _start_call(
        self,
        method: MethodSpec[Any, Any],
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> ClientCall:
        config = self._config
        call = ClientCall(
            method, Headers(headers or ()), timeout, config.base_url, config.protocol
        )
        for i in self._hooks:
            i.on_start(call)
        return call

    def _end_call(self, call: ClientCall, error: BaseException | None) -> None:
        err = None if error is None else as_error(error, self._canceled)
        for i in self._hooks:
            i.on_end(call, err)

    def _chain(self, send: _N) -> _N:
        """``send`` inside every unary wrapper, the first interceptor's outermost."""
        if not self._wrappers:
            return send
        chain: Any = send
        for i in reversed(self._wrappers):
            chain = partial(getattr(i, self._wrapper_name), chain)
        return cast(_N, chain)


class StreamBase(Generic[O]):
    """The state of one streaming call, apart from its I/O."""

    headers: Headers
    trailers: Headers
    _deadline: float | None = None
    """When the current attempt times out, on the shell's clock; set as it starts."""
    _overall: float | None = None
    """When the whole call (every attempt) times out, on the shell's clock."""
    _attempts: Attempts | None = None
    """The retry state, when the client retries."""
    _received = False
    """Whether a response message has arrived (no retry after that)."""
    _result: O | None = None
    """A client stream's response message, once it has arrived."""

    def __init__(
        self,
        client: ClientBase[Any, Any],
        method: MethodSpec[Any, O],
        requests: Any,
        single: bool,
        headers: HeadersInput | None,
        timeout: float | None,
    ) -> None:
        self.headers = Headers()
        self.trailers = Headers()
        self._client = client
        self._method = method
        self._requests = requests
        self._single = single
        self._call_headers = headers
        self._timeout = client._config.timeout if timeout is None else timeout
        self._pm: PreparedMethod | None = None
        self._decoder: ResponseStream | None = None
        self._pending: deque[O] = deque()
        self._finished = False
        self._sent = SendState()
        self._call: ClientCall | None = None
        self._encode: Callable[[Message], bytes] | None = None
        """How the shells encode each request message (set as the call starts)."""
        self._attempt = 0
        # Read where the stream is made: the handler it is made in, if any.
        self._inherited = (
            deadline.inherited_deadline() if client._config.propagate_deadline else None
        )

    @property
    def _send_error(self) -> BaseException | None:
        return self._sent.error

    def _encoder(self) -> Callable[[Message], bytes]:
        """How this call's request messages are encoded (set as the call starts)."""
        return self._encode or self._client._protocol.encode_stream_message

    def _start_request(self, clock: Callable[[], float]) -> HTTPRequest:
        """Start the call: run the interceptors' ``on_start``, set the deadline.

        Returns the request head, with its body already when there is one
        message.
        """
        client = self._client
        now = clock()
        self._attempt += 1
        if self._attempt == 1:
            timeout = deadline.call_timeout(
                self._timeout, self._inherited, time.monotonic()
            )
            self._overall = None if timeout is None else now + timeout
            self._attempts = client._attempts(self._method, timeout, now)
        else:
            # A retry gets what is left of the call's time.
            timeout = None if self._overall is None else self._overall - now
        headers = self._call_headers
        if client._hooks:
            call = client._start_call(self._method, headers, timeout)
            self._call = call
            headers, timeout = call.request_headers, call.timeout
        self._deadline = None if timeout is None else now + timeout
        proto = client._protocol
        self._pm = pm = proto.prepare(self._method)
        req = proto.stream_request(pm, headers, timeout)
        encode: Callable[[Message], bytes] = proto.encode_stream_message
        if self._call is not None and client._watchers:
            encode = partial(_watched_encode, encode, client, self._call)
        self._encode = encode
        if self._single:
            req.body = encode(self._requests)
        return req

    def _response_head(self, status: int, headers: Headers) -> None:
        """Record the response head and check it; raises for an error response."""
        assert self._pm is not None
        self.headers = headers
        if self._call is not None:
            self._call.response_headers = headers
        self._decoder = self._client._protocol.response_stream(
            self._pm, status, headers
        )
        if self._call is not None and self._client._watchers:
            self._decoder = WatchedResponse(
                self._decoder, self._call, self._client._watchers
            )

    def _failure(self, e: BaseException, now: float | None) -> BaseException | None:
        """What to raise instead of ``e``, the error that ended the call; None: ``e``.

        A failing request iterator explains a broken request best. A transport
        error once the deadline has passed is ``deadline_exceeded``: ``now`` is
        the time on the deadline's clock, None where the shell maps those itself.
        """
        if not isinstance(e, ConnectError):
            return None
        if self._send_error is not None:
            return self._send_error
        if now is None:
            return None
        late = past_deadline(e, self._deadline, now)
        return None if late is e else late

    def _retry_delay(self, error: BaseException, now: float) -> float | None:
        """How long to wait before trying the failed attempt again; None: don't.

        Server streams retry only before their first message; client and bidi
        streams only while none of their request messages has been pulled.
        """
        attempts = self._attempts
        if attempts is None or self._received or self._finished:
            return None
        if not self._single and self._sent.started:
            return None
        return attempts.retry_after(error, now, started=self._single)

    def _next_attempt(self, error: BaseException) -> None:
        """Forget the failed attempt (its response is closed) before a retry."""
        self._report_end(error)
        self._pm = None
        self._decoder = None
        self._sent = SendState()
        self.headers = Headers()
        self.trailers = Headers()

    def _keep_only(self, message: O) -> None:
        """Hold a client stream's response; a second one is a protocol error."""
        if self._result is not None:
            raise with_response(too_many_messages_error(), self.headers, self.trailers)
        self._result = message

    def _only_response(self) -> UnaryResponse[O]:
        """The client stream's one response with headers and trailers, once ended."""
        if self._result is None:
            raise with_response(no_message_error(), self.headers, self.trailers)
        return UnaryResponse(self._result, self.headers, self.trailers)

    def _finishing(self) -> bool:
        """Mark the stream ended; False if it already was."""
        if self._finished:
            return False
        self._finished = True
        self._pending.clear()
        return True

    def _report_end(self, error: BaseException | None) -> None:
        """Tell the interceptors how the call ended."""
        if error is None and self._attempts is not None:
            self._attempts.succeeded()
        # Taken first: an ``on_end`` that closes the stream must not end it twice.
        call, self._call = self._call, None
        if call is not None:
            call.response_trailers = self.trailers
            self._client._end_call(call, error)
