"""Response headers and trailers of generated unary methods, without a new signature.

Generated unary and client-stream methods return the response message alone.
``ResponseCapture`` is a context manager that receives the headers and
trailers of those calls made inside its block, in the same thread or task (a
context variable carries it, so tasks started inside the block report to it
too). Streams need no capture: they expose ``.headers`` and ``.trailers``.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TypeVar

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.client.call import UnaryResponse
from protoc_gen_connect_python.runtime.headers import Headers

M = TypeVar("M", bound=Message)

_CURRENT: ContextVar[ResponseCapture | None] = ContextVar(
    "connect_response_capture", default=None
)


class ResponseCapture:
    """Receives the response headers and trailers of the calls in its block.

    ::

        with ResponseCapture() as got:
            reply = await client.greet(GreetRequest(name="Ada"))
        got.headers.get("x-request-id"), got.trailers

    Works the same for the async and sync clients. Each finished unary or
    client-stream call replaces what an earlier one left, so ``headers`` and
    ``trailers`` are those of the last call that ended in the block; both are
    empty while none has. A failed call leaves them as they were: its
    ``ConnectError`` holds ``response_headers`` and ``response_trailers``.
    Blocks nest: a call reports to the innermost one.
    """

    __slots__ = ("_token", "headers", "trailers")

    def __init__(self) -> None:
        self.headers = Headers()
        self.trailers = Headers()
        self._token: Token[ResponseCapture | None] | None = None

    def __enter__(self) -> ResponseCapture:
        if self._token is not None:
            raise RuntimeError("this ResponseCapture is already in use")
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None


def captured(res: UnaryResponse[M]) -> M:
    """``res.message``, after handing its headers and trailers to the open capture."""
    capture = _CURRENT.get()
    if capture is not None:
        capture.headers = res.headers
        capture.trailers = res.trailers
    return res.message


__all__ = ["ResponseCapture", "captured"]
