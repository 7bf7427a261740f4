"""Retry policy and decisions, without I/O: the clients only wait and resend.

A :class:`RetryPolicy` says which failures are worth another attempt;
:class:`RetryThrottle` (one per client) keeps a failing backend from being
stormed; :class:`Attempts` decides, for one call, whether and after how long
to try again. The async client waits with ``asyncio.sleep``, the sync one on
an event its ``close()`` sets; everything else is here, once.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
)
from google.protobuf.message import DecodeError, Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.method import Idempotency, MethodSpec

RETRY_INFO = "google.rpc.RetryInfo"
PUSHBACK_HEADER = "grpc-retry-pushback-ms"

_SAFE = frozenset({Idempotency.NO_SIDE_EFFECTS, Idempotency.IDEMPOTENT})


@dataclass(frozen=True)
class RetryThrottling:
    """The retry budget: a token bucket shared by every call of one client.

    It starts full with ``max_tokens``. Each failure the policy would retry
    takes one token, each success gives back ``token_ratio``; retries stop while the bucket holds
    half of ``max_tokens`` or less, and resume as successes refill it (the
    rule of gRPC's ``retryThrottling``).
    """

    max_tokens: float = 10.0
    token_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.max_tokens <= 1000:
            raise ValueError("max_tokens must be in (0, 1000]")
        if not 0 < self.token_ratio <= 1:
            raise ValueError("token_ratio must be in (0, 1]")


@dataclass(frozen=True)
class RetryPolicy:
    """When and how a client tries a failed call again (opt-in: pass ``retry=``).

    ``max_attempts`` counts the first attempt. The wait before retry *n* is a
    random duration up to ``initial_backoff * backoff_multiplier ** (n - 1)``,
    capped at ``max_backoff`` (full jitter), unless the server said how long to
    wait: a ``google.rpc.RetryInfo`` error detail or a
    ``grpc-retry-pushback-ms`` trailer (a negative or malformed pushback means
    "do not retry"; a wait longer than ``max_server_delay`` is not made). No
    retry is attempted that could not start before the call's deadline.

    ``codes`` are retried on methods whose idempotency is in ``idempotency``;
    ``resource_exhausted`` is retried too when the error carries RetryInfo
    (``retry_info_resource_exhausted``). Other methods are retried only when
    the request never left this process (the connection was refused).
    Server streams retry only before their first response message; client and
    bidi streams only while none of their request messages has been sent.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    backoff_multiplier: float = 2.0
    codes: frozenset[Code] = frozenset({Code.UNAVAILABLE})
    idempotency: frozenset[Idempotency] = _SAFE
    retry_info_resource_exhausted: bool = True
    max_server_delay: float = 30.0
    throttling: RetryThrottling | None = field(default_factory=RetryThrottling)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(
            self.max_attempts, int
        ):
            raise ValueError("max_attempts must be an int")
        if not 1 <= self.max_attempts <= 10:
            raise ValueError("max_attempts must be between 1 and 10")
        if not self.initial_backoff > 0 or not self.max_backoff > 0:
            raise ValueError("initial_backoff and max_backoff must be positive")
        if not self.max_server_delay >= 0:
            raise ValueError("max_server_delay must not be negative")
        if not self.backoff_multiplier >= 1:
            raise ValueError("backoff_multiplier must be at least 1")
        for c in self.codes:
            if not isinstance(c, Code):
                raise ValueError(f"codes must hold error codes: {c!r}")
        for i in self.idempotency:
            if not isinstance(i, Idempotency):
                raise ValueError(f"idempotency must hold Idempotency values: {i!r}")
        if self.throttling is not None and not isinstance(
            self.throttling, RetryThrottling
        ):
            raise ValueError("throttling must be a RetryThrottling or None")

    def backoff(self, retry: int, rand: Callable[[], float]) -> float:
        """The jittered wait before retry number ``retry`` (1 for the first)."""
        cap = min(
            self.initial_backoff * self.backoff_multiplier ** (retry - 1),
            self.max_backoff,
        )
        return cap * rand()


class RetryThrottle:
    """The live token bucket of :class:`RetryThrottling`; safe across threads."""

    __slots__ = ("_lock", "_max", "_ratio", "tokens")

    def __init__(self, spec: RetryThrottling) -> None:
        self._max = spec.max_tokens
        self._ratio = spec.token_ratio
        self._lock = threading.Lock()
        self.tokens = spec.max_tokens

    def failed(self) -> bool:
        """Record a failed attempt; whether a retry is still allowed."""
        with self._lock:
            self.tokens = max(0.0, self.tokens - 1)
            return self.tokens > self._max / 2

    def succeeded(self) -> None:
        """Record a successful attempt."""
        with self._lock:
            self.tokens = min(self._max, self.tokens + self._ratio)


@functools.cache
def _retry_info_class() -> type[Message]:
    """``google.rpc.RetryInfo``, built here: googleapis-common-protos is optional."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(duration_pb2.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(
        name="protoc_gen_connect_python/retry_info.proto",
        package="google.rpc",
        dependency=[duration_pb2.DESCRIPTOR.name],
        syntax="proto3",
    )
    m = f.message_type.add(name="RetryInfo")
    m.field.add(
        name="retry_delay",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        type_name=".google.protobuf.Duration",
    )
    pool.Add(f)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("google.rpc.RetryInfo")
    )


def retry_info_delay(value: bytes) -> float | None:
    """The ``retry_delay`` of a serialized ``google.rpc.RetryInfo``, in seconds.

    None when it has none or does not parse; never negative.
    """
    try:
        info: Any = _retry_info_class().FromString(value)
    except (DecodeError, RuntimeError, ValueError):
        return None
    if not info.HasField("retry_delay"):
        return None
    d: duration_pb2.Duration = info.retry_delay
    return max(0.0, d.seconds + d.nanos / 1e9)


def server_delay(err: ConnectError) -> tuple[bool, float | None]:
    """What the server said about retrying ``err``: (allowed, delay).

    A ``grpc-retry-pushback-ms`` trailer wins: a non-negative integer is the
    delay, anything else forbids the retry. Otherwise a RetryInfo detail gives
    the delay. (True, None) when the server said nothing.
    """
    pushback = err.metadata.get(PUSHBACK_HEADER)
    if pushback is not None:
        text = pushback.strip()
        if not text.isascii() or not text.isdigit():
            return False, None
        return True, int(text) / 1000
    for d in err.details:
        if d.type_name == RETRY_INFO:
            delay = retry_info_delay(d.value)
            if delay is not None:
                return True, delay
    return True, None


def never_sent(err: BaseException) -> bool:
    """Whether ``err`` proves the request never reached the server.

    True for a refused connection, and for errors a transport marks with a
    true ``never_sent`` attribute.
    """
    e: BaseException | None = err
    for _ in range(8):
        if e is None:
            return False
        if getattr(e, "never_sent", False) or isinstance(e, ConnectionRefusedError):
            return True
        # Causes only: an error raised while another was handled says nothing.
        e = e.__cause__
    return False


class Attempts:
    """The retry decisions of one call.

    ``deadline`` is when the whole call times out (None: never), on the clock
    the shell passes as ``now``. ``rand`` returns a float in [0, 1) for jitter.
    """

    __slots__ = ("_deadline", "_method", "_policy", "_rand", "_throttle", "count")

    def __init__(
        self,
        policy: RetryPolicy,
        throttle: RetryThrottle | None,
        method: MethodSpec[Any, Any],
        deadline: float | None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._policy = policy
        self._throttle = throttle
        self._method = method
        self._deadline = deadline
        self._rand = rand
        self.count = 1
        """Attempts made so far, the current one included."""

    def wait_or_raise(self, err: ConnectError, now: float) -> float:
        """:meth:`retry_after` for a unary call: the wait, or ``err`` raised."""
        delay = self.retry_after(err, now)
        if delay is None:
            raise err
        return delay

    def time_left(self, now: float) -> float | None:
        """The timeout of the next attempt: what is left of the call's."""
        return None if self._deadline is None else self._deadline - now

    def succeeded(self) -> None:
        """The current attempt got its response."""
        if self._throttle is not None:
            self._throttle.succeeded()

    def retry_after(
        self, err: BaseException, now: float, started: bool = True
    ) -> float | None:
        """The wait before another attempt after ``err``, or None to give up.

        ``started`` is False when the attempt provably sent nothing the server
        could act on (a stream none of whose messages went out).
        """
        if not isinstance(err, ConnectError):
            return None
        policy = self._policy
        code = err.code
        allowed, delay = server_delay(err)
        retryable = code in policy.codes or (
            code is Code.RESOURCE_EXHAUSTED
            and policy.retry_info_resource_exhausted
            and any(d.type_name == RETRY_INFO for d in err.details)
        )
        if not retryable:
            return None
        # A backend failing this way drains the budget, retried or not.
        if self._throttle is not None and not self._throttle.failed():
            return None
        unsent = not started or never_sent(err)
        if not unsent and self._method.idempotency not in policy.idempotency:
            return None
        if not allowed or self.count >= policy.max_attempts:
            return None
        if delay is None:
            delay = policy.backoff(self.count, self._rand)
        elif delay > policy.max_server_delay:
            return None
        if self._deadline is not None and now + delay >= self._deadline:
            return None
        self.count += 1
        return delay


def make_throttle(policy: RetryPolicy | None) -> RetryThrottle | None:
    """The bucket a client keeps for ``policy``."""
    if policy is None or policy.throttling is None:
        return None
    return RetryThrottle(policy.throttling)
