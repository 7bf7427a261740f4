"""Apps for ``tests/test_shutdown.py`` and ``tests/test_workers.py`` on real servers.

The test service of ``server_apps`` with handlers that live across a shutdown:

* ``Ping`` with text ``"hold"`` waits until shutdown begins (at most
  ``number`` ms, or ``HOLD_SECONDS`` when 0), then answers after ``sleep_ms``:
  a unary call that is in flight when the signal comes. Text ``"stats"`` answers at once with the
  number of held calls in ``number`` and of open streams in ``text``; text
  ``"pid"`` answers with the worker's pid; any other is ``server_apps``' ping.
  A held call appends ``hold <pid>`` to ``$SHUTDOWN_LOG`` when it begins.
* ``CountUp`` sends 1 at once, then a message every ``sleep_ms`` (100 ms when
  0) until ``number`` messages were sent (0: forever); it sends ``-1`` once
  when it sees ``ctx.shutting_down`` (the sync one waits with
  ``ctx.wait_shutdown``, and at most 100 ms per message after that). Each
  handler that reaches its ``finally`` appends ``count_up <pid>`` to the file
  named by ``$SHUTDOWN_LOG`` (when set), so tests can see the handlers end.

Both apps have ``server_apps``' interceptors, so ``client_env``'s
``call_all_kinds_async`` works against them.

The grace is ``$SHUTDOWN_GRACE`` seconds (default 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from server_apps import Guard, GuardSync, Pinger, PingerSync, pb

from protoc_gen_connect_python.runtime import ASGIApp, RequestContext, WSGIApp

GRACE = float(os.environ.get("SHUTDOWN_GRACE", "3"))
HOLD_SECONDS = 20.0
LOG = os.environ.get("SHUTDOWN_LOG")


class _Stats:
    """Calls in progress in this process (WSGI servers run handlers in threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held = 0
        self.streams = 0

    def add(self, held: int = 0, streams: int = 0) -> None:
        with self.lock:
            self.held += held
            self.streams += streams

    def reply(self) -> Any:
        return pb.PingResponse(number=self.held, text=str(self.streams))


STATS = _Stats()


def _note(what: str) -> None:
    if LOG:
        with open(LOG, "a") as f:
            f.write(f"{what} {os.getpid()}\n")


def _hold(request: Any) -> float:
    return request.number / 1000 if request.number else HOLD_SECONDS


def _quick(request: Any) -> Any:
    """The answer to ``stats`` and ``pid``; None for other pings."""
    if request.text == "stats":
        return STATS.reply()
    if request.text == "pid":
        return pb.PingResponse(text=str(os.getpid()), number=request.number)
    return None


@contextlib.contextmanager
def _counted(held: int = 0, streams: int = 0) -> Iterator[None]:
    STATS.add(held, streams)
    if held:
        _note("hold")
    try:
        yield
    finally:
        STATS.add(-held, -streams)
        if streams:
            _note("count_up")


def _steps(request: Any, ctx: RequestContext) -> Iterator[float | int]:
    """CountUp's plan: an int is a message to send, a float a wait (seconds)."""
    tick = (request.sleep_ms or 100) / 1000
    told = False
    i = 1
    yield 1
    while i != request.number:
        if not told and ctx.shutting_down:
            told = True
            yield -1
        yield tick
        i += 1
        yield i


class Holder(Pinger):
    async def ping(self, request: Any, ctx: RequestContext) -> Any:
        if request.text != "hold":
            quick = _quick(request)
            return quick if quick is not None else await super().ping(request, ctx)
        with _counted(held=1):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ctx.until_shutdown(), _hold(request))
            await asyncio.sleep(request.sleep_ms / 1000)
            return pb.PingResponse(text="held", number=request.number)

    async def count_up(self, request: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        with _counted(streams=1):
            for step in _steps(request, ctx):
                if isinstance(step, float):
                    await asyncio.sleep(step)
                else:
                    yield pb.CountUpResponse(number=step)


class HolderSync(PingerSync):
    def ping(self, request: Any, ctx: RequestContext) -> Any:
        if request.text != "hold":
            quick = _quick(request)
            return quick if quick is not None else super().ping(request, ctx)
        with _counted(held=1):
            ctx.wait_shutdown(_hold(request))
            threading.Event().wait(request.sleep_ms / 1000)
            return pb.PingResponse(text="held", number=request.number)

    def count_up(self, request: Any, ctx: RequestContext) -> Iterator[Any]:
        with _counted(streams=1):
            for step in _steps(request, ctx):
                if not isinstance(step, float):
                    yield pb.CountUpResponse(number=step)
                elif ctx.shutting_down:  # on until the app ends it at the grace
                    threading.Event().wait(min(step, 0.1))
                else:
                    ctx.wait_shutdown(step)


asgi_app = ASGIApp(Holder(), interceptors=[Guard()], shutdown_grace=GRACE)
wsgi_app = WSGIApp(HolderSync(), interceptors=[GuardSync()], shutdown_grace=GRACE)


def _starlette() -> Any:
    """``asgi_app`` mounted at ``/api`` in Starlette, which keeps the lifespan
    protocol to itself: the app hooks the signals at its first request."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    return Starlette(routes=[Mount("/api", app=asgi_app)])


starlette_app = _starlette()
