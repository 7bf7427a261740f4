"""The bench service on this project's runtime: ``app`` (ASGI) and ``wsgi_app`` (WSGI).

Generated code (``connectbench/v1/bench_connect.py``) is made at bench time by
``bench/run.py`` and found on PYTHONPATH; it is imported dynamically so the
bench sources type-check without it.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    AsyncService,
    RequestContext,
    ServiceSpec,
    SyncService,
    WSGIApp,
)

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


class Bench(AsyncService):
    """Async implementation, like a subclass of the generated ``BenchService``."""

    service_spec: ClassVar[ServiceSpec] = gen.BENCH_SERVICE

    async def echo(self, request: Any, ctx: RequestContext) -> Any:
        return echo_reply(request)

    async def download(self, request: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        ctx.buffer_hint = True  # a bulk download: nothing waits between messages
        msg = pb.EchoResponse(payload=payload(request.size))
        for _ in range(request.count):
            yield msg

    async def upload(self, requests: AsyncIterator[Any], ctx: RequestContext) -> Any:
        count = size = 0
        async for r in requests:
            count += 1
            size += len(r.payload.data)
        return pb.SinkResponse(count=count, bytes=size)

    async def ping_pong(
        self, requests: AsyncIterator[Any], ctx: RequestContext
    ) -> AsyncIterator[Any]:
        async for r in requests:
            yield echo_reply(r)


class BenchSync(SyncService):
    """Sync implementation, like a subclass of the generated ``BenchServiceSync``."""

    service_spec: ClassVar[ServiceSpec] = gen.BENCH_SERVICE

    def echo(self, request: Any, ctx: RequestContext) -> Any:
        return echo_reply(request)

    def download(self, request: Any, ctx: RequestContext) -> Iterator[Any]:
        ctx.buffer_hint = True  # a bulk download: nothing waits between messages
        msg = pb.EchoResponse(payload=payload(request.size))
        for _ in range(request.count):
            yield msg

    def upload(self, requests: Iterator[Any], ctx: RequestContext) -> Any:
        count = size = 0
        for r in requests:
            count += 1
            size += len(r.payload.data)
        return pb.SinkResponse(count=count, bytes=size)

    def ping_pong(self, requests: Iterator[Any], ctx: RequestContext) -> Iterator[Any]:
        for r in requests:
            yield echo_reply(r)


app = ASGIApp(Bench())
wsgi_app = WSGIApp(BenchSync())
