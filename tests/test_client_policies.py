"""Client options checked at build time, deadline inheritance and retry decisions.

The retry and deadline rules are sans-IO (``client/retry.py``,
``runtime/deadline.py``) and are tested here directly, with a controllable
clock and random source; the clients' use of them is tested over a recording
transport, in process. ``test_client_lifecycle.py`` has the real servers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pyqwest
import pytest
from client_env import SERVER_STREAM_SPEC, UNARY_SPEC
from google.protobuf.duration_pb2 import Duration
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc.error_details_pb2 import (  # type: ignore[import-untyped]
    RetryInfo,
)
from hypothesis import given
from hypothesis import strategies as st

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    ClientInterceptor,
    Code,
    ConnectError,
    ErrorDetail,
    Headers,
    Idempotency,
    MethodSpec,
    RequestContext,
    StreamType,
    SyncClient,
)
from protoc_gen_connect_python.runtime.client.core import HTTPRequest
from protoc_gen_connect_python.runtime.client.retry import (
    Attempts,
    RetryPolicy,
    RetryThrottle,
    RetryThrottling,
    never_sent,
    retry_info_delay,
    server_delay,
)
from protoc_gen_connect_python.runtime.deadline import (
    call_timeout,
    detached,
    enter_call,
    inbound_call,
    leave_call,
)

# -- options are checked when the client is built ---------------------------------


class _AsyncShape:
    async def send(self, request: HTTPRequest, body: Any) -> Any:
        raise AssertionError("never called")

    async def aclose(self) -> None:
        pass


class _SyncShape:
    def send(self, request: HTTPRequest, body: Any) -> Any:
        raise AssertionError("never called")

    def close(self) -> None:
        pass


BAD_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("transport-object", {"transport": object()}),
    ("transport-str", {"transport": "http1"}),
    ("timeout-str", {"timeout": "1"}),
    ("timeout-bool", {"timeout": True}),
    ("timeout-nan", {"timeout": float("nan")}),
    ("read-max-float", {"read_max_bytes": 1.5}),
    ("send-max-str", {"send_max_bytes": "10"}),
    ("use-get-str", {"use_get": "yes"}),
    ("codec-int", {"codec": 3}),
    ("accept-str", {"accept_compression": "gzip"}),
    ("accept-int", {"accept_compression": [3]}),
    ("send-compression-int", {"send_compression": 3}),
    ("interceptor", {"interceptors": [object()]}),
    ("interceptors-one", {"interceptors": ClientInterceptor()}),
    ("retry", {"retry": 3}),
    ("propagate", {"propagate_deadline": None}),
    ("prime", {"prime_allocator": "no"}),
    ("headers", {"headers": 3}),
    ("tls-ca-int", {"tls_ca_cert": 0}),
    ("tls-ca-missing", {"tls_ca_cert": "/nonexistent/ca.pem"}),
    ("tls-cert-alone", {"tls_cert": b"-----BEGIN CERTIFICATE-----"}),
    ("protocol", {"protocol": "http"}),
    ("http-version", {"http_version": 2}),
    ("compression-unknown", {"send_compression": "lz4"}),
    ("header-value-int", {"headers": {"a": 1}}),
    ("header-name", {"headers": {"bad name": "x"}}),
    ("header-newline", {"headers": {"a": "x\r\ny: z"}}),
]


@pytest.mark.parametrize(
    ("case", "options"), BAD_OPTIONS, ids=[c[0] for c in BAD_OPTIONS]
)
@pytest.mark.parametrize("cls", [AsyncClient, SyncClient])
def test_bad_options_fail_at_build_time(
    cls: type[AsyncClient] | type[SyncClient], case: str, options: dict[str, Any]
) -> None:
    with pytest.raises(ValueError) as raised:
        cls("http://127.0.0.1:1", **options)
    # Our words, naming the option or what was wrong; never a Python error's text.
    assert "object has no attribute" not in str(raised.value)


def test_a_transport_of_the_other_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="async transport"):
        AsyncClient("http://h", transport=_SyncShape())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sync transport"):
        SyncClient("http://h", transport=_AsyncShape())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="async transport"):
        AsyncClient("http://h", transport=pyqwest.SyncHTTPTransport())  # type: ignore[arg-type]
    # The right shapes are taken.
    AsyncClient("http://h", transport=_AsyncShape())
    SyncClient("http://h", transport=_SyncShape())


def test_retry_policy_values_are_checked() -> None:
    for bad in (
        {"max_attempts": 0},
        {"max_attempts": 11},
        {"max_attempts": 2.0},
        {"initial_backoff": 0},
        {"max_backoff": -1},
        {"backoff_multiplier": 0.5},
        {"codes": frozenset({"unavailable"})},
        {"idempotency": frozenset({"idempotent"})},
        {"throttling": 3},
    ):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)
    with pytest.raises(ValueError):
        RetryThrottling(max_tokens=0)
    with pytest.raises(ValueError):
        RetryThrottling(token_ratio=2)


# -- deadline arithmetic ------------------------------------------------------------


def test_call_timeout_takes_the_shorter_and_refuses_a_passed_deadline() -> None:
    assert call_timeout(None, None, 100.0) is None
    assert call_timeout(5.0, None, 100.0) == 5.0
    assert call_timeout(None, 103.0, 100.0) == 3.0
    assert call_timeout(5.0, 103.0, 100.0) == 3.0
    assert call_timeout(2.0, 103.0, 100.0) == 2.0
    for late in (100.0, 99.0):
        with pytest.raises(ConnectError) as raised:
            call_timeout(5.0, late, 100.0)
        assert raised.value.code is Code.DEADLINE_EXCEEDED


# -- what the clients send inside a handler -----------------------------------------


def _inbound(deadline: float | None) -> RequestContext:
    return RequestContext(UNARY_SPEC, "connect", Headers(), deadline=deadline)


class _Head(Exception):
    """Raised by the recording transports once they have the request."""


class _RecordingAsync:
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    async def send(
        self, request: HTTPRequest, body: AsyncIterator[bytes] | None
    ) -> Any:
        self.timeouts.append(request.timeout)
        raise ConnectError(Code.UNAVAILABLE, "recorded")

    async def aclose(self) -> None:
        pass


class _RecordingSync:
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def send(self, request: HTTPRequest, body: Iterator[bytes] | None) -> Any:
        self.timeouts.append(request.timeout)
        raise ConnectError(Code.UNAVAILABLE, "recorded")

    def close(self) -> None:
        pass


def _sync_timeouts(
    client_timeout: float | None,
    propagate: bool,
    inbound: float | None,
    call_timeout_: float | None,
    detach: bool = False,
    stream: bool = False,
) -> list[float | None]:
    t = _RecordingSync()
    c = SyncClient(
        "http://h", transport=t, timeout=client_timeout, propagate_deadline=propagate
    )
    token = enter_call(None if inbound is None else _inbound(inbound))
    try:
        with pytest.raises(ConnectError), detached() if detach else _nothing():
            if stream:
                next(c.call_server_stream(SERVER_STREAM_SPEC, StringValue()))
            else:
                c.call_unary(UNARY_SPEC, StringValue(), timeout=call_timeout_)
    finally:
        leave_call(token)
    return t.timeouts


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_handler_s_deadline_bounds_its_calls() -> None:
    import time

    soon = time.monotonic() + 3
    (got,) = _sync_timeouts(None, True, soon, None)
    assert got is not None and 0 < got <= 3
    # A shorter timeout of the call's own wins; a longer one is cut.
    assert _sync_timeouts(None, True, soon, 0.5) == [0.5]
    (got,) = _sync_timeouts(60.0, True, soon, None)
    assert got is not None and got <= 3
    # Streams too.
    (got,) = _sync_timeouts(None, True, soon, None, stream=True)
    assert got is not None and 0 < got <= 3
    # Opted out: for the client, or for the calls in a block.
    assert _sync_timeouts(None, False, soon, None) == [None]
    assert _sync_timeouts(None, True, soon, None, detach=True) == [None]
    # No handler, or a handler without a deadline: nothing changes.
    assert _sync_timeouts(None, True, None, None) == [None]
    assert _sync_timeouts(7.0, True, None, None) == [7.0]


def test_no_time_left_fails_without_sending() -> None:
    import time

    t = _RecordingSync()
    c = SyncClient("http://h", transport=t)
    token = enter_call(_inbound(time.monotonic() - 1))
    try:
        with pytest.raises(ConnectError) as raised:
            c.call_unary(UNARY_SPEC, StringValue())
        assert raised.value.code is Code.DEADLINE_EXCEEDED
        with pytest.raises(ConnectError) as raised:
            next(c.call_server_stream(SERVER_STREAM_SPEC, StringValue()))
        assert raised.value.code is Code.DEADLINE_EXCEEDED
    finally:
        leave_call(token)
    assert t.timeouts == []


def test_async_calls_inherit_in_their_task_and_its_children() -> None:
    import time

    async def main() -> list[float | None]:
        t = _RecordingAsync()
        c = AsyncClient("http://h", transport=t)

        async def call() -> None:
            with pytest.raises(ConnectError):
                await c.call_unary(UNARY_SPEC, StringValue())

        token = enter_call(_inbound(time.monotonic() + 3))
        try:
            await call()
            # A task made here copies the context, and the deadline with it.
            await asyncio.create_task(call())
        finally:
            leave_call(token)
        await call()  # outside the handler
        return t.timeouts

    first, child, outside = asyncio.run(main())
    assert first is not None and 0 < first <= 3
    assert child is not None and 0 < child <= 3
    assert outside is None


def test_another_thread_does_not_inherit() -> None:
    import time

    t = _RecordingSync()
    c = SyncClient("http://h", transport=t)
    token = enter_call(_inbound(time.monotonic() + 3))
    try:

        def call() -> None:
            with pytest.raises(ConnectError):
                c.call_unary(UNARY_SPEC, StringValue())

        worker = threading.Thread(target=call)
        worker.start()
        worker.join(10)
        assert inbound_call() is not None
    finally:
        leave_call(token)
    assert t.timeouts == [None]
    assert inbound_call() is None


# -- retry decisions ------------------------------------------------------------------

IDEMPOTENT = MethodSpec(
    "t.v1.S",
    "Put",
    "put",
    StreamType.UNARY,
    StringValue,
    StringValue,
    Idempotency.IDEMPOTENT,
)
WRITE = MethodSpec("t.v1.S", "Post", "post", StreamType.UNARY, StringValue, StringValue)


def _retry_info(seconds: float) -> RetryInfo:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return RetryInfo(retry_delay=d)


def _attempts(
    policy: RetryPolicy | None = None,
    method: MethodSpec[Any, Any] = IDEMPOTENT,
    deadline: float | None = None,
    throttle: RetryThrottle | None = None,
) -> Attempts:
    return Attempts(policy or RetryPolicy(), throttle, method, deadline, lambda: 0.5)


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    policy = RetryPolicy(
        max_attempts=10, initial_backoff=0.1, backoff_multiplier=2, max_backoff=0.5
    )
    a = _attempts(policy)
    err = ConnectError(Code.UNAVAILABLE, "down")
    delays = [a.retry_after(err, 0.0) for _ in range(5)]
    assert delays == [0.05, 0.1, 0.2, 0.25, 0.25]
    assert policy.backoff(1, lambda: 0.0) == 0.0


def test_what_is_retried() -> None:
    down = ConnectError(Code.UNAVAILABLE, "down")
    assert _attempts().retry_after(down, 0.0) == 0.05
    # Not a code of the policy.
    assert _attempts().retry_after(ConnectError(Code.INTERNAL, "x"), 0.0) is None
    assert _attempts().retry_after(ValueError("x"), 0.0) is None
    # Side effects: only when nothing was sent.
    assert _attempts(method=WRITE).retry_after(down, 0.0) is None
    assert _attempts(method=WRITE).retry_after(down, 0.0, started=False) == 0.05
    refused = ConnectError(Code.UNAVAILABLE, "cannot connect")
    refused.__cause__ = ConnectionRefusedError()
    assert never_sent(refused)
    assert _attempts(method=WRITE).retry_after(refused, 0.0) == 0.05
    # resource_exhausted with RetryInfo only, which says how long to wait.
    busy = ConnectError(Code.RESOURCE_EXHAUSTED, "busy")
    assert _attempts().retry_after(busy, 0.0) is None
    busy_info = ConnectError(
        Code.RESOURCE_EXHAUSTED, "busy", details=[_retry_info(1.5)]
    )
    assert _attempts().retry_after(busy_info, 0.0) == 1.5
    no = RetryPolicy(retry_info_resource_exhausted=False)
    assert _attempts(no).retry_after(busy_info, 0.0) is None
    # max_attempts counts the first.
    a = _attempts(RetryPolicy(max_attempts=2))
    assert a.retry_after(down, 0.0) is not None
    assert a.retry_after(down, 0.0) is None
    assert a.count == 2


def test_server_pushback_and_the_deadline() -> None:
    def pushed(value: str) -> ConnectError:
        return ConnectError(
            Code.UNAVAILABLE,
            "down",
            metadata=Headers({"grpc-retry-pushback-ms": value}),
        )

    assert server_delay(pushed("250")) == (True, 0.25)
    assert _attempts().retry_after(pushed("250"), 0.0) == 0.25
    for bad in ("-1", "soon", "", "1e3", "٣"):
        assert server_delay(pushed(bad))[0] is False
        assert _attempts().retry_after(pushed(bad), 0.0) is None
    # Never a retry that could not start before the deadline.
    assert _attempts(deadline=10.0).retry_after(pushed("2000"), 7.0) == 2.0
    assert _attempts(deadline=10.0).retry_after(pushed("3000"), 7.0) is None
    a = _attempts(deadline=10.0)
    assert a.time_left(7.5) == 2.5


def test_the_budget_stops_retries_and_refills() -> None:
    throttle = RetryThrottle(RetryThrottling(max_tokens=4, token_ratio=0.5))
    down = ConnectError(Code.UNAVAILABLE, "down")
    policy = RetryPolicy(max_attempts=10)
    a = _attempts(policy, throttle=throttle)
    assert a.retry_after(down, 0.0) is not None  # 3 tokens left
    assert a.retry_after(down, 0.0) is None  # 2: half, no more retries
    other = _attempts(policy, throttle=throttle)
    assert other.retry_after(down, 0.0) is None  # 1
    for _ in range(6):
        other.succeeded()  # back to 4, the most it holds
    assert _attempts(policy, throttle=throttle).retry_after(down, 0.0) is not None
    for _ in range(100):
        other.succeeded()
    assert throttle.tokens == 4


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_retry_info_delay_reads_what_retry_info_holds(seconds: float) -> None:
    info = _retry_info(seconds).SerializeToString()
    got = retry_info_delay(info)
    assert got is not None and abs(got - seconds) < 1e-6


@given(st.binary(max_size=64))
def test_retry_info_delay_never_fails_on_any_bytes(data: bytes) -> None:
    got = retry_info_delay(data)
    assert got is None or got >= 0


def test_retry_info_delay_cases() -> None:
    assert retry_info_delay(b"") is None
    assert retry_info_delay(b"\x0a\x05\x08") is None  # length past the end
    assert retry_info_delay(b"\x0a\x00") == 0.0
    negative = RetryInfo(retry_delay=Duration(seconds=-5)).SerializeToString()
    assert retry_info_delay(negative) == 0.0
    # Unknown fields are skipped.
    assert retry_info_delay(b"\x10\x01" + _retry_info(2).SerializeToString()) == 2.0


def test_a_server_asking_for_a_long_wait_is_not_retried() -> None:
    long_wait = ConnectError(
        Code.UNAVAILABLE,
        "down",
        metadata=Headers({"grpc-retry-pushback-ms": "31000"}),
    )
    assert _attempts().retry_after(long_wait, 0.0) is None
    patient = RetryPolicy(max_server_delay=60)
    assert _attempts(patient).retry_after(long_wait, 0.0) == 31.0


# -- a stream closed while it waits to retry ----------------------------------------

WATCH_IDEMPOTENT = MethodSpec(
    "t.v1.S",
    "Watch",
    "watch",
    StreamType.SERVER_STREAM,
    StringValue,
    StringValue,
    Idempotency.IDEMPOTENT,
)


class _CloseOnFailure(ClientInterceptor):
    """Closes (sync) or cancels (async) the stream as its first attempt ends.

    Each attempt ends once for the interceptors; the wait after it is no
    attempt, so closing then reports nothing more.
    """

    def __init__(self) -> None:
        self.stream: Any = None
        self.ends: list[str] = []

    def on_end(self, call: Any, error: ConnectError | None) -> None:
        self.ends.append("ok" if error is None else error.code.wire_name)
        if len(self.ends) == 1:
            if isinstance(self.stream, asyncio.Task):
                self.stream.cancel()
            else:
                self.stream.close()


def test_sync_stream_closed_while_waiting_makes_no_new_attempt() -> None:
    t = _RecordingSync()
    close = _CloseOnFailure()
    policy = RetryPolicy(initial_backoff=0.001, max_backoff=0.001)
    c = SyncClient("http://h", transport=t, retry=policy, interceptors=[close])
    stream = c.call_server_stream(WATCH_IDEMPOTENT, StringValue())
    close.stream = stream
    with pytest.raises(ConnectError) as raised:
        next(stream)
    assert raised.value.code is Code.CANCELED
    assert len(t.timeouts) == 1
    assert close.ends == ["unavailable"]


def test_async_stream_canceled_while_waiting_makes_no_new_attempt() -> None:
    async def main() -> tuple[list[float | None], list[str], bool]:
        t = _RecordingAsync()
        cancel = _CloseOnFailure()
        policy = RetryPolicy(initial_backoff=0.001, max_backoff=0.001)
        c = AsyncClient("http://h", transport=t, retry=policy, interceptors=[cancel])
        stream = c.call_server_stream(WATCH_IDEMPOTENT, StringValue())
        cancel.stream = asyncio.current_task()
        with pytest.raises(asyncio.CancelledError):
            await stream.__anext__()
        ended = False
        try:
            await stream.__anext__()
        except StopAsyncIteration:
            ended = True
        return t.timeouts, cancel.ends, ended

    timeouts, ends, ended = asyncio.run(main())
    assert len(timeouts) == 1
    assert ends == ["unavailable"]
    assert ended


class _PushedBack:
    """Fails every request with ``unavailable`` and a 20 s pushback."""

    def __init__(self) -> None:
        self.sent = threading.Event()
        self.count = 0

    def send(self, request: HTTPRequest, body: Iterator[bytes] | None) -> Any:
        self.count += 1
        self.sent.set()
        raise ConnectError(
            Code.UNAVAILABLE,
            "down",
            metadata=Headers({"grpc-retry-pushback-ms": "20000"}),
        )

    def close(self) -> None:
        pass


@pytest.mark.parametrize("kind", ["unary", "stream"])
def test_sync_close_from_another_thread_ends_a_retry_wait(kind: str) -> None:
    t = _PushedBack()
    c = SyncClient("http://h", transport=t, retry=RetryPolicy())
    stream = c.call_server_stream(WATCH_IDEMPOTENT, StringValue())
    errors: list[ConnectError] = []

    def call() -> None:
        try:
            if kind == "unary":
                c.call_unary(IDEMPOTENT, StringValue())
            else:
                next(stream)
        except ConnectError as e:
            errors.append(e)

    worker = threading.Thread(target=call)
    worker.start()
    assert t.sent.wait(10)
    if kind == "unary":
        c.close()
    else:
        stream.close()
    # Well before the 20 s the server asked for.
    worker.join(10)
    assert not worker.is_alive()
    assert [e.code for e in errors] == [Code.CANCELED]
    assert t.count == 1


@given(
    st.one_of(st.none(), st.text(max_size=12)),
    st.lists(st.binary(max_size=24), max_size=3),
)
def test_what_a_server_says_about_retrying_never_breaks_the_client(
    pushback: str | None, infos: list[bytes]
) -> None:
    metadata = Headers()
    if pushback is not None:
        metadata["grpc-retry-pushback-ms"] = pushback
    err = ConnectError(
        Code.UNAVAILABLE,
        "down",
        details=[ErrorDetail.from_wire("google.rpc.RetryInfo", b) for b in infos],
        metadata=metadata,
    )
    allowed, delay = server_delay(err)
    assert delay is None or delay >= 0
    if pushback is not None and not allowed:
        assert delay is None
    got = _attempts(deadline=100.0).retry_after(err, 0.0)
    assert got is None or 0 <= got < 100
