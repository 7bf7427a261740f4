"""``ResponseCapture``: response headers and trailers of the plain unary methods."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from server_apps import FAIL, PING, SUM, pb
from servers import run_server

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    ConnectError,
    ResponseCapture,
    SyncClient,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with run_server("uvicorn", "server_apps:asgi_app") as srv:
        yield srv.url


async def test_async_unary_and_client_stream(url: str) -> None:
    async with AsyncClient(url, timeout=10) as client:
        with ResponseCapture() as got:
            assert not got.headers and not got.trailers
            reply = await client.call_unary(PING, pb.PingRequest(text="a"))
            assert reply.text == "a"
            assert got.headers.get("x-ping") == "pong"
            assert got.trailers.get("x-ping-trailer") == "done"
            total = await client.call_client_stream(
                SUM, [pb.SumRequest(number=n) for n in (1, 2)]
            )
        assert total.sum == 3
        # The last call's: Sum sets no x-ping header.
        assert got.headers.get("x-ping") is None
        assert got.headers.get("content-type") == "application/connect+proto"
        # Outside the block nothing is recorded.
        await client.call_unary(PING, pb.PingRequest(text="b"))
        assert got.headers.get("x-ping") is None


async def test_async_tasks_started_in_the_block_report_to_it(url: str) -> None:
    async with AsyncClient(url, timeout=10) as client:
        with ResponseCapture() as got:
            task = asyncio.create_task(client.call_unary(PING, pb.PingRequest()))
        await task
    assert got.headers.get("x-ping") == "pong"


async def test_a_failed_call_leaves_the_capture_as_it_was(url: str) -> None:
    async with AsyncClient(url, timeout=10) as client:
        with ResponseCapture() as got:
            await client.call_unary(PING, pb.PingRequest())
            with pytest.raises(ConnectError) as err:
                await client.call_unary(FAIL, pb.FailRequest(code=5, message="no"))
    assert got.headers.get("x-ping") == "pong"
    assert err.value.response_headers.get("x-ping") is None


def test_sync_unary_nested_blocks(url: str) -> None:
    with SyncClient(url, timeout=10) as client:
        with ResponseCapture() as outer:
            with ResponseCapture() as inner:
                client.call_unary(PING, pb.PingRequest())
            assert inner.trailers.get("x-ping-trailer") == "done"
            assert not outer.headers
            client.call_client_stream(SUM, [pb.SumRequest(number=1)])
        assert outer.headers.get("content-type") == "application/connect+proto"
        assert outer.headers.get("x-ping") is None


def test_a_capture_is_entered_once() -> None:
    with ResponseCapture() as got, pytest.raises(RuntimeError):
        got.__enter__()
