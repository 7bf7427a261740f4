"""Connect through nginx, an HTTP/1.1 reverse proxy (tests/nginx/nginx.conf.template).

Unary POST passes through; a GET to a NO_SIDE_EFFECTS method is cached by the
proxy because the server said so (Cache-Control), and the second call never
reaches the handler; a server stream arrives message by message; errors keep
their HTTP status and JSON body.
"""

from __future__ import annotations

import http.client
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from example_env import (
    GREET,
    GREET_STREAM,
    TESTS,
    generate_example,
    running,
    serve,
    tool,
)
from server_harness import frames_by_read
from servers import free_port

TEMPLATE = TESTS / "nginx" / "nginx.conf.template"


def start_nginx(
    upstream: str, tmp: Path, template: Path = TEMPLATE
) -> tuple[list[str], int, Path]:
    nginx = tool("nginx", Path("/usr/sbin/nginx"))
    port = free_port()
    conf = (
        template.read_text()
        .replace("@TMP@", str(tmp))
        .replace("@PORT@", str(port))
        .replace("@UPSTREAM@", upstream)
    )
    path = tmp / "nginx.conf"
    path.write_text(conf)
    cmd = [nginx, "-p", str(tmp), "-c", str(path), "-e", str(tmp / "error.log")]
    return cmd, port, tmp / "nginx.out"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(nginx port, server port): nginx in front of the example on uvicorn."""
    gen = generate_example(tmp_path_factory.mktemp("gen"))
    tmp = tmp_path_factory.mktemp("nginx")
    with serve(gen, tmp) as base:
        upstream = base.removeprefix("http://")
        cmd, port, log = start_nginx(upstream, tmp)
        with running(cmd, port, log):
            yield port, int(upstream.rsplit(":", 1)[1])


def request(
    port: int, method: str, path: str, body: bytes | None = None, ctype: str = ""
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def get_path(name: str) -> str:
    message = quote(json.dumps({"name": name}, separators=(",", ":")), safe="")
    return f"{GREET}?connect=v1&encoding=json&message={message}"


def test_unary_post(proxy: tuple[int, int]) -> None:
    status, headers, body = request(
        proxy[0], "POST", GREET, b'{"name":"nginx"}', "application/json"
    )
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["greeting"] == "Hello, nginx!"
    assert headers["greet-version"] == "1"


def test_get_is_cached_by_the_proxy(proxy: tuple[int, int]) -> None:
    port, upstream = proxy
    path = get_path("cache me")
    status, first, body1 = request(port, "GET", path)
    assert status == 200, body1
    assert first["x-cache-status"] == "MISS"
    assert first["cache-control"] == "public, max-age=60"
    status, second, body2 = request(port, "GET", path)
    assert status == 200
    assert second["x-cache-status"] == "HIT"
    # Same answer, timestamp and all, and the handler did not run again.
    assert body2 == body1
    assert second["x-greet-calls"] == first["x-greet-calls"]
    # The next call that reaches the server is the next one it counts.
    _, direct, _ = request(upstream, "GET", get_path("direct"))
    assert int(direct["x-greet-calls"]) == int(first["x-greet-calls"]) + 1
    # POSTs are never served from the cache.
    _, posted, _ = request(
        port, "POST", GREET, b'{"name":"cache me"}', "application/json"
    )
    assert posted.get("x-cache-status", "") != "HIT"
    assert int(posted["x-greet-calls"]) == int(first["x-greet-calls"]) + 2


def test_stream_arrives_message_by_message(proxy: tuple[int, int]) -> None:
    # The handler waits 400 ms between messages: through a proxy that does
    # not buffer, the first message is read before the end of the stream is.
    payload = json.dumps({"name": "stream", "count": 3, "interval_ms": 400}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", proxy[0], timeout=10)
    try:
        conn.request(
            "POST",
            GREET_STREAM,
            body=b"\0" + struct.pack(">I", len(payload)) + payload,
            headers={"Content-Type": "application/connect+json"},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type") == "application/connect+json"
        frames = frames_by_read(iter(resp.read1, b""))
    finally:
        conn.close()
    messages = [json.loads(d)["greeting"] for _, f, d in frames if f == 0]
    assert messages == ["Hello, stream #1!", "Hello, stream #2!", "Hello, stream #3!"]
    assert frames[-1][1] == 2 and json.loads(frames[-1][2]) == {}
    assert frames[0][0] < frames[-1][0], frames


def test_errors_keep_status_and_body(proxy: tuple[int, int]) -> None:
    status, headers, body = request(
        proxy[0], "POST", GREET, b'{"name":""}', "application/json"
    )
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "code": "invalid_argument",
        "message": "name must not be empty",
    }
    # The same over GET: an error is not cacheable, so it is never served stale.
    for _ in range(2):
        status, headers, body = request(proxy[0], "GET", get_path(""))
        assert status == 400
        assert json.loads(body)["code"] == "invalid_argument"
        assert headers.get("x-cache-status") != "HIT"


def test_server_marks_streams_unbuffered(proxy: tuple[int, int]) -> None:
    """What nginx acts on: the server's own header, which nginx does not forward."""
    payload = b'{"name":"x","count":1}'
    frame = b"\0" + struct.pack(">I", len(payload)) + payload
    ctype = "application/connect+json"
    _, direct, _ = request(proxy[1], "POST", GREET_STREAM, frame, ctype)
    assert direct["x-accel-buffering"] == "no"
    _, proxied, _ = request(proxy[0], "POST", GREET_STREAM, frame, ctype)
    assert "x-accel-buffering" not in proxied
