"""Client interceptors: code that runs around every call a client makes.

One class serves both clients and all four kinds of RPC. Override
:meth:`ClientInterceptor.on_start` and :meth:`ClientInterceptor.on_end` for what
only needs the call's metadata (authentication headers, logging, metrics);
:meth:`ClientInterceptor.on_send` and :meth:`ClientInterceptor.on_receive` to
see each message of every kind of call, streams included (message metrics,
validation); override :meth:`ClientInterceptor.intercept_unary` (async client) or
:meth:`ClientInterceptor.intercept_unary_sync` (sync client) to wrap unary calls
completely (retries, caching, rewriting messages).

Interceptors run in the order given: the first one's ``on_start`` runs first
and its ``intercept_unary`` is the outermost wrapper.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.client.call import UnaryResponse
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers
from protoc_gen_connect_python.runtime.method import MethodSpec


class ClientCall:
    """One call as interceptors see it.

    ``request_headers`` may be changed before the request is sent; ``timeout``
    too. ``response_headers`` and ``response_trailers`` are filled in as they
    arrive.
    """

    __slots__ = (
        "__weakref__",
        "base_url",
        "method",
        "protocol",
        "request_headers",
        "response_headers",
        "response_trailers",
        "start",
        "timeout",
    )

    def __init__(
        self,
        method: MethodSpec[Any, Any],
        headers: Headers,
        timeout: float | None,
        base_url: str = "",
        protocol: str = "connect",
    ) -> None:
        self.method = method
        self.request_headers = headers
        self.timeout = timeout
        self.response_headers = Headers()
        self.response_trailers = Headers()
        self.start = time.monotonic()
        """When the call started, as ``time.monotonic()``."""
        self.base_url = base_url
        """The URL of the server the client calls (its ``base_url``)."""
        self.protocol = protocol
        """``"connect"``, ``"grpc"`` or ``"grpc-web"``."""

    def __repr__(self) -> str:
        return f"ClientCall({self.method.procedure!r})"


AsyncUnaryNext = Callable[[Message, ClientCall], Awaitable[UnaryResponse[Any]]]
SyncUnaryNext = Callable[[Message, ClientCall], UnaryResponse[Any]]


class ClientInterceptor:
    """Base class of client interceptors; every hook passes through by default."""

    def on_start(self, call: ClientCall) -> None:
        """Before the request is sent; may edit ``call.request_headers``."""

    def on_end(self, call: ClientCall, error: ConnectError | None) -> None:
        """After the call ends: the response arrived or a stream finished or failed.

        A stream closed early by its caller ends with ``canceled``.
        """

    def on_send(self, call: ClientCall, message: Message) -> None:
        """Before each request message is sent, in every kind of call.

        Raise ConnectError to fail the call instead of sending it. For a unary
        call it runs once per attempt: a wrapper that calls ``call_next``
        twice sends the message twice.
        """

    def on_receive(self, call: ClientCall, message: Message) -> None:
        """As each response message arrives, before the caller gets it.

        Raise ConnectError to fail the call with it instead.
        """

    async def intercept_unary(
        self, call_next: AsyncUnaryNext, request: Message, call: ClientCall
    ) -> UnaryResponse[Any]:
        """Wrap a unary call of the async client; call ``call_next`` to proceed."""
        return await call_next(request, call)

    def intercept_unary_sync(
        self, call_next: SyncUnaryNext, request: Message, call: ClientCall
    ) -> UnaryResponse[Any]:
        """Wrap a unary call of the sync client; call ``call_next`` to proceed."""
        return call_next(request, call)


def unary_wrapper_name(sync: bool) -> str:
    """The method that wraps unary calls of the sync or the async client."""
    return "intercept_unary_sync" if sync else "intercept_unary"


def wraps_unary(interceptor: ClientInterceptor, sync: bool) -> bool:
    """Whether ``interceptor`` overrides the unary wrapper for that client kind."""
    name = unary_wrapper_name(sync)
    return getattr(type(interceptor), name) is not getattr(ClientInterceptor, name)


def has_hooks(interceptor: ClientInterceptor) -> bool:
    """Whether ``interceptor`` overrides any of the per-call hooks."""
    cls = type(interceptor)
    return (
        cls.on_start is not ClientInterceptor.on_start
        or cls.on_end is not ClientInterceptor.on_end
        or watches_messages(interceptor)
    )


def watches_messages(interceptor: ClientInterceptor) -> bool:
    """Whether ``interceptor`` overrides ``on_send`` or ``on_receive``."""
    cls = type(interceptor)
    return (
        cls.on_send is not ClientInterceptor.on_send
        or cls.on_receive is not ClientInterceptor.on_receive
    )
