"""The clients against this project's own servers: ASGI on uvicorn and hypercorn
(HTTP/2 prior knowledge), WSGI on gunicorn, all four kinds of call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from servers import run_server

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    ConnectError,
    SyncClient,
)
from protoc_gen_connect_python.runtime.client.config import HTTPVersionName

pytestmark = pytest.mark.anyio

CASES: list[tuple[str, str, HTTPVersionName | None]] = [
    ("uvicorn", "server_apps:asgi_app", None),
    ("hypercorn", "server_apps:asgi_app", "2"),
    ("gunicorn", "server_apps:wsgi_app", None),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def apps() -> Any:
    import server_apps

    return server_apps


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def server(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, HTTPVersionName | None]]:
    name, app, version = request.param
    try:
        with run_server(name, app) as srv:
            yield srv.url, version
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"{name} is not usable here: {e}")


async def test_async_all_kinds(
    apps: Any, server: tuple[str, HTTPVersionName | None]
) -> None:
    url, version = server
    pb = apps.pb
    async with AsyncClient(
        url, http_version=version, send_compression="gzip", compress_min_bytes=1
    ) as c:
        res = await c.call_unary_detailed(
            apps.PING, pb.PingRequest(text="hi", number=3)
        )
        assert (res.message.text, res.message.number) == ("hi", 3)
        assert res.headers["x-ping"] == "pong"
        assert res.trailers["x-ping-trailer"] == "done"
        with pytest.raises(ConnectError) as info:
            await c.call_unary(apps.FAIL, pb.FailRequest(code=5, message="gone"))
        assert info.value.code is Code.NOT_FOUND
        assert info.value.message == "gone"
        assert info.value.metadata["x-error-meta"] == "yes"
        stream = c.call_server_stream(apps.COUNT_UP, pb.CountUpRequest(number=3))
        assert [m.number async for m in stream] == [1, 2, 3]
        assert stream.trailers["x-sent"] == "3"

        async def numbers() -> AsyncIterator[Any]:
            for n in (1, 2, 3):
                yield pb.SumRequest(number=n)

        total = await c.call_client_stream(apps.SUM, numbers())
        assert (total.sum, total.count) == (6, 3)
        echo = c.call_bidi_stream(apps.ECHO, [pb.EchoRequest(text=t) for t in "ab"])
        assert [m.text async for m in echo] == ["a", "b"]


def test_sync_all_kinds(apps: Any, server: tuple[str, HTTPVersionName | None]) -> None:
    url, version = server
    pb = apps.pb
    with SyncClient(url, http_version=version, codec="json", use_get=True) as c:
        res = c.call_unary_detailed(apps.PING, pb.PingRequest(text="get"))
        assert res.message.text == "get"
        with pytest.raises(ConnectError) as info:
            c.call_unary(apps.UNIMPLEMENTED, pb.PingRequest())
        assert info.value.code is Code.UNIMPLEMENTED
        with c.call_server_stream(
            apps.COUNT_UP, pb.CountUpRequest(number=2, fail_code=10)
        ) as stream:
            got = []
            with pytest.raises(ConnectError) as info:
                for m in stream:
                    got.append(m.number)
        assert got == [1, 2]
        assert info.value.code is Code.ABORTED
        total = c.call_client_stream(
            apps.SUM, (pb.SumRequest(number=n) for n in (4, 5))
        )
        assert total.sum == 9
        echo = c.call_bidi_stream(apps.ECHO, [pb.EchoRequest(text="x")])
        assert [m.text for m in echo] == ["x"]
