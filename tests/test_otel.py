"""OpenTelemetry (``batteries.otel``) on real servers, read back from the SDK's
in-memory span exporter and metric reader.

The apps run in this process (uvicorn for ``ASGIApp``, hypercorn for
``WSGIApp``) so their spans land in the same exporter as the client's: a call
from our client, inside a span of the test, must give client and server spans
of one trace, parent to child across the hop, with the attributes the
conventions name. Calls refused before their handler runs must still end
their server span with the code the client got.
"""

from __future__ import annotations

import http.client
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import server_apps
from inproc_servers import serve_asgi, serve_wsgi
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from protoc_gen_connect_python.batteries.otel import (
    OTelClientInterceptor,
    OTelServerInterceptor,
    OTelServerInterceptorSync,
    semconv_opt_in,
)
from protoc_gen_connect_python.runtime import (
    ASGIApp,
    AsyncClient,
    AsyncServerInterceptor,
    AsyncStreamFunc,
    AsyncUnaryFunc,
    Code,
    ConnectError,
    RequestContext,
    SyncClient,
    SyncServerInterceptor,
    SyncStreamFunc,
    SyncUnaryFunc,
    WSGIApp,
)

pb = server_apps.pb
PING = server_apps.PING
FAIL = server_apps.FAIL
COUNT_UP = server_apps.COUNT_UP
SUM = server_apps.SUM
ECHO = server_apps.ECHO
SERVICE = server_apps.SERVICE


@dataclass
class Telemetry:
    """An SDK set-up whose spans and metrics the test reads back."""

    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def kw(self) -> dict[str, Any]:
        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
        }

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def one(self, name: str, kind: SpanKind) -> ReadableSpan:
        found = [s for s in self.finished() if s.name == name and s.kind is kind]
        assert len(found) == 1, [(s.name, s.kind) for s in self.finished()]
        return found[0]

    def points(self, metric: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        out: list[Any] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        out.extend(m.data.data_points)
        return out

    def unit(self, metric: str) -> str:
        data = self.metrics.get_metrics_data()
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        return str(m.unit)
        raise AssertionError(f"no metric {metric}")


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    yield Telemetry(spans, reader, tp, mp)
    tp.shutdown()
    mp.shutdown()


# -- interceptors that run inside the OTel one ----------------------------------


class Work(AsyncServerInterceptor):
    """Starts a span around the handler: it must be a child of the server span."""

    def __init__(self, tp: TracerProvider) -> None:
        self._tracer = tp.get_tracer("test")

    def wrap_unary(self, next: AsyncUnaryFunc) -> AsyncUnaryFunc:
        async def unary(request: Any, ctx: RequestContext) -> Any:
            with self._tracer.start_as_current_span("handler-work"):
                return await next(request, ctx)

        return unary

    def wrap_stream(self, next: AsyncStreamFunc) -> AsyncStreamFunc:
        async def stream(requests: Any, ctx: RequestContext) -> AsyncIterator[Any]:
            with self._tracer.start_as_current_span("handler-work"):
                pass
            async for m in next(requests, ctx):
                yield m

        return stream


class WorkSync(SyncServerInterceptor):
    """The sync twin of ``Work``."""

    def __init__(self, tp: TracerProvider) -> None:
        self._tracer = tp.get_tracer("test")

    def wrap_unary(self, next: SyncUnaryFunc) -> SyncUnaryFunc:
        def unary(request: Any, ctx: RequestContext) -> Any:
            with self._tracer.start_as_current_span("handler-work"):
                return next(request, ctx)

        return unary

    def wrap_stream(self, next: SyncStreamFunc) -> SyncStreamFunc:
        def stream(requests: Any, ctx: RequestContext) -> Iterator[Any]:
            with self._tracer.start_as_current_span("handler-work"):
                pass
            yield from next(requests, ctx)

        return stream


class Deny(AsyncServerInterceptor):
    """Refuses calls that carry ``x-deny`` (an auth check)."""

    async def on_request(self, ctx: RequestContext) -> None:
        if "x-deny" in ctx.request_headers:
            raise ConnectError(Code.UNAUTHENTICATED, "no credentials")


def asgi_app(t: Telemetry, *extra: AsyncServerInterceptor, **options: Any) -> ASGIApp:
    return ASGIApp(
        server_apps.Pinger(),
        interceptors=[OTelServerInterceptor(**t.kw()), *extra, Work(t.tracer_provider)],
        **options,
    )


def wsgi_app(t: Telemetry) -> WSGIApp:
    return WSGIApp(
        server_apps.PingerSync(),
        interceptors=[OTelServerInterceptorSync(**t.kw()), WorkSync(t.tracer_provider)],
    )


def assert_hop(t: Telemetry, name: str) -> tuple[ReadableSpan, ReadableSpan]:
    """The client and server spans of ``name``: one trace, client -> server ->
    the handler's own span, the client's a child of the test's ``outer``."""
    outer = t.one("outer", SpanKind.INTERNAL)
    client = t.one(name, SpanKind.CLIENT)
    server = t.one(name, SpanKind.SERVER)
    work = [s for s in t.finished() if s.name == "handler-work"]
    assert client.context is not None and server.context is not None
    assert outer.context is not None
    trace_id = outer.context.trace_id
    assert client.context.trace_id == server.context.trace_id == trace_id
    assert client.parent is not None and client.parent.span_id == outer.context.span_id
    assert server.parent is not None and server.parent.is_remote
    assert server.parent.span_id == client.context.span_id
    mine = [w for w in work if w.parent and w.parent.span_id == server.context.span_id]
    assert len(mine) == 1, work
    return client, server


# -- unary, both apps, default (older) conventions --------------------------------


@pytest.mark.anyio
async def test_async_unary_spans_cross_the_hop(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    t = telemetry
    tracer = t.tracer_provider.get_tracer("test")
    with serve_asgi(asgi_app(t)) as url:
        port = urlsplit(url).port
        async with AsyncClient(
            url, interceptors=[OTelClientInterceptor(**t.kw())]
        ) as c:
            with tracer.start_as_current_span("outer"):
                reply = await c.call_unary(PING, pb.PingRequest(text="hi", number=7))
    assert reply.text == "hi"
    client, server = assert_hop(t, f"{SERVICE}/Ping")
    for span in (client, server):
        attrs = dict(span.attributes or {})
        assert attrs["rpc.system"] == "connect_rpc"
        assert attrs["rpc.service"] == SERVICE
        assert attrs["rpc.method"] == "Ping"
        assert "rpc.connect_rpc.error_code" not in attrs
        assert "rpc.system.name" not in attrs
        assert span.status.status_code is StatusCode.UNSET
    assert dict(client.attributes or {})["server.address"] == "127.0.0.1"
    assert dict(client.attributes or {})["server.port"] == port
    assert dict(server.attributes or {})["network.peer.address"] == "127.0.0.1"
    # One request and one response message of known size, on both sides.
    size = pb.PingRequest(text="hi", number=7).ByteSize()
    reply_size = reply.ByteSize()
    assert reply_size > 0
    for side in ("server", "client"):
        [req] = t.points(f"rpc.{side}.request.size")
        assert (req.count, req.sum) == (1, size)
        [resp] = t.points(f"rpc.{side}.response.size")
        assert (resp.count, resp.sum) == (1, reply_size)
        [dur] = t.points(f"rpc.{side}.duration")
        assert dur.count == 1 and dur.attributes["rpc.method"] == "Ping"
        assert t.unit(f"rpc.{side}.duration") == "ms"
    # Unary calls have no messages-per-call points.
    assert t.points("rpc.server.requests_per_rpc") == []


def test_sync_unary_spans_cross_the_hop(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "rpc")
    t = telemetry
    tracer = t.tracer_provider.get_tracer("test")
    with (
        serve_wsgi(wsgi_app(t)) as url,
        SyncClient(url, interceptors=[OTelClientInterceptor(**t.kw())]) as c,
        tracer.start_as_current_span("outer"),
    ):
        reply = c.call_unary(PING, pb.PingRequest(text="hi"))
    assert reply.text == "hi"
    client, server = assert_hop(t, f"{SERVICE}/Ping")
    for span in (client, server):
        attrs = dict(span.attributes or {})
        assert attrs["rpc.system.name"] == "connectrpc"
        assert attrs["rpc.method"] == f"{SERVICE}/Ping"
        assert attrs["rpc.response.status_code"] == "ok"
        assert "rpc.system" not in attrs and "error.type" not in attrs
    [dur] = t.points("rpc.server.call.duration")
    assert dur.attributes["rpc.response.status_code"] == "ok"
    assert t.unit("rpc.server.call.duration") == "s"
    # Stable only: the experimental metrics are gone.
    assert t.points("rpc.server.duration") == []


# -- streams, both conventions (rpc/dup) ----------------------------------------------


async def _requests(numbers: list[int]) -> AsyncIterator[Any]:
    for n in numbers:
        yield pb.SumRequest(number=n)


@pytest.mark.anyio
async def test_async_streams_dup(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,rpc/dup")
    t = telemetry
    tracer = t.tracer_provider.get_tracer("test")
    with serve_asgi(asgi_app(t)) as url:
        async with AsyncClient(
            url, interceptors=[OTelClientInterceptor(**t.kw())]
        ) as c:
            with tracer.start_as_current_span("outer"):
                got = [
                    m.number
                    async for m in c.call_server_stream(
                        COUNT_UP, pb.CountUpRequest(number=3)
                    )
                ]
            assert got == [1, 2, 3]
            _, server = assert_hop(t, f"{SERVICE}/CountUp")
            attrs = dict(server.attributes or {})
            # Both generations; the shared name keeps the stable value.
            assert attrs["rpc.system"] == "connect_rpc"
            assert attrs["rpc.system.name"] == "connectrpc"
            assert attrs["rpc.method"] == f"{SERVICE}/CountUp"
            assert attrs["rpc.service"] == SERVICE
            assert attrs["rpc.response.status_code"] == "ok"
            t.spans.clear()
            with tracer.start_as_current_span("outer"):
                total = await c.call_client_stream(SUM, _requests([1, 2, 3, 4]))
            assert total.sum == 10
            assert_hop(t, f"{SERVICE}/Sum")
            t.spans.clear()
            echoes = [
                pb.EchoRequest(text="a"),
                pb.EchoRequest(text="b"),
            ]
            with tracer.start_as_current_span("outer"):
                got_echo = [m.text async for m in c.call_bidi_stream(ECHO, echoes)]
            assert got_echo == ["a", "b"]
            assert_hop(t, f"{SERVICE}/Echo")

    def per_rpc(metric: str) -> dict[str, tuple[int, int]]:
        return {p.attributes["rpc.method"]: (p.count, p.sum) for p in t.points(metric)}

    for side in ("server", "client"):
        assert per_rpc(f"rpc.{side}.requests_per_rpc") == {
            "CountUp": (1, 1),
            "Sum": (1, 4),
            "Echo": (1, 2),
        }
        assert per_rpc(f"rpc.{side}.responses_per_rpc") == {
            "CountUp": (1, 3),
            "Sum": (1, 1),
            "Echo": (1, 2),
        }
        methods = {
            p.attributes["rpc.method"] for p in t.points(f"rpc.{side}.call.duration")
        }
        assert methods == {f"{SERVICE}/{m}" for m in ("CountUp", "Sum", "Echo")}


def test_sync_streams_on_wsgi(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    t = telemetry
    tracer = t.tracer_provider.get_tracer("test")
    with (
        serve_wsgi(wsgi_app(t)) as url,
        SyncClient(url, interceptors=[OTelClientInterceptor(**t.kw())]) as c,
    ):
        with tracer.start_as_current_span("outer"):
            got = [
                m.number
                for m in c.call_server_stream(COUNT_UP, pb.CountUpRequest(number=2))
            ]
        assert got == [1, 2]
        assert_hop(t, f"{SERVICE}/CountUp")
        t.spans.clear()
        with tracer.start_as_current_span("outer"):
            total = c.call_client_stream(SUM, [pb.SumRequest(number=5)] * 3)
        assert total.sum == 15
        assert_hop(t, f"{SERVICE}/Sum")
    points = {
        p.attributes["rpc.method"]: p.sum
        for p in t.points("rpc.server.requests_per_rpc")
    }
    assert points == {"CountUp": 1, "Sum": 3}


# -- errors and codes ---------------------------------------------------------------


@pytest.mark.anyio
async def test_error_codes_stable(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "rpc")
    t = telemetry
    with serve_asgi(asgi_app(t)) as url:
        async with AsyncClient(
            url, interceptors=[OTelClientInterceptor(**t.kw())]
        ) as c:
            with pytest.raises(ConnectError) as e:
                await c.call_unary(
                    FAIL, pb.FailRequest(code=int(Code.INVALID_ARGUMENT))
                )
            assert e.value.code is Code.INVALID_ARGUMENT
            client = t.one(f"{SERVICE}/Fail", SpanKind.CLIENT)
            server = t.one(f"{SERVICE}/Fail", SpanKind.SERVER)
            # A client's mistake: a failure for the client, not for the server.
            assert dict(server.attributes or {})["rpc.response.status_code"] == (
                "invalid_argument"
            )
            assert "error.type" not in dict(server.attributes or {})
            assert server.status.status_code is StatusCode.UNSET
            assert dict(client.attributes or {})["error.type"] == "invalid_argument"
            assert client.status.status_code is StatusCode.ERROR
            t.spans.clear()
        # gRPC-Web: gRPC's names and system.
        async with AsyncClient(
            url, protocol="grpc-web", interceptors=[OTelClientInterceptor(**t.kw())]
        ) as c:
            with pytest.raises(ConnectError):
                await c.call_unary(
                    FAIL, pb.FailRequest(code=int(Code.INTERNAL), message="boom")
                )
    server = t.one(f"{SERVICE}/Fail", SpanKind.SERVER)
    attrs = dict(server.attributes or {})
    assert attrs["rpc.system.name"] == "grpc"
    assert attrs["rpc.response.status_code"] == "INTERNAL"
    assert attrs["error.type"] == "INTERNAL"
    assert server.status.status_code is StatusCode.ERROR
    assert server.status.description == "boom"
    codes = {
        p.attributes["rpc.response.status_code"]
        for p in t.points("rpc.server.call.duration")
    }
    assert codes == {"invalid_argument", "INTERNAL"}


def _raw_post(url: str, path: str, headers: dict[str, str], body: bytes) -> int:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.anyio
async def test_refused_before_the_handler(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    t = telemetry
    name = f"{SERVICE}/Ping"

    def server_code() -> str | None:
        [span] = [s for s in t.finished() if s.kind is SpanKind.SERVER]
        t.spans.clear()
        value = dict(span.attributes or {}).get("rpc.connect_rpc.error_code")
        return None if value is None else str(value)

    app = asgi_app(t, Deny(), read_max_bytes=64)
    # Deny listed before the OTel interceptor: its refusal still gets a span.
    first = ASGIApp(
        server_apps.Pinger(),
        interceptors=[Deny(), OTelServerInterceptor(**t.kw())],
    )
    with serve_asgi(app) as url, serve_asgi(first) as url_first:
        async with AsyncClient(url) as c:
            with pytest.raises(ConnectError) as e:
                await c.call_unary(PING, pb.PingRequest(), headers={"x-deny": "1"})
            assert e.value.code is Code.UNAUTHENTICATED
            assert server_code() == "unauthenticated"
            with pytest.raises(ConnectError) as e:
                await c.call_unary(PING, pb.PingRequest(payload=b"x" * 100))
            assert e.value.code is Code.RESOURCE_EXHAUSTED
            assert server_code() == "resource_exhausted"
        async with AsyncClient(url_first) as c:
            with pytest.raises(ConnectError) as e:
                await c.call_unary(PING, pb.PingRequest(), headers={"x-deny": "1"})
            assert e.value.code is Code.UNAUTHENTICATED
            assert server_code() == "unauthenticated"
        # Not a content type the server speaks: 415, which clients read as unknown.
        status = _raw_post(url, f"/{name}", {"content-type": "text/plain"}, b"hi")
        assert status == 415
        [span] = t.finished()
        t.spans.clear()
        assert span.name == name and span.kind is SpanKind.SERVER
        assert dict(span.attributes or {})["rpc.connect_rpc.error_code"] == "unknown"
        assert span.status.status_code is StatusCode.ERROR
        # A deadline of 1 ms for a handler that would sleep 10 s.
        status = _raw_post(
            url,
            f"/{name}",
            {"content-type": "application/proto", "connect-timeout-ms": "1"},
            pb.PingRequest(sleep_ms=10_000).SerializeToString(),
        )
        assert status == 504
        assert server_code() == "deadline_exceeded"
        # A malformed head (a timeout that is not a number) is refused by the
        # protocol before any interceptor hook.
        status = _raw_post(
            url,
            f"/{name}",
            {"content-type": "application/proto", "connect-timeout-ms": "soon"},
            b"",
        )
        assert status == 400
        assert server_code() == "invalid_argument"


def test_semconv_opt_in_values() -> None:
    assert semconv_opt_in("") == (True, False)
    assert semconv_opt_in("http") == (True, False)
    assert semconv_opt_in("rpc") == (False, True)
    assert semconv_opt_in(" rpc , http") == (False, True)
    assert semconv_opt_in("rpc,rpc/dup") == (True, True)
    assert semconv_opt_in("rpc/dup") == (True, True)
