"""The test service for ``test_bad_input.py``, telling its log what it finished.

Each handler that returns prints one line to stderr (the server's log), so a
test can tell a handler that never ran, or failed, from one that succeeded on
part of a request it was never sent whole.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

from server_apps import Pinger, PingerSync

from protoc_gen_connect_python.runtime import ASGIApp, RequestContext, WSGIApp

DONE = "handler done:"
"""How each line starts."""


def _done(what: str) -> None:
    print(f"{DONE} {what}", file=sys.stderr, flush=True)


class TellingPinger(Pinger):
    async def ping(self, request: Any, ctx: RequestContext) -> Any:
        response = await super().ping(request, ctx)
        _done(f"ping text={request.text}")
        return response

    async def sum(self, requests: AsyncIterator[Any], ctx: RequestContext) -> Any:
        response = await super().sum(requests, ctx)
        _done(f"sum sum={response.sum} count={response.count}")
        return response


class TellingPingerSync(PingerSync):
    def ping(self, request: Any, ctx: RequestContext) -> Any:
        response = super().ping(request, ctx)
        _done(f"ping text={request.text}")
        return response

    def sum(self, requests: Iterator[Any], ctx: RequestContext) -> Any:
        response = super().sum(requests, ctx)
        _done(f"sum sum={response.sum} count={response.count}")
        return response


asgi_app = ASGIApp(TellingPinger())
wsgi_app = WSGIApp(TellingPingerSync())
