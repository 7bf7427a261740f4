"""A call's life on real servers: streams canceled when their loop is left, one
deadline shared by a chain of calls, and retries of calls that fail on purpose.

The servers run ``lifecycle_apps`` (uvicorn and hypercorn for ASGI, gunicorn
for WSGI); handlers note what happened to them and the tests read it back with
``Events``, waiting (boundedly) for what a server does after a client is gone.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from lifecycle_apps import (
    EVENTS,
    FLAKY,
    FLAKY_STREAM,
    FLAKY_WRITE,
    PEER,
    RELAY,
    RELAY_WATCH,
    WATCH,
)
from servers import Server, free_port, start_server

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    ClientCall,
    ClientInterceptor,
    Code,
    ConnectError,
    MethodSpec,
    StreamType,
    SyncClient,
)
from protoc_gen_connect_python.runtime.client.config import HTTPVersionName, Protocol
from protoc_gen_connect_python.runtime.client.retry import (
    RetryPolicy,
    RetryThrottling,
)

APPS = {
    "uvicorn": "lifecycle_apps:asgi_app",
    "hypercorn": "lifecycle_apps:asgi_app",
    "gunicorn": "lifecycle_apps:wsgi_app",
}
_ids = itertools.count()


@pytest.fixture(scope="module")
def servers() -> Iterator[Callable[[str], str]]:
    """The URL of a server by name, started on first use and stopped at the end."""
    running: dict[str, Server] = {}

    def url(name: str) -> str:
        if name not in running:
            running[name] = start_server(name, APPS[name])
        return running[name].url

    try:
        yield url
    finally:
        for srv in running.values():
            srv.stop()
            srv.log.unlink(missing_ok=True)


def new_key(what: str) -> str:
    return f"{what}-{next(_ids)}-{time.monotonic_ns()}"


def wait_events(url: str, key: str, done: Callable[[list[str]], bool]) -> list[str]:
    """The events of ``key`` once ``done`` holds for them; fails after 15 s."""
    with SyncClient(url) as c:
        stop = time.monotonic() + 15
        while True:
            got = c.call_unary(EVENTS, StringValue(value=key)).value
            seen = got.split(",") if got else []
            if done(seen):
                return seen
            assert time.monotonic() < stop, f"events of {key}: {seen}"
            time.sleep(0.02)


class Recorder(ClientInterceptor):
    """Notes every attempt: ``start`` and how it ended."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def on_start(self, call: ClientCall) -> None:
        self.log.append("start")

    def on_end(self, call: ClientCall, error: ConnectError | None) -> None:
        self.log.append("ok" if error is None else error.code.wire_name)


# -- leaving a stream's loop cancels the call -------------------------------------

ASYNC_STREAM_CASES: list[tuple[str, HTTPVersionName | None]] = [
    ("uvicorn", None),
    ("hypercorn", None),
    ("hypercorn", "2"),
]
SYNC_STREAM_CASES: list[tuple[str, HTTPVersionName | None]] = [
    ("gunicorn", None),
    ("hypercorn", "2"),
]
HOW = ["break", "raise", "drop"]


def _ended(seen: list[str]) -> bool:
    return "end" in seen


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize(("name", "version"), ASYNC_STREAM_CASES)
def test_async_leaving_a_stream_cancels_it(
    servers: Callable[[str], str], name: str, version: HTTPVersionName | None, how: str
) -> None:
    url = servers(name)
    keys = [new_key("watch") for _ in range(3)]
    rec = Recorder()

    async def main() -> tuple[str, str]:
        async with AsyncClient(url, http_version=version, interceptors=[rec]) as c:
            before = (await c.call_unary(PEER, StringValue())).value
            for key in keys:
                request = StringValue(value=key)
                if how == "break":
                    async for _ in c.call_server_stream(WATCH, request):
                        break
                elif how == "raise":
                    with pytest.raises(LookupError):
                        async for _ in c.call_server_stream(WATCH, request):
                            raise LookupError
                else:
                    stream = c.call_server_stream(WATCH, request)
                    await stream.__anext__()
                    del stream
                    gc.collect()
                # Let the loop run the close the dropped stream scheduled.
                await asyncio.sleep(0)
            # The client goes on working after the streams it dropped.
            return before, (await c.call_unary(PEER, StringValue())).value

    before, after = asyncio.run(asyncio.wait_for(main(), 30))
    assert rec.log == ["start", "ok"] + ["start", "canceled"] * 3 + ["start", "ok"]
    # HTTP/2 resets the streams and keeps the connection; HTTP/1.1 cannot stop
    # a response midway but by closing its connection, and opens another.
    assert (before == after) == (version == "2"), (before, after)
    # The handlers saw the cancellation while this client was still open.
    for key in keys:
        assert wait_events(url, key, _ended) == ["start", "end"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize(("name", "version"), SYNC_STREAM_CASES)
def test_sync_leaving_a_stream_cancels_it(
    servers: Callable[[str], str], name: str, version: HTTPVersionName | None, how: str
) -> None:
    url = servers(name)
    keys = [new_key("watch") for _ in range(3)]
    rec = Recorder()
    with SyncClient(url, http_version=version, interceptors=[rec]) as c:
        before = c.call_unary(PEER, StringValue()).value
        for key in keys:
            request = StringValue(value=key)
            if how == "break":
                for _ in c.call_server_stream(WATCH, request):
                    break
            elif how == "raise":
                with pytest.raises(LookupError):
                    for _ in c.call_server_stream(WATCH, request):
                        raise LookupError
            else:
                stream = c.call_server_stream(WATCH, request)
                next(stream)
                del stream
                gc.collect()
        for key in keys:
            assert wait_events(url, key, _ended) == ["start", "end"]
        # Still usable, with the handlers long gone: over HTTP/2 on the same
        # connection, over HTTP/1.1 on a new one.
        after = c.call_unary(PEER, StringValue()).value
    assert rec.log == ["start", "ok"] + ["start", "canceled"] * 3 + ["start", "ok"]
    assert (before == after) == (version == "2"), (before, after)


# -- one deadline over three hops ---------------------------------------------------

# (A, B, HTTP version of A's client to B): async and sync servers on both hops.
HOPS: list[tuple[str, str, str]] = [
    ("uvicorn", "hypercorn", "2"),
    ("gunicorn", "uvicorn", ""),
    ("hypercorn", "gunicorn", ""),
]


@pytest.mark.parametrize(("a", "b", "version"), HOPS)
def test_deadline_propagates_over_three_hops(
    servers: Callable[[str], str], a: str, b: str, version: str
) -> None:
    key = new_key("hop")
    url_a, url_b = servers(a), servers(b)
    with SyncClient(url_a) as c, pytest.raises(ConnectError) as raised:
        c.call_unary(RELAY, StringValue(value=f"{key}|{url_b}|{version}"), timeout=1.5)
    assert raised.value.code is Code.DEADLINE_EXCEEDED
    # B got the client's deadline, less what the first hop took, and gave up
    # on its own; A's call to B ended too. Nothing is left running.
    seen_b = wait_events(url_b, key, _ended)
    assert len(seen_b) == 2 and seen_b[1] == "end", seen_b
    label, left = seen_b[0].split(":")
    assert label == "remaining" and left != "none", seen_b
    assert 0 < float(left) <= 1.5
    seen_a = wait_events(url_a, key, lambda s: bool(s))
    # An async A is canceled at its deadline (and its call to B with it); a
    # sync A's call to B times out at the same deadline.
    assert seen_a in (["relay-end:canceled"], ["relay-end:deadline_exceeded"]), seen_a


@pytest.mark.parametrize(("a", "b", "version"), HOPS)
def test_a_stream_left_at_the_client_ends_down_the_chain(
    servers: Callable[[str], str], a: str, b: str, version: str
) -> None:
    """Client -> A -> B streams: leaving the loop at the client ends all three."""
    key = new_key("relay-watch")
    url_a, url_b = servers(a), servers(b)
    with SyncClient(url_a) as c:
        for m in c.call_server_stream(
            RELAY_WATCH, StringValue(value=f"{key}|{url_b}|{version}")
        ):
            assert m.value == "tick"
            break
    # A notices (ASGI: the disconnect; WSGI: its next write fails), its
    # handler is closed, and the stream it had open to B is canceled with it.
    assert wait_events(url_a, key, lambda s: bool(s)) == ["relay-end"]
    assert wait_events(url_b, key, _ended) == ["start", "end"]


def test_canceling_a_call_cancels_what_an_async_handler_called(
    servers: Callable[[str], str],
) -> None:
    """Client -> A (async) -> B, no deadline anywhere: canceling at the client ends B.

    A's handler runs in its request's task, which the server cancels when the
    client goes away; the call it awaits is canceled with it.
    """
    key = new_key("cancel")
    url_a, url_b = servers("uvicorn"), servers("hypercorn")

    async def main() -> None:
        async with AsyncClient(url_a) as c:
            call = asyncio.ensure_future(
                c.call_unary(RELAY, StringValue(value=f"{key}|{url_b}|2"))
            )
            await asyncio.to_thread(wait_events, url_b, key, lambda s: bool(s))
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    asyncio.run(asyncio.wait_for(main(), 30))
    assert wait_events(url_b, key, _ended) == ["remaining:none", "end"]
    assert wait_events(url_a, key, lambda s: bool(s)) == ["relay-end:canceled"]


# -- retries ------------------------------------------------------------------------

FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01)
CLIENTS: list[tuple[str, str, Protocol, HTTPVersionName | None]] = [
    ("async", "uvicorn", "connect", None),
    ("sync", "gunicorn", "connect", None),
    ("async", "hypercorn", "grpc", "2"),
]


def run_call(
    kind: str,
    url: str,
    method: MethodSpec[Any, Any],
    value: str,
    policy: RetryPolicy,
    protocol: Protocol = "connect",
    version: HTTPVersionName | None = None,
    timeout: float | None = None,
) -> tuple[list[str] | ConnectError, list[str]]:
    """Call ``method`` with the client kind; its messages or error, and the attempts."""
    rec = Recorder()
    opts: dict[str, Any] = dict(
        retry=policy, interceptors=[rec], protocol=protocol, http_version=version
    )
    request = StringValue(value=value)
    out: list[str] | ConnectError
    if kind == "sync":
        with SyncClient(url, **opts) as c:
            try:
                if method.stream_type is StreamType.UNARY:
                    out = [c.call_unary(method, request, timeout=timeout).value]
                else:
                    out = []
                    for m in c.call_server_stream(method, request, timeout=timeout):
                        out.append(m.value)
            except ConnectError as e:
                out = e
        return out, rec.log

    async def main() -> list[str] | ConnectError:
        async with AsyncClient(url, **opts) as c:
            try:
                if method.stream_type is StreamType.UNARY:
                    res = await c.call_unary(method, request, timeout=timeout)
                    return [res.value]
                got: list[str] = []
                async for m in c.call_server_stream(method, request, timeout=timeout):
                    got.append(m.value)
                return got
            except ConnectError as e:
                return e

    return asyncio.run(asyncio.wait_for(main(), 30)), rec.log


def attempts_seen(url: str, key: str, n: int) -> int:
    seen = wait_events(url, key, lambda s: s.count("attempt") >= n)
    return seen.count("attempt")


# (method, request after the key, policy, timeout, outcome, attempts)
RETRY_CASES: list[
    tuple[str, MethodSpec[Any, Any], str, RetryPolicy, float | None, Any, int]
] = [
    ("two-failures", FLAKY, "2|plain", FAST, None, ["attempt:3"], 3),
    ("gives-up", FLAKY, "5|plain", FAST, None, Code.UNAVAILABLE, 3),
    ("side-effects", FLAKY_WRITE, "1|plain", FAST, None, Code.UNAVAILABLE, 1),
    ("no-retry-info", FLAKY, "1|exhausted", FAST, None, Code.RESOURCE_EXHAUSTED, 1),
    ("retry-info", FLAKY, "1|retryinfo|0.01", FAST, None, ["attempt:2"], 2),
    ("past-deadline", FLAKY, "1|retryinfo|30", FAST, 5.0, Code.RESOURCE_EXHAUSTED, 1),
    ("pushback", FLAKY, "1|pushback|5", FAST, None, ["attempt:2"], 2),
    ("pushback-stop", FLAKY, "1|pushback|-1", FAST, None, Code.UNAVAILABLE, 1),
    (
        "budget",
        FLAKY,
        "5|plain",
        RetryPolicy(
            max_attempts=5,
            initial_backoff=0.001,
            throttling=RetryThrottling(max_tokens=3),
        ),
        None,
        Code.UNAVAILABLE,
        2,
    ),
    ("stream-early", FLAKY_STREAM, "1|early", FAST, None, ["attempt:2", "last"], 2),
    ("stream-late", FLAKY_STREAM, "1|late", FAST, None, Code.UNAVAILABLE, 1),
]


@pytest.mark.parametrize(
    ("case", "method", "arg", "policy", "timeout", "outcome", "attempts"),
    RETRY_CASES,
    ids=[c[0] for c in RETRY_CASES],
)
@pytest.mark.parametrize(
    ("kind", "name", "protocol", "version"), CLIENTS, ids=["async", "sync", "grpc"]
)
def test_retries_against_a_failing_server(
    servers: Callable[[str], str],
    kind: str,
    name: str,
    protocol: Protocol,
    version: HTTPVersionName | None,
    case: str,
    method: MethodSpec[Any, Any],
    arg: str,
    policy: RetryPolicy,
    timeout: float | None,
    outcome: Any,
    attempts: int,
) -> None:
    url = servers(name)
    key = new_key(case)
    out, log = run_call(
        kind, url, method, f"{key}|{arg}", policy, protocol, version, timeout
    )
    if isinstance(outcome, Code):
        assert isinstance(out, ConnectError), out
        assert out.code is outcome
        last = outcome.wire_name
    else:
        assert out == outcome
        last = "ok"
    # Every attempt went through the interceptors, and reached the server.
    failed = [Code.UNAVAILABLE.wire_name] * (attempts - 1)
    if "exhausted" in arg or "retryinfo" in arg:
        failed = [Code.RESOURCE_EXHAUSTED.wire_name] * (attempts - 1)
    expected = list(itertools.chain(*(["start", f] for f in failed)))
    assert log == [*expected, "start", last]
    assert attempts_seen(url, key, attempts) == attempts


REFUSED_KINDS = ["unary-side-effects", "client-stream", "bidi"]


@pytest.mark.parametrize("what", REFUSED_KINDS)
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_refused_connection_is_retried_for_any_method(kind: str, what: str) -> None:
    """Nothing left this process: even calls with side effects are tried again."""
    url = f"http://127.0.0.1:{free_port()}"
    rec = Recorder()
    client_stream = MethodSpec(
        "lifecycle.v1.Life",
        "Up",
        "up",
        StreamType.CLIENT_STREAM,
        StringValue,
        StringValue,
    )
    bidi = MethodSpec(
        "lifecycle.v1.Life",
        "Chat",
        "chat",
        StreamType.BIDI_STREAM,
        StringValue,
        StringValue,
    )
    requests = [StringValue(value="a"), StringValue(value="b")]
    error: ConnectError
    if kind == "sync":
        with SyncClient(url, retry=FAST, interceptors=[rec]) as c:
            with pytest.raises(ConnectError) as raised:
                if what == "unary-side-effects":
                    c.call_unary(FLAKY_WRITE, StringValue(value="x"))
                elif what == "client-stream":
                    c.call_client_stream(client_stream, requests)
                else:
                    list(c.call_bidi_stream(bidi, requests))
            error = raised.value
    else:

        async def main() -> ConnectError:
            async with AsyncClient(url, retry=FAST, interceptors=[rec]) as c:
                with pytest.raises(ConnectError) as raised:
                    if what == "unary-side-effects":
                        await c.call_unary(FLAKY_WRITE, StringValue(value="x"))
                    elif what == "client-stream":
                        await c.call_client_stream(client_stream, requests)
                    else:
                        async for _ in c.call_bidi_stream(bidi, requests):
                            pass
                return raised.value

        error = asyncio.run(asyncio.wait_for(main(), 30))
    assert error.code is Code.UNAVAILABLE
    assert rec.log == ["start", "unavailable"] * 3
