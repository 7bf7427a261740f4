"""OpenTelemetry for servers and clients: one span per call, metrics, propagation.

Needs the ``otel`` extra (``opentelemetry-api``; an SDK, configured by the
application, decides where spans and metrics go)::

    app = ASGIApp(Greeter(), interceptors=[OTelServerInterceptor()])
    wsgi_app = WSGIApp(GreeterSync(), interceptors=[OTelServerInterceptorSync()])
    client = GreetServiceClient(url, interceptors=[OTelClientInterceptor()])

Every call, of every stream kind, gets a span (kind SERVER or CLIENT) that
covers it from start to end. The client sends the current trace context in
the request headers (W3C ``traceparent`` with the default propagator) and the
server makes its span a child of it; handlers run with the server span as the
current span, so the spans they start are its children.

Which semantic conventions are emitted follows ``OTEL_SEMCONV_STABILITY_OPT_IN``
(read when the interceptor is made), as in OpenTelemetry's own
instrumentations: without ``rpc`` in it, the older experimental conventions
(``rpc.system``, ``rpc.service``, ``rpc.method`` as the bare method name,
``rpc.grpc.status_code`` or ``rpc.connect_rpc.error_code``, and the metrics
``rpc.{server,client}.duration`` in milliseconds, ``.request.size``,
``.response.size``, ``.requests_per_rpc`` and ``.responses_per_rpc``); with
``rpc``, the stable ones (``rpc.system.name``, ``rpc.method`` as
``package.Service/Method``, ``rpc.response.status_code``, ``error.type`` and
``rpc.{server,client}.call.duration`` in seconds); with ``rpc/dup``, both (where
a name is shared, ``rpc.method``, the stable value is the one kept).

The server's interceptor sees the end of every call through ``on_end``, those
refused before their handler ran included (a 415, a size limit, a deadline, an
interceptor's refusal). List it first so that its span starts before the other
interceptors' ``on_request`` run; a call refused before it started its span
gets one that starts and ends at the refusal.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from contextvars import Token
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.metrics import Histogram, MeterProvider, get_meter
from opentelemetry.propagators.textmap import Getter, Setter, TextMapPropagator
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from protoc_gen_connect_python.runtime import (
    AsyncServerInterceptor,
    AsyncStreamFunc,
    AsyncUnaryFunc,
    ClientCall,
    ClientInterceptor,
    Code,
    ConnectError,
    Headers,
    MethodSpec,
    RequestContext,
    StreamType,
    SyncServerInterceptor,
    SyncStreamFunc,
    SyncUnaryFunc,
)
from protoc_gen_connect_python.runtime.iterators import aclose_iterator, close_iterator

__all__ = [
    "OTelClientInterceptor",
    "OTelServerInterceptor",
    "OTelServerInterceptorSync",
    "semconv_opt_in",
]

SCOPE = "protoc_gen_connect_python.batteries.otel"
"""The instrumentation scope of the tracer and the meter."""

OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"

DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
"""The bucket boundaries, in seconds, the stable duration metrics advise."""

SERVER_ERRORS = frozenset(
    {
        Code.UNKNOWN,
        Code.DEADLINE_EXCEEDED,
        Code.UNIMPLEMENTED,
        Code.INTERNAL,
        Code.UNAVAILABLE,
        Code.DATA_LOSS,
    }
)
"""The codes that mark a server span as failed (every code does on clients)."""

Attributes = dict[str, AttributeValue]


def semconv_opt_in(value: str | None = None) -> tuple[bool, bool]:
    """Which conventions to emit, ``(old, stable)``, from the opt-in variable.

    ``value`` defaults to ``OTEL_SEMCONV_STABILITY_OPT_IN``: ``rpc/dup`` means
    both, ``rpc`` the stable ones only, anything else the old ones only.
    """
    raw = os.environ.get(OPT_IN, "") if value is None else value
    words = {w.strip() for w in raw.split(",")}
    if "rpc/dup" in words:
        return True, True
    if "rpc" in words:
        return False, True
    return True, False


def _grpc_name(code: Code | None) -> str:
    if code is None:
        return "OK"
    return "CANCELLED" if code is Code.CANCELED else code.name


class _HeadersIO(Getter[Headers], Setter[Headers]):
    """How propagators read and write our ``Headers``."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        return carrier.getall(key) or None

    def keys(self, carrier: Headers) -> list[str]:
        return list(carrier)

    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier[key] = value


_HEADERS = _HeadersIO()


class _Call:
    """One call's span and counts."""

    __slots__ = (
        "context",
        "grpc",
        "metric_new",
        "metric_old",
        "received",
        "sent",
        "span",
        "start",
        "stream",
    )

    def __init__(
        self,
        span: trace.Span,
        context: otel_context.Context,
        grpc: bool,
        stream: bool,
        metric_old: Attributes,
        metric_new: Attributes,
    ) -> None:
        self.span = span
        self.context = context
        """The trace context with this call's span current."""
        self.grpc = grpc
        self.stream = stream
        self.metric_old = metric_old
        self.metric_new = metric_new
        self.start = time.monotonic()
        self.sent = 0
        self.received = 0


class _Telemetry:
    """Spans and instruments of one side (server or client); no I/O."""

    def __init__(
        self,
        kind: SpanKind,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        propagator: TextMapPropagator | None,
    ) -> None:
        self.kind = kind
        self.old, self.stable = semconv_opt_in()
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        self.propagator = propagator
        meter = get_meter(SCOPE, meter_provider=meter_provider)
        side = "server" if kind is SpanKind.SERVER else "client"
        self.call_duration: Histogram | None = None
        if self.stable:
            self.call_duration = meter.create_histogram(
                f"rpc.{side}.call.duration",
                unit="s",
                description=f"Duration of {side} RPC calls.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
        self.old_instruments: tuple[Histogram, ...] = ()
        if self.old:
            self.old_instruments = tuple(
                meter.create_histogram(f"rpc.{side}.{name}", unit=unit, description=d)
                for name, unit, d in (
                    ("duration", "ms", f"Duration of {side} RPC calls."),
                    ("request.size", "By", "Sizes of request messages, uncompressed."),
                    (
                        "response.size",
                        "By",
                        "Sizes of response messages, uncompressed.",
                    ),
                    ("requests_per_rpc", "{count}", "Request messages per stream."),
                    ("responses_per_rpc", "{count}", "Response messages per stream."),
                )
            )

    # -- propagation ----------------------------------------------------------

    def extract(self, headers: Headers) -> otel_context.Context:
        """The caller's trace context from request headers."""
        p = self.propagator or propagate.get_global_textmap()
        return p.extract(headers, getter=_HEADERS)

    def inject(self, headers: Headers, context: otel_context.Context) -> None:
        """Write ``context`` into request headers."""
        p = self.propagator or propagate.get_global_textmap()
        p.inject(headers, context=context, setter=_HEADERS)

    # -- calls ----------------------------------------------------------------

    def begin(
        self,
        method: MethodSpec[Any, Any],
        protocol: str,
        parent: otel_context.Context | None,
        extra: Mapping[str, AttributeValue],
    ) -> _Call:
        """Start a call's span (a child of ``parent``, or of the current span)."""
        grpc = protocol != "connect"
        full = f"{method.service}/{method.name}"
        attrs: Attributes = {}
        metric_old: Attributes = {}
        metric_new: Attributes = {}
        if self.old:
            metric_old = {
                "rpc.system": "grpc" if grpc else "connect_rpc",
                "rpc.service": method.service,
                "rpc.method": method.name,
            }
            attrs.update(metric_old)
        if self.stable:
            metric_new = {
                "rpc.system.name": "grpc" if grpc else "connectrpc",
                "rpc.method": full,
            }
            if self.kind is SpanKind.CLIENT:
                metric_new.update(extra)
            attrs.update(metric_new)
        attrs.update(extra)
        span = self.tracer.start_span(
            full, context=parent, kind=self.kind, attributes=attrs
        )
        stream = method.stream_type is not StreamType.UNARY
        ctx = trace.set_span_in_context(span, parent)
        return _Call(span, ctx, grpc, stream, metric_old, metric_new)

    def message(self, call: _Call, message: Message, request: bool) -> None:
        """Count one message; ``request`` tells its direction."""
        outgoing = request is (self.kind is SpanKind.CLIENT)
        if outgoing:
            call.sent += 1
        else:
            call.received += 1
        if self.old:
            size = self.old_instruments[1 if request else 2]
            size.record(message.ByteSize(), call.metric_old)

    def finish(self, call: _Call, error: ConnectError | None) -> None:
        """End the span and record the call's metrics."""
        code = None if error is None else error.code
        failed = code is not None and (
            self.kind is SpanKind.CLIENT or code in SERVER_ERRORS
        )
        span = call.span
        elapsed = time.monotonic() - call.start
        if self.old:
            status: Attributes = {}
            if call.grpc:
                status["rpc.grpc.status_code"] = 0 if code is None else int(code)
            elif code is not None:
                status["rpc.connect_rpc.error_code"] = code.wire_name
            span.set_attributes(status)
            attrs = {**call.metric_old, **status}
            duration, _, _, requests, responses = self.old_instruments
            duration.record(elapsed * 1000, attrs)
            if call.stream:
                client = self.kind is SpanKind.CLIENT
                requests.record(call.sent if client else call.received, attrs)
                responses.record(call.received if client else call.sent, attrs)
        if self.stable:
            if call.grpc:
                name = _grpc_name(code)
            else:
                name = "ok" if code is None else code.wire_name
            new: Attributes = {"rpc.response.status_code": name}
            if failed:
                new["error.type"] = name
            span.set_attributes(new)
            if self.call_duration is not None:
                self.call_duration.record(elapsed, {**call.metric_new, **new})
        if failed and error is not None:
            span.set_status(Status(StatusCode.ERROR, error.message or None))
        span.end()


def _peer(ctx: RequestContext) -> Attributes:
    peer = ctx.peer
    if not peer:
        return {}
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit():
        return {"network.peer.address": peer}
    return {"network.peer.address": host.strip("[]"), "network.peer.port": int(port)}


class _ServerTelemetry(_Telemetry):
    """The server side: calls by their context, from ``on_request`` to ``on_end``."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        propagator: TextMapPropagator | None,
    ) -> None:
        super().__init__(SpanKind.SERVER, tracer_provider, meter_provider, propagator)
        self.calls: dict[RequestContext, _Call] = {}

    def start(self, ctx: RequestContext) -> None:
        parent = self.extract(ctx.request_headers)
        self.calls[ctx] = self.begin(ctx.method, ctx.protocol, parent, _peer(ctx))

    def end(self, ctx: RequestContext, error: ConnectError | None) -> None:
        call = self.calls.pop(ctx, None)
        if call is None:
            # Refused before on_request ran: a span for the refusal alone.
            parent = self.extract(ctx.request_headers)
            call = self.begin(ctx.method, ctx.protocol, parent, _peer(ctx))
        self.finish(call, error)

    def before(
        self, ctx: RequestContext, request: Message
    ) -> tuple[_Call, Token[otel_context.Context]]:
        """Count a unary request and make the call's span current."""
        call = self.calls[ctx]
        self.message(call, request, request=True)
        return call, otel_context.attach(call.context)

    def after(self, call: _Call, response: Message) -> Message:
        """Count a unary response."""
        self.message(call, response, request=False)
        return response


class _ServerOptions:
    """The providers and propagator; each defaults to the global one."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._t = _ServerTelemetry(tracer_provider, meter_provider, propagator)

    def on_end(self, ctx: RequestContext, error: ConnectError | None) -> None:
        """End the call's span with its code and record the call's metrics."""
        self._t.end(ctx, error)


class OTelServerInterceptor(_ServerOptions, AsyncServerInterceptor):
    """Spans and metrics for the calls an ``ASGIApp`` serves.

    ``tracer_provider``, ``meter_provider`` and ``propagator`` default to the
    global ones (set by the application's OpenTelemetry SDK set-up).
    """

    async def on_request(self, ctx: RequestContext) -> None:
        """Start the call's span, a child of the caller's trace context."""
        self._t.start(ctx)

    def wrap_unary(self, next: AsyncUnaryFunc) -> AsyncUnaryFunc:
        """Run the handler with the call's span current; count the messages."""
        t = self._t

        async def unary(request: Message, ctx: RequestContext) -> Message:
            call, token = t.before(ctx, request)
            try:
                response = await next(request, ctx)
            finally:
                otel_context.detach(token)
            return t.after(call, response)

        return unary

    def wrap_stream(self, next: AsyncStreamFunc) -> AsyncStreamFunc:
        """Run each step of the handler with the call's span current."""
        t = self._t

        async def counted(
            call: _Call, requests: AsyncIterator[Message]
        ) -> AsyncIterator[Message]:
            async for m in requests:
                t.message(call, m, request=True)
                yield m

        async def stream(
            requests: AsyncIterator[Message], ctx: RequestContext
        ) -> AsyncIterator[Message]:
            call = t.calls[ctx]
            responses = next(counted(call, requests), ctx)
            try:
                while True:
                    token = otel_context.attach(call.context)
                    try:
                        m = await responses.__anext__()
                    except StopAsyncIteration:
                        return
                    finally:
                        otel_context.detach(token)
                    t.message(call, m, request=False)
                    yield m
            finally:
                await aclose_iterator(responses)

        return stream


class OTelServerInterceptorSync(_ServerOptions, SyncServerInterceptor):
    """Spans and metrics for the calls a ``WSGIApp`` serves.

    The same as :class:`OTelServerInterceptor`, for sync apps.
    """

    def on_request(self, ctx: RequestContext) -> None:
        """Start the call's span, a child of the caller's trace context."""
        self._t.start(ctx)

    def wrap_unary(self, next: SyncUnaryFunc) -> SyncUnaryFunc:
        """Run the handler with the call's span current; count the messages."""
        t = self._t

        def unary(request: Message, ctx: RequestContext) -> Message:
            call, token = t.before(ctx, request)
            try:
                response = next(request, ctx)
            finally:
                otel_context.detach(token)
            return t.after(call, response)

        return unary

    def wrap_stream(self, next: SyncStreamFunc) -> SyncStreamFunc:
        """Run each step of the handler with the call's span current."""
        t = self._t

        def counted(call: _Call, requests: Iterator[Message]) -> Iterator[Message]:
            for m in requests:
                t.message(call, m, request=True)
                yield m

        def stream(
            requests: Iterator[Message], ctx: RequestContext
        ) -> Iterator[Message]:
            call = t.calls[ctx]
            responses = next(counted(call, requests), ctx)
            try:
                while True:
                    token = otel_context.attach(call.context)
                    try:
                        m = responses.__next__()
                    except StopIteration:
                        return
                    finally:
                        otel_context.detach(token)
                    t.message(call, m, request=False)
                    yield m
            finally:
                close_iterator(responses)

        return stream


def _server_attributes(base_url: str) -> Attributes:
    parts = urlsplit(base_url)
    attrs: Attributes = {}
    if parts.hostname:
        attrs["server.address"] = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        attrs["server.port"] = port
    return attrs


class OTelClientInterceptor(ClientInterceptor):
    """Spans and metrics for the calls of an async or sync client.

    Each call's span is a child of the span current when the call starts, and
    its trace context goes to the server in the request headers. A stream's
    span ends when the stream does: read it to its end or close it.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._t = _Telemetry(
            SpanKind.CLIENT, tracer_provider, meter_provider, propagator
        )
        # Weak: a stream its caller drops unfinished never ends its span,
        # but must not keep its state alive.
        self._calls: weakref.WeakKeyDictionary[ClientCall, _Call] = (
            weakref.WeakKeyDictionary()
        )
        self._servers: dict[str, Attributes] = {}

    def on_start(self, call: ClientCall) -> None:
        """Start the span and put its trace context in the request headers."""
        server = self._servers.get(call.base_url)
        if server is None:
            server = _server_attributes(call.base_url)
            if len(self._servers) < 64:
                self._servers[call.base_url] = server
        c = self._t.begin(call.method, call.protocol, None, server)
        self._t.inject(call.request_headers, c.context)
        self._calls[call] = c

    def on_send(self, call: ClientCall, message: Message) -> None:
        """Count a request message."""
        c = self._calls.get(call)
        if c is not None:
            self._t.message(c, message, request=True)

    def on_receive(self, call: ClientCall, message: Message) -> None:
        """Count a response message."""
        c = self._calls.get(call)
        if c is not None:
            self._t.message(c, message, request=False)

    def on_end(self, call: ClientCall, error: ConnectError | None) -> None:
        """End the span with the call's code and record the call's metrics."""
        c = self._calls.pop(call, None)
        if c is not None:
            self._t.finish(c, error)
