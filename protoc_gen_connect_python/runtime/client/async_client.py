"""The async client base class (contract; the transport is filled in separately)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Generic, TypeVar

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.headers import Headers, HeadersInput
from protoc_gen_connect_python.runtime.method import MethodSpec

I = TypeVar("I", bound=Message)  # noqa: E741
O = TypeVar("O", bound=Message)  # noqa: E741


class UnaryResponse(Generic[O]):
    """A unary result with the response headers and trailers."""

    def __init__(self, message: O, headers: Headers, trailers: Headers) -> None:
        self.message = message
        self.headers = headers
        self.trailers = trailers


class AsyncStream(AsyncIterator[O]):
    """Messages of a server or bidi stream; ``headers``/``trailers`` once known."""

    headers: Headers
    trailers: Headers

    def __aiter__(self) -> AsyncStream[O]:
        return self

    async def __anext__(self) -> O:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Stop reading and cancel the call if it is still running."""
        raise NotImplementedError

    async def __aenter__(self) -> AsyncStream[O]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncClient:
    """Base of generated async clients."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def call_unary(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> O:
        """Call a unary method and return its response message."""
        raise NotImplementedError

    async def call_unary_detailed(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> UnaryResponse[O]:
        """Call a unary method; the result also holds response headers and trailers."""
        raise NotImplementedError

    async def call_client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> O:
        """Send a stream of requests and return the single response."""
        raise NotImplementedError

    def call_server_stream(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> AsyncStream[O]:
        """Send one request and iterate the responses."""
        raise NotImplementedError

    def call_bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> AsyncStream[O]:
        """Send a stream of requests while iterating the responses."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the connections this client owns."""

    async def __aenter__(self: _C) -> _C:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


_C = TypeVar("_C", bound=AsyncClient)
