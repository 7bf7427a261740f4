"""Several worker processes: calls of every kind spread over the workers, and
no call lost while one worker restarts (docs/server.md, "Several workers").

The app is ``shutdown_apps`` (``Ping`` with text ``"pid"`` answers with its
worker's pid; ``"hold"`` holds the call until that worker's drain begins).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import server_apps
from client_env import call_all_kinds_async
from example_env import TESTS, running
from server_apps import PING, pb
from servers import Server, start_server
from test_proxy_nginx import start_nginx

from protoc_gen_connect_python.runtime import AsyncClient, ConnectError

ASGI = "shutdown_apps:asgi_app"
WSGI = "shutdown_apps:wsgi_app"

DEPLOYMENTS = {
    # id: server, app, extra arguments, worker processes
    "gunicorn -w 4": ("gunicorn", WSGI, ("--workers", "4"), 4),
    "uvicorn --workers 4": ("uvicorn", ASGI, ("--workers", "4"), 4),
    # Above the longest unary call (2.5 s here): hypercorn's default is 3 s.
    "hypercorn --workers 4": (
        "hypercorn",
        ASGI,
        ("--workers", "4", "--graceful-timeout", "10"),
        4,
    ),
    "pyvoy --worker-threads 4": ("pyvoy", ASGI, ("--worker-threads", "4"), 1),
}


@contextmanager
def deployed(name: str, log: Path) -> Iterator[Server]:
    server, app, args, _ = DEPLOYMENTS[name]
    env = {"SHUTDOWN_LOG": str(log), "SHUTDOWN_GRACE": "3"}
    srv = start_server(server, app, env=env, args=args)
    try:
        yield srv
    finally:
        srv.stop()
        _reap(log)


def _reap(log: Path) -> None:
    """Kill workers of this deployment that outlived their parent (a server
    stopped half-way through a reload): the ones started with this ``log``."""
    mark = f"SHUTDOWN_LOG={log}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in env:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


async def _pids(url: str, calls: int, **client: Any) -> set[str]:
    """Worker pids that answered ``calls`` concurrent calls, each on a
    connection of its own (held briefly, so they overlap)."""

    async def one() -> str:
        async with AsyncClient(url, timeout=30, **client) as c:
            await c.call_unary(PING, pb.PingRequest(text="hold", number=300))
            res = await c.call_unary(PING, pb.PingRequest(text="pid"))
            pid: str = res.text
            return pid

    return set(await asyncio.gather(*(one() for _ in range(calls))))


async def _spread(url: str, workers: int, **client: Any) -> set[str]:
    """Every kind of call from 8 clients at once, until more than one worker
    answered (a bounded number of rounds) where there are several."""
    seen: set[str] = set()
    for _ in range(10):

        async def kinds() -> None:
            async with AsyncClient(url, timeout=30, **client) as c:
                await call_all_kinds_async(c, server_apps)

        await asyncio.gather(*(kinds() for _ in range(8)))
        seen |= await _pids(url, 24, **client)
        if len(seen) >= min(workers, 2):
            break
    return seen


@pytest.mark.parametrize("name", list(DEPLOYMENTS))
def test_every_kind_spread_over_workers(name: str, tmp_path: Path) -> None:
    workers = DEPLOYMENTS[name][3]
    with deployed(name, tmp_path / "log") as srv:
        pids = asyncio.run(_spread(srv.url, workers))
    assert len(pids) >= min(workers, 2), pids


def _holds(log: Path) -> list[str]:
    lines = log.read_text().split("\n") if log.exists() else []
    return [ln.split()[1] for ln in lines if ln.startswith("hold ")]


def _held_pids(log: Path, n: int, skip: int, bound: float = 30.0) -> list[str]:
    """The pids of ``n`` calls held after the first ``skip`` (bounded wait)."""
    until = time.monotonic() + bound
    while True:
        pids = _holds(log)[skip:]
        if len(pids) >= n:
            return pids
        assert time.monotonic() < until, f"{len(pids)} of {n} calls held"
        time.sleep(0.05)


async def _restart_one(
    srv: Server,
    log: Path,
    held: int = 16,
    restart: Callable[[int], None] = lambda pid: os.kill(pid, signal.SIGTERM),
    **client: Any,
) -> tuple[list[str], list[str]]:
    """Hold ``held`` calls, ``restart`` the worker that holds the first (by
    default: SIGTERM it), make 16 new calls meanwhile; the answers of the
    held calls and of the new ones."""

    async def hold() -> str:
        async with AsyncClient(srv.url, timeout=30, **client) as c:
            try:
                req = pb.PingRequest(text="hold", number=2500, sleep_ms=100)
                text: str = (await c.call_unary(PING, req)).text
                return text
            except ConnectError as e:
                return f"{e.code.name}: {e.message}"

    async def ping() -> str:
        async with AsyncClient(srv.url, timeout=30, **client) as c:
            try:
                text: str = (await c.call_unary(PING, pb.PingRequest(text="p"))).text
                return text
            except ConnectError as e:
                return f"{e.code.name}: {e.message}"

    skip = len(_holds(log))
    calls = [asyncio.ensure_future(hold()) for _ in range(held)]
    victim = (await asyncio.to_thread(_held_pids, log, held, skip))[0]
    restart(int(victim))
    during = [asyncio.ensure_future(ping()) for _ in range(16)]
    answers = await asyncio.wait_for(asyncio.gather(*calls, *during), 60)
    return answers[:held], answers[held:]


NEVER_SENT = {
    "UNAVAILABLE: connection closed without a response",
    "UNAVAILABLE: connection closed by the server",
    "UNAVAILABLE: connection closed at once",
}
"""What a client sees of a connection a dying uvicorn or hypercorn worker
accepted but had read no request from yet: the server closes it (HTTP/1.1),
or ends it with GOAWAY (HTTP/2); the call never reached the app."""


def _check(held: list[str], during: list[str], never_sent_ok: bool = False) -> None:
    assert held == ["held"] * len(held)  # no call in flight lost
    # The address in "connection to HOST:PORT closed at once" (closed as it
    # was opened, before the request went out) varies from run to run.
    lost = [re.sub(r" to \S+ closed at once$", " closed at once", a) for a in during]
    lost = [a for a in lost if a != "p"]
    if never_sent_ok:
        assert set(lost) <= NEVER_SENT, lost
    else:
        assert not lost


RESTARTS = ["gunicorn -w 4", "uvicorn --workers 4"]


@pytest.mark.parametrize("name", RESTARTS)
def test_no_call_lost_when_a_worker_restarts(name: str, tmp_path: Path) -> None:
    """SIGTERM one worker (the server starts another): the calls it holds are
    answered as it drains, the others' in time, and calls made meanwhile go
    to the workers still serving (on uvicorn, one the dying worker accepted
    in its last moment may be closed unanswered: see docs/server.md)."""
    log = tmp_path / "log"
    with deployed(name, log) as srv:
        held, during = asyncio.run(_restart_one(srv, log))
        _check(held, during, never_sent_ok=name.startswith("uvicorn"))
        # The server replaced the worker: four still answer.
        pids = asyncio.run(_spread(srv.url, 4))
        assert len(pids) >= 2


# -- behind nginx -------------------------------------------------------------------


def test_behind_nginx_http1(tmp_path: Path) -> None:
    """nginx (HTTP/1.1 upstream, tests/nginx) in front of ``gunicorn -w 4``:
    every kind of call, spread over the workers, none lost when one restarts."""
    log = tmp_path / "log"
    with deployed("gunicorn -w 4", log) as srv:
        upstream = srv.url.removeprefix("http://")
        cmd, port, out = start_nginx(upstream, tmp_path)
        with running(cmd, port, out):
            front = Server("nginx", "", port, srv.process, log)
            pids = asyncio.run(_spread(front.url, 4))
            assert len(pids) >= 2
            _check(*asyncio.run(_restart_one(front, log)))


def test_behind_nginx_grpc(tmp_path: Path) -> None:
    """nginx (h2c in front, ``grpc_pass`` to the upstream,
    tests/nginx/grpc.conf.template) in front of ``hypercorn --workers 4``:
    every kind of gRPC call, spread over the workers. (A hypercorn reload
    behind nginx is not lossless: see docs/server.md.)"""
    log = tmp_path / "log"
    grpc: dict[str, Any] = {"protocol": "grpc", "http_version": "2"}
    with deployed("hypercorn --workers 4", log) as srv:
        upstream = srv.url.removeprefix("http://")
        template = TESTS / "nginx" / "grpc.conf.template"
        cmd, port, out = start_nginx(upstream, tmp_path, template)
        with running(cmd, port, out):
            front = Server("nginx", "", port, srv.process, log)
            assert len(asyncio.run(_spread(front.url, 4, **grpc))) >= 2


HYPERCORN_H2_CRASH = "await self.streams[event.stream_id].handle("
"""What hypercorn (0.18) logs when a request reaches a worker whose shutdown
has begun, with its body in the same read: it refuses the stream, then fails
the whole connection with ``KeyError`` on the body (its issue #329). A worker
in which this happens while it waits for its connections stops waiting at
once and exits with status 1, after which the hypercorn parent stops too
(with status 0)."""


def _after_reload(srv: Server, before: set[str], **client: Any) -> None:
    """New workers answer after the reload, or hypercorn stopped because one
    of its workers failed as ``HYPERCORN_H2_CRASH`` says (docs/server.md)."""
    try:
        after = asyncio.run(_pids(srv.url, 8, **client))
    except ConnectError:
        srv.process.wait(30)  # the parent has stopped (with status 0, even so)
        out = srv.output()
        assert HYPERCORN_H2_CRASH in out, out
        assert "Process SpawnProcess" in out, out  # a worker ended on it
    else:
        assert after.isdisjoint(before)


def test_hypercorn_reload_grpc(tmp_path: Path) -> None:
    """``hypercorn --workers 4`` reloading its workers (SIGHUP), gRPC over
    h2c straight to it: each old worker finishes its calls (within hypercorn's
    graceful timeout, or within the app's grace once lifespan shutdown came
    early), and new calls go to the new workers."""
    log = tmp_path / "log"
    grpc: dict[str, Any] = {"protocol": "grpc", "http_version": "2"}
    with deployed("hypercorn --workers 4", log) as srv:
        before = asyncio.run(_pids(srv.url, 8, **grpc))

        def reload(pid: int) -> None:
            srv.process.send_signal(signal.SIGHUP)

        held, during = asyncio.run(_restart_one(srv, log, restart=reload, **grpc))
        _check(held, during, never_sent_ok=True)
        _after_reload(srv, before, **grpc)
