"""Apps for the call lifecycle tests (``lifecycle_apps:asgi_app`` / ``wsgi_app``).

One service, async and sync, whose handlers note what happened to them, read
back with ``Events``. Every request is a ``StringValue`` whose text is
``<id>`` or ``<id>|<argument>|...``; events are kept per id in the process.

* ``Watch`` (server stream) sends ``tick`` every 10 ms for at most 30 s,
  noting ``start`` and, in ``finally``, ``end``.
* ``Peer`` (unary) answers the client's address as the server sees it.
* ``Relay`` (unary) calls ``Hold`` at the URL in its second field, with no
  timeout of its own, and notes ``relay-end:<code>`` when done.
* ``RelayWatch`` (server stream) streams what ``Watch`` at the URL in its
  second field streams, noting ``relay-end`` when done.
* ``Hold`` (unary) notes ``remaining:<seconds>`` (its deadline as seen here),
  then waits until it is canceled or its deadline passes; ``end`` at last.
* ``Flaky`` (idempotent unary), ``FlakyWrite`` (no idempotency) and
  ``FlakyStream`` (server stream) fail their first ``<n>`` calls per id, each
  noting ``attempt``, in the way the third field says: ``plain``
  (``unavailable``), ``exhausted`` (``resource_exhausted``), ``retryinfo``
  (``resource_exhausted`` with RetryInfo of ``<fourth field>`` seconds),
  ``pushback`` (``unavailable`` with ``grpc-retry-pushback-ms: <fourth>``).
  ``FlakyStream`` sends one message before failing when the mode is ``late``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

from google.protobuf.duration_pb2 import Duration
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc.error_details_pb2 import (  # type: ignore[import-untyped]
    RetryInfo,
)

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    AsyncClient,
    AsyncService,
    Code,
    ConnectError,
    Headers,
    Idempotency,
    MethodSpec,
    RequestContext,
    ServiceSpec,
    StreamType,
    SyncClient,
    SyncService,
    WSGIApp,
)

SERVICE = "lifecycle.v1.Life"


def _spec(
    name: str, kind: StreamType, idem: Idempotency = Idempotency.UNKNOWN
) -> MethodSpec[StringValue, StringValue]:
    python_name = "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
    return MethodSpec(
        SERVICE, name, python_name[1:], kind, StringValue, StringValue, idem
    )


U = StreamType.UNARY
WATCH = _spec("Watch", StreamType.SERVER_STREAM)
EVENTS = _spec("Events", U, Idempotency.NO_SIDE_EFFECTS)
PEER = _spec("Peer", U, Idempotency.NO_SIDE_EFFECTS)
RELAY = _spec("Relay", U)
HOLD = _spec("Hold", U)
RELAY_WATCH = _spec("RelayWatch", StreamType.SERVER_STREAM)
FLAKY = _spec("Flaky", U, Idempotency.IDEMPOTENT)
FLAKY_WRITE = _spec("FlakyWrite", U)
FLAKY_STREAM = _spec("FlakyStream", StreamType.SERVER_STREAM, Idempotency.IDEMPOTENT)
LIFE = ServiceSpec(
    SERVICE,
    (WATCH, EVENTS, PEER, RELAY, RELAY_WATCH, HOLD, FLAKY, FLAKY_WRITE, FLAKY_STREAM),
)

_events: defaultdict[str, list[str]] = defaultdict(list)
_lock = threading.Lock()
_async_clients: dict[str, AsyncClient] = {}
_sync_clients: dict[str, SyncClient] = {}


def note(key: str, event: str) -> None:
    with _lock:
        _events[key].append(event)


def fields(request: StringValue) -> list[str]:
    return request.value.split("|")


def events(request: StringValue) -> StringValue:
    with _lock:
        return StringValue(value=",".join(_events[request.value]))


def flaky(request: StringValue) -> StringValue:
    """Fail the first calls for an id as asked; then say which attempt this is."""
    key, failures, mode, *arg = fields(request)
    with _lock:
        _events[key].append("attempt")
        n = _events[key].count("attempt")
    if n > int(failures):
        return StringValue(value=f"attempt:{n}")
    if mode in ("exhausted", "retryinfo"):
        details = []
        if mode == "retryinfo":
            delay = Duration()
            delay.FromNanoseconds(int(float(arg[0]) * 1e9))
            details.append(RetryInfo(retry_delay=delay))
        raise ConnectError(Code.RESOURCE_EXHAUSTED, "busy", details=details)
    metadata = Headers()
    if mode == "pushback":
        metadata["grpc-retry-pushback-ms"] = arg[0]
    raise ConnectError(Code.UNAVAILABLE, "down for now", metadata=metadata)


def async_client(url: str, version: str) -> AsyncClient:
    """One client per server, as an app keeps them."""
    client = _async_clients.get(url + version)
    if client is None:
        client = AsyncClient(url, http_version=version or None)  # type: ignore[arg-type]
        _async_clients[url + version] = client
    return client


def sync_client(url: str, version: str) -> SyncClient:
    with _lock:
        client = _sync_clients.get(url + version)
        if client is None:
            client = SyncClient(url, http_version=version or None)  # type: ignore[arg-type]
            _sync_clients[url + version] = client
        return client


def remaining(ctx: RequestContext) -> str:
    left = ctx.timeout_remaining()
    return f"remaining:{'none' if left is None else round(left, 3)}"


class Life(AsyncService):
    service_spec = LIFE

    async def watch(
        self, request: StringValue, ctx: RequestContext
    ) -> AsyncIterator[StringValue]:
        key = request.value
        note(key, "start")
        try:
            for _ in range(3000):
                yield StringValue(value="tick")
                await asyncio.sleep(0.01)
        finally:
            note(key, "end")

    async def events(self, request: StringValue, ctx: RequestContext) -> StringValue:
        return events(request)

    async def peer(self, request: StringValue, ctx: RequestContext) -> StringValue:
        return StringValue(value=ctx.peer or "")

    async def relay(self, request: StringValue, ctx: RequestContext) -> StringValue:
        key, url, version = fields(request)
        client = async_client(url, version)
        code = "ok"
        try:
            return await client.call_unary(HOLD, StringValue(value=key))
        except ConnectError as e:
            code = e.code.wire_name
            raise
        except asyncio.CancelledError:
            code = "canceled"
            raise
        finally:
            note(key, f"relay-end:{code}")

    async def relay_watch(
        self, request: StringValue, ctx: RequestContext
    ) -> AsyncIterator[StringValue]:
        key, url, version = fields(request)
        client = async_client(url, version)
        try:
            async for m in client.call_server_stream(WATCH, StringValue(value=key)):
                yield m
        finally:
            note(key, "relay-end")

    async def hold(self, request: StringValue, ctx: RequestContext) -> StringValue:
        key = request.value
        note(key, remaining(ctx))
        try:
            await asyncio.sleep(30)
            return request
        finally:
            note(key, "end")

    async def flaky(self, request: StringValue, ctx: RequestContext) -> StringValue:
        return flaky(request)

    async def flaky_write(
        self, request: StringValue, ctx: RequestContext
    ) -> StringValue:
        return flaky(request)

    async def flaky_stream(
        self, request: StringValue, ctx: RequestContext
    ) -> AsyncIterator[StringValue]:
        for msg in flaky_stream(request):
            yield msg


def flaky_stream(request: StringValue) -> Iterator[StringValue]:
    key, failures, mode = fields(request)
    if mode == "late":
        yield StringValue(value="first")
    yield flaky(StringValue(value=f"{key}|{failures}|plain"))
    yield StringValue(value="last")


class LifeSync(SyncService):
    service_spec = LIFE

    def watch(self, request: StringValue, ctx: RequestContext) -> Iterator[StringValue]:
        key = request.value
        note(key, "start")
        try:
            for _ in range(3000):
                yield StringValue(value="tick")
                time.sleep(0.01)
        finally:
            note(key, "end")

    def events(self, request: StringValue, ctx: RequestContext) -> StringValue:
        return events(request)

    def peer(self, request: StringValue, ctx: RequestContext) -> StringValue:
        return StringValue(value=ctx.peer or "")

    def relay(self, request: StringValue, ctx: RequestContext) -> StringValue:
        key, url, version = fields(request)
        client = sync_client(url, version)
        code = "ok"
        try:
            return client.call_unary(HOLD, StringValue(value=key))
        except ConnectError as e:
            code = e.code.wire_name
            raise
        finally:
            note(key, f"relay-end:{code}")

    def relay_watch(
        self, request: StringValue, ctx: RequestContext
    ) -> Iterator[StringValue]:
        key, url, version = fields(request)
        client = sync_client(url, version)
        try:
            yield from client.call_server_stream(WATCH, StringValue(value=key))
        finally:
            note(key, "relay-end")

    def hold(self, request: StringValue, ctx: RequestContext) -> StringValue:
        key = request.value
        note(key, remaining(ctx))
        try:
            # A blocking handler cannot be interrupted: it watches its deadline.
            stop = time.monotonic() + 30
            while time.monotonic() < stop:
                left = ctx.timeout_remaining()
                if left is not None and left <= 0:
                    raise ConnectError(Code.DEADLINE_EXCEEDED, "out of time")
                time.sleep(0.01)
            return request
        finally:
            note(key, "end")

    def flaky(self, request: StringValue, ctx: RequestContext) -> StringValue:
        return flaky(request)

    def flaky_write(self, request: StringValue, ctx: RequestContext) -> StringValue:
        return flaky(request)

    def flaky_stream(
        self, request: StringValue, ctx: RequestContext
    ) -> Iterator[StringValue]:
        yield from flaky_stream(request)


asgi_app = ASGIApp(Life())
wsgi_app = WSGIApp(LifeSync())
