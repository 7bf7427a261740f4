"""The in-process transports: a client calling an ASGI or WSGI app with no server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import server_apps
from client_env import call_all_kinds_async, call_all_kinds_sync
from server_apps import ECHO, PING, pb

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    ConnectError,
    ResponseCapture,
    SyncClient,
)
from protoc_gen_connect_python.runtime.client.inprocess import (
    ASGITransport,
    WSGITransport,
)

pytestmark = pytest.mark.anyio
PROTOCOLS = ["connect", "grpc", "grpc-web"]
URL = "http://test"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_asgi_every_kind_of_call(protocol: Any) -> None:
    transport = ASGITransport(server_apps.asgi_app)
    async with AsyncClient(URL, protocol=protocol, transport=transport) as client:
        await call_all_kinds_async(client, server_apps)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wsgi_every_kind_of_call(protocol: Any) -> None:
    transport = WSGITransport(server_apps.wsgi_app)
    with SyncClient(URL, protocol=protocol, transport=transport) as client:
        call_all_kinds_sync(client, server_apps)


async def test_asgi_bidi_is_full_duplex() -> None:
    turn: asyncio.Queue[str | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[Any]:
        while (text := await turn.get()) is not None:
            yield pb.EchoRequest(text=text)

    got: list[str] = []
    await turn.put("a")
    transport = ASGITransport(server_apps.asgi_app)
    async with AsyncClient(URL, transport=transport, timeout=10) as client:
        async for reply in client.call_bidi_stream(ECHO, requests()):
            got.append(reply.text)
            await turn.put(None if len(got) == 3 else reply.text + "b")
    assert got == ["a", "ab", "abb"]


async def test_asgi_deadline_cancels_the_handler() -> None:
    transport = ASGITransport(server_apps.asgi_app)
    async with AsyncClient(URL, transport=transport) as client:
        with pytest.raises(ConnectError) as err:
            await client.call_unary(PING, pb.PingRequest(sleep_ms=60_000), timeout=0.05)
    assert err.value.code is Code.DEADLINE_EXCEEDED


async def test_asgi_app_that_fails_gives_unavailable_without_its_text() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("secret detail")

    async with AsyncClient(URL, transport=ASGITransport(broken)) as client:
        with pytest.raises(ConnectError) as err:
            await client.call_unary(PING, pb.PingRequest())
    assert err.value.code is Code.UNAVAILABLE
    assert "secret" not in str(err.value)


def test_wsgi_app_that_fails_gives_unavailable_without_its_text() -> None:
    def broken(environ: Any, start_response: Any) -> Any:
        raise RuntimeError("secret detail")

    with (
        SyncClient(URL, transport=WSGITransport(broken)) as client,
        pytest.raises(ConnectError) as err,
    ):
        client.call_unary(PING, pb.PingRequest())
    assert err.value.code is Code.UNAVAILABLE
    assert "secret" not in str(err.value)


def test_wsgi_capture_sees_headers_and_trailers() -> None:
    transport = WSGITransport(server_apps.wsgi_app)
    with SyncClient(URL, transport=transport) as client, ResponseCapture() as got:
        client.call_unary(PING, pb.PingRequest(text="t"))
    assert got.headers["x-ping"] == "pong"
    assert got.trailers["x-ping-trailer"] == "done"
