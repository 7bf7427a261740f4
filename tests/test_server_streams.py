"""Streaming responses: early headers (``ctx.send_headers()``) and early errors
while the client is still sending, in-process and on real HTTP/1.1 servers.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import types
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import pytest
from server_apps import PING, Pinger, PingerSync, pb
from server_harness import envelope, split_envelopes
from servers import Server, start_server

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    Code,
    ConnectError,
    RequestContext,
    WSGIApp,
)
from protoc_gen_connect_python.runtime.envelope import JOIN_MAX
from protoc_gen_connect_python.runtime.headers import Headers
from protoc_gen_connect_python.runtime.server import asgi as asgi_shell
from protoc_gen_connect_python.runtime.server import core as server_core
from protoc_gen_connect_python.runtime.server.asgi import JOIN_SECONDS
from protoc_gen_connect_python.runtime.server.core import DEADLINE_GRACE, check_deadline

P = "/testing.v1.PingService/"
STREAM = "application/connect+proto"

# -- in-process -----------------------------------------------------------------------

EVENTS: list[str] = []
"""What the test's ASGI send and WSGI write saw, in order, shared with handlers."""


class Early(Pinger):
    async def count_up(self, request: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        ctx.response_headers["x-early"] = "yes"
        await ctx.send_headers()
        EVENTS.append("handler: headers sent")
        ctx.send_headers()  # again: nothing more is sent
        yield pb.CountUpResponse(number=1)

    async def echo(
        self, requests: AsyncIterator[Any], ctx: RequestContext
    ) -> AsyncIterator[Any]:
        ctx.send_headers()  # not awaited: sent before the first message anyway
        async for r in requests:
            yield pb.EchoResponse(text=r.text)

    async def ping(self, request: Any, ctx: RequestContext) -> Any:
        await ctx.send_headers()  # unary: does nothing
        ctx.response_headers["x-late"] = "yes"
        return pb.PingResponse(text=request.text)


class EarlySync(PingerSync):
    def count_up(self, request: Any, ctx: RequestContext) -> Iterator[Any]:
        ctx.response_headers["x-early"] = "yes"
        ctx.send_headers()
        EVENTS.append("handler: headers sent")
        ctx.send_headers()
        yield pb.CountUpResponse(number=1)


async def _drive(
    app: ASGIApp,
    path: str,
    chunks: list[bytes],
    content_type: str = STREAM,
    length: bool = False,
    method: str = "POST",
    query: bytes = b"",
) -> list[str]:
    """Run one request; the log of receives and sends, in order."""
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            c = pending.pop(0)
            EVENTS.append(f"receive {len(c)}")
            return {"type": "http.request", "body": c, "more_body": bool(pending)}
        await asyncio.Event().wait()  # pragma: no cover - the app must not get here
        raise AssertionError

    async def send(msg: MutableMapping[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            names = {k.decode() for k, _ in msg["headers"]}
            EVENTS.append(
                f"start {msg['status']} {sorted(n for n in names if n.startswith('x-'))}"
            )
        elif msg["type"] == "http.response.body":
            data = msg.get("body", b"")
            more = msg.get("more_body", False)
            if content_type == STREAM:
                kinds = [
                    "end" if f & 2 else "message" for f, _ in split_envelopes(data)
                ]
                if len(kinds) > 1 and set(kinds) == {"message"}:
                    EVENTS.append(f"body ['message'] * {len(kinds)} more={more}")
                else:
                    EVENTS.append(f"body {kinds} more={more}")
            else:
                EVENTS.append(f"body {len(data)} more={more}")
        else:
            EVENTS.append(msg["type"])

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": [(b"content-type", content_type.encode())]
        + ([(b"content-length", b"%d" % sum(map(len, chunks)))] if length else []),
        "client": ("127.0.0.1", 5555),
        "extensions": {},
    }
    EVENTS.clear()
    await app(scope, receive, send)
    return list(EVENTS)


def test_asgi_send_headers_before_first_message() -> None:
    app = ASGIApp(Early())
    req = envelope(pb.CountUpRequest(number=1).SerializeToString())
    log = asyncio.run(_drive(app, P + "CountUp", [req]))
    assert log == [
        f"receive {len(req)}",
        "start 200 ['x-early']",
        "handler: headers sent",
        "body ['message'] more=True",
        "body ['end'] more=False",
    ]


def test_asgi_send_headers_not_awaited() -> None:
    app = ASGIApp(Early())
    req = envelope(pb.EchoRequest(text="a").SerializeToString())
    log = asyncio.run(_drive(app, P + "Echo", [req]))
    assert log.count("start 200 []") == 1
    assert log.index("start 200 []") < log.index("body ['message'] more=True")
    assert log[-2:] == ["body ['message'] more=True", "body ['end'] more=False"]


def test_asgi_send_headers_in_unary_does_nothing() -> None:
    app = ASGIApp(Early())
    body = pb.PingRequest(text="a").SerializeToString()
    log = asyncio.run(_drive(app, P + "Ping", [body], "application/proto"))
    assert log[1] == "start 200 ['x-late']"


def _environ(path: str, body: bytes) -> dict[str, Any]:
    """A WSGI environ for a streaming POST of ``body``."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "CONTENT_TYPE": STREAM,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }


def test_wsgi_send_headers_before_first_message() -> None:
    app = WSGIApp(EarlySync())
    req = envelope(pb.CountUpRequest(number=1).SerializeToString())
    environ = _environ(P + "CountUp", req)

    def start_response(status: str, headers: list[tuple[str, str]]) -> Any:
        names = sorted(k for k, _ in headers if k.startswith("x-"))
        EVENTS.append(f"start {status} {names}")
        return lambda data: EVENTS.append(f"write {data!r}")

    EVENTS.clear()
    for chunk in app(environ, start_response):
        kinds = ["end" if f & 2 else "message" for f, _ in split_envelopes(chunk)]
        EVENTS.append(f"body {kinds}")
    assert EVENTS == [
        "start 200 OK ['x-early']",
        "write b''",
        "handler: headers sent",
        "body ['message']",
        "body ['end']",
    ]


def test_asgi_early_error_drains_after_end_of_stream() -> None:
    # The first message is over the limit; the rest of the body is still read,
    # after the end-of-stream message went out and before the response ends.
    app = ASGIApp(Pinger(), read_max_bytes=100)
    first = envelope(b"\x08" * 200)
    rest = [envelope(pb.SumRequest(number=1).SerializeToString())] * 3
    log = asyncio.run(_drive(app, P + "Sum", [first, *rest]))
    assert log == [
        f"receive {len(first)}",
        "start 200 []",
        "body ['end'] more=True",
        *[f"receive {len(r)}" for r in rest],
        "body [] more=False",
    ]


def test_asgi_early_error_with_content_length_drains_first() -> None:
    # A body of declared length is taken whole before the response goes out.
    app = ASGIApp(Pinger(), read_max_bytes=100)
    first = envelope(b"\x08" * 200)
    rest = [envelope(pb.SumRequest(number=1).SerializeToString())] * 3
    log = asyncio.run(_drive(app, P + "Sum", [first, *rest], length=True))
    assert log == [
        f"receive {len(first)}",
        *[f"receive {len(r)}" for r in rest],
        "start 200 []",
        "body ['end'] more=False",
    ]


def test_asgi_connect_get_reads_request_to_its_end_before_replying() -> None:
    # The message comes in the query, but the request stream is still read to
    # its end first: an HTTP/2 client may close it with an empty DATA frame
    # after the HEADERS, which hypercorn cannot take once the reply has ended.
    msg = base64.urlsafe_b64encode(pb.PingRequest(text="a").SerializeToString())
    query = b"encoding=proto&base64=1&connect=v1&message=" + msg.rstrip(b"=")
    log = asyncio.run(
        _drive(
            ASGIApp(Pinger()),
            P + "Ping",
            [b""],
            "application/proto",
            method="GET",
            query=query,
        )
    )
    assert log[0] == "receive 0"
    assert log[1] == "start 200 ['x-ping']"


def test_asgi_handler_done_before_body_drains() -> None:
    # A bidi handler that answers and returns without reading to the end.
    class Once(Pinger):
        async def echo(
            self, requests: AsyncIterator[Any], ctx: RequestContext
        ) -> AsyncIterator[Any]:
            async for r in requests:
                yield pb.EchoResponse(text=r.text)
                return

    req = envelope(pb.EchoRequest(text="a").SerializeToString())
    log = asyncio.run(_drive(ASGIApp(Once()), P + "Echo", [req, req, req]))
    assert log == [
        f"receive {len(req)}",
        "start 200 []",
        "body ['message'] more=True",
        "body ['end'] more=True",
        f"receive {len(req)}",
        f"receive {len(req)}",
        "body [] more=False",
    ]


def _count_up(number: int, fail: int = 0) -> bytes:
    return envelope(
        pb.CountUpRequest(number=number, fail_code=fail).SerializeToString()
    )


class Clock:
    """The clock the ASGI shell joins messages by; moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A stopped clock for ``JOIN_SECONDS``: no test depends on how fast it runs."""
    c = Clock()
    monkeypatch.setattr(asgi_shell, "_join_clock", c)
    return c


def test_asgi_stream_joins_messages_ready_together(clock: Clock) -> None:
    # Messages yielded back to back share one body event; an error raised
    # after them comes after them.
    req = _count_up(5, int(Code.ABORTED))
    log = asyncio.run(_drive(ASGIApp(Pinger()), P + "CountUp", [req]))
    assert log[2:] == ["body ['message'] * 5 more=True", "body ['end'] more=False"]


def test_asgi_stream_joins_up_to_join_max(clock: Clock) -> None:
    class Big(Pinger):
        async def echo(
            self, requests: AsyncIterator[Any], ctx: RequestContext
        ) -> AsyncIterator[Any]:
            async for r in requests:
                for _ in range(10):
                    yield pb.EchoResponse(text=r.text * 16384)

    req = envelope(pb.EchoRequest(text="x").SerializeToString())
    log = asyncio.run(_drive(ASGIApp(Big()), P + "Echo", [req]))
    bodies = [e for e in log if e.startswith("body")]
    # 4 messages of 16 KiB and a little pass JOIN_MAX (64 KiB): 4 + 4 + 2.
    assert JOIN_MAX == 65536
    assert bodies == [
        "body ['message'] * 4 more=True",
        "body ['message'] * 4 more=True",
        "body ['message'] * 2 more=True",
        "body ['end'] more=False",
    ]


def test_asgi_stream_sends_what_it_holds_when_the_handler_waits(clock: Clock) -> None:
    class Waits(Pinger):
        async def count_up(
            self, request: Any, ctx: RequestContext
        ) -> AsyncIterator[Any]:
            yield pb.CountUpResponse(number=1)
            yield pb.CountUpResponse(number=2)
            EVENTS.append("handler: waits")
            await asyncio.sleep(0.01)
            EVENTS.append("handler: woke")
            yield pb.CountUpResponse(number=3)

    log = asyncio.run(_drive(ASGIApp(Waits()), P + "CountUp", [_count_up(3)]))
    assert log[1:] == [
        "handler: waits",
        "start 200 []",
        "body ['message'] * 2 more=True",
        "handler: woke",
        "body ['message'] more=True",
        "body ['end'] more=False",
    ]


@pytest.mark.parametrize(
    ("step", "bodies"),
    [
        # Each step takes JOIN_SECONDS or more: every message goes alone.
        (JOIN_SECONDS, ["body ['message'] more=True"] * 3),
        # Quicker steps: held until the batch's first step is JOIN_SECONDS old.
        (JOIN_SECONDS * 0.4, ["body ['message'] * 3 more=True"]),
        (
            JOIN_SECONDS * 0.6,
            ["body ['message'] * 2 more=True", "body ['message'] more=True"],
        ),
    ],
)
def test_asgi_stream_slow_steps_are_sent_alone(
    clock: Clock, step: float, bodies: list[str]
) -> None:
    # A handler that computes between messages without awaiting (blocking the
    # loop, as CPU-bound code does) does not get its messages held back.
    class Slow(Pinger):
        async def count_up(
            self, request: Any, ctx: RequestContext
        ) -> AsyncIterator[Any]:
            for i in range(3):
                clock.now += step
                yield pb.CountUpResponse(number=i)

    log = asyncio.run(_drive(ASGIApp(Slow()), P + "CountUp", [_count_up(3)]))
    assert log[2:] == [*bodies, "body ['end'] more=False"]


def test_asgi_stream_send_failing_while_the_handler_waits_cancels_it() -> None:
    seen: list[str] = []

    class Waits(Pinger):
        async def count_up(
            self, request: Any, ctx: RequestContext
        ) -> AsyncIterator[Any]:
            try:
                yield pb.CountUpResponse(number=1)
                await asyncio.sleep(0.01)
                yield pb.CountUpResponse(number=2)  # pragma: no cover
            except BaseException as e:
                seen.append(type(e).__name__)
                raise

    req = _count_up(2)
    events = [{"type": "http.request", "body": req, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if events:
            return events.pop()
        await asyncio.sleep(10)  # pragma: no cover
        raise AssertionError

    async def send(msg: MutableMapping[str, Any]) -> None:
        if msg["type"] == "http.response.body":
            raise OSError("connection lost")

    scope = {
        "type": "http",
        "method": "POST",
        "path": P + "CountUp",
        "headers": [(b"content-type", STREAM.encode())],
    }
    with pytest.raises(OSError):
        asyncio.run(ASGIApp(Waits())(scope, receive, send))
    assert seen == ["CancelledError"]


def test_asgi_stream_buffer_hint_holds_across_waits() -> None:
    # With the hint, a wait does not send what is held: the batch waits for
    # JOIN_MAX bytes or the end of the stream.
    class Hinted(Pinger):
        async def count_up(
            self, request: Any, ctx: RequestContext
        ) -> AsyncIterator[Any]:
            ctx.buffer_hint = True
            for i in range(3):
                yield pb.CountUpResponse(number=i)
                await asyncio.sleep(0)
            EVENTS.append("handler: done")

    log = asyncio.run(_drive(ASGIApp(Hinted()), P + "CountUp", [_count_up(3)]))
    assert log[1:] == [
        "handler: done",
        "start 200 []",
        "body ['message'] * 3 more=True",
        "body ['end'] more=False",
    ]


def _wsgi_bodies(app: WSGIApp, path: str, body: bytes) -> list[str]:
    """Run one streaming request; what each yielded body chunk holds, in order,
    among the handler's own EVENTS."""
    EVENTS.clear()
    for chunk in app(_environ(path, body), lambda status, headers: None):
        kinds = ["end" if f & 2 else "message" for f, _ in split_envelopes(chunk)]
        EVENTS.append(f"{kinds.count('message')} messages{' + end' * ('end' in kinds)}")
    return list(EVENTS)


class _HintedSync(PingerSync):
    """Answers each request text with it repeated 16384 times, under the
    buffer hint; clears the hint at the fifth; after the text "!" fails."""

    def echo(self, requests: Iterator[Any], ctx: RequestContext) -> Iterator[Any]:
        assert ctx.buffer_hint is False
        ctx.buffer_hint = True
        for i, r in enumerate(requests, 1):
            if r.text == "!":
                raise ConnectError(Code.ABORTED, "echo failed")
            if i == 5:
                EVENTS.append("handler: hint cleared")
                ctx.buffer_hint = False
            yield pb.EchoResponse(text=r.text * 16384)


def _echo_requests(*texts: str) -> bytes:
    return b"".join(envelope(pb.EchoRequest(text=t).SerializeToString()) for t in texts)


def test_wsgi_stream_without_the_hint_writes_each_message() -> None:
    log = _wsgi_bodies(WSGIApp(PingerSync()), P + "CountUp", _count_up(3))
    assert log == ["1 messages", "1 messages", "1 messages", "0 messages + end"]


def test_wsgi_stream_buffer_hint_joins_up_to_join_max() -> None:
    # Four messages of 16 KiB and a little pass JOIN_MAX: one write; the hint
    # cleared, the fifth goes at once; then one write per message.
    assert JOIN_MAX == 65536
    body = _echo_requests(*"abcdef")
    log = _wsgi_bodies(WSGIApp(_HintedSync()), P + "Echo", body)
    assert log == [
        "4 messages",
        "handler: hint cleared",
        "1 messages",
        "1 messages",
        "0 messages + end",
    ]


def test_wsgi_stream_buffer_hint_sends_what_it_holds_with_the_end() -> None:
    # Held messages go out with the end of the stream, before the error.
    body = _echo_requests("a", "b", "c", "!")
    log = _wsgi_bodies(WSGIApp(_HintedSync()), P + "Echo", body)
    assert log == ["3 messages + end"]
    environ = _environ(P + "Echo", body)
    (chunk,) = WSGIApp(_HintedSync())(environ, lambda status, headers: None)
    frames = split_envelopes(chunk)
    texts = [pb.EchoResponse.FromString(m).text for _, m in frames[:3]]
    assert texts == [t * 16384 for t in "abc"]
    assert json.loads(frames[3][1])["error"]["code"] == "aborted"


def test_asgi_request_messages_are_decoded_as_taken() -> None:
    # Messages that come in one read are decoded one at a time, as the handler
    # asks: the good ones before a bad one still reach it.
    seen: list[int] = []

    class Counts(Pinger):
        async def sum(self, requests: AsyncIterator[Any], ctx: RequestContext) -> Any:
            async for r in requests:
                seen.append(r.number)
            return pb.SumResponse()  # pragma: no cover

    good = [envelope(pb.SumRequest(number=n).SerializeToString()) for n in (1, 2)]
    body = b"".join(good) + envelope(b"\xff\xff\xff")
    log = asyncio.run(_drive(ASGIApp(Counts()), P + "Sum", [body]))
    assert seen == [1, 2]
    assert log[-1] == "body ['end'] more=False"


# -- real servers over HTTP/1.1 ------------------------------------------------------

SERVERS = [
    ("hypercorn", "stream_apps:asgi_app"),
    ("uvicorn", "stream_apps:asgi_app"),
    ("gunicorn", "stream_apps:wsgi_app"),
]


@pytest.fixture(scope="module", params=SERVERS, ids=[s[0] for s in SERVERS])
def srv(request: pytest.FixtureRequest) -> Iterator[Server]:
    name, app = request.param
    s = start_server(name, app)
    yield s
    s.stop()


def _head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"connection closed before the response head: {buf!r}"
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, rest


def _chunked(sock: socket.socket, buf: bytes) -> bytes:
    """The body of a chunked response, read to its last chunk."""
    body = b""
    while True:
        while b"\r\n" not in buf:
            data = sock.recv(65536)
            assert data, "connection closed inside the response body"
            buf += data
        size_line, _, buf = buf.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(buf) < size + 2:
            data = sock.recv(65536)
            assert data, "connection closed inside the response body"
            buf += data
        if size == 0:
            return body
        body += buf[:size]
        buf = buf[size + 2 :]


def _end_stream(body: bytes) -> dict[str, Any]:
    frames = split_envelopes(body)
    assert frames and frames[-1][0] == 2, frames
    end: dict[str, Any] = json.loads(frames[-1][1])
    return end


def _request_head(path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {STREAM}\r\n{extra}\r\n"
    ).encode()


def test_oversized_first_message_ends_with_resource_exhausted(srv: Server) -> None:
    # The client sends its whole stream before reading; the server must answer
    # with the error in the end-of-stream message, not break the connection.
    first = envelope(b"\x08" * 5000)
    more = envelope(pb.SumRequest(number=1).SerializeToString() * 1000)
    # Chunked, as streaming clients send, and more than socket buffers hold.
    chunks = [first] + [more] * 2000
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    head = _request_head(P + "Sum", "Transfer-Encoding: chunked\r\n")
    failed: list[BaseException] = []

    def send_all(sock: socket.socket) -> None:
        try:
            sock.sendall(head + body)
        except OSError as e:
            failed.append(e)

    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sender = threading.Thread(target=send_all, args=(sock,))
        sender.start()
        try:
            status, headers, rest = _head(sock)
            assert status == 200
            assert headers.get("transfer-encoding") == "chunked"
            end = _end_stream(_chunked(sock, rest))
        finally:
            sender.join()
    assert end["error"]["code"] == "resource_exhausted"
    # The server took the whole request: the client could send all of it.
    assert failed == []


def test_send_headers_before_the_request_body(srv: Server) -> None:
    # The client sends the request body only once it has the response head,
    # which the handler flushes before it reads anything.
    head = _request_head(P + "Echo", "Transfer-Encoding: chunked\r\n")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(head)
        status, headers, rest = _head(sock)
        assert status == 200
        assert headers["x-early"] == "yes"
        msg = envelope(pb.EchoRequest(text="hi").SerializeToString())
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(msg), msg))
        frames = split_envelopes(_chunked(sock, rest))
    assert [f for f, _ in frames] == [0, 2]
    assert pb.EchoResponse.FromString(frames[0][1]).text == "hi"
    assert json.loads(frames[1][1]) == {}


def test_server_deadline_allows_a_grace_past_the_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server ends a call a little after the client's deadline, never before."""
    # The core's clock stands still, so no delay moves the call past its grace.
    now = 1000.0
    monkeypatch.setattr(
        server_core, "time", types.SimpleNamespace(monotonic=lambda: now)
    )
    ctx = RequestContext(PING, "connect", Headers())
    ctx.deadline = now - DEADLINE_GRACE / 2  # just past: the client ends it
    check_deadline(ctx)
    ctx.deadline = now - DEADLINE_GRACE * 20
    with pytest.raises(ConnectError) as info:
        check_deadline(ctx)
    assert info.value.code is Code.DEADLINE_EXCEEDED


def test_asgi_over_limit_message_in_the_last_event_needs_no_drain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The whole body came in one event, its message over the read limit: the
    # error goes out at once. (A drain waited for a next event, up to
    # DRAIN_SECONDS, made endless here: the test's bound would fail it.)
    monkeypatch.setattr(asgi_shell, "DRAIN_SECONDS", 3600.0)
    body = b"\0" + (5 * 1024 * 1024).to_bytes(4, "big")
    events = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if events:
            return events.pop(0)
        await asyncio.Event().wait()  # a client that waits for the answer
        raise AssertionError  # pragma: no cover

    async def send(msg: MutableMapping[str, Any]) -> None:
        sent.append(msg)

    scope = {
        "type": "http",
        "method": "POST",
        "path": P + "Echo",
        "raw_path": (P + "Echo").encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", STREAM.encode())],
    }
    asyncio.run(asyncio.wait_for(ASGIApp(Pinger())(scope, receive, send), 30))
    end = split_envelopes(b"".join(m.get("body", b"") for m in sent[1:]))[-1]
    assert json.loads(end[1])["error"]["code"] == "resource_exhausted"
    assert sent[-1].get("more_body", False) is False
