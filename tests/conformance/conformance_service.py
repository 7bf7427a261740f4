"""connectrpc.conformance.v1.ConformanceService, as the reference client expects it.

Every request carries a response definition: headers and trailers to send, data
to answer with or an error to raise, and a delay. Every answer echoes what the
server saw (request headers, timeout, the request messages as ``Any``) in a
``ConformancePayload``, or in the error's details when there is no payload.

``Conformance`` is the async implementation (served by ``ASGIApp``) and
``ConformanceSync`` the sync one (``WSGIApp``). They share every decision; only
waiting and iterating differ. ``Unimplemented`` is deliberately left to the
generated base classes, which answer ``unimplemented``.

The generated modules exist only after ``conformance_gen.ensure_generated()``
has run, and static type checkers run without them: hence the targeted
ignores on those imports and base classes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from connectrpc.conformance.v1 import (  # type: ignore[import-not-found]
    service_connect,
    service_pb2,
)
from google.protobuf import any_pb2
from google.protobuf.message import Message

from protoc_gen_connect_python.runtime import (
    Code,
    ConnectError,
    Headers,
    RequestContext,
)
from protoc_gen_connect_python.runtime.headers import parse_grpc_timeout


def _pack(message: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(message)
    return a


def request_info(ctx: RequestContext | None, requests: Sequence[Message]) -> Any:
    """A ``RequestInfo`` with the call's headers and timeout (if ``ctx``) and requests."""
    info = service_pb2.ConformancePayload.RequestInfo()
    if ctx is not None:
        headers = ctx.request_headers
        for name in headers:
            info.request_headers.add(name=name, value=headers.getall(name))
        timeout_ms = _timeout_ms(headers, ctx)
        if timeout_ms is not None:
            info.timeout_ms = timeout_ms
    info.requests.extend(_pack(r) for r in requests)
    return info


def _timeout_ms(headers: Headers, ctx: RequestContext) -> int | None:
    """The timeout the client sent, as it sent it; else what the context knows."""
    value = headers.get("connect-timeout-ms")
    if value is not None and value.isdigit():
        return int(value)
    value = headers.get("grpc-timeout")
    if value is not None:
        try:
            return round(parse_grpc_timeout(value) * 1000)
        except ValueError:
            pass
    remaining = ctx.timeout_remaining()
    return None if remaining is None else round(remaining * 1000)


def _set_metadata(definition: Any, ctx: RequestContext) -> None:
    for h in definition.response_headers:
        for v in h.value:
            ctx.response_headers.add(h.name, v)
    for h in definition.response_trailers:
        for v in h.value:
            ctx.response_trailers.add(h.name, v)


def to_error(error: Any, info: Any | None) -> ConnectError:
    """The ConnectError for a requested ``Error``; ``info`` goes last in the details."""
    details: list[any_pb2.Any] = list(error.details)
    if info is not None:
        details.append(_pack(info))
    return ConnectError(Code(error.code), error.message, details=details)


def _payload(data: bytes, info: Any | None) -> Any:
    payload = service_pb2.ConformancePayload(data=data)
    if info is not None:
        payload.request_info.CopyFrom(info)
    return payload


class _UnaryOutcome:
    """What a unary or client-stream call answers: a payload, or an error.

    The first request's response definition says which; none (a client stream
    without requests) means an empty payload.
    """

    __slots__ = ("delay", "error", "payload")

    def __init__(self, ctx: RequestContext, requests: Sequence[Message]) -> None:
        definition = _definition(requests[0]) if requests else None
        info = request_info(ctx, requests)
        self.error: ConnectError | None = None
        self.payload: Any = None
        self.delay = 0.0
        if definition is None:
            self.payload = _payload(b"", info)
            return
        _set_metadata(definition, ctx)
        self.delay = definition.response_delay_ms / 1000.0
        if definition.WhichOneof("response") == "error":
            self.error = to_error(definition.error, info)
        else:
            self.payload = _payload(definition.response_data, info)

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.payload


def _definition(request: Any) -> Any | None:
    if request.HasField("response_definition"):
        return request.response_definition
    return None


class _StreamPlan:
    """The responses of a server or bidi stream, and the error that ends it."""

    __slots__ = ("ctx", "data", "delay", "error", "sent")

    def __init__(self, definition: Any | None, ctx: RequestContext) -> None:
        self.ctx = ctx
        self.data: list[bytes] = []
        self.delay = 0.0
        self.error: Any | None = None
        self.sent = 0
        if definition is not None:
            _set_metadata(definition, ctx)
            self.data = list(definition.response_data)
            self.delay = definition.response_delay_ms / 1000.0
            if definition.HasField("error"):
                self.error = definition.error

    def has_more(self) -> bool:
        return self.sent < len(self.data)

    def next_payload(self, info: Any | None) -> Any:
        data = self.data[self.sent]
        self.sent += 1
        return _payload(data, info)

    def end_error(self, requests: Sequence[Message]) -> ConnectError | None:
        if self.error is None:
            return None
        info = request_info(self.ctx, requests) if self.sent == 0 else None
        return to_error(self.error, info)

    def rest(self, requests: Sequence[Message]) -> Iterator[Any]:
        """The payloads not sent yet (the first one sent carries the request
        info of ``requests``), then the end error raised, if there is one."""
        while self.has_more():
            info = request_info(self.ctx, requests) if self.sent == 0 else None
            yield self.next_payload(info)
        err = self.end_error(requests)
        if err is not None:
            raise err


class _BidiPlan:
    """A bidi stream's answers as its requests arrive.

    The first request's definition makes the plan. In full duplex, each
    request is answered as it arrives (with the requests received since the
    last answer), and the error ends the stream once the data runs out; in
    half duplex everything is answered after the last request (``rest``).
    """

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self.plan: _StreamPlan | None = None
        self.full_duplex = False
        self.pending: list[Any] = []  # received since the last response
        self.received: list[Any] = []

    @property
    def delay(self) -> float:
        return self.plan.delay if self.plan is not None else 0.0

    def answer(self, request: Any) -> Any | None:
        """The payload to send for ``request`` now, if any."""
        if self.plan is None:
            self.plan = _StreamPlan(_definition(request), self.ctx)
            self.full_duplex = request.full_duplex
        self.pending.append(request)
        self.received.append(request)
        if not self.full_duplex:
            return None
        if not self.plan.has_more():
            err = self.plan.end_error(self.received)
            if err is not None:
                raise err
            return None
        info = request_info(self.ctx if self.plan.sent == 0 else None, self.pending)
        self.pending = []
        return self.plan.next_payload(info)

    def rest(self) -> Iterator[Any]:
        """The payloads after the last request, then the end error."""
        if self.plan is not None:
            yield from self.plan.rest(self.received)


class Conformance(service_connect.ConformanceService):  # type: ignore[misc]
    """The async implementation."""

    async def unary(self, request: Any, ctx: RequestContext) -> Any:
        return service_pb2.UnaryResponse(payload=await _answer(ctx, [request]))

    async def idempotent_unary(self, request: Any, ctx: RequestContext) -> Any:
        payload = await _answer(ctx, [request])
        return service_pb2.IdempotentUnaryResponse(payload=payload)

    async def client_stream(
        self, requests: AsyncIterator[Any], ctx: RequestContext
    ) -> Any:
        payload = await _answer(ctx, [r async for r in requests])
        return service_pb2.ClientStreamResponse(payload=payload)

    async def server_stream(
        self, request: Any, ctx: RequestContext
    ) -> AsyncIterator[Any]:
        plan = _StreamPlan(_definition(request), ctx)
        for payload in plan.rest([request]):
            await _pause(plan.delay)
            yield service_pb2.ServerStreamResponse(payload=payload)

    async def bidi_stream(
        self, requests: AsyncIterator[Any], ctx: RequestContext
    ) -> AsyncIterator[Any]:
        bidi = _BidiPlan(ctx)
        async for r in requests:
            payload = bidi.answer(r)
            if payload is not None:
                await _pause(bidi.delay)
                yield service_pb2.BidiStreamResponse(payload=payload)
        for payload in bidi.rest():
            await _pause(bidi.delay)
            yield service_pb2.BidiStreamResponse(payload=payload)


async def _pause(seconds: float) -> None:
    if seconds:
        await asyncio.sleep(seconds)


async def _answer(ctx: RequestContext, requests: Sequence[Message]) -> Any:
    out = _UnaryOutcome(ctx, requests)
    await _pause(out.delay)
    return out.result()


class ConformanceSync(service_connect.ConformanceServiceSync):  # type: ignore[misc]
    """The sync implementation: the same answers, with blocking waits."""

    def unary(self, request: Any, ctx: RequestContext) -> Any:
        return service_pb2.UnaryResponse(payload=_answer_sync(ctx, [request]))

    def idempotent_unary(self, request: Any, ctx: RequestContext) -> Any:
        payload = _answer_sync(ctx, [request])
        return service_pb2.IdempotentUnaryResponse(payload=payload)

    def client_stream(self, requests: Iterator[Any], ctx: RequestContext) -> Any:
        payload = _answer_sync(ctx, list(requests))
        return service_pb2.ClientStreamResponse(payload=payload)

    def server_stream(self, request: Any, ctx: RequestContext) -> Iterator[Any]:
        plan = _StreamPlan(_definition(request), ctx)
        for payload in plan.rest([request]):
            _pause_sync(plan.delay)
            yield service_pb2.ServerStreamResponse(payload=payload)

    def bidi_stream(
        self, requests: Iterator[Any], ctx: RequestContext
    ) -> Iterator[Any]:
        bidi = _BidiPlan(ctx)
        for r in requests:
            payload = bidi.answer(r)
            if payload is not None:
                _pause_sync(bidi.delay)
                yield service_pb2.BidiStreamResponse(payload=payload)
        for payload in bidi.rest():
            _pause_sync(bidi.delay)
            yield service_pb2.BidiStreamResponse(payload=payload)


def _pause_sync(seconds: float) -> None:
    if seconds:
        time.sleep(seconds)


def _answer_sync(ctx: RequestContext, requests: Sequence[Message]) -> Any:
    out = _UnaryOutcome(ctx, requests)
    _pause_sync(out.delay)
    return out.result()
