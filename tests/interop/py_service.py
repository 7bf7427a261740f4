"""interop.v1.InteropService in Python: what connect-node clients call in the interop tests.

``InteropAsync`` is served by ``ASGIApp`` (uvicorn, hypercorn) and ``InteropSync``
by ``WSGIApp`` (gunicorn). Both behave exactly like ``node/server.mjs``: every
request says which headers, trailers, delay and error it wants back.

The generated modules (``interop.v1.interop_pb2`` and ``interop_connect``) exist
only at test time: ``test_interop_node.py`` generates them into a temporary
directory and puts it on ``sys.path`` (and on ``PYTHONPATH`` for server
processes). Static type checkers run without them, hence the targeted ignores on
the imports and base classes below.

``asgi_app`` and ``wsgi_app`` are what servers load. They wrap the
apps in a small middleware that reports the HTTP method in the response header
``x-http-method``, so tests can see that a Connect GET really was a GET.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    MutableMapping,
)
from typing import Any

from interop.v1 import interop_connect  # type: ignore[import-not-found]
from interop.v1.interop_pb2 import (  # type: ignore[import-not-found]
    CallSpec,
    ChatRequest,
    ChatResponse,
    CollectRequest,
    CollectResponse,
    CountRequest,
    CountResponse,
    EchoRequest,
    EchoResponse,
    ErrorInfo,
    Header,
)

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    Code,
    ConnectError,
    RequestContext,
    WSGIApp,
)

TEST_HEADER_PREFIX = "x-test-"


def seen_headers(ctx: RequestContext) -> list[Header]:
    """The ``x-test-`` request headers, sorted by name, repeated values joined."""
    names = sorted({n for n, _ in ctx.request_headers.multi_items()})
    return [
        Header(name=n, value=", ".join(ctx.request_headers.getall(n)))
        for n in names
        if n.startswith(TEST_HEADER_PREFIX)
    ]


def apply_metadata(spec: CallSpec, ctx: RequestContext) -> None:
    """Send the response headers and trailers the request asks for."""
    for h in spec.response_headers:
        ctx.response_headers.add(h.name, h.value)
    for h in spec.response_trailers:
        ctx.response_trailers.add(h.name, h.value)


def requested_error(spec: CallSpec) -> ConnectError | None:
    """The error the request asks for, if any."""
    if not spec.HasField("error") or spec.error.code == 0:
        return None
    e = spec.error
    details = [ErrorInfo(reason=e.message, code=e.code)] if e.with_detail else []
    return ConnectError(Code(e.code), e.message, details=details)


def deadline_error() -> ConnectError:
    """What a handler raises when its delay outlasts the call's deadline."""
    return ConnectError(Code.DEADLINE_EXCEEDED, "deadline exceeded while waiting")


def delay_seconds(spec: CallSpec, ctx: RequestContext) -> tuple[float, bool]:
    """How long to wait, capped at the deadline; and whether the cap applied."""
    want = spec.delay_ms / 1000
    remaining = ctx.timeout_remaining()
    if remaining is not None and remaining < want:
        return remaining, True
    return want, False


async def sleep_async(spec: CallSpec, ctx: RequestContext) -> None:
    """The requested delay; raises deadline_exceeded if the deadline comes first."""
    seconds, capped = delay_seconds(spec, ctx)
    if seconds > 0:
        await asyncio.sleep(seconds)
    if capped:
        raise deadline_error()


def sleep_sync(spec: CallSpec, ctx: RequestContext) -> None:
    """The requested delay for sync handlers, which nobody can interrupt."""
    seconds, capped = delay_seconds(spec, ctx)
    if seconds > 0:
        time.sleep(seconds)
    if capped:
        raise deadline_error()


def echo_response(request: EchoRequest, ctx: RequestContext) -> EchoResponse:
    """The answer to Echo and EchoGet, or the error they ask for."""
    err = requested_error(request.spec)
    if err is not None:
        raise err
    return EchoResponse(
        text=request.text, request_headers=seen_headers(ctx), protocol=ctx.protocol
    )


def count_message(request: CountRequest, i: int, ctx: RequestContext) -> CountResponse:
    """The i-th message of Count; only the first echoes the request headers."""
    return CountResponse(
        index=i,
        text=f"{request.text}-{i}",
        request_headers=seen_headers(ctx) if i == 0 else [],
    )


class InteropAsync(interop_connect.InteropService):  # type: ignore[misc]
    """The async implementation, for ASGIApp."""

    async def echo(self, request: EchoRequest, ctx: RequestContext) -> EchoResponse:
        apply_metadata(request.spec, ctx)
        await sleep_async(request.spec, ctx)
        return echo_response(request, ctx)

    async def echo_get(self, request: EchoRequest, ctx: RequestContext) -> EchoResponse:
        return await self.echo(request, ctx)

    async def count(
        self, request: CountRequest, ctx: RequestContext
    ) -> AsyncIterator[CountResponse]:
        apply_metadata(request.spec, ctx)
        for i in range(request.n):
            await sleep_async(request.spec, ctx)
            yield count_message(request, i, ctx)
        err = requested_error(request.spec)
        if err is not None:
            raise err

    async def collect(
        self, requests: AsyncIterator[CollectRequest], ctx: RequestContext
    ) -> CollectResponse:
        spec: CallSpec | None = None
        texts: list[str] = []
        async for req in requests:
            if spec is None:
                spec = req.spec
                apply_metadata(spec, ctx)
            texts.append(req.text)
        if spec is not None:
            await sleep_async(spec, ctx)
            err = requested_error(spec)
            if err is not None:
                raise err
        return CollectResponse(
            text="".join(texts), count=len(texts), request_headers=seen_headers(ctx)
        )

    async def chat(
        self, requests: AsyncIterator[ChatRequest], ctx: RequestContext
    ) -> AsyncIterator[ChatResponse]:
        spec: CallSpec | None = None
        index = 0
        async for req in requests:
            if spec is None:
                spec = req.spec
                apply_metadata(spec, ctx)
            await sleep_async(spec, ctx)
            yield ChatResponse(index=index, text=f"echo: {req.text}")
            index += 1
        if spec is not None:
            err = requested_error(spec)
            if err is not None:
                raise err


class InteropSync(interop_connect.InteropServiceSync):  # type: ignore[misc]
    """The sync implementation, for WSGIApp."""

    def echo(self, request: EchoRequest, ctx: RequestContext) -> EchoResponse:
        apply_metadata(request.spec, ctx)
        sleep_sync(request.spec, ctx)
        return echo_response(request, ctx)

    def echo_get(self, request: EchoRequest, ctx: RequestContext) -> EchoResponse:
        return self.echo(request, ctx)

    def count(
        self, request: CountRequest, ctx: RequestContext
    ) -> Iterator[CountResponse]:
        apply_metadata(request.spec, ctx)
        for i in range(request.n):
            sleep_sync(request.spec, ctx)
            yield count_message(request, i, ctx)
        err = requested_error(request.spec)
        if err is not None:
            raise err

    def collect(
        self, requests: Iterator[CollectRequest], ctx: RequestContext
    ) -> CollectResponse:
        spec: CallSpec | None = None
        texts: list[str] = []
        for req in requests:
            if spec is None:
                spec = req.spec
                apply_metadata(spec, ctx)
            texts.append(req.text)
        if spec is not None:
            sleep_sync(spec, ctx)
            err = requested_error(spec)
            if err is not None:
                raise err
        return CollectResponse(
            text="".join(texts), count=len(texts), request_headers=seen_headers(ctx)
        )

    def chat(
        self, requests: Iterator[ChatRequest], ctx: RequestContext
    ) -> Iterator[ChatResponse]:
        spec: CallSpec | None = None
        for index, req in enumerate(requests):
            if spec is None:
                spec = req.spec
                apply_metadata(spec, ctx)
            sleep_sync(spec, ctx)
            yield ChatResponse(index=index, text=f"echo: {req.text}")
        if spec is not None:
            err = requested_error(spec)
            if err is not None:
                raise err


# --- apps, with the HTTP method reported back -----------------------------------

ASGIScope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]
ASGICallable = Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]]


class ReportMethodASGI:
    """ASGI middleware adding ``x-http-method: <method>`` to every response."""

    def __init__(self, app: ASGICallable) -> None:
        self.app = app

    async def __call__(
        self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"].encode("latin-1")

        async def send_with_method(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"x-http-method", method)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_method)


StartResponse = Callable[..., Any]
WSGICallable = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class ReportMethodWSGI:
    """WSGI middleware adding ``x-http-method: <method>`` to every response."""

    def __init__(self, app: WSGICallable) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        method = str(environ["REQUEST_METHOD"])

        def start_with_method(
            status: str, headers: list[tuple[str, str]], *args: Any
        ) -> Any:
            return start_response(status, [*headers, ("x-http-method", method)], *args)

        return self.app(environ, start_with_method)


asgi_app = ReportMethodASGI(ASGIApp(InteropAsync()))
"""The async service as an ASGI app (``servers.run_server(..., "py_service:asgi_app")``)."""

wsgi_app = ReportMethodWSGI(WSGIApp(InteropSync()))
"""The sync service as a WSGI app (``py_service:wsgi_app``)."""
