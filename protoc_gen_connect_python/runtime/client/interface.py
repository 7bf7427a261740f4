"""The transport interface: what a client hands a transport and what it gets back.

A leaf module: the protocols build :class:`HTTPRequest` objects, the transports
(``transport.py``, ``http1_transport.py``, ``http2_transport.py``, ``inprocess.py``)
send them and answer with a response of :class:`AsyncResponse` or
:class:`SyncResponse` shape. Nothing here imports the rest of the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Protocol, runtime_checkable

from protoc_gen_connect_python.runtime.headers import Headers

__all__ = [
    "AsyncResponse",
    "AsyncTransport",
    "HTTPRequest",
    "RequestPrefix",
    "SyncResponse",
    "SyncTransport",
]


class RequestPrefix:
    """What every request to one method starts with, for transports to cache.

    Each request that carries the same prefix object has this ``method`` and
    ``url``, and its first ``count`` headers are the same names and values: a
    transport may encode that part once (the HTTP/1.1 transport does) and
    append only the rest. Compared by identity.
    """

    __slots__ = ("count", "method", "url")

    def __init__(self, method: str, url: str, count: int) -> None:
        self.method = method
        self.url = url
        self.count = count


class HTTPRequest:
    """One HTTP request as the protocol wants it sent.

    ``body`` is the whole body for unary calls; for streams it is None and the
    shell streams envelopes from :meth:`ClientProtocol.encode_stream_message`.
    ``timeout`` is the call's timeout in seconds, for transports that bound it.
    ``prefix``, when set, says which part of the request is the same for every
    call of the method (see :class:`RequestPrefix`); transports may ignore it.
    """

    __slots__ = ("body", "headers", "method", "prefix", "timeout", "url")

    def __init__(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeout: float | None,
        prefix: RequestPrefix | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"HTTPRequest({self.method} {self.url})"


class AsyncResponse(Protocol):
    """A response whose head has arrived; its body is read with :meth:`read`."""

    status: int
    headers: Headers

    async def read(self) -> bytes:
        """The next chunk of the body; ``b""`` once it has ended."""
        ...

    @property
    def trailers(self) -> Headers:
        """HTTP trailers, complete once :meth:`read` returned ``b""``."""
        ...

    async def aclose(self) -> None:
        """Release the response; cancels the request if it is still running."""
        ...


@runtime_checkable
class AsyncTransport(Protocol):
    """Sends requests for :class:`AsyncClient`."""

    async def send(
        self, request: HTTPRequest, body: AsyncIterator[bytes] | None
    ) -> AsyncResponse:
        """Send ``request`` (its ``body``, or the ``body`` chunks when given).

        Returns once the response head has arrived. A streamed body keeps being
        sent while the response is read (full duplex where HTTP allows it).
        """
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...


class SyncResponse(Protocol):
    """The blocking twin of :class:`AsyncResponse`."""

    status: int
    headers: Headers

    def read(self) -> bytes:
        """The next chunk of the body; ``b""`` once it has ended."""
        ...

    @property
    def trailers(self) -> Headers:
        """HTTP trailers, complete once :meth:`read` returned ``b""``."""
        ...

    def close(self) -> None:
        """Release the response; cancels the request. Safe from any thread."""
        ...


@runtime_checkable
class SyncTransport(Protocol):
    """Sends requests for :class:`SyncClient`."""

    def send(self, request: HTTPRequest, body: Iterator[bytes] | None) -> SyncResponse:
        """Send ``request``; ``request.timeout`` bounds the whole exchange."""
        ...

    def close(self) -> None:
        """Close connections."""
        ...
