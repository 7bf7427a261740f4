"""The bench service on the official ``connectrpc`` package (runs in bench/.venv-official).

Uses the code its own plugin (``protoc-gen-connectrpc``, option
``protobuf=google``) generated, so both runtimes share Google's protobuf and the
comparison is about the RPC layer. Imported dynamically: connectrpc is not
installed in the project's venv, where the bench sources are type-checked.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

pb: Any = importlib.import_module("connectbench.v1.bench_pb2")
gen: Any = importlib.import_module("connectbench.v1.bench_connect")

_PAYLOADS: dict[int, Any] = {}


def payload(size: int) -> Any:
    """A shared Payload message of the given size (built once per size)."""
    found = _PAYLOADS.get(size)
    if found is None:
        found = _PAYLOADS[size] = pb.Payload(data=b"x" * size)
    return found


def echo_reply(request: Any) -> Any:
    """The unary answer: the request's payload, or one of the requested size."""
    if request.response_size:
        return pb.EchoResponse(payload=payload(request.response_size))
    return pb.EchoResponse(payload=request.payload)


class Bench:
    """Async implementation of the generated ``BenchService`` protocol."""

    async def echo(self, request: Any, ctx: Any) -> Any:
        return echo_reply(request)

    async def download(self, request: Any, ctx: Any) -> AsyncIterator[Any]:
        msg = pb.EchoResponse(payload=payload(request.size))
        for _ in range(request.count):
            yield msg

    async def upload(self, requests: AsyncIterator[Any], ctx: Any) -> Any:
        count = size = 0
        async for r in requests:
            count += 1
            size += len(r.payload.data)
        return pb.SinkResponse(count=count, bytes=size)

    async def ping_pong(
        self, requests: AsyncIterator[Any], ctx: Any
    ) -> AsyncIterator[Any]:
        async for r in requests:
            yield echo_reply(r)


class BenchSync:
    """Sync implementation of the generated ``BenchServiceSync`` protocol."""

    def echo(self, request: Any, ctx: Any) -> Any:
        return echo_reply(request)

    def download(self, request: Any, ctx: Any) -> Iterator[Any]:
        msg = pb.EchoResponse(payload=payload(request.size))
        for _ in range(request.count):
            yield msg

    def upload(self, requests: Iterator[Any], ctx: Any) -> Any:
        count = size = 0
        for r in requests:
            count += 1
            size += len(r.payload.data)
        return pb.SinkResponse(count=count, bytes=size)

    def ping_pong(self, requests: Iterator[Any], ctx: Any) -> Iterator[Any]:
        for r in requests:
            yield echo_reply(r)


app: Any = gen.BenchServiceASGIApplication(Bench())
wsgi_app: Any = gen.BenchServiceWSGIApplication(BenchSync())
