"""Graceful shutdown and cancelled streams on real servers.

* SIGTERM with 50 unary calls in flight and 100 server streams open: every
  unary call is answered, every stream ends with ``unavailable`` from the
  server (not a cut body), handlers see ``ctx.shutting_down``, and the
  process exits (a bounded wait; the times go to docs/server.md).
* A client that reads three messages of a server stream and cancels: the
  handler reaches its ``finally`` (a bounded wait), on every server.

The apps are in ``shutdown_apps``; servers run with ``SHUTDOWN_GRACE=3``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import shutdown_apps
from server_apps import COUNT_UP, PING, pb
from server_harness import (
    call_asgi,
    call_asgi_async,
    call_wsgi,
    envelope,
    split_envelopes,
)
from servers import SERVERS, Server, start_server

from protoc_gen_connect_python.batteries.health import Health, ServingStatus
from protoc_gen_connect_python.runtime import (
    ASGIApp,
    AsyncClient,
    ConnectError,
    WSGIApp,
)
from protoc_gen_connect_python.runtime.server.core import shutting_down
from protoc_gen_connect_python.runtime.shutdown import (
    DRAIN,
    Drain,
    install_signal_hooks,
)

GRACE = 3.0
UNARY = 50
STREAMS = 100
SHUTTING_DOWN = shutting_down().message
P = "/testing.v1.PingService/"


@dataclass
class Outcome:
    """What the clients saw after SIGTERM."""

    unary: Counter[str]
    """Answers (``held``) and errors (``code: message``) of the unary calls."""
    streams: Counter[str]
    """How each stream ended (``code: message``, or ``ended``)."""
    told: int
    """Streams whose handler sent -1: it saw ``ctx.shutting_down``."""
    exited: bool
    """Whether the process exited within the bounded wait."""
    seconds: float
    """From SIGTERM to exit (reported, not asserted)."""


def _error(e: ConnectError) -> str:
    return f"{e.code.name.lower()}: {e.message}"


async def _storm(srv: Server, hold_ms: int = 0, path: str = "") -> Outcome:
    """Open the streams and unary calls, wait until the app holds them all,
    send SIGTERM and collect how each ended."""
    client = AsyncClient(srv.url + path, timeout=60)
    probe = AsyncClient(srv.url + path, timeout=10)

    async def unary() -> str:
        try:
            req = pb.PingRequest(text="hold", number=hold_ms, sleep_ms=200)
            text: str = (await client.call_unary(PING, req)).text
            return text
        except ConnectError as e:
            return _error(e)

    async def stream() -> tuple[list[int], str]:
        got: list[int] = []
        try:
            req = pb.CountUpRequest(number=0, sleep_ms=100)
            async for m in client.call_server_stream(COUNT_UP, req):
                got.append(m.number)
        except ConnectError as e:
            return got, _error(e)
        return got, "ended"

    streams = [asyncio.ensure_future(stream()) for _ in range(STREAMS)]
    unaries = [asyncio.ensure_future(unary()) for _ in range(UNARY)]
    try:
        until = time.monotonic() + 60
        while True:
            stats = await probe.call_unary(PING, pb.PingRequest(text="stats"))
            if stats.number == UNARY and stats.text == str(STREAMS):
                break
            assert time.monotonic() < until, f"app holds {stats} after 60 s"
            await asyncio.sleep(0.1)
        await probe.aclose()
        sent = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        done = await asyncio.wait_for(
            asyncio.gather(asyncio.gather(*unaries), asyncio.gather(*streams)),
            GRACE + 30,
        )
        exited = True
        try:
            await asyncio.to_thread(srv.process.wait, GRACE + 15)
        except Exception:
            exited = False
        seconds = time.monotonic() - sent
    finally:
        for t in [*streams, *unaries]:
            t.cancel()
        with contextlib.suppress(Exception):
            await client.aclose()
    unary_results, stream_results = done
    return Outcome(
        Counter(unary_results),
        Counter(end for _, end in stream_results),
        sum(-1 in got for got, _ in stream_results),
        exited,
        seconds,
    )


def _run(
    server: str, app: str, args: tuple[str, ...], hold_ms: int = 0, path: str = ""
) -> Outcome:
    srv = start_server(server, app, env={"SHUTDOWN_GRACE": str(GRACE)}, args=args)
    try:
        outcome = asyncio.run(_storm(srv, hold_ms, path))
    finally:
        srv.stop()
    print(f"{server} {' '.join(args)}: {outcome}")
    # No traceback through the app (hypercorn logs its own cancelled
    # connection tasks on shutdown, see docs/server.md).
    assert "protoc_gen_connect_python" not in srv.output(), srv.output()[-4000:]
    return outcome


SIGNALLED = {
    # id: server, app, extra arguments
    "uvicorn": ("uvicorn", "shutdown_apps:asgi_app", ()),
    "hypercorn-w0": ("hypercorn", "shutdown_apps:asgi_app", ("--workers", "0")),
    "gunicorn": ("gunicorn", "shutdown_apps:wsgi_app", ("--threads", "200")),
    "granian": ("granian", "shutdown_apps:asgi_app", ()),
    # granian's WSGI worker installs its handlers after loading the app: the
    # signal reaches the drain through the wakeup fd.
    "granian-wsgi": ("granian-wsgi", "shutdown_apps:wsgi_app", ()),
}


@pytest.mark.parametrize("case", list(SIGNALLED))
def test_sigterm_drains(case: str) -> None:
    """Servers whose signal reaches the app: handlers are told, unary calls
    finish, streams end with ``unavailable`` at the end of the grace."""
    server, app, args = SIGNALLED[case]
    out = _run(server, app, args)
    assert out.unary == Counter({"held": UNARY})
    assert out.streams == Counter({f"unavailable: {SHUTTING_DOWN}": STREAMS})
    assert out.told == STREAMS
    assert out.exited


def test_sigterm_mounted_in_starlette() -> None:
    """Mounted in Starlette on uvicorn: the app gets no lifespan events, and
    hooks the signal at its first request instead."""
    out = _run("uvicorn", "shutdown_apps:starlette_app", (), path="/api")
    assert out.unary == Counter({"held": UNARY})
    assert out.streams == Counter({f"unavailable: {SHUTTING_DOWN}": STREAMS})
    assert out.told == STREAMS
    assert out.exited


def test_sigterm_hypercorn_workers() -> None:
    """hypercorn with its worker process (the default) stops the worker with
    an event the app cannot see: handlers are not told, unary calls in flight
    still finish within hypercorn's graceful timeout, and the streams it then
    cancels are ended with ``unavailable`` by the app, not cut."""
    out = _run("hypercorn", "shutdown_apps:asgi_app", (), hold_ms=1500)
    assert out.unary == Counter({"held": UNARY})
    assert out.streams == Counter({f"unavailable: {SHUTTING_DOWN}": STREAMS})
    assert out.exited


def test_sigterm_pyvoy_stops_at_once() -> None:
    """pyvoy passes SIGTERM on to Envoy, which closes every connection at once
    (no drain, nothing the app could hook): every call fails ``unavailable``
    at the client and the process exits. Documented in docs/server.md."""
    out = _run("pyvoy", "shutdown_apps:asgi_app", ())
    assert sum(out.unary.values()) == UNARY
    assert all(r.startswith("unavailable: ") for r in out.unary)
    assert sum(out.streams.values()) == STREAMS
    assert all(r.startswith("unavailable: ") for r in out.streams)
    assert out.exited


async def _run_on_past_grace(srv: Server) -> tuple[str, float]:
    """One unary call whose handler sleeps 90 s once told of the drain, then
    SIGTERM: how the call ended and the seconds until the process exited."""
    async with AsyncClient(srv.url, timeout=120) as client:
        req = pb.PingRequest(text="hold", sleep_ms=90_000)
        call = asyncio.ensure_future(client.call_unary(PING, req))
        until = time.monotonic() + 60
        while (await client.call_unary(PING, pb.PingRequest(text="stats"))).number != 1:
            assert time.monotonic() < until, "the call was not held within 60 s"
            await asyncio.sleep(0.1)
        sent = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        try:
            ended = (await asyncio.wait_for(call, 60)).text
        except ConnectError as e:
            ended = _error(e)
        await asyncio.to_thread(srv.process.wait, 30)
        return ended, time.monotonic() - sent


def test_sigterm_granian_wsgi_kill_timeout() -> None:
    """A sync handler cannot be stopped: one that runs on past the grace keeps
    granian's worker alive, as granian waits for its connections without a
    limit. ``--workers-kill-timeout`` bounds that: granian kills the worker,
    the call fails ``unavailable`` at the client (its connection is cut) and
    the process exits. Documented in docs/server.md."""
    args = ("--workers-kill-timeout", "5")
    srv = start_server(
        "granian-wsgi",
        "shutdown_apps:wsgi_app",
        env={"SHUTDOWN_GRACE": str(GRACE)},
        args=args,
    )
    try:
        ended, seconds = asyncio.run(_run_on_past_grace(srv))
    finally:
        srv.stop()
    print(f"granian-wsgi {' '.join(args)}: {ended}, exit after {seconds:.1f} s")
    assert ended.startswith("unavailable: "), ended
    assert srv.process.returncode is not None
    assert "Killing worker-1" in srv.output(), srv.output()[-4000:]
    assert "protoc_gen_connect_python" not in srv.output(), srv.output()[-4000:]


# -- in-process: the drain itself ----------------------------------------------------

CT = [("content-type", "application/connect+proto")]


def _end_code(body: bytes) -> tuple[list[int], str]:
    """The numbers sent and the end-stream error code of a Connect stream body."""
    numbers: list[int] = []
    code = ""
    for flags, payload in split_envelopes(body):
        if flags & 2:
            code = json.loads(payload).get("error", {}).get("code", "")
        else:
            numbers.append(pb.CountUpResponse.FromString(payload).number)
    return numbers, code


@pytest.fixture
def drain() -> Iterator[Drain]:
    try:
        yield DRAIN
    finally:
        DRAIN.reset()


def _wait_until(cond: Callable[[], bool], bound: float = 10.0) -> None:
    until = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < until, "condition not met within the bound"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_new_calls_while_draining(kind: str, drain: Drain) -> None:
    """New streams are refused at once; a unary call the server still hands
    over is served until the grace is over, then refused too."""
    services = (
        (shutdown_apps.Holder(),) if kind == "asgi" else (shutdown_apps.HolderSync(),)
    )
    cls: Any = ASGIApp if kind == "asgi" else WSGIApp
    call = call_asgi if kind == "asgi" else call_wsgi
    within, after = cls(*services, shutdown_grace=60), cls(*services, shutdown_grace=0)
    drain.begin()
    ping = pb.PingRequest(text="x").SerializeToString()
    unary_ct = [("content-type", "application/proto")]
    served = call(within, "POST", P + "Ping", unary_ct, ping)
    assert served.status == 200
    assert pb.PingResponse.FromString(served.body).text == "x"
    refused = call(after, "POST", P + "Ping", unary_ct, ping)
    assert refused.status == 503
    assert json.loads(refused.body) == {"code": "unavailable", "message": SHUTTING_DOWN}
    req = envelope(pb.CountUpRequest(number=3).SerializeToString())
    stream = call(within, "POST", P + "CountUp", CT, req)
    assert _end_code(stream.body) == ([], "unavailable")


def test_asgi_lifespan_shutdown_waits_for_unary_calls(drain: Drain) -> None:
    """``lifespan.shutdown`` is answered only once the unary calls in flight
    were answered: a server may send it before its own wait for them is over
    and cancel what still runs once it is answered (hypercorn does, when one
    of the worker's connections failed: docs/server.md, "Several workers")."""
    app = ASGIApp(shutdown_apps.Holder(), shutdown_grace=60)
    # Held until the drain begins (at most 60 s), then 10 ms more.
    req = pb.PingRequest(text="hold", number=60_000, sleep_ms=10)
    unary_ct = [("content-type", "application/proto")]
    order: list[str] = []

    async def lifespan() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.shutdown"}

        async def send(m: Any) -> None:
            order.append(m["type"])

        await app({"type": "lifespan"}, receive, send)

    async def run() -> Any:
        before = shutdown_apps.STATS.held
        call = asyncio.ensure_future(
            call_asgi_async(app, "POST", P + "Ping", unary_ct, req.SerializeToString())
        )
        while shutdown_apps.STATS.held == before:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(lifespan(), 10)
        order.append("call still running" if not call.done() else "call answered")
        return await asyncio.wait_for(call, 10)

    result = asyncio.run(run())
    assert order == ["lifespan.shutdown.complete", "call answered"]
    assert result.status == 200
    assert pb.PingResponse.FromString(result.body).text == "held"


@pytest.mark.parametrize("protocol", ["connect", "grpc"])
def test_asgi_stream_told_then_ended_at_grace(protocol: str, drain: Drain) -> None:
    app = ASGIApp(shutdown_apps.Holder(), shutdown_grace=0.3)
    req = envelope(pb.CountUpRequest(number=0, sleep_ms=20).SerializeToString())
    ct = CT if protocol == "connect" else [("content-type", "application/grpc+proto")]
    trailers: dict[str, Any] = {"http.response.trailers": {}}

    async def run() -> Any:
        before = shutdown_apps.STATS.streams
        task = asyncio.ensure_future(
            call_asgi_async(app, "POST", P + "CountUp", ct, req, extensions=trailers)
        )
        while shutdown_apps.STATS.streams == before:
            await asyncio.sleep(0.01)
        drain.begin()
        return await asyncio.wait_for(task, 10)

    result = asyncio.run(run())
    numbers, code = _end_code(result.body)
    if protocol == "grpc":  # the status is in the HTTP trailers
        assert result.trailers["grpc-status"] == "14"  # unavailable
        assert "shutting down" in result.trailers["grpc-message"]
    else:
        assert code == "unavailable"
    assert numbers[0] == 1 and -1 in numbers


def test_wsgi_stream_told_then_ended_at_grace(drain: Drain) -> None:
    app = WSGIApp(shutdown_apps.HolderSync(), shutdown_grace=0.3)
    # A long tick: the handler waits with ctx.wait_shutdown, which returns
    # when the drain begins.
    req = envelope(pb.CountUpRequest(number=0, sleep_ms=60_000).SerializeToString())
    before = shutdown_apps.STATS.streams
    out: list[Any] = []
    t = threading.Thread(
        target=lambda: out.append(call_wsgi(app, "POST", P + "CountUp", CT, req))
    )
    t.start()
    _wait_until(lambda: shutdown_apps.STATS.streams != before)
    drain.begin()
    t.join(10)
    assert not t.is_alive()
    numbers, code = _end_code(out[0].body)
    assert code == "unavailable"
    assert numbers[:3] == [1, 2, -1]  # the 60 s wait was cut short


def test_signal_chains_to_the_servers_handler(drain: Drain) -> None:
    """A SIGTERM handler set in Python stays in charge; the drain begins first,
    and hooks (here: the health battery) run outside the signal handler."""
    seen: list[bool] = []
    health = Health()
    drain.on_begin(health.shutdown)
    old = signal.signal(
        signal.SIGTERM, lambda signum, frame: seen.append(drain.draining)
    )
    old_int = signal.getsignal(signal.SIGINT)
    try:
        assert install_signal_hooks()
        os.kill(os.getpid(), signal.SIGTERM)
        assert drain.wait(10)
        _wait_until(lambda: health.status("") == ServingStatus.NOT_SERVING)
        assert seen == [True]
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


@pytest.fixture
def no_wakeup_fd() -> Iterator[None]:
    """No signal wakeup fd while the test runs; the process's is put back."""
    old = signal.set_wakeup_fd(-1)
    try:
        yield
    finally:
        signal.set_wakeup_fd(old)


def test_signal_begins_drain_after_server_replaced_hook(
    drain: Drain, no_wakeup_fd: None
) -> None:
    """A server that installs its handler after the app was built (granian's
    WSGI worker) replaces ours: the signal still begins the drain, through the
    wakeup fd, and the server's handler runs as before."""
    seen: list[int] = []
    old_int = signal.getsignal(signal.SIGINT)
    old = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        install_signal_hooks()
        signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
        os.kill(os.getpid(), signal.SIGTERM)
        assert drain.wait(10)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


@pytest.mark.parametrize(
    ("sent", "drains"),
    [
        ((signal.SIGUSR1, signal.SIGHUP, signal.SIGCHLD), False),
        ((signal.SIGUSR1, signal.SIGTERM), True),
        ((signal.SIGINT,), True),
        ((0,), False),  # begin's byte, read after a reset
    ],
)
def test_wakeup_bytes_that_begin_the_drain(sent: tuple[int, ...], drains: bool) -> None:
    """Python writes every caught signal's number to the wakeup fd: only
    SIGTERM's and SIGINT's begin the drain, and ``begin``'s own byte only
    wakes the drain it began. (A drain of its own; the bytes are written as
    Python would, then the pipe is closed so its thread ends.)"""
    d = Drain()
    before = set(threading.enumerate())
    w = d.listen()
    (relay,) = set(threading.enumerate()) - before
    os.write(w, bytes(sent))
    os.close(w)
    relay.join(10)
    assert not relay.is_alive()
    assert d.draining is drains
    assert d.wait(0) is drains
    assert d._pipe is not None
    os.close(d._pipe[0])


def test_forked_child_drops_the_parents_pipe(drain: Drain, no_wakeup_fd: None) -> None:
    """A worker forked from a process with the app (gunicorn ``--preload``)
    has no wakeup fd of ours: its signals must not reach the parent's pipe."""
    old_int = signal.getsignal(signal.SIGINT)
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        install_signal_hooks()
        assert drain._pipe is not None
        ours = drain._pipe[1]
        assert signal.set_wakeup_fd(ours) == ours
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code, never return
            try:
                fresh = signal.set_wakeup_fd(-1) == -1 and DRAIN._pipe is None
                os._exit(0 if fresh else 1)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def test_wakeup_fd_of_another_stays(drain: Drain, no_wakeup_fd: None) -> None:
    """A process with a wakeup fd of its own (an event loop's, gunicorn's
    worker's) keeps it."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    old_int = signal.getsignal(signal.SIGINT)
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        signal.set_wakeup_fd(w)
        install_signal_hooks()
        assert signal.set_wakeup_fd(w) == w
    finally:
        signal.set_wakeup_fd(-1)
        os.close(r)
        os.close(w)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def test_default_disposition_left_alone() -> None:
    old = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert not install_signal_hooks()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


# -- a cancelled stream's handler ends ------------------------------------------------


def _app(server: str) -> str:
    wsgi = server == "gunicorn" or server.endswith("-wsgi")
    return "shutdown_apps:" + ("wsgi_app" if wsgi else "asgi_app")


async def _read_three_and_cancel(url: str, timeout: float) -> list[int]:
    async with AsyncClient(url, timeout=timeout) as client:
        stream = client.call_server_stream(
            COUNT_UP, pb.CountUpRequest(number=0, sleep_ms=20)
        )
        got = [(await stream.__anext__()).number for _ in range(3)]
        await stream.aclose()
    return got


def _wait_for_line(log: Path, bound: float) -> str:
    until = time.monotonic() + bound
    while time.monotonic() < until:
        text = log.read_text() if log.exists() else ""
        if text:
            return text
        time.sleep(0.05)
    return ""


@pytest.mark.parametrize("server", SERVERS)
def test_cancelled_stream_reaches_finally(server: str, tmp_path: Path) -> None:
    """Read three messages, cancel: the handler's ``finally`` runs.

    pyvoy's WSGI interface gives an app no sign that the client left (see
    docs/server.md), so there the bound is the call's deadline, which the
    app checks between messages.
    """
    log = tmp_path / "ended.log"
    timeout = 2.0 if server == "pyvoy-wsgi" else 60.0
    srv = start_server(server, _app(server), env={"SHUTDOWN_LOG": str(log)})
    try:
        got = asyncio.run(_read_three_and_cancel(srv.url, timeout))
        assert got == [1, 2, 3]
        assert _wait_for_line(log, 15.0).startswith("count_up "), srv.output()
    finally:
        srv.stop()
    # SIGTERM stopped it; no SIGKILL was needed (pyvoy ignored SIGTERM while
    # a handler ran on).
    assert srv.process.returncode != -signal.SIGKILL
