"""The example GreetService, implemented once for async (ASGI) and once for sync (WSGI)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

from google.protobuf.timestamp_pb2 import Timestamp
from greet.v1 import greet_connect
from greet.v1.greet_pb2 import GreetRequest, GreetResponse, GreetStreamRequest

from protoc_gen_connect_python.runtime import Code, ConnectError, RequestContext

MAX_COUNT = 100
# Greet has no side effects, so proxies and browsers may cache its answers (GET
# requests only); set after a successful call so errors are never cached.
CACHE_CONTROL = "public, max-age=60"


def make_greeting(name: str) -> GreetResponse:
    """The one greeting both implementations send; rejects an empty name."""
    if not name:
        raise ConnectError(Code.INVALID_ARGUMENT, "name must not be empty")
    now = Timestamp()
    now.GetCurrentTime()
    return GreetResponse(greeting=f"Hello, {name}!", time=now)


def check_stream(request: GreetStreamRequest) -> None:
    """Bounds a stream request so a caller cannot tie the server up forever."""
    if request.count > MAX_COUNT:
        raise ConnectError(Code.INVALID_ARGUMENT, f"count must be at most {MAX_COUNT}")
    if request.interval_ms > 5000:
        raise ConnectError(Code.INVALID_ARGUMENT, "interval_ms must be at most 5000")


class Greeter(greet_connect.GreetService):
    """Async implementation, served by the ASGI app."""

    async def greet(self, request: GreetRequest, ctx: RequestContext) -> GreetResponse:
        reply = make_greeting(request.name)
        ctx.response_headers["greet-version"] = "1"
        ctx.response_headers["cache-control"] = CACHE_CONTROL
        return reply

    async def greet_stream(
        self, request: GreetStreamRequest, ctx: RequestContext
    ) -> AsyncIterator[GreetResponse]:
        check_stream(request)
        # Tells nginx to pass each message on as it arrives.
        ctx.response_headers["x-accel-buffering"] = "no"
        for i in range(request.count):
            if i:
                await asyncio.sleep(request.interval_ms / 1000)
            yield make_greeting(f"{request.name} #{i + 1}")


class GreeterSync(greet_connect.GreetServiceSync):
    """Sync implementation, served by the WSGI app."""

    def greet(self, request: GreetRequest, ctx: RequestContext) -> GreetResponse:
        reply = make_greeting(request.name)
        ctx.response_headers["greet-version"] = "1"
        ctx.response_headers["cache-control"] = CACHE_CONTROL
        return reply

    def greet_stream(
        self, request: GreetStreamRequest, ctx: RequestContext
    ) -> Iterator[GreetResponse]:
        check_stream(request)
        ctx.response_headers["x-accel-buffering"] = "no"
        for i in range(request.count):
            if i:
                time.sleep(request.interval_ms / 1000)
            yield make_greeting(f"{request.name} #{i + 1}")
