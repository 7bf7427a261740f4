"""The example greet server as the plain-HTTP tests serve it.

The handlers are the example's own (``examples/greet_service.py``), with three
additions that show what a service does for browsers and proxies:

* ``Greet`` has no side effects, so its answer may be cached: it sends
  ``Cache-Control: public, max-age=60``. Proxies cache GET requests only, so the
  header is harmless on POST answers. It also counts its calls in
  ``x-greet-calls``, so a test can tell a cached answer from a fresh one.
* ``GreetStream`` sends ``X-Accel-Buffering: no``, which tells nginx (and
  proxies that copied the convention) to pass each message on as it arrives
  instead of buffering the response.
* The app is wrapped in ``CORSMiddleware`` for the origins in
  ``CONNECT_CORS_ORIGINS`` (comma-separated, default ``*``), exposing the
  handler's own ``Greet-Version`` header to pages.

The generated modules and ``examples/`` are on ``sys.path`` only at test time
(``example_env.py`` arranges it), hence the targeted ignores below.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

from greet.v1.greet_pb2 import (  # type: ignore[import-not-found]
    GreetRequest,
    GreetResponse,
    GreetStreamRequest,
)
from greet_service import Greeter, GreeterSync  # type: ignore[import-not-found]

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    CORSMiddleware,
    RequestContext,
    WSGIApp,
    WSGICORSMiddleware,
)

CACHE_CONTROL = "public, max-age=60"


class Calls:
    """How many times ``Greet`` ran in this process."""

    n = 0

    @classmethod
    def next(cls) -> str:
        cls.n += 1
        return str(cls.n)


class ProxyFriendlyGreeter(Greeter):  # type: ignore[misc]
    async def greet(self, request: GreetRequest, ctx: RequestContext) -> GreetResponse:
        calls = Calls.next()
        reply: GreetResponse = await super().greet(request, ctx)
        # Only answers are cacheable, never errors: set after the call succeeded.
        ctx.response_headers["cache-control"] = CACHE_CONTROL
        ctx.response_headers["x-greet-calls"] = calls
        return reply

    async def greet_stream(
        self, request: GreetStreamRequest, ctx: RequestContext
    ) -> AsyncIterator[GreetResponse]:
        ctx.response_headers["x-accel-buffering"] = "no"
        async for reply in super().greet_stream(request, ctx):
            yield reply


class ProxyFriendlyGreeterSync(GreeterSync):  # type: ignore[misc]
    def greet(self, request: GreetRequest, ctx: RequestContext) -> GreetResponse:
        calls = Calls.next()
        reply: GreetResponse = super().greet(request, ctx)
        ctx.response_headers["cache-control"] = CACHE_CONTROL
        ctx.response_headers["x-greet-calls"] = calls
        return reply

    def greet_stream(
        self, request: GreetStreamRequest, ctx: RequestContext
    ) -> Iterator[GreetResponse]:
        ctx.response_headers["x-accel-buffering"] = "no"
        yield from super().greet_stream(request, ctx)


def _origins() -> list[str]:
    return os.environ.get("CONNECT_CORS_ORIGINS", "*").split(",")


app = CORSMiddleware(
    ASGIApp(ProxyFriendlyGreeter()),
    allow_origins=_origins(),
    expose_headers=["Greet-Version"],
)
wsgi_app = WSGICORSMiddleware(
    WSGIApp(ProxyFriendlyGreeterSync()),
    allow_origins=_origins(),
    expose_headers=["Greet-Version"],
)
