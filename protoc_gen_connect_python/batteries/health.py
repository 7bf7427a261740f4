"""gRPC health checking (``grpc.health.v1.Health``): a status store, the service, clients.

``Health`` holds a serving status per service name, "" standing for the server
as a whole. ``HealthService`` (ASGI) and ``HealthServiceSync`` (WSGI) answer
``Check``, ``List`` and the streaming ``Watch`` from it, over Connect, gRPC
and gRPC-Web like any other service::

    health = Health()
    app = ASGIApp(Greeter(), HealthService(health))

Every service the app serves starts SERVING; change a status at any time, from
any thread, with ``health.set(name, ServingStatus.NOT_SERVING)``, and call
``health.shutdown()`` when the process begins to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import ClassVar, TypeVar

from google.protobuf.message import Message

from protoc_gen_connect_python.batteries.health_pb2 import (
    HealthCheckRequest,
    HealthCheckResponse,
    HealthListRequest,
    HealthListResponse,
)
from protoc_gen_connect_python.runtime import (
    AsyncClient,
    AsyncService,
    AsyncStream,
    Code,
    ConnectError,
    HeadersInput,
    MethodSpec,
    RequestContext,
    ServiceSpec,
    StreamType,
    SyncClient,
    SyncService,
    SyncStream,
)

__all__ = [
    "HEALTH",
    "HEALTH_CHECK",
    "HEALTH_LIST",
    "HEALTH_WATCH",
    "Health",
    "HealthClient",
    "HealthClientSync",
    "HealthService",
    "HealthServiceSync",
    "ServingStatus",
]


I = TypeVar("I", bound=Message)  # noqa: E741
O = TypeVar("O", bound=Message)  # noqa: E741

ServingStatus = HealthCheckResponse.ServingStatus
"""The statuses: ``ServingStatus.SERVING``, ``NOT_SERVING``, ``UNKNOWN`` and
``SERVICE_UNKNOWN`` (which only ``Watch`` reports: the service is not known,
yet). The proto's own enum, so replies compare with it directly."""


SERVICE_NAME = "grpc.health.v1.Health"


def _method(
    name: str, stream_type: StreamType, input: type[I], output: type[O]
) -> MethodSpec[I, O]:
    return MethodSpec(SERVICE_NAME, name, name.lower(), stream_type, input, output)


HEALTH_CHECK = _method(
    "Check", StreamType.UNARY, HealthCheckRequest, HealthCheckResponse
)
HEALTH_LIST = _method("List", StreamType.UNARY, HealthListRequest, HealthListResponse)
HEALTH_WATCH = _method(
    "Watch", StreamType.SERVER_STREAM, HealthCheckRequest, HealthCheckResponse
)
HEALTH = ServiceSpec(
    name=SERVICE_NAME, methods=(HEALTH_CHECK, HEALTH_LIST, HEALTH_WATCH)
)


class Health:
    """Serving statuses by service name; thread-safe, shared by any number of apps.

    ``status`` is where the server as a whole ("") starts. A service served by
    an app with a ``HealthService`` of this store starts SERVING unless its
    status was set before.
    """

    def __init__(self, status: ServingStatus = ServingStatus.SERVING) -> None:
        self._cond = threading.Condition()
        self._statuses: dict[str, ServingStatus] = {"": status}
        self._shut_down = False
        self._version = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            set()
        )

    def set(self, service: str, status: ServingStatus) -> None:
        """Set the status of ``service`` ("" for the server); watchers see the change."""
        if status == ServingStatus.SERVICE_UNKNOWN:
            raise ValueError("SERVICE_UNKNOWN is reported, not set: use remove()")
        with self._cond:
            if self._statuses.get(service) != status:
                self._statuses[service] = status
                self._changed()

    def remove(self, service: str) -> None:
        """Forget ``service``: Check answers not_found, Watch SERVICE_UNKNOWN."""
        with self._cond:
            if self._statuses.pop(service, None) is not None:
                self._changed()

    def status(self, service: str) -> ServingStatus | None:
        """The status reported for ``service``; None if it is not known."""
        with self._cond:
            return self._reported(service)

    def statuses(self) -> dict[str, ServingStatus]:
        """Every known service and its reported status."""
        with self._cond:
            return {name: self._reported_known(s) for name, s in self._statuses.items()}

    def shutdown(self) -> None:
        """Report every service NOT_SERVING from now on, whatever ``set`` says.

        Call it when the process starts to stop, so load balancers move
        traffic away before connections close. ``set`` still records
        statuses; ``resume`` reports them again.
        """
        with self._cond:
            if not self._shut_down:
                self._shut_down = True
                self._changed()

    def resume(self) -> None:
        """Undo ``shutdown``: report the statuses that were set."""
        with self._cond:
            if self._shut_down:
                self._shut_down = False
                self._changed()

    def register(self, services: tuple[ServiceSpec, ...]) -> None:
        """Mark these services SERVING, unless they already have a status."""
        with self._cond:
            new = [s.name for s in services if s.name not in self._statuses]
            for name in new:
                self._statuses[name] = ServingStatus.SERVING
            if new:
                self._changed()

    # -- for the services -------------------------------------------------

    def _reported_known(self, status: ServingStatus) -> ServingStatus:
        return ServingStatus.NOT_SERVING if self._shut_down else status

    def _reported(self, service: str) -> ServingStatus | None:
        status = self._statuses.get(service)
        return None if status is None else self._reported_known(status)

    def _changed(self) -> None:
        # Called with the lock held.
        self._version += 1
        self._cond.notify_all()
        for loop, fut in self._waiters:
            # A closed loop's watcher is gone already.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, fut)
        self._waiters.clear()

    def _snapshot(self, service: str) -> tuple[ServingStatus, int]:
        """What Watch reports for ``service`` now, and the version it belongs to."""
        with self._cond:
            status = self._reported(service)
            return status or ServingStatus.SERVICE_UNKNOWN, self._version

    def _wait(self, version: int, timeout: float | None) -> bool:
        """Block until something changes after ``version``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._version != version, timeout)

    async def _wait_async(self, version: int) -> None:
        """Wait until something changes after ``version``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._cond:
            if self._version != version:
                return
            self._waiters.add(entry)
        try:
            await fut
        finally:
            with self._cond:
                self._waiters.discard(entry)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _check(health: Health, request: HealthCheckRequest) -> HealthCheckResponse:
    status = health.status(request.service)
    if status is None:
        raise ConnectError(Code.NOT_FOUND, f"unknown service {request.service!r}")
    return _response(status)


def _response(status: ServingStatus) -> HealthCheckResponse:
    return HealthCheckResponse(status=status)


def _list(health: Health) -> HealthListResponse:
    statuses = health.statuses().items()
    return HealthListResponse(statuses={n: _response(s) for n, s in statuses})


class _Watch:
    """One Watch call's progress: what to send next, if anything."""

    __slots__ = ("_health", "_last", "_service", "version")

    def __init__(self, health: Health, service: str) -> None:
        self._health = health
        self._service = service
        self._last: ServingStatus | None = None
        self.version = -1

    def next(self) -> HealthCheckResponse | None:
        """The response to send now: the first status, then only changes."""
        status, self.version = self._health._snapshot(self._service)
        if status == self._last:
            return None
        self._last = status
        return _response(status)


class HealthService(AsyncService):
    """``grpc.health.v1.Health`` for ``ASGIApp``, answering from a ``Health``.

    A ``Watch`` call lasts until the client ends it, or its deadline passes.
    """

    service_spec: ClassVar[ServiceSpec] = HEALTH

    def __init__(self, health: Health) -> None:
        self.health = health

    def served_with(self, services: tuple[ServiceSpec, ...]) -> None:
        """Every service the app serves starts SERVING."""
        self.health.register(services)

    async def check(
        self, request: HealthCheckRequest, ctx: RequestContext
    ) -> HealthCheckResponse:
        """The status of ``request.service``; not_found for an unknown one."""
        return _check(self.health, request)

    async def list(
        self, request: HealthListRequest, ctx: RequestContext
    ) -> HealthListResponse:
        """Every known service and its status."""
        return _list(self.health)

    async def watch(
        self, request: HealthCheckRequest, ctx: RequestContext
    ) -> AsyncIterator[HealthCheckResponse]:
        """The status now, then each change."""
        watch = _Watch(self.health, request.service)
        while True:
            reply = watch.next()
            if reply is not None:
                yield reply
            await self.health._wait_async(watch.version)


class HealthServiceSync(SyncService):
    """``grpc.health.v1.Health`` for ``WSGIApp``, answering from a ``Health``.

    A WSGI server learns that a client left only when it next writes, so a
    ``Watch`` call holds its worker thread until a status changes: each one
    ends (with OK, after which clients call again) ``watch_seconds`` after it
    started, or at its deadline if that is sooner.
    """

    service_spec: ClassVar[ServiceSpec] = HEALTH

    def __init__(self, health: Health, *, watch_seconds: float = 300.0) -> None:
        if watch_seconds <= 0:
            raise ValueError("watch_seconds must be positive")
        self.health = health
        self.watch_seconds = watch_seconds

    def served_with(self, services: tuple[ServiceSpec, ...]) -> None:
        """Every service the app serves starts SERVING."""
        self.health.register(services)

    def check(
        self, request: HealthCheckRequest, ctx: RequestContext
    ) -> HealthCheckResponse:
        """The status of ``request.service``; not_found for an unknown one."""
        return _check(self.health, request)

    def list(
        self, request: HealthListRequest, ctx: RequestContext
    ) -> HealthListResponse:
        """Every known service and its status."""
        return _list(self.health)

    def watch(
        self, request: HealthCheckRequest, ctx: RequestContext
    ) -> Iterator[HealthCheckResponse]:
        """The status now, then each change, for at most ``watch_seconds``."""
        end = time.monotonic() + self.watch_seconds
        if ctx.deadline is not None:
            end = min(end, ctx.deadline)
        watch = _Watch(self.health, request.service)
        while True:
            reply = watch.next()
            if reply is not None:
                yield reply
            left = end - time.monotonic()
            if left <= 0 or not self.health._wait(watch.version, left):
                return


class HealthClient(AsyncClient):
    """Async client of ``grpc.health.v1.Health`` (any server: ours, grpcio, ...)."""

    async def check(
        self,
        request: HealthCheckRequest,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> HealthCheckResponse:
        """The status of one service; not_found if the server does not know it."""
        return await self.call_unary(
            HEALTH_CHECK, request, headers=headers, timeout=timeout
        )

    async def list(
        self,
        request: HealthListRequest,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> HealthListResponse:
        """Every service the server knows and its status."""
        return await self.call_unary(
            HEALTH_LIST, request, headers=headers, timeout=timeout
        )

    def watch(
        self,
        request: HealthCheckRequest,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> AsyncStream[HealthCheckResponse]:
        """The status of one service now, then each change."""
        return self.call_server_stream(
            HEALTH_WATCH, request, headers=headers, timeout=timeout
        )


class HealthClientSync(SyncClient):
    """Sync client of ``grpc.health.v1.Health``."""

    def check(
        self,
        request: HealthCheckRequest,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> HealthCheckResponse:
        """The status of one service; not_found if the server does not know it."""
        return self.call_unary(HEALTH_CHECK, request, headers=headers, timeout=timeout)

    def list(
        self,
        request: HealthListRequest,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> HealthListResponse:
        """Every service the server knows and its status."""
        return self.call_unary(HEALTH_LIST, request, headers=headers, timeout=timeout)

    def watch(
        self,
        request: HealthCheckRequest,
        *,
        headers: HeadersInput | None = None,
        timeout: float | None = None,
    ) -> SyncStream[HealthCheckResponse]:
        """The status of one service now, then each change."""
        return self.call_server_stream(
            HEALTH_WATCH, request, headers=headers, timeout=timeout
        )
