"""The clients against this project's own servers: ASGI on uvicorn and hypercorn
(HTTP/2 prior knowledge), WSGI on gunicorn, all four kinds of call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from client_env import call_all_kinds_async, call_all_kinds_sync
from servers import run_server

from protoc_gen_connect_python.runtime import AsyncClient, SyncClient
from protoc_gen_connect_python.runtime.client.config import HTTPVersionName

pytestmark = pytest.mark.anyio

CASES: list[tuple[str, str, HTTPVersionName | None]] = [
    ("uvicorn", "server_apps:asgi_app", None),
    ("hypercorn", "server_apps:asgi_app", "2"),
    ("gunicorn", "server_apps:wsgi_app", None),
]


@pytest.fixture(scope="module")
def apps() -> Any:
    import server_apps

    return server_apps


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def server(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, HTTPVersionName | None]]:
    name, app, version = request.param
    # Every server is installed by scripts/setup.sh: one that does not start
    # fails the tests that need it.
    with run_server(name, app) as srv:
        yield srv.url, version


async def test_async_all_kinds(
    apps: Any, server: tuple[str, HTTPVersionName | None]
) -> None:
    url, version = server
    async with AsyncClient(
        url, http_version=version, send_compression="gzip", compress_min_bytes=1
    ) as c:
        await call_all_kinds_async(c, apps)


def test_sync_all_kinds(apps: Any, server: tuple[str, HTTPVersionName | None]) -> None:
    url, version = server
    with SyncClient(url, http_version=version, codec="json", use_get=True) as c:
        call_all_kinds_sync(c, apps)
