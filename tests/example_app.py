"""The example greet server as the plain-HTTP tests serve it.

The example's own apps (``examples/server.py``: cache headers, X-Accel-Buffering
and CORS) with one addition: ``Greet`` counts its calls in ``x-greet-calls``, so
a test can tell a proxy's cached answer from a fresh one.

The generated modules and ``examples/`` are on ``sys.path`` only at test time
(``example_env.py`` arranges it), hence the targeted ignores below.
"""

from __future__ import annotations

import importlib
from typing import Any

from greet.v1.greet_pb2 import (  # type: ignore[import-not-found]
    GreetRequest,
    GreetResponse,
)
from greet_service import Greeter, GreeterSync  # type: ignore[import-not-found]

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    CORSMiddleware,
    RequestContext,
    WSGIApp,
    WSGICORSMiddleware,
)

# examples/server.py, by name at run time: "server" means other modules to mypy.
_example_server: Any = importlib.import_module("server")
ORIGINS: list[str] = _example_server.ORIGINS
EXPOSE: list[str] = _example_server.EXPOSE


class Calls:
    """How many times ``Greet`` ran in this process."""

    n = 0

    @classmethod
    def next(cls) -> str:
        cls.n += 1
        return str(cls.n)


class CountingGreeter(Greeter):  # type: ignore[misc]
    async def greet(self, request: GreetRequest, ctx: RequestContext) -> GreetResponse:
        ctx.response_headers["x-greet-calls"] = Calls.next()
        reply: GreetResponse = await super().greet(request, ctx)
        return reply


class CountingGreeterSync(GreeterSync):  # type: ignore[misc]
    def greet(self, request: GreetRequest, ctx: RequestContext) -> GreetResponse:
        ctx.response_headers["x-greet-calls"] = Calls.next()
        reply: GreetResponse = super().greet(request, ctx)
        return reply


app = CORSMiddleware(
    ASGIApp(CountingGreeter()), allow_origins=ORIGINS, expose_headers=EXPOSE
)
wsgi_app = WSGICORSMiddleware(
    WSGIApp(CountingGreeterSync()), allow_origins=ORIGINS, expose_headers=EXPOSE
)
