"""The apps on real servers over loopback, driven by pyqwest and curl.

uvicorn serves ASGI over HTTP/1.1, hypercorn over HTTP/2 (h2c prior knowledge),
gunicorn serves WSGI; Starlette and Flask host the apps under ``/api`` (and the
strict variants under ``/strict``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pyqwest import (
    Client,
    FullResponse,
    HTTPTransport,
    HTTPVersion,
    SyncClient,
    SyncHTTPTransport,
)
from server_apps import pb
from server_harness import envelope, frames_by_read, split_envelopes
from servers import Server, start_server

from protoc_gen_connect_python.runtime import Code, ConnectError
from protoc_gen_connect_python.runtime.compression import COMPRESSIONS
from protoc_gen_connect_python.runtime.protocol.connect import parse_end_stream

P = "/testing.v1.PingService/"
PROTO = {"content-type": "application/proto"}
STREAM = {"content-type": "application/connect+proto"}

MATRIX = [
    ("uvicorn", "server_apps:asgi_app"),
    ("hypercorn", "server_apps:asgi_app"),
    ("gunicorn", "server_apps:wsgi_app"),
]
MOUNTED = [
    ("uvicorn", "server_apps:starlette"),
    ("gunicorn", "server_apps:flask"),
]

_running: dict[tuple[str, str], Server] = {}


@pytest.fixture(scope="module", autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    for s in _running.values():
        s.stop()
    _running.clear()


def server_for(name: str, app: str) -> Server:
    key = (name, app)
    if key not in _running:
        _running[key] = start_server(name, app)
    return _running[key]


@pytest.fixture(params=MATRIX, ids=[m[0] for m in MATRIX])
def srv(request: pytest.FixtureRequest) -> Server:
    name, app = request.param
    return server_for(name, app)


@pytest.fixture(params=MOUNTED, ids=[m[0] for m in MOUNTED])
def mounted(request: pytest.FixtureRequest) -> Server:
    name, app = request.param
    return server_for(name, app)


_clients: dict[bool, SyncClient] = {}


def client(s: Server) -> SyncClient:
    """A raw HTTP client: HTTP/2 prior knowledge for h2c servers, no decompression."""
    if s.http2 not in _clients:
        _clients[s.http2] = SyncClient(
            SyncHTTPTransport(
                http_version=HTTPVersion.HTTP2 if s.http2 else HTTPVersion.HTTP1,
                enable_gzip=False,
                enable_brotli=False,
                enable_zstd=False,
            )
        )
    return _clients[s.http2]


def post(s: Server, path: str, headers: dict[str, str], body: Any) -> FullResponse:
    return client(s).post(s.url + path, headers, body)


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Run curl; returns status, headers (last value wins) and body."""
    out = subprocess.run(
        ["curl", "-s", "-i", "--max-time", "10", *args], capture_output=True, check=True
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def ping(text: str = "hi", **kw: Any) -> bytes:
    return bytes(pb.PingRequest(text=text, **kw).SerializeToString())


def end_of(body: bytes) -> tuple[list[bytes], ConnectError | None, Any]:
    frames = split_envelopes(body)
    assert frames and frames[-1][0] == 2, frames
    err, trailers = parse_end_stream(frames[-1][1])
    return [p for _, p in frames[:-1]], err, trailers


# -- the matrix ---------------------------------------------------------------------


def test_unary_proto(srv: Server) -> None:
    r = post(srv, P + "Ping", PROTO, ping("hello", number=3))
    assert r.status == 200
    assert pb.PingResponse.FromString(r.content) == pb.PingResponse(
        text="hello", number=3
    )
    assert r.headers["x-ping"] == "pong"
    assert r.headers["trailer-x-ping-trailer"] == "done"


def test_unary_json_and_get_with_curl(srv: Server) -> None:
    url = srv.url + P + "Ping"
    status, _, body = curl(
        "-H", "content-type: application/json", "-d", '{"text":"curl"}', url
    )
    assert status == 200 and json.loads(body) == {"text": "curl"}
    status, _, body = curl(
        "-G", url, "--data-urlencode", 'message={"text":"got"}', "-d", "encoding=json"
    )
    assert status == 200 and json.loads(body) == {"text": "got"}


def test_errors_with_curl(srv: Server) -> None:
    url = srv.url + P + "Fail"
    status, headers, body = curl(
        "-H", "content-type: application/json", "-d", '{"code":7,"message":"no"}', url
    )
    assert status == 403
    err = json.loads(body)
    assert (err["code"], err["message"]) == ("permission_denied", "no")
    assert err["details"][0]["type"] == "google.protobuf.StringValue"
    assert headers["x-error-meta"] == "yes"
    status, _, body = curl(
        "-H", "content-type: application/json", "-d", '{"code":0,"message":"pw"}', url
    )
    assert status == 500
    assert json.loads(body) == {"code": "unknown", "message": "internal error"}
    assert "secret: pw" in srv.output()


def test_http_level_rejections(srv: Server) -> None:
    assert post(srv, P + "Nope", PROTO, ping()).status == 404
    r = post(srv, P + "Ping", {"content-type": "text/plain"}, ping())
    assert r.status == 415 and "application/proto" in r.headers["accept-post"]
    r = client(srv).put(srv.url + P + "Ping", PROTO, ping())
    assert r.status == 405 and r.headers["allow"] == "GET, POST"
    r = client(srv).get(srv.url + P + "Fail")
    assert r.status == 405 and r.headers["allow"] == "POST"
    r = post(srv, P + "Unimplemented", PROTO, ping())
    assert r.status == 501 and json.loads(r.content)["code"] == "unimplemented"


@pytest.mark.parametrize("name", sorted(COMPRESSIONS))
def test_compression_both_ways(srv: Server, name: str) -> None:
    comp = COMPRESSIONS[name]
    big = ping("c" * 4000)
    r = post(
        srv,
        P + "Ping",
        {**PROTO, "content-encoding": name, "accept-encoding": name},
        comp.compress(big),
    )
    assert r.status == 200
    assert r.headers["content-encoding"] == name
    assert pb.PingResponse.FromString(comp.decompress(r.content, 0)).text == "c" * 4000


def test_curl_compressed(srv: Server) -> None:
    # curl decodes gzip, br and zstd itself when asked for --compressed.
    status, headers, body = curl(
        "--compressed", "-H", "content-type: application/json",
        "-d", json.dumps({"text": "k" * 3000}), srv.url + P + "Ping",
    )  # fmt: skip
    assert status == 200 and headers["content-encoding"] in COMPRESSIONS
    assert json.loads(body)["text"] == "k" * 3000


def test_read_limit(srv: Server) -> None:
    # The default limit is 4 MiB; the declared length is refused unread.
    r = post(srv, P + "Ping", PROTO, ping(payload=b"\0" * (4 * 1024 * 1024 + 10)))
    assert r.status == 429
    assert json.loads(r.content)["code"] == "resource_exhausted"
    bomb = gzip.compress(ping(payload=b"\0" * (5 * 1024 * 1024)))
    r = post(srv, P + "Ping", {**PROTO, "content-encoding": "gzip"}, bomb)
    assert r.status == 429


def test_deadline(srv: Server) -> None:
    # An async handler is cancelled at the deadline: one that would sleep for
    # two minutes gets its reply out while the client still waits (a server
    # that waited for the handler fails the client's one-minute timeout). A
    # sync handler cannot be cancelled, and gets a short sleep.
    sleep_ms = 600 if srv.name == "gunicorn" else 120_000
    r = client(srv).post(
        srv.url + P + "Ping",
        {**PROTO, "connect-timeout-ms": "100"},
        ping(sleep_ms=sleep_ms),
        timeout=60,
    )
    assert r.status == 504
    assert json.loads(r.content)["code"] == "deadline_exceeded"
    r = post(srv, P + "Ping", {**PROTO, "connect-timeout-ms": "soon"}, ping())
    assert r.status == 400


def test_interceptor_rejects(srv: Server) -> None:
    r = post(srv, P + "Ping", {**PROTO, "x-deny": "1"}, ping())
    assert r.status == 403
    assert json.loads(r.content)["message"] == "denied Ping"
    r = post(srv, P + "Ping", PROTO, ping())
    assert r.headers["x-intercepted"] == "unary"


def test_server_stream(srv: Server) -> None:
    req = envelope(pb.CountUpRequest(number=5).SerializeToString())
    r = post(srv, P + "CountUp", STREAM, req)
    assert r.status == 200
    assert r.headers["content-type"] == "application/connect+proto"
    msgs, err, trailers = end_of(r.content)
    assert [pb.CountUpResponse.FromString(m).number for m in msgs] == [1, 2, 3, 4, 5]
    assert err is None and trailers["x-count-trailer"] == "done"


def test_server_stream_is_incremental(srv: Server) -> None:
    # The handler waits before each message: a server that sent the stream
    # as it came delivers the first message in an earlier read than the end.
    req = envelope(pb.CountUpRequest(number=3, sleep_ms=300).SerializeToString())
    with client(srv).stream("POST", srv.url + P + "CountUp", STREAM, req) as r:
        frames = frames_by_read(r.content)
    assert [f for _, f, _ in frames] == [0, 0, 0, 2]
    assert frames[0][0] < frames[-1][0], frames


def test_stream_error_in_end_message(srv: Server) -> None:
    req = envelope(
        pb.CountUpRequest(number=1, fail_code=Code.DATA_LOSS).SerializeToString()
    )
    r = post(srv, P + "CountUp", STREAM, req)
    assert r.status == 200
    msgs, err, _ = end_of(r.content)
    assert len(msgs) == 1 and err is not None and err.code == Code.DATA_LOSS


def test_stream_deadline(srv: Server) -> None:
    req = envelope(pb.CountUpRequest(number=100, sleep_ms=20).SerializeToString())
    r = post(srv, P + "CountUp", {**STREAM, "connect-timeout-ms": "200"}, req)
    msgs, err, _ = end_of(r.content)
    assert 0 < len(msgs) < 100
    assert err is not None and err.code == Code.DEADLINE_EXCEEDED


def test_client_stream_streamed_body(srv: Server) -> None:
    def body() -> Iterator[bytes]:
        for i in range(1, 11):
            yield envelope(pb.SumRequest(number=i).SerializeToString())

    r = post(srv, P + "Sum", STREAM, body())
    msgs, err, _ = end_of(r.content)
    assert err is None and pb.SumResponse.FromString(msgs[0]) == pb.SumResponse(
        sum=55, count=10
    )


def test_bidi_half_duplex(srv: Server) -> None:
    texts = [f"m{i}" for i in range(20)]
    body = b"".join(envelope(pb.EchoRequest(text=t).SerializeToString()) for t in texts)
    r = post(srv, P + "Echo", {**STREAM, "connect-accept-encoding": "gzip"}, body)
    msgs, err, _ = end_of(r.content)
    assert err is None
    assert [pb.EchoResponse.FromString(m).text for m in msgs] == texts


def test_stream_compression(srv: Server) -> None:
    payload = pb.EchoRequest(text="z" * 5000).SerializeToString()
    body = envelope(gzip.compress(payload), flags=1)
    hdrs = {
        **STREAM,
        "connect-content-encoding": "gzip",
        "connect-accept-encoding": "gzip",
    }
    r = post(srv, P + "Echo", hdrs, body)
    assert r.headers["connect-content-encoding"] == "gzip"
    frames = split_envelopes(r.content)
    assert frames[0][0] == 1
    assert pb.EchoResponse.FromString(gzip.decompress(frames[0][1])).text == "z" * 5000


# -- HTTP/2 full duplex ---------------------------------------------------------------


def test_bidi_full_duplex_http2() -> None:
    s = server_for("hypercorn", "server_apps:asgi_app")

    async def run() -> list[str]:
        replies: asyncio.Queue[bytes] = asyncio.Queue()
        got: list[str] = []

        async def body() -> AsyncIterator[bytes]:
            for i in range(3):
                yield envelope(pb.EchoRequest(text=f"ping{i}").SerializeToString())
                # Send the next message only after the reply to this one
                # arrived: impossible unless both directions are open at once.
                got.append(pb.EchoResponse.FromString(await replies.get()).text)

        transport = HTTPTransport(http_version=HTTPVersion.HTTP2)
        c = Client(transport)
        buf = b""
        async with c.stream("POST", s.url + P + "Echo", STREAM, body()) as r:
            async for chunk in r.content:
                buf += bytes(chunk)
                while len(buf) >= 5:
                    n = int.from_bytes(buf[1:5], "big")
                    if len(buf) < 5 + n:
                        break
                    flags, payload, buf = buf[0], buf[5 : 5 + n], buf[5 + n :]
                    if flags & 2:
                        err, _ = parse_end_stream(payload)
                        assert err is None
                    else:
                        await replies.put(payload)
        return got

    got = asyncio.run(asyncio.wait_for(run(), 10))
    assert got == ["ping0", "ping1", "ping2"]


# -- mounted in Starlette / Flask ---------------------------------------------------


def test_mounted(mounted: Server) -> None:
    r = post(mounted, "/api" + P + "Ping", PROTO, ping("mounted"))
    assert r.status == 200
    assert pb.PingResponse.FromString(r.content).text == "mounted"
    assert client(mounted).get(mounted.url + "/hello").content == b"hello"
    req = envelope(pb.CountUpRequest(number=2).SerializeToString())
    msgs, err, _ = end_of(post(mounted, "/api" + P + "CountUp", STREAM, req).content)
    assert len(msgs) == 2 and err is None
    status, _, body = curl(
        "-G",
        mounted.url + "/api" + P + "Ping",
        "-d",
        "encoding=json",
        "-d",
        "message={}",
    )
    assert status == 200 and json.loads(body) == {}


def test_mounted_strict_limits(mounted: Server) -> None:
    url = "/strict" + P + "Ping"
    hdrs = {**PROTO, "connect-protocol-version": "1"}
    r = post(mounted, url, PROTO, ping())
    assert r.status == 400  # the header is required there
    r = post(mounted, url, hdrs, ping(payload=b"a" * 2000))
    assert r.status == 429  # over the 1000-byte read limit
    r = post(mounted, url, hdrs, ping(payload=b"a" * 900))
    assert r.status == 200


@pytest.mark.parametrize("name", ["pyvoy", "granian"])
def test_pyvoy_and_granian_smoke(name: str) -> None:
    # Both are installed by the setup script: one that does not start fails.
    s = server_for(name, "server_apps:asgi_app")
    r = post(s, P + "Ping", PROTO, ping(name))
    assert r.status == 200, (name, r.content)
    assert pb.PingResponse.FromString(r.content).text == name
    req = envelope(pb.CountUpRequest(number=2).SerializeToString())
    msgs, err, _ = end_of(post(s, P + "CountUp", STREAM, req).content)
    assert len(msgs) == 2 and err is None, name
