"""The server core marks the call a handler serves, for the clients it calls out with.

In process, both shells: handlers, their interceptors and their streams' steps
see their own ``RequestContext`` as ``runtime.deadline.inbound_call()``, and
nothing of it is left in the thread or task afterwards (a WSGI server's thread
goes on to serve other requests; an ASGI app may be mounted in a framework
whose code runs after it in the same task).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from client_env import BIDI_SPEC, SERVER_STREAM_SPEC, UNARY_SPEC
from google.protobuf.wrappers_pb2 import StringValue
from server_harness import call_asgi_async, call_wsgi, envelope, split_envelopes

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    AsyncServerInterceptor,
    AsyncService,
    AsyncUnaryFunc,
    RequestContext,
    ServiceSpec,
    SyncServerInterceptor,
    SyncService,
    SyncUnaryFunc,
    WSGIApp,
)
from protoc_gen_connect_python.runtime.deadline import inbound_call

SPEC = ServiceSpec("t.v1.S", (UNARY_SPEC, SERVER_STREAM_SPEC, BIDI_SPEC))
UNARY = ("content-type", "application/proto")
STREAM = ("content-type", "application/connect+proto")


def seen(ctx: RequestContext, where: str, log: list[str]) -> None:
    log.append(f"{where}:{inbound_call() is ctx}")


class Async(AsyncService):
    service_spec = SPEC

    def __init__(self) -> None:
        self.log: list[str] = []

    async def get(self, request: StringValue, ctx: RequestContext) -> StringValue:
        await asyncio.sleep(0)
        seen(ctx, "unary", self.log)
        return request

    async def watch(
        self, request: StringValue, ctx: RequestContext
    ) -> AsyncIterator[StringValue]:
        for _ in range(2):
            seen(ctx, "step", self.log)
            yield request
            await asyncio.sleep(0)
        seen(ctx, "last", self.log)

    async def chat(
        self, requests: AsyncIterator[StringValue], ctx: RequestContext
    ) -> AsyncIterator[StringValue]:
        async for r in requests:
            seen(ctx, "bidi", self.log)
            yield r


class Sync(SyncService):
    service_spec = SPEC

    def __init__(self) -> None:
        self.log: list[str] = []

    def get(self, request: StringValue, ctx: RequestContext) -> StringValue:
        seen(ctx, "unary", self.log)
        return request

    def watch(self, request: StringValue, ctx: RequestContext) -> Iterator[StringValue]:
        for _ in range(2):
            seen(ctx, "step", self.log)
            yield request
        seen(ctx, "last", self.log)

    def chat(
        self, requests: Iterator[StringValue], ctx: RequestContext
    ) -> Iterator[StringValue]:
        for r in requests:
            seen(ctx, "bidi", self.log)
            yield r


class AsyncSeen(AsyncServerInterceptor):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def on_request(self, ctx: RequestContext) -> None:
        seen(ctx, "on_request", self.log)

    def wrap_unary(self, next: AsyncUnaryFunc) -> AsyncUnaryFunc:
        async def unary(request: Any, ctx: RequestContext) -> Any:
            seen(ctx, "wrap", self.log)
            return await next(request, ctx)

        return unary


class SyncSeen(SyncServerInterceptor):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def on_request(self, ctx: RequestContext) -> None:
        seen(ctx, "on_request", self.log)

    def wrap_unary(self, next: SyncUnaryFunc) -> SyncUnaryFunc:
        def unary(request: Any, ctx: RequestContext) -> Any:
            seen(ctx, "wrap", self.log)
            return next(request, ctx)

        return unary


BODY = StringValue(value="x").SerializeToString()
FRAMED = envelope(BODY)
UNARY_LOG = ["on_request:True", "wrap:True", "unary:True"]
STREAM_LOG = ["on_request:True", "step:True", "step:True", "last:True"]
BIDI_LOG = ["on_request:True", "bidi:True", "bidi:True"]


def test_wsgi_handlers_see_their_call_and_leave_nothing() -> None:
    svc = Sync()
    app = WSGIApp(svc, interceptors=[SyncSeen(svc.log)])
    r = call_wsgi(app, "POST", "/t.v1.S/Get", [UNARY], BODY)
    assert r.status == 200
    assert svc.log == UNARY_LOG
    assert inbound_call() is None
    svc.log.clear()
    r = call_wsgi(app, "POST", "/t.v1.S/Watch", [STREAM], FRAMED)
    assert len(split_envelopes(r.body)) == 3
    assert svc.log == STREAM_LOG
    assert inbound_call() is None
    svc.log.clear()
    r = call_wsgi(app, "POST", "/t.v1.S/Chat", [STREAM], FRAMED + FRAMED)
    assert len(split_envelopes(r.body)) == 3
    assert svc.log == BIDI_LOG
    assert inbound_call() is None


def test_asgi_handlers_see_their_call_and_leave_nothing() -> None:
    svc = Async()
    app = ASGIApp(svc, interceptors=[AsyncSeen(svc.log)])

    async def main() -> list[list[str]]:
        logs = []
        for path, ctype, body in (
            ("Get", UNARY, BODY),
            ("Watch", STREAM, FRAMED),
            ("Chat", STREAM, FRAMED + FRAMED),
        ):
            svc.log.clear()
            # In this task, as a framework the app is mounted in would call it.
            r = await call_asgi_async(app, "POST", f"/t.v1.S/{path}", [ctype], body)
            assert r.status == 200
            assert inbound_call() is None
            logs.append(list(svc.log))
        return logs

    assert asyncio.run(main()) == [UNARY_LOG, STREAM_LOG, BIDI_LOG]
