"""Apps for ``tests/test_server_streams.py`` on real servers (``stream_apps:<name>``).

The test service of ``server_apps`` with a read limit of 1000 bytes, and an
``Echo`` that sets the header ``x-early`` and sends the response headers with
``ctx.send_headers()`` before it reads the first request message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from server_apps import Pinger, PingerSync, pb

from protoc_gen_connect_python.runtime import ASGIApp, RequestContext, WSGIApp


class EarlyPinger(Pinger):
    async def echo(
        self, requests: AsyncIterator[Any], ctx: RequestContext
    ) -> AsyncIterator[Any]:
        ctx.response_headers["x-early"] = "yes"
        await ctx.send_headers()
        async for r in requests:
            yield pb.EchoResponse(text=r.text)


class EarlyPingerSync(PingerSync):
    def echo(self, requests: Iterator[Any], ctx: RequestContext) -> Iterator[Any]:
        ctx.response_headers["x-early"] = "yes"
        ctx.send_headers()
        for r in requests:
            yield pb.EchoResponse(text=r.text)


asgi_app = ASGIApp(EarlyPinger(), read_max_bytes=1000)
wsgi_app = WSGIApp(EarlyPingerSync(), read_max_bytes=1000)
