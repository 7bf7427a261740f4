"""The deadline a handler's own calls inherit, and the arithmetic on it.

A server app marks the call a handler serves as the current inbound call (a
context variable, set by the server core around the handler). The clients of
this package read it when a call starts: the inbound call's remaining time
bounds the outbound call's timeout, so a chain of calls shares one deadline.
Nothing here awaits or blocks; both clients and both servers use it as is.

Context variables follow the code that runs the handler: the handler's task
(async servers, and tasks it creates, which copy the context) or its thread
(sync servers). Work handed to another thread (a thread pool, a plain
``threading.Thread``) does not see it unless it runs in a copy of the context
(``contextvars.copy_context().run``), as ``asyncio.to_thread`` does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError

if TYPE_CHECKING:
    from protoc_gen_connect_python.runtime.context import RequestContext

INBOUND: ContextVar[RequestContext | None] = ContextVar(
    "protoc_gen_connect_python_inbound_call", default=None
)
"""The call the running handler serves; the server core sets it around handlers."""


def inbound_call() -> RequestContext | None:
    """The context of the call the current handler serves, or None outside one."""
    return INBOUND.get()


def enter_call(ctx: RequestContext | None) -> Token[RequestContext | None]:
    """Make ``ctx`` the current inbound call; pass the token to :func:`leave_call`."""
    return INBOUND.set(ctx)


def leave_call(token: Token[RequestContext | None]) -> None:
    """Undo :func:`enter_call`."""
    INBOUND.reset(token)


@contextmanager
def detached() -> Iterator[None]:
    """Calls made inside this block do not inherit the handler's deadline.

    For work that must outlive the call being served (an audit write, a cache
    fill): the per-call opt-out, where the client option
    ``propagate_deadline=False`` is the opt-out for every call of a client.
    """
    token = INBOUND.set(None)
    try:
        yield
    finally:
        INBOUND.reset(token)


def inherited_deadline() -> float | None:
    """The inbound call's deadline as a ``time.monotonic()`` instant, or None."""
    ctx = INBOUND.get()
    return None if ctx is None else ctx.deadline


def deadline_exceeded_error() -> ConnectError:
    """The error of an outbound call whose inherited deadline has already passed."""
    return ConnectError(
        Code.DEADLINE_EXCEEDED,
        "deadline exceeded: the call being served has no time left for this call",
    )


def call_timeout(
    timeout: float | None, inherited: float | None, now: float
) -> float | None:
    """The timeout an outbound call gets: the shorter of its own and the inherited one.

    ``timeout`` is the call's own (per call, or the client's default), None for
    none; ``inherited`` the inbound call's deadline on the same clock as
    ``now``. Raises ``deadline_exceeded`` when the inherited deadline has
    passed: there is no time left to send anything.
    """
    if inherited is None:
        return timeout
    left = inherited - now
    if left <= 0:
        raise deadline_exceeded_error()
    if timeout is None or left < timeout:
        return left
    return timeout


def outbound_timeout(timeout: float | None, propagate: bool) -> float | None:
    """:func:`call_timeout` with the current inbound call and clock, if ``propagate``."""
    if not propagate:
        return timeout
    inherited = inherited_deadline()
    if inherited is None:
        return timeout
    return call_timeout(timeout, inherited, time.monotonic())
