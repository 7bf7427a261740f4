"""The apps mounted under ``/api`` in Starlette, FastAPI, Flask and Django, as
docs/server.md shows them (``framework_apps.py`` runs its snippets as written).

Each site runs on a real server on loopback (uvicorn for ASGI, gunicorn for
WSGI) and is called with the generated greet clients, async and sync, and with
curl; its own page answers next to the mounted app, and procedures outside the
prefix are the framework's 404s.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from example_env import EXAMPLES, GREET, ROOT, checked_blocks, generate_example, serve

from protoc_gen_connect_python.runtime import Code, ConnectError


@dataclass(frozen=True)
class Site:
    """One documented snippet: its server, and the body of its own page."""

    name: str
    server: str
    hello: bytes

    @property
    def app(self) -> str:
        return f"framework_apps:{self.name.replace('-', '_')}"


SITES = [
    Site("starlette", "uvicorn", b"hello"),
    Site("fastapi", "uvicorn", b'{"hello":"world"}'),
    Site("flask", "gunicorn", b"hello"),
    Site("django-asgi", "uvicorn", b"hello"),
    Site("django-wsgi", "gunicorn", b"hello"),
]


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_example(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def greet(gen_dir: Path) -> Iterator[tuple[Any, Any]]:
    """The generated ``greet_connect`` and ``greet_pb2`` modules, imported here."""
    sys.path.insert(0, str(gen_dir))
    try:
        yield (
            importlib.import_module("greet.v1.greet_connect"),
            importlib.import_module("greet.v1.greet_pb2"),
        )
    finally:
        sys.path.remove(str(gen_dir))
        for name in list(sys.modules):
            if name == "greet" or name.startswith("greet."):
                del sys.modules[name]


@pytest.fixture(scope="module", params=SITES, ids=[s.name for s in SITES])
def site(
    request: pytest.FixtureRequest,
    gen_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Site, str]]:
    """A running site and its base URL."""
    s: Site = request.param
    tmp = tmp_path_factory.mktemp(s.name)
    with serve(gen_dir, tmp, server=s.server, app=s.app) as url:
        yield s, url


def curl(*args: str) -> tuple[int, bytes]:
    """Run curl; the status and the body."""
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args],
        capture_output=True,
        check=True,
    )
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


def test_every_mount_snippet_is_served() -> None:
    documented = checked_blocks(ROOT / "docs" / "server.md", "python")
    assert {k for k in documented if k.startswith("mount-")} == {
        f"mount-{s.name}" for s in SITES
    }
    assert (EXAMPLES / "greet_service.py").is_file()


def test_async_client(site: tuple[Site, str], greet: tuple[Any, Any]) -> None:
    _, url = site
    connect, pb = greet

    async def main() -> None:
        async with connect.GreetServiceClient(url + "/api") as client:
            reply = await client.greet(pb.GreetRequest(name="async"))
            assert reply.greeting == "Hello, async!"
            stream = client.greet_stream(pb.GreetStreamRequest(name="s", count=2))
            got = [m.greeting async for m in stream]
            assert got == ["Hello, s #1!", "Hello, s #2!"]
            with pytest.raises(ConnectError) as info:
                await client.greet(pb.GreetRequest(name=""))
            assert info.value.code is Code.INVALID_ARGUMENT
        async with connect.GreetServiceClient(
            url + "/api", use_get=True, codec="json"
        ) as client:
            reply = await client.greet(pb.GreetRequest(name="get"))
            assert reply.greeting == "Hello, get!"

    asyncio.run(main())


def test_sync_client(site: tuple[Site, str], greet: tuple[Any, Any]) -> None:
    _, url = site
    connect, pb = greet
    with connect.GreetServiceClientSync(url + "/api", protocol="grpc-web") as client:
        assert client.greet(pb.GreetRequest(name="sync")).greeting == "Hello, sync!"
        request = pb.GreetStreamRequest(name="t", count=3)
        with client.greet_stream(request) as stream:
            assert [m.greeting for m in stream] == [
                f"Hello, t #{i}!" for i in (1, 2, 3)
            ]
    # Without the prefix the call reaches the framework, which has no such page.
    with connect.GreetServiceClientSync(url) as client:
        with pytest.raises(ConnectError) as info:
            client.greet(pb.GreetRequest(name="lost"))
        assert info.value.code is Code.UNIMPLEMENTED


def test_curl(site: tuple[Site, str]) -> None:
    s, url = site
    assert curl(url + "/hello") == (200, s.hello)
    status, body = curl(
        "-H", "content-type: application/json", "-d", '{"name": "curl"}',
        url + "/api" + GREET,
    )  # fmt: skip
    assert status == 200
    assert json.loads(body)["greeting"] == "Hello, curl!"
    status, body = curl(
        "-G", url + "/api" + GREET, "--data-urlencode", 'message={"name": "GET"}',
        "-d", "encoding=json", "-d", "connect=v1",
    )  # fmt: skip
    assert status == 200
    assert json.loads(body)["greeting"] == "Hello, GET!"
    status, body = curl("-d", "{}", url + "/api/greet.v1.GreetService/Nope")
    assert status == 404  # the mounted app's own 404: no such procedure
    status, _ = curl(
        "-H", "content-type: application/json", "-d", "{}", url + GREET
    )  # fmt: skip
    assert status == 404  # outside the prefix: the framework's
