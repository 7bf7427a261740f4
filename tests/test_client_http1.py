"""The pure-Python HTTP/1.1 client transport.

The sans-IO parser and serializer (``client/http1.py``) byte by byte, with
hypothesis cutting responses at random places; the asyncio and socket shells
(``client/http1_transport.py``) against uvicorn, gunicorn, hypercorn with TLS,
and a raw asyncio server that misbehaves on purpose.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from client_env import PeerEnv, peer_env
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import run_server

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    ConnectError,
    SyncClient,
)
from protoc_gen_connect_python.runtime.client import http1, net
from protoc_gen_connect_python.runtime.client.config import build_config
from protoc_gen_connect_python.runtime.client.core import HTTPRequest
from protoc_gen_connect_python.runtime.client.http1 import (
    JOIN_MAX,
    LAST_CHUNK,
    Limits,
    ProtocolError,
    ResponseParser,
    encode_chunk,
    request_head,
    writes,
)
from protoc_gen_connect_python.runtime.client.http1_transport import (
    AsyncHTTP1Transport,
    SyncHTTP1Transport,
)
from protoc_gen_connect_python.runtime.client.http2_transport import (
    AsyncHTTP2Transport,
)
from protoc_gen_connect_python.runtime.client.transport import (
    PyqwestAsyncTransport,
    PyqwestSyncTransport,
    async_transport_for,
    sync_transport_for,
)

pytestmark = pytest.mark.anyio


# -- sans-IO -------------------------------------------------------------------


def parse(
    wire: bytes, cuts: list[int] | None = None, method: str = "POST", eof: bool = False
) -> tuple[ResponseParser, int, bytes]:
    """Feed ``wire`` in pieces (cut at ``cuts``); the parser, status and body."""
    p = ResponseParser(method)
    points = sorted({c for c in (cuts or []) if 0 < c < len(wire)})
    pieces = [
        wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)
    ]
    status = 0
    body = []
    for piece in pieces:
        p.feed(piece)
        head = p.head()
        if head is not None:
            status = head.status
            body.append(p.body())
    if eof:
        p.feed_eof()
        if p.head() is not None:
            status = p.head().status  # type: ignore[union-attr]
            body.append(p.body())
    return p, status, b"".join(body)


def test_content_length() -> None:
    wire = b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nContent-Length: 5\r\n\r\nhello"
    p, status, body = parse(wire)
    assert (status, body, p.complete, p.reusable) == (200, b"hello", True, True)
    head = p.head()
    assert head is not None
    assert head.headers == [("content-type", "a/b"), ("content-length", "5")]
    assert head.reason == "OK"


def test_head_waits_for_blank_line() -> None:
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n")
    assert p.head() is None
    p.feed(b"\r\n")
    assert p.head() is not None
    assert p.complete


def test_reads_fed_before_parsing_are_joined_in_order() -> None:
    # The async transport feeds every read as it comes and parses when the
    # consumer asks: reads fed meanwhile queue up and are joined once.
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab")
    assert p.head() is not None
    assert p.body() == b"ab"
    p.feed(b"cd\r\n3\r")
    p.feed(b"\nefg\r\n")
    p.feed(b"0\r\n\r\n")
    assert p.buffered == 17
    assert not p.reusable
    assert p.body() == b"cdefg"
    assert p.complete and p.reusable and p.buffered == 0


@pytest.mark.parametrize(
    ("wire", "method"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", "POST"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", "GET"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD"),
    ],
)
def test_no_body(wire: bytes, method: str) -> None:
    p, _, body = parse(wire, method=method)
    assert body == b""
    assert p.complete
    assert p.reusable


def test_informational_responses_are_skipped() -> None:
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    for cut in range(len(wire)):
        _, status, body = parse(wire, [cut])
        assert (status, body) == (201, b"ok")


def test_switching_protocols_is_an_error() -> None:
    with pytest.raises(ProtocolError):
        parse(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")


@pytest.mark.parametrize(
    ("wire", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (
            b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 0\r\n\r\n",
            False,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            True,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nextra", False),
        # Both framings: chunked wins, the connection is not reused.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n0\r\n\r\n",
            False,
        ),
    ],
)
def test_connection_reuse(wire: bytes, reusable: bool) -> None:
    p, _, _ = parse(wire)
    assert p.complete
    assert p.reusable is reusable


def test_body_until_close() -> None:
    wire = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    p, _, body = parse(wire, [20, 22])
    assert not p.complete
    p.feed_eof()
    assert p.body() == b""
    assert p.complete
    assert not p.reusable
    assert body == b"all of it"
    # A transfer coding other than chunked also runs until the close.
    p, _, body = parse(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz", eof=True
    )
    assert (body, p.complete, p.reusable) == (b"xyz", True, False)


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"",
    ],
)
def test_truncated_is_an_error(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        p, _, _ = parse(wire, eof=True)
        p.body()


@pytest.mark.parametrize(
    "wire",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded first\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
    ],
)
def test_malformed_head(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(wire)


def test_head_too_large() -> None:
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\n" + b"x-big: " + b"a" * 70_000)
    with pytest.raises(ProtocolError, match="too large"):
        p.head()


def test_lenient_forms() -> None:
    # Bare LF line ends, whitespace before the colon, obs-fold, repeated
    # identical Content-Length, no reason phrase.
    wire = (
        b"HTTP/1.1 200\nX-A : 1\nX-B: one\n  two\nContent-Length: 2\n"
        b"Content-Length: 2\n\nok"
    )
    p, status, body = parse(wire)
    assert (status, body) == (200, b"ok")
    head = p.head()
    assert head is not None
    assert head.headers[:2] == [("x-a", "1"), ("x-b", "one two")]


def chunked(
    pieces: list[bytes], exts: list[str], trailers: list[tuple[str, str]]
) -> bytes:
    out = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for i, piece in enumerate(pieces):
        ext = exts[i % len(exts)] if exts else ""
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext.encode(), piece))
    out.append(b"0\r\n")
    out.extend(f"{k}: {v}\r\n".encode() for k, v in trailers)
    out.append(b"\r\n")
    return b"".join(out)


names = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10)
values = st.text("abcdefghijklmnopqrstuvwxyz0123456789 =;", max_size=20).map(str.strip)


@given(
    pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    exts=st.lists(st.sampled_from(["", ";a=b", ' ; name="q;x"', ";x"]), max_size=3),
    trailers=st.lists(st.tuples(names, values), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
@settings(max_examples=300, deadline=None)
def test_chunked_random_cuts(
    pieces: list[bytes],
    exts: list[str],
    trailers: list[tuple[str, str]],
    cuts: list[int],
) -> None:
    wire = chunked(pieces, exts, trailers)
    p, status, body = parse(wire, cuts)
    assert status == 200
    assert body == b"".join(pieces)  # extensions and trailers never leak in
    assert p.complete
    assert p.reusable
    assert p.trailers == [(k, v) for k, v in trailers]


@given(
    body=st.binary(max_size=2000),
    cuts=st.lists(st.integers(min_value=0, max_value=2200), max_size=12),
)
@settings(max_examples=200, deadline=None)
def test_content_length_random_cuts(body: bytes, cuts: list[int]) -> None:
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    p, _, got = parse(wire, cuts)
    assert got == body
    assert p.complete and p.reusable


@given(
    size=st.one_of(
        st.sampled_from(["", "-1", "g", "0x10", "1 2", "+5", "1" * 16, " "]),
        st.text("0123456789abcdefxyz-+ ", min_size=1, max_size=8).filter(
            lambda s: (
                not all(c in "0123456789abcdef" for c in s.strip()) or not s.strip()
            )
        ),
    )
)
@settings(max_examples=100, deadline=None)
def test_bad_chunk_size(size: str) -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\nab\r\n0\r\n\r\n"
    with pytest.raises(ProtocolError):
        parse(wire % size.encode())


def test_chunk_data_must_end_with_crlf() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n"
    with pytest.raises(ProtocolError):
        parse(wire)


def test_chunk_size_line_too_long() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"x" * 5000
    with pytest.raises(ProtocolError):
        parse(wire)


def test_streamed_body_stays_flat() -> None:
    """A long chunked body is handed out as it arrives; nothing piles up."""
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert p.head() is not None
    frame = encode_chunk(b"x" * 16384)
    loop = frame * 4
    twice = loop + loop
    total = offset = 0
    step = 9973  # cuts fall anywhere: in sizes, data and CRLFs
    for _ in range(3300):
        start = offset % len(loop)
        p.feed(twice[start : start + step])
        offset += step
        total += len(p.body())
        assert p.buffered < 16  # only a partial size line or CRLF waits
    assert total > 2000 * 16000


def test_request_head() -> None:
    head = request_head(
        "POST", "/a/b?x=1", "example.com:81", [("content-type", "a/b")], 3
    )
    assert head == (
        b"POST /a/b?x=1 HTTP/1.1\r\nhost: example.com:81\r\n"
        b"content-type: a/b\r\ncontent-length: 3\r\n\r\n"
    )
    assert b"transfer-encoding: chunked\r\n" in request_head("POST", "/", "h", [], None)
    assert b"content-length" not in request_head("GET", "/", "h", [], 0)
    assert b"content-length: 0\r\n" in request_head("POST", "/", "h", [], 0)
    assert encode_chunk(b"abc") == b"3\r\nabc\r\n"


def test_writes() -> None:
    """Small payloads join what precedes them; big ones are written uncopied."""
    big = b"x" * (JOIN_MAX + 1)
    assert writes(b"H", b"abc") == (b"Habc",)
    assert writes(b"H", big) == (b"H", big)
    assert writes(b"", big) == (big,)
    assert writes(b"H", b"abc", chunk=True) == (b"H3\r\nabc\r\n",)
    assert writes(b"H", big, chunk=True) == (b"H%x\r\n" % len(big), big, b"\r\n")
    assert LAST_CHUNK == b"0\r\n\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        [("x-a", "1\r\nx-injected: 2")],
        [("x-a\r\n", "1")],
        [("x-a", "1\n")],
        [("x-a", "nul\x00")],
        [("x-a", "\u20ac")],
    ],
)
def test_request_head_rejects_bad_fields(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        request_head("POST", "/", "h", headers, 0)


class Work:
    """Counts the bytes the parser searches and copies while bytes trickle in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        find = http1._find_blank_line
        gather = ResponseParser._gather

        def counted_find(buf: bytes, pos: int) -> tuple[int, int]:
            self.bytes += len(buf) - pos
            return find(buf, pos)

        def counted_gather(p: ResponseParser) -> None:
            gather(p)
            self.bytes += p.buffered

        monkeypatch.setattr(http1, "_find_blank_line", counted_find)
        monkeypatch.setattr(ResponseParser, "_gather", counted_gather)


def big_head(fields: int) -> bytes:
    lines = b"".join(b"x-f%05d: %s\r\n" % (i, b"v" * 40) for i in range(fields))
    return b"HTTP/1.1 200 OK\r\n" + lines + b"content-length: 2\r\n\r\nok"


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_a_head_fed_in_tiny_reads_costs_linear_work(
    monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    work = Work(monkeypatch)
    wire = big_head(1200)  # ~60 KB
    p = ResponseParser()
    head = None
    for i in range(0, len(wire), step):
        p.feed(wire[i : i + step])
        head = head or p.head()
        if head is not None:
            assert p.body() in (b"", b"o", b"k", b"ok")
    assert head is not None and len(head.headers) == 1201
    # Searching the whole buffer at each read would be ~len(wire)**2 / 2.
    assert work.bytes < 4 * len(wire)


def test_trailers_and_chunk_lines_fed_in_tiny_reads_cost_linear_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = Work(monkeypatch)
    ext = b";" + b"e" * 3000  # chunk extensions: a long line to wait for
    trailers = b"".join(b"t-%05d: %s\r\n" % (i, b"w" * 30) for i in range(1200))
    body = b"".join(b"5" + ext + b"\r\nhello\r\n" for _ in range(5))
    wire = b"0" + ext + b"\r\n" + trailers + b"\r\n"
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    assert p.head() is not None
    got = b""
    for piece in (body, wire):
        for i in range(len(piece)):
            p.feed(piece[i : i + 1])
            got += p.body()
    assert got == b"hello" * 5 and p.complete
    assert len(p.trailers) == 1200
    assert work.bytes < 4 * (len(body) + len(wire))


@pytest.mark.parametrize("step", [1, 100, 100_000])
def test_head_limit_holds_for_any_reads(step: int) -> None:
    limits = Limits(max_head_bytes=1000)
    wire = b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 200
    p = ResponseParser(limits=limits)
    with pytest.raises(ProtocolError, match="response head too large"):
        for i in range(0, len(wire), step):
            p.feed(wire[i : i + step])
            assert p.head() is None
    # Within the limit it parses.
    ok = b"HTTP/1.1 204 No Content\r\n" + b"x: y\r\n" * 100 + b"\r\n"
    _, status, _ = parse(ok, list(range(0, len(ok), step)))
    assert status == 204


@pytest.mark.parametrize("step", [1, 50, 100_000])
def test_trailer_and_chunk_line_limits(step: int) -> None:
    start = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    cases = [
        (b"5;" + b"e" * 600, "chunk size line too long"),
        (b"0\r\n" + b"t: v\r\n" * 200, "trailer section too large"),
    ]
    for tail, message in cases:
        p = ResponseParser(limits=Limits(max_head_bytes=1000, max_chunk_line=500))
        p.feed(start)
        assert p.head() is not None
        with pytest.raises(ProtocolError, match=message):
            for i in range(0, len(tail), step):
                p.feed(tail[i : i + step])
                assert p.body() == b""


# -- a raw server that misbehaves on purpose ----------------------------------

Reply = Callable[[bytes], bytes]


class RawServer:
    """An asyncio server on its own thread; answers by request path from ``routes``.

    A route's reply may end in ``b"<close>"`` to close the connection after
    writing, or ``b"<hang>"`` to stay silent. ``connections`` counts accepted
    connections; ``bodies`` holds every request body received and ``chunks``
    the (size, arrival time) of each chunk of every chunked one.
    """

    def __init__(self, routes: dict[str, bytes | Reply]) -> None:
        self.routes = routes
        self.connections = 0
        self.bodies: list[bytes] = []
        self.chunks: list[list[tuple[int, float]]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                fields = dict(
                    (k.strip().lower(), v.strip())
                    for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                )
                if fields.get("transfer-encoding") == "chunked":
                    body = b""
                    log: list[tuple[int, float]] = []
                    self.chunks.append(log)
                    while True:
                        size = int((await reader.readline()).split(b";")[0], 16)
                        data = await reader.readexactly(size + 2)
                        if not size:
                            break
                        log.append((size, time.monotonic()))
                        body += data[:-2]
                else:
                    body = await reader.readexactly(
                        int(fields.get("content-length", "0"))
                    )
                self.bodies.append(body)
                reply = self.routes[path]
                out = reply(body) if callable(reply) else reply
                if out.endswith(b"<hang>"):
                    writer.write(out[:-6])
                    await reader.read()  # until the client goes away
                    return
                if out.endswith(b"<close>"):
                    writer.write(out[:-7])
                    await writer.drain()
                    return
                writer.write(out)
                await writer.drain()
        finally:
            writer.close()

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            me = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not me:
                    task.cancel()
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


ROUTES: dict[str, bytes | Reply] = {
    "/echo": lambda body: ok(body),
    "/close": lambda body: ok(body, b"Connection: close\r\n"),
    "/close-delimited": b"HTTP/1.1 200 OK\r\n\r\nuntil the end<close>",
    "/continue": lambda body: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(body),
    "/chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-checksum: 5\r\n\r\n"
    ),
    "/truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc<close>",
    "/truncated-chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab<close>"
    ),
    "/garbage": b"SPDY/9 700 WHAT\r\n\r\n<close>",
    "/nothing": b"<close>",
    "/hang": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab<hang>",
    "/then-close": lambda body: ok(body) + b"<close>",
    "/big-head": ok(b"x", b"x-pad: " + b"v" * 300 + b"\r\n"),
}


@pytest.fixture(scope="module")
def raw() -> Iterator[RawServer]:
    srv = RawServer(ROUTES)
    yield srv
    srv.stop()


def req(
    url: str, body: bytes | None = b"", timeout: float | None = None
) -> HTTPRequest:
    return HTTPRequest(
        "POST", url, [("content-type", "application/proto")], body, timeout
    )


async def aget(
    t: AsyncHTTP1Transport,
    url: str,
    body: bytes = b"",
    stream: AsyncIterator[bytes] | None = None,
) -> tuple[int, bytes, Any]:
    resp = await t.send(req(url, None if stream else body), stream)
    parts = []
    try:
        while chunk := await resp.read():
            parts.append(chunk)
    finally:
        await resp.aclose()
    return resp.status, b"".join(parts), resp.trailers


def sget(
    t: SyncHTTP1Transport,
    url: str,
    body: bytes = b"",
    stream: Iterator[bytes] | None = None,
    timeout: float | None = None,
) -> tuple[int, bytes, Any]:
    resp = t.send(req(url, None if stream else body, timeout), stream)
    parts = []
    try:
        while chunk := resp.read():
            parts.append(chunk)
    finally:
        resp.close()
    return resp.status, b"".join(parts), resp.trailers


async def test_async_reuse_and_close(raw: RawServer) -> None:
    t = AsyncHTTP1Transport()
    before = raw.connections
    for i in range(5):
        assert (await aget(t, raw.url + "/echo", b"%d" % i))[:2] == (200, b"%d" % i)
    assert raw.connections == before + 1
    # Connection: close, a close-delimited body, and a server that closes after
    # a keep-alive response: the call after each needs a new connection
    # (retried transparently when the server closed an idle one).
    for path in ("/close", "/close-delimited", "/then-close"):
        n = raw.connections
        await aget(t, raw.url + path, b"x")
        assert (await aget(t, raw.url + "/echo", b"y"))[1] == b"y"
        assert raw.connections == n + 1
    status, body, trailers = await aget(t, raw.url + "/chunked")
    assert (status, body, trailers["x-checksum"]) == (200, b"abcde", "5")
    assert (await aget(t, raw.url + "/continue", b"c"))[1] == b"c"
    await t.aclose()


async def test_async_limits_are_the_transports(raw: RawServer) -> None:
    small = AsyncHTTP1Transport(limits=Limits(max_head_bytes=200))
    try:
        with pytest.raises(ConnectError) as info:
            await aget(small, raw.url + "/big-head")
        assert info.value.code is Code.UNAVAILABLE
        assert info.value.message == "response head too large"
    finally:
        await small.aclose()
    default = AsyncHTTP1Transport()
    assert (await aget(default, raw.url + "/big-head"))[1] == b"x"
    await default.aclose()


def test_sync_limits_are_the_transports(raw: RawServer) -> None:
    small = SyncHTTP1Transport(limits=Limits(max_head_bytes=200))
    with pytest.raises(ConnectError) as info:
        sget(small, raw.url + "/big-head")
    assert info.value.code is Code.UNAVAILABLE
    assert info.value.message == "response head too large"
    small.close()
    default = SyncHTTP1Transport()
    assert sget(default, raw.url + "/big-head")[1] == b"x"
    default.close()


def test_sync_reuse_and_close(raw: RawServer) -> None:
    t = SyncHTTP1Transport()
    before = raw.connections
    for i in range(5):
        assert sget(t, raw.url + "/echo", b"%d" % i)[:2] == (200, b"%d" % i)
    assert raw.connections == before + 1
    for path in ("/close", "/close-delimited", "/then-close"):
        n = raw.connections
        sget(t, raw.url + path, b"x")
        assert sget(t, raw.url + "/echo", b"y")[1] == b"y"
        assert raw.connections == n + 1
    status, body, trailers = sget(t, raw.url + "/chunked")
    assert (status, body, trailers["x-checksum"]) == (200, b"abcde", "5")
    assert sget(t, raw.url + "/continue", b"c")[1] == b"c"
    t.close()


@pytest.mark.parametrize(
    "path", ["/truncated", "/truncated-chunked", "/garbage", "/nothing"]
)
async def test_async_broken_responses(raw: RawServer, path: str) -> None:
    t = AsyncHTTP1Transport()
    with pytest.raises(ConnectError) as info:
        await aget(t, raw.url + path)
    assert info.value.code is Code.UNAVAILABLE
    # The transport is still usable.
    assert (await aget(t, raw.url + "/echo", b"ok"))[1] == b"ok"
    await t.aclose()


@pytest.mark.parametrize(
    "path", ["/truncated", "/truncated-chunked", "/garbage", "/nothing"]
)
def test_sync_broken_responses(raw: RawServer, path: str) -> None:
    t = SyncHTTP1Transport()
    with pytest.raises(ConnectError) as info:
        sget(t, raw.url + path)
    assert info.value.code is Code.UNAVAILABLE
    assert sget(t, raw.url + "/echo", b"ok")[1] == b"ok"
    t.close()


async def test_async_chunked_upload(raw: RawServer) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(50):
            yield b"%03d" % i
        yield b""  # empty pieces are skipped, not sent as the last chunk

    t = AsyncHTTP1Transport()
    _, body, _ = await aget(t, raw.url + "/echo", stream=parts())
    assert body == b"".join(b"%03d" % i for i in range(50))
    # The connection is reused after a streamed upload too.
    n = raw.connections
    assert (await aget(t, raw.url + "/echo", b"z"))[1] == b"z"
    assert raw.connections == n
    await t.aclose()


async def test_async_upload_pieces_share_chunks(raw: RawServer) -> None:
    """Pieces ready together go out as chunks of up to 64 KiB, none held back."""
    piece = 10 * 1024

    async def burst() -> AsyncIterator[bytes]:
        for i in range(20):
            yield bytes([i]) * piece

    t = AsyncHTTP1Transport()
    _, body, _ = await aget(t, raw.url + "/echo", stream=burst())
    assert body == b"".join(bytes([i]) * piece for i in range(20))
    sizes = [n for n, _ in raw.chunks[-1]]
    # The first piece goes with the head; the other 19 share 3 chunks of 7, 7, 5.
    assert sizes == [piece, 7 * piece, 7 * piece, 5 * piece]

    async def paused() -> AsyncIterator[bytes]:
        yield b"a" * piece
        yield b"b" * piece
        await asyncio.sleep(1)  # what came before is sent meanwhile
        yield b"c" * piece

    _, body, _ = await aget(t, raw.url + "/echo", stream=paused())
    assert body == b"a" * piece + b"b" * piece + b"c" * piece
    log = raw.chunks[-1]
    assert [n for n, _ in log] == [piece, piece, piece]
    assert log[1][1] - log[0][1] < 0.5
    assert log[2][1] - log[1][1] > 0.5
    await t.aclose()


def test_sync_chunked_upload(raw: RawServer) -> None:
    t = SyncHTTP1Transport()
    parts = (b"%03d" % i for i in range(50))
    _, body, _ = sget(t, raw.url + "/echo", stream=parts)
    assert body == b"".join(b"%03d" % i for i in range(50))
    t.close()


async def test_async_unfinished_response_is_not_reused(raw: RawServer) -> None:
    t = AsyncHTTP1Transport()
    resp = await t.send(req(raw.url + "/hang"), None)
    assert await resp.read() == b"ab"
    await resp.aclose()  # gives up mid-body: the connection goes
    n = raw.connections
    assert (await aget(t, raw.url + "/echo", b"q"))[1] == b"q"
    assert raw.connections == n + 1
    await t.aclose()


def test_sync_timeout_and_close_from_another_thread(raw: RawServer) -> None:
    t = SyncHTTP1Transport()
    with pytest.raises(ConnectError) as info:
        sget(t, raw.url + "/hang", timeout=0.2)
    assert info.value.code is Code.DEADLINE_EXCEEDED
    resp = t.send(req(raw.url + "/hang"), None)
    assert resp.read() == b"ab"
    timer = threading.Timer(0.1, resp.close)
    timer.start()
    with pytest.raises(ConnectError) as info:
        resp.read()
    assert info.value.code is Code.CANCELED
    timer.join()
    n = raw.connections
    assert sget(t, raw.url + "/echo", b"q")[1] == b"q"
    assert raw.connections == n + 1
    t.close()


async def test_async_task_cancel_closes(raw: RawServer) -> None:
    t = AsyncHTTP1Transport()
    task = asyncio.ensure_future(aget(t, raw.url + "/hang"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    n = raw.connections
    assert (await aget(t, raw.url + "/echo", b"q"))[1] == b"q"
    assert raw.connections == n + 1
    await t.aclose()


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    with pytest.raises(ConnectError) as info:
        await aget(AsyncHTTP1Transport(), url)
    assert info.value.code is Code.UNAVAILABLE
    with pytest.raises(ConnectError) as info:
        sget(SyncHTTP1Transport(), url)
    assert info.value.code is Code.UNAVAILABLE


async def test_bad_request_headers_are_internal(raw: RawServer) -> None:
    bad = HTTPRequest("POST", raw.url + "/echo", [("x-a", "1\r\nx: y")], b"", None)
    with pytest.raises(ConnectError) as info:
        await AsyncHTTP1Transport().send(bad, None)
    assert info.value.code is Code.INTERNAL
    with pytest.raises(ConnectError) as info:
        SyncHTTP1Transport().send(bad, None)
    assert info.value.code is Code.INTERNAL


# -- the choice of transport --------------------------------------------------


def test_default_transport_choice() -> None:
    def pick(url: str, **kw: Any) -> tuple[type, type]:
        cfg = build_config(url, **kw)
        return (
            type(async_transport_for(cfg, None)),
            type(sync_transport_for(cfg, None)),
        )

    assert pick("http://h") == (AsyncHTTP1Transport, SyncHTTP1Transport)
    assert pick("https://h", http_version="1.1") == (
        AsyncHTTP1Transport,
        SyncHTTP1Transport,
    )
    pyq = (PyqwestAsyncTransport, PyqwestSyncTransport)
    assert pick("https://h") == pyq  # ALPN
    h2 = (AsyncHTTP2Transport, PyqwestSyncTransport)
    assert pick("http://h", http_version="2") == h2
    assert pick("https://h", http_version="2") == h2
    assert pick("http://h", protocol="grpc") == h2
    assert pick("https://h", protocol="grpc") == h2
    assert pick("https://h", http_version="3") == pyq
    assert pick("http://h", protocol="grpc-web") == (
        AsyncHTTP1Transport,
        SyncHTTP1Transport,
    )


# -- real servers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def apps() -> Any:
    import server_apps

    return server_apps


@pytest.fixture(
    scope="module",
    params=[("uvicorn", "server_apps:asgi_app"), ("gunicorn", "server_apps:wsgi_app")],
    ids=["uvicorn", "gunicorn"],
)
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    name, app = request.param
    # Both servers are installed by scripts/setup.sh: one that does not start
    # fails the tests that need it.
    with run_server(name, app) as srv:
        yield srv.url


async def test_async_on_real_servers(apps: Any, server_url: str) -> None:
    pb = apps.pb
    t = AsyncHTTP1Transport()
    async with AsyncClient(server_url, transport=t) as c:
        for n in range(3):
            res = await c.call_unary_detailed(apps.PING, pb.PingRequest(number=n))
            assert res.message.number == n
        stream = c.call_server_stream(apps.COUNT_UP, pb.CountUpRequest(number=50))
        assert [m.number async for m in stream] == list(range(1, 51))

        async def numbers() -> AsyncIterator[Any]:
            for n in range(100):
                yield pb.SumRequest(number=n)

        total = await c.call_client_stream(apps.SUM, numbers())
        assert (total.sum, total.count) == (4950, 100)
        echo = c.call_bidi_stream(apps.ECHO, [pb.EchoRequest(text=t) for t in "abc"])
        assert [m.text async for m in echo] == ["a", "b", "c"]
        with pytest.raises(ConnectError) as info:
            await c.call_unary(apps.FAIL, pb.FailRequest(code=5, message="gone"))
        assert info.value.code is Code.NOT_FOUND
    # Every call above went over one keep-alive connection (closed now).
    assert not t._idle


def test_sync_on_real_servers(apps: Any, server_url: str) -> None:
    pb = apps.pb
    t = SyncHTTP1Transport()
    with SyncClient(server_url, transport=t, use_get=True, codec="json") as c:
        for n in range(3):
            assert c.call_unary(apps.PING, pb.PingRequest(number=n)).number == n
        stream = c.call_server_stream(apps.COUNT_UP, pb.CountUpRequest(number=50))
        assert [m.number for m in stream] == list(range(1, 51))
        total = c.call_client_stream(
            apps.SUM, (pb.SumRequest(number=n) for n in range(100))
        )
        assert (total.sum, total.count) == (4950, 100)
        assert len(t._idle) == 1  # one idle connection, kept for reuse


@pytest.fixture(scope="module")
def tls_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerEnv]:
    with peer_env(tmp_path_factory.mktemp("h1tls")) as env:
        yield env


async def test_tls_with_client_certificate(tls_peer: PeerEnv) -> None:
    pb, specs, url, certs = (
        tls_peer.pb,
        tls_peer.specs,
        tls_peer.urls["tls"],
        tls_peer.certs,
    )
    opts = tls_peer.tls_options()
    async with AsyncClient(url, http_version="1.1", **opts) as c:
        assert isinstance(c._transport, AsyncHTTP1Transport)
        res = await c.call_unary_detailed(specs.post, pb.Req(text="secure"))
        assert res.message.text == "secure"
        got = [
            m.index
            async for m in c.call_server_stream(specs.server_stream, pb.Req(count=3))
        ]
        assert got == [0, 1, 2]
    with SyncClient(url, http_version="1.1", **opts) as s:
        assert isinstance(s._transport, SyncHTTP1Transport)
        assert s.call_unary(specs.post, pb.Req(text="s")).text == "s"
    # Without a client certificate, or without trusting the CA: unavailable.
    bad: list[dict[str, Any]] = [{"tls_ca_cert": certs["ca"]}, {}]
    for kw in bad:
        async with AsyncClient(url, http_version="1.1", **kw) as c:
            with pytest.raises(ConnectError) as info:
                await c.call_unary(specs.post, pb.Req())
            assert info.value.code is Code.UNAVAILABLE
        with (
            SyncClient(url, http_version="1.1", **kw) as s,
            pytest.raises(ConnectError) as info,
        ):
            s.call_unary(specs.post, pb.Req())
        assert info.value.code is Code.UNAVAILABLE


def test_lazy_ssl_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built at the first use only, once, offering its ALPN name; a failed
    build is tried again."""
    built: list[str] = []
    real = net.ssl_context

    def counting(config: Any, alpn: str) -> Any:
        built.append(alpn)
        if len(built) == 1:
            raise ValueError("first build fails")
        return real(config, alpn)

    monkeypatch.setattr(net, "ssl_context", counting)
    lazy = net.LazySSLContext(build_config("https://h"), "h2")
    assert built == []
    with pytest.raises(ValueError, match="first build fails"):
        lazy.get()
    ctx = lazy.get()
    assert lazy.get() is ctx
    assert built == ["h2", "h2"]
