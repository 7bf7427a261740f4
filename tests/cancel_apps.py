"""Apps whose handlers wait for the client to go away, and say when they saw it.

Served by real servers in ``test_client_cancel.py``: each handler sends what
it has, then waits until the test releases it (async) or keeps sending (sync:
a WSGI handler learns of a gone client only when a write fails). When it is
cancelled or closed, it writes "cancelled" into a file named by the request's
``x-case`` header, in ``$CANCEL_DIR``: the test waits for that file.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from server_apps import PingServiceBase, PingServiceSyncBase, pb

from protoc_gen_connect_python.runtime import ASGIApp, RequestContext, WSGIApp

SYNC_LIMIT = 60.0
"""Seconds a sync handler keeps sending before it gives up on being closed."""


def _path(ctx: RequestContext, suffix: str = "") -> Path:
    case = ctx.request_headers.get("x-case", "unnamed")
    return Path(os.environ["CANCEL_DIR"], case + suffix)


def _mark(ctx: RequestContext, how: str, suffix: str = "") -> None:
    # Written aside, then renamed: the test sees the file whole or not at all.
    path = _path(ctx, suffix)
    part = path.with_name(path.name + ".part")
    part.write_text(how)
    os.replace(part, path)


async def _until_released(ctx: RequestContext) -> None:
    """Wait until the test writes ``<case>.release``: a call the client failed
    to cancel still ends before its server is stopped."""
    release = _path(ctx, ".release")
    while not release.exists():
        await asyncio.sleep(0.02)


class Waiting(PingServiceBase):
    async def ping(self, request: Any, ctx: RequestContext) -> Any:
        _mark(ctx, "running", ".started")
        try:
            await _until_released(ctx)
        except asyncio.CancelledError:
            _mark(ctx, "cancelled")
            raise
        _mark(ctx, "released")
        return pb.PingResponse()

    async def count_up(self, request: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        try:
            yield pb.CountUpResponse(number=1)
            await _until_released(ctx)
        except (asyncio.CancelledError, GeneratorExit):
            _mark(ctx, "cancelled")
            raise


class WaitingSync(PingServiceSyncBase):
    def count_up(self, request: Any, ctx: RequestContext) -> Iterator[Any]:
        try:
            yield pb.CountUpResponse(number=1)
            end = time.monotonic() + SYNC_LIMIT
            while time.monotonic() < end:
                time.sleep(0.02)
                yield pb.CountUpResponse(number=2)
        except GeneratorExit:
            _mark(ctx, "cancelled")
            raise


asgi_app = ASGIApp(Waiting())
wsgi_app = WSGIApp(WaitingSync())
