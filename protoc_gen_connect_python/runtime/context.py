"""What a handler sees of its call besides the request message."""

from __future__ import annotations

import time
from typing import Any

from protoc_gen_connect_python.runtime.headers import Headers
from protoc_gen_connect_python.runtime.method import MethodSpec


class RequestContext:
    """Per-call information for a server handler, the same for sync and async.

    Handlers read ``request_headers`` and may add to ``response_headers`` (sent
    before the first message) and ``response_trailers`` (sent at the end).
    """

    __slots__ = (
        "deadline",
        "method",
        "peer",
        "protocol",
        "request_headers",
        "response_headers",
        "response_trailers",
    )

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
        self.request_headers = request_headers
        self.response_headers = Headers()
        self.response_trailers = Headers()
        self.peer = peer
        """The client's address as ``host:port``, when the server knows it."""
        self.deadline = deadline
        """The ``time.monotonic()`` instant the call times out at, or None."""

    def timeout_remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None if there is none."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())
