"""Interceptors: code that runs around every call, on the server and the client.

Server interceptors
-------------------
A server interceptor is an object with up to three hooks; the base classes make
every hook a no-op, so override only what you need:

``on_request(ctx)``
    Runs once the protocol, method and request headers are known and *before*
    the request body is read. Raise ConnectError to reject the call (an auth
    check, say); nothing else of the request is read then.
``wrap_unary(next)``
    Returns a function that replaces ``next`` for unary calls. It receives the
    request message and the context and returns the response message.
``wrap_stream(next)``
    The same for the three streaming kinds, all seen in one shape: a function
    from an iterator of request messages (exactly one for server streams) to an
    iterator of response messages (exactly one for client streams).
    ``ctx.method.stream_type`` tells which kind of call it is.
``on_end(ctx, error)``
    Runs once for every call routed to a method, however it ends: with the
    error it ends with (None on success), before the last bytes of the
    response are sent. It also sees calls refused before the handler ran,
    ``on_request`` included (a 415 or 405 answer, a malformed head, an earlier
    interceptor's refusal, a size limit, a deadline): ``on_request`` may then
    not have run for it. A call whose client went away ends with ``canceled``.
    It is a plain function in sync and async apps alike, so it must not block;
    an exception it raises is logged and does not change the response.

Order: with ``interceptors=(a, b)``, ``a.on_request`` runs before
``b.on_request``, and ``a`` wraps ``b`` which wraps the handler, so ``a`` sees
the call first and the result last; ``b.on_end`` runs before ``a.on_end``.
Wrapping happens once, when the app is built, not per call.

Async apps (``ASGIApp``) take ``AsyncServerInterceptor`` objects and sync apps
(``WSGIApp``) ``SyncServerInterceptor`` objects; they differ only in ``await``.
Client interceptors are defined in ``client/interceptors.py`` and re-exported here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from google.protobuf.message import Message

# Client interceptors are defined beside the clients and re-exported here, so
# that one import serves both sides.
from protoc_gen_connect_python.runtime.client.interceptors import (
    AsyncUnaryNext,
    ClientCall,
    ClientInterceptor,
    SyncUnaryNext,
)
from protoc_gen_connect_python.runtime.context import RequestContext
from protoc_gen_connect_python.runtime.errors import ConnectError

# ---------------------------------------------------------------------------
# Server interceptors
# ---------------------------------------------------------------------------

AsyncUnaryFunc = Callable[[Message, RequestContext], Awaitable[Message]]
"""An async unary handler: request message in, response message out."""
AsyncStreamFunc = Callable[
    [AsyncIterator[Message], RequestContext], AsyncIterator[Message]
]
"""An async streaming handler, in the common shape of all three streaming kinds."""
SyncUnaryFunc = Callable[[Message, RequestContext], Message]
"""A sync unary handler."""
SyncStreamFunc = Callable[[Iterator[Message], RequestContext], Iterator[Message]]
"""A sync streaming handler, in the common shape of all three streaming kinds."""


class AsyncServerInterceptor:
    """Base class of interceptors for ``ASGIApp``; every hook defaults to a no-op."""

    async def on_request(self, ctx: RequestContext) -> None:
        """Inspect the call before its body is read; raise ConnectError to reject."""

    def wrap_unary(self, next: AsyncUnaryFunc) -> AsyncUnaryFunc:
        """Return the function to call instead of ``next`` for unary calls."""
        return next

    def wrap_stream(self, next: AsyncStreamFunc) -> AsyncStreamFunc:
        """Return the function to call instead of ``next`` for streaming calls."""
        return next

    def on_end(self, ctx: RequestContext, error: ConnectError | None) -> None:
        """See how the call ended (None: success); runs for every routed call."""


class SyncServerInterceptor:
    """Base class of interceptors for ``WSGIApp``; every hook defaults to a no-op."""

    def on_request(self, ctx: RequestContext) -> None:
        """Inspect the call before its body is read; raise ConnectError to reject."""

    def wrap_unary(self, next: SyncUnaryFunc) -> SyncUnaryFunc:
        """Return the function to call instead of ``next`` for unary calls."""
        return next

    def wrap_stream(self, next: SyncStreamFunc) -> SyncStreamFunc:
        """Return the function to call instead of ``next`` for streaming calls."""
        return next

    def on_end(self, ctx: RequestContext, error: ConnectError | None) -> None:
        """See how the call ended (None: success); runs for every routed call."""


def _overrides(
    interceptor: AsyncServerInterceptor | SyncServerInterceptor, hook: str
) -> bool:
    base = (
        AsyncServerInterceptor
        if isinstance(interceptor, AsyncServerInterceptor)
        else SyncServerInterceptor
    )
    return getattr(type(interceptor), hook) is not getattr(base, hook)


def overrides_on_request(
    interceptor: AsyncServerInterceptor | SyncServerInterceptor,
) -> bool:
    """Whether ``on_request`` does anything; apps skip the no-op default per call."""
    return _overrides(interceptor, "on_request")


def overrides_on_end(
    interceptor: AsyncServerInterceptor | SyncServerInterceptor,
) -> bool:
    """Whether ``on_end`` does anything; apps skip the no-op default per call."""
    return _overrides(interceptor, "on_end")


__all__ = [
    "AsyncServerInterceptor",
    "AsyncStreamFunc",
    "AsyncUnaryFunc",
    "AsyncUnaryNext",
    "ClientCall",
    "ClientInterceptor",
    "SyncServerInterceptor",
    "SyncStreamFunc",
    "SyncUnaryFunc",
    "SyncUnaryNext",
    "overrides_on_end",
    "overrides_on_request",
]
