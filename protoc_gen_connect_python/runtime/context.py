"""What a handler sees of its call besides the request message."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

from protoc_gen_connect_python.runtime.headers import Headers
from protoc_gen_connect_python.runtime.method import MethodSpec
from protoc_gen_connect_python.runtime.shutdown import DRAIN


class RequestView(Protocol):
    """How a server shell reads headers and peer from its request object.

    The servers build ``RequestContext`` with one of these and the request
    (an ASGI scope, a WSGI environ): the full ``Headers`` and the peer string
    are made only if the handler asks for them.
    """

    def headers(self, src: Any) -> Headers:
        """Every request header."""
        ...

    def peer(self, src: Any) -> str | None:
        """The client's address as ``host:port``, or None."""
        ...


class _Sent:
    """An awaitable that is already done (what ``send_headers`` returns when
    there is nothing left to wait for)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


SENT: Awaitable[None] = _Sent()


class RequestContext:
    """Per-call information for a server handler, the same for sync and async.

    Handlers read ``request_headers`` and may add to ``response_headers`` (sent
    before the first message, or by ``send_headers``) and ``response_trailers``
    (sent at the end).
    """

    __slots__ = (
        "_buffer_hint",
        "_head_sender",
        "_lazy_peer",
        "_peer",
        "_request_headers",
        "_response_headers",
        "_response_trailers",
        "_src",
        "_view",
        "deadline",
        "method",
        "protocol",
    )

    _head_sender: Callable[[], Awaitable[None]] | None

    def __init__(
        self,
        method: MethodSpec[Any, Any],
        protocol: str,
        request_headers: Headers,
        *,
        peer: str | None = None,
        deadline: float | None = None,
    ) -> None:
        self.method = method
        """The spec of the method being called."""
        self.protocol = protocol
        """``"connect"``, ``"grpc"`` or ``"grpc-web"``."""
        self._request_headers: Headers | None = request_headers
        self._response_headers: Headers | None = None
        self._response_trailers: Headers | None = None
        self._peer = peer
        self._lazy_peer = False
        self._view: RequestView | None = None
        self._src: Any = None
        self.deadline = deadline
        """The ``time.monotonic()`` instant the call times out at, or None."""

    @classmethod
    def _from_view(
        cls, method: MethodSpec[Any, Any], protocol: str, view: RequestView, src: Any
    ) -> RequestContext:
        """A context whose headers and peer are read from ``src`` when first used."""
        self = cls.__new__(cls)
        self.method = method
        self.protocol = protocol
        self._request_headers = None
        self._response_headers = None
        self._response_trailers = None
        self._peer = None
        self._lazy_peer = True
        self._view = view
        self._src = src
        self.deadline = None
        return self

    @property
    def request_headers(self) -> Headers:
        """The request's headers (names in lower case)."""
        h = self._request_headers
        if h is None:
            assert self._view is not None
            h = self._request_headers = self._view.headers(self._src)
        return h

    @request_headers.setter
    def request_headers(self, value: Headers) -> None:
        self._request_headers = value

    @property
    def response_headers(self) -> Headers:
        """Headers to send before the first response message."""
        h = self._response_headers
        if h is None:
            h = self._response_headers = Headers()
        return h

    @response_headers.setter
    def response_headers(self, value: Headers) -> None:
        self._response_headers = value

    @property
    def response_trailers(self) -> Headers:
        """Trailers to send after the last response message."""
        h = self._response_trailers
        if h is None:
            h = self._response_trailers = Headers()
        return h

    @response_trailers.setter
    def response_trailers(self, value: Headers) -> None:
        self._response_trailers = value

    @property
    def peer(self) -> str | None:
        """The client's address as ``host:port``, when the server knows it."""
        if self._lazy_peer:
            self._lazy_peer = False
            assert self._view is not None
            self._peer = self._view.peer(self._src)
        return self._peer

    @peer.setter
    def peer(self, value: str | None) -> None:
        self._lazy_peer = False
        self._peer = value

    def send_headers(self) -> Awaitable[None]:
        """Send the response headers now instead of with the first message.

        For streaming responses (server and bidi streams; client streams too),
        so a client sees ``response_headers`` before a handler that takes its
        time produces the first message. Headers added afterwards are not
        sent. Calling it again, or after the first message, does nothing; in
        unary calls it does nothing either (the headers go with the response).

        WSGI: the headers are written before this returns (granian's WSGI
        sends them only with the first message: it has no way to send a
        head before the app returns). ASGI: the send is
        started at once and completes while the handler next waits; ``await``
        the result to wait for it. Either way the return value may be ignored
        (sync handlers) or awaited (async handlers).
        """
        # The shells set the sender for streaming calls only; unary calls never
        # pay for the attribute.
        sender: Callable[[], Awaitable[None]] | None = getattr(
            self, "_head_sender", None
        )
        if sender is None:
            return SENT
        return sender()

    @property
    def buffer_hint(self) -> bool:
        """Whether response messages may wait to be sent together (default False).

        Set it in a streaming handler that yields its messages without waiting
        in between (a bulk download, an export): they are then joined into
        writes of up to 64 KiB. What is held goes out once 64 KiB are reached,
        with the next message after the hint is cleared, or at the end of the
        stream. A message held while the handler waits waits with it, so leave
        the hint unset for handlers that stream events as they happen.

        WSGI gains most: without the hint every message is a write of its own,
        as a blocking handler gives the shell no moment to send what it would
        hold. ASGI already joins the messages a handler yields back to back and
        sends them when it first waits; with the hint they are held across its
        waits too. Unary responses are one write either way.
        """
        hint: bool = getattr(self, "_buffer_hint", False)
        return hint

    @buffer_hint.setter
    def buffer_hint(self, value: bool) -> None:
        self._buffer_hint = value

    @property
    def shutting_down(self) -> bool:
        """Whether the server has begun to shut down (SIGTERM, lifespan shutdown).

        New streams are refused by then; this call may finish. A stream still
        open ``shutdown_grace`` seconds later is ended with ``unavailable``,
        so a long stream should wrap up (send a last message, tell its client
        to reconnect elsewhere) once this turns True.
        """
        return DRAIN.started is not None

    def wait_shutdown(self, timeout: float | None = None) -> bool:
        """Block until shutdown begins or ``timeout`` seconds pass (sync handlers).

        True if shutdown began: a sync stream that waits between messages can
        wait here instead of ``time.sleep`` and wake as soon as it starts.
        """
        return DRAIN.wait(timeout)

    async def until_shutdown(self) -> None:
        """Return once shutdown has begun (async handlers; race it with other
        work, e.g. ``asyncio.wait`` or a task group)."""
        await DRAIN.wait_async()

    def timeout_remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None if there is none."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())
