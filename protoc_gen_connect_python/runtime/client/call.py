"""What a unary call returns: a leaf module the protocols and interceptors share."""

from __future__ import annotations

from typing import Generic, TypeVar

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.headers import Headers

__all__ = ["UnaryResponse"]

O = TypeVar("O", bound=Message)  # noqa: E741


class UnaryResponse(Generic[O]):
    """A unary result with the response headers and trailers."""

    __slots__ = ("headers", "message", "trailers")

    def __init__(self, message: O, headers: Headers, trailers: Headers) -> None:
        self.message = message
        self.headers = headers
        self.trailers = trailers

    def __repr__(self) -> str:
        return f"UnaryResponse({type(self.message).__name__})"
