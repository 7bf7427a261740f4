"""The test service, written the way generated code and users write it, and the
apps the end-to-end tests serve from real servers (``server_apps:<name>``).

Async and sync implementations behave the same:

* ``Ping`` echoes its request, sleeps ``sleep_ms`` first, sets the response
  header ``x-ping`` and trailer ``x-ping-trailer``, and reports the request's
  ``x-echo`` header back in the ``text`` field when present.
* ``Fail`` raises ConnectError(code, message) with a detail and metadata, or a
  plain RuntimeError when ``code`` is 0.
* ``CountUp`` streams 1..number; ``fail_code`` fails the stream afterwards.
* ``Sum`` adds a client stream; ``Echo`` echoes a bidi stream.
* ``Unimplemented`` keeps the base class default.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ping_proto
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    AsyncServerInterceptor,
    AsyncService,
    AsyncStreamFunc,
    AsyncUnaryFunc,
    Code,
    ConnectError,
    Headers,
    Idempotency,
    MethodSpec,
    RequestContext,
    ServiceSpec,
    StreamType,
    SyncServerInterceptor,
    SyncService,
    SyncStreamFunc,
    SyncUnaryFunc,
    WSGIApp,
    unimplemented,
)

pb: Any = ping_proto.load()

SERVICE = "testing.v1.PingService"
PING = MethodSpec(SERVICE, "Ping", "ping", StreamType.UNARY, pb.PingRequest, pb.PingResponse, Idempotency.NO_SIDE_EFFECTS)  # fmt: skip
FAIL = MethodSpec(SERVICE, "Fail", "fail", StreamType.UNARY, pb.FailRequest, pb.PingResponse)  # fmt: skip
COUNT_UP = MethodSpec(SERVICE, "CountUp", "count_up", StreamType.SERVER_STREAM, pb.CountUpRequest, pb.CountUpResponse)  # fmt: skip
SUM = MethodSpec(SERVICE, "Sum", "sum", StreamType.CLIENT_STREAM, pb.SumRequest, pb.SumResponse)  # fmt: skip
ECHO = MethodSpec(SERVICE, "Echo", "echo", StreamType.BIDI_STREAM, pb.EchoRequest, pb.EchoResponse)  # fmt: skip
UNIMPLEMENTED = MethodSpec(SERVICE, "Unimplemented", "unimplemented", StreamType.UNARY, pb.PingRequest, pb.PingResponse)  # fmt: skip
PING_SERVICE = ServiceSpec(SERVICE, (PING, FAIL, COUNT_UP, SUM, ECHO, UNIMPLEMENTED))


# -- what the code generator emits (abridged) ---------------------------------


class PingServiceBase(AsyncService):
    service_spec = PING_SERVICE

    async def ping(self, request: Any, ctx: RequestContext) -> Any:
        raise unimplemented(PING)

    async def fail(self, request: Any, ctx: RequestContext) -> Any:
        raise unimplemented(FAIL)

    def count_up(self, request: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        raise unimplemented(COUNT_UP)

    async def sum(self, requests: AsyncIterator[Any], ctx: RequestContext) -> Any:
        raise unimplemented(SUM)

    def echo(
        self, requests: AsyncIterator[Any], ctx: RequestContext
    ) -> AsyncIterator[Any]:
        raise unimplemented(ECHO)

    async def unimplemented(self, request: Any, ctx: RequestContext) -> Any:
        raise unimplemented(UNIMPLEMENTED)


class PingServiceSyncBase(SyncService):
    service_spec = PING_SERVICE

    def ping(self, request: Any, ctx: RequestContext) -> Any:
        raise unimplemented(PING)

    def fail(self, request: Any, ctx: RequestContext) -> Any:
        raise unimplemented(FAIL)

    def count_up(self, request: Any, ctx: RequestContext) -> Iterator[Any]:
        raise unimplemented(COUNT_UP)

    def sum(self, requests: Iterator[Any], ctx: RequestContext) -> Any:
        raise unimplemented(SUM)

    def echo(self, requests: Iterator[Any], ctx: RequestContext) -> Iterator[Any]:
        raise unimplemented(ECHO)

    def unimplemented(self, request: Any, ctx: RequestContext) -> Any:
        raise unimplemented(UNIMPLEMENTED)


# -- the implementations -----------------------------------------------------------


def _ping(request: Any, ctx: RequestContext) -> Any:
    ctx.response_headers["x-ping"] = "pong"
    ctx.response_trailers["x-ping-trailer"] = "done"
    text = request.text
    if "x-echo" in ctx.request_headers:
        text = ctx.request_headers["x-echo"]
    if request.text == "peer":
        text = ctx.peer or ""
    if request.text == "timeout":
        remaining = ctx.timeout_remaining()
        text = "none" if remaining is None else f"{remaining:.3f}"
    return pb.PingResponse(text=text, number=request.number, payload=request.payload)


def _fail(request: Any) -> ConnectError:
    if request.code == 0:
        raise RuntimeError(f"secret: {request.message}")
    return ConnectError(
        Code(request.code),
        request.message,
        details=[StringValue(value="detail")],
        metadata=Headers({"x-error-meta": "yes"}),
    )


class Pinger(PingServiceBase):
    async def ping(self, request: Any, ctx: RequestContext) -> Any:
        if request.sleep_ms:
            await asyncio.sleep(request.sleep_ms / 1000)
        return _ping(request, ctx)

    async def fail(self, request: Any, ctx: RequestContext) -> Any:
        raise _fail(request)

    async def count_up(self, request: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        ctx.response_headers["x-count"] = str(request.number)
        ctx.response_trailers["x-count-trailer"] = "done"
        try:
            for i in range(1, request.number + 1):
                if request.sleep_ms:
                    await asyncio.sleep(request.sleep_ms / 1000)
                yield pb.CountUpResponse(number=i)
            if request.fail_code:
                raise ConnectError(Code(request.fail_code), "count failed")
        finally:
            CLOSED.append("count_up")

    async def sum(self, requests: AsyncIterator[Any], ctx: RequestContext) -> Any:
        total = count = 0
        async for r in requests:
            total += r.number
            count += 1
        return pb.SumResponse(sum=total, count=count)

    async def echo(
        self, requests: AsyncIterator[Any], ctx: RequestContext
    ) -> AsyncIterator[Any]:
        async for r in requests:
            yield pb.EchoResponse(text=r.text)


class PingerSync(PingServiceSyncBase):
    def ping(self, request: Any, ctx: RequestContext) -> Any:
        if request.sleep_ms:
            time.sleep(request.sleep_ms / 1000)
        return _ping(request, ctx)

    def fail(self, request: Any, ctx: RequestContext) -> Any:
        raise _fail(request)

    def count_up(self, request: Any, ctx: RequestContext) -> Iterator[Any]:
        ctx.response_headers["x-count"] = str(request.number)
        ctx.response_trailers["x-count-trailer"] = "done"
        try:
            for i in range(1, request.number + 1):
                if request.sleep_ms:
                    time.sleep(request.sleep_ms / 1000)
                yield pb.CountUpResponse(number=i)
            if request.fail_code:
                raise ConnectError(Code(request.fail_code), "count failed")
        finally:
            CLOSED.append("count_up")

    def sum(self, requests: Iterator[Any], ctx: RequestContext) -> Any:
        total = count = 0
        for r in requests:
            total += r.number
            count += 1
        return pb.SumResponse(sum=total, count=count)

    def echo(self, requests: Iterator[Any], ctx: RequestContext) -> Iterator[Any]:
        for r in requests:
            yield pb.EchoResponse(text=r.text)


CLOSED: list[str] = []
"""Handlers record here that their generator was closed (in-process tests)."""


# -- interceptors -------------------------------------------------------------------


def _deny(ctx: RequestContext) -> None:
    if "x-deny" in ctx.request_headers:
        raise ConnectError(Code.PERMISSION_DENIED, f"denied {ctx.method.name}")


class Guard(AsyncServerInterceptor):
    """Rejects calls carrying ``x-deny``; tags answers with ``x-intercepted``."""

    async def on_request(self, ctx: RequestContext) -> None:
        _deny(ctx)

    def wrap_unary(self, next: AsyncUnaryFunc) -> AsyncUnaryFunc:
        async def unary(request: Message, ctx: RequestContext) -> Message:
            ctx.response_headers["x-intercepted"] = "unary"
            return await next(request, ctx)

        return unary

    def wrap_stream(self, next: AsyncStreamFunc) -> AsyncStreamFunc:
        async def stream(
            requests: AsyncIterator[Message], ctx: RequestContext
        ) -> AsyncIterator[Message]:
            ctx.response_headers["x-intercepted"] = ctx.method.stream_type.value
            n = 0
            async for m in next(requests, ctx):
                n += 1
                yield m
            ctx.response_trailers["x-sent"] = str(n)

        return stream


class GuardSync(SyncServerInterceptor):
    """The sync twin of ``Guard``."""

    def on_request(self, ctx: RequestContext) -> None:
        _deny(ctx)

    def wrap_unary(self, next: SyncUnaryFunc) -> SyncUnaryFunc:
        def unary(request: Message, ctx: RequestContext) -> Message:
            ctx.response_headers["x-intercepted"] = "unary"
            return next(request, ctx)

        return unary

    def wrap_stream(self, next: SyncStreamFunc) -> SyncStreamFunc:
        def stream(
            requests: Iterator[Message], ctx: RequestContext
        ) -> Iterator[Message]:
            ctx.response_headers["x-intercepted"] = ctx.method.stream_type.value
            n = 0
            for m in next(requests, ctx):
                n += 1
                yield m
            ctx.response_trailers["x-sent"] = str(n)

        return stream


# -- apps -------------------------------------------------------------------------

LIMITS: dict[str, Any] = {"read_max_bytes": 1000, "send_max_bytes": 2000}

asgi_app = ASGIApp(Pinger(), interceptors=[Guard()])
wsgi_app = WSGIApp(PingerSync(), interceptors=[GuardSync()])
asgi_strict = ASGIApp(
    Pinger(),
    require_connect_protocol_header=True,
    expose_internal_errors=True,
    compressions=("gzip",),
    **LIMITS,
)
wsgi_strict = WSGIApp(
    PingerSync(),
    require_connect_protocol_header=True,
    expose_internal_errors=True,
    compressions=("gzip",),
    **LIMITS,
)


def starlette_app() -> Any:
    """The ASGI app mounted at ``/api`` in Starlette, next to a plain route."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(
        routes=[
            Route("/hello", hello),
            Mount("/api", app=asgi_app),
            Mount("/strict", app=asgi_strict),
        ]
    )


def flask_app() -> Any:
    """The WSGI app mounted at ``/api`` next to a Flask app."""
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    flask = Flask(__name__)

    @flask.get("/hello")
    def hello() -> str:
        return "hello"

    flask.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        flask.wsgi_app, {"/api": wsgi_app, "/strict": wsgi_strict}
    )
    return flask


starlette = starlette_app()
flask = flask_app()
