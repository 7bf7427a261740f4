"""The sync client base class (contract; the transport is filled in separately)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TypeVar

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.client.async_client import UnaryResponse
from protoc_gen_connect_python.runtime.headers import Headers, HeadersInput
from protoc_gen_connect_python.runtime.method import MethodSpec

I = TypeVar("I", bound=Message)  # noqa: E741
O = TypeVar("O", bound=Message)  # noqa: E741


class SyncStream(Iterator[O]):
    """Messages of a server or bidi stream; ``headers``/``trailers`` once known."""

    headers: Headers
    trailers: Headers

    def __iter__(self) -> SyncStream[O]:
        return self

    def __next__(self) -> O:
        raise NotImplementedError

    def close(self) -> None:
        """Stop reading and cancel the call if it is still running."""
        raise NotImplementedError

    def __enter__(self) -> SyncStream[O]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncClient:
    """Base of generated sync clients."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def call_unary(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> O:
        """Call a unary method and return its response message."""
        raise NotImplementedError

    def call_unary_detailed(
        self,
        method: MethodSpec[I, O],
        request: I,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> UnaryResponse[O]:
        """Call a unary method; the result also holds response headers and trailers."""
        raise NotImplementedError

    def call_client_stream(
        self,
        method: MethodSpec[I, O],
        requests: Iterable[I],
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
    ) -> SyncStream[O]:
        """Send one request and iterate the responses."""
        raise NotImplementedError

    def call_bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: Iterable[I],
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> SyncStream[O]:
        """Send a stream of requests while iterating the responses."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connections this client owns."""

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_C = TypeVar("_C", bound=SyncClient)
