"""Drives ASGI and WSGI apps in-process, without a server, for fast server tests.

``call_asgi`` and ``call_wsgi`` take the same arguments and return a
``Result``; ``envelope``/``split_envelopes`` frame and unframe stream bodies.
"""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protoc_gen_connect_python.runtime import Headers


@dataclass
class Result:
    """A response as a test sees it."""

    status: int
    headers: Headers
    body: bytes
    trailers: Headers = field(default_factory=Headers)
    messages: list[dict[str, Any]] = field(default_factory=list)


def envelope(payload: bytes, flags: int = 0) -> bytes:
    """One 5-byte-framed message."""
    return struct.pack(">BI", flags, len(payload)) + payload


def split_envelopes(body: bytes) -> list[tuple[int, bytes]]:
    """Every (flags, payload) frame of a stream body."""
    out = []
    while body:
        flags, n = struct.unpack(">BI", body[:5])
        out.append((flags, body[5 : 5 + n]))
        body = body[5 + n :]
    return out


def frames_by_read(
    reads: Iterable[bytes | bytearray | memoryview],
) -> list[tuple[int, int, bytes]]:
    """(read index, flags, payload) of each frame in a stream body read piece by
    piece: the index of the read that completed it.

    Tells a stream sent as it was made (frames completed by different reads)
    from one held and sent whole, without timing anything.
    """
    out = []
    buf = b""
    for i, data in enumerate(reads):
        buf += bytes(data)
        while len(buf) >= 5:
            flags, n = struct.unpack(">BI", buf[:5])
            if len(buf) < 5 + n:
                break
            out.append((i, flags, buf[5 : 5 + n]))
            buf = buf[5 + n :]
    assert not buf, "the body ends inside a frame"
    return out


async def call_asgi_async(
    app: Any,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | Sequence[bytes] = b"",
    *,
    query: str = "",
    root_path: str = "",
    disconnect_after: float | None = None,
    extensions: dict[str, Any] | None = None,
    path_has_root: bool = True,
) -> Result:
    """Run one HTTP request through an ASGI app."""
    chunks = [body] if isinstance(body, bytes) else list(body)
    gone = asyncio.Event()
    if disconnect_after is not None:
        asyncio.get_running_loop().call_later(disconnect_after, gone.set)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if chunks:
            c = chunks.pop(0)
            return {"type": "http.request", "body": c, "more_body": bool(chunks)}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(msg: MutableMapping[str, Any]) -> None:
        sent.append(dict(msg))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path if path_has_root else path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
        "extensions": extensions or {},
    }
    await app(scope, receive, send)
    gone.set()
    status = 0
    hs = Headers()
    trailers = Headers()
    data = b""
    for m in sent:
        if m["type"] == "http.response.start":
            status = m["status"]
            hs = Headers.from_raw(m["headers"])
        elif m["type"] == "http.response.body":
            data += m.get("body", b"")
        elif m["type"] == "http.response.trailers":
            trailers = Headers.from_raw(m["headers"])
    return Result(status, hs, data, trailers, sent)


def call_asgi(app: Any, method: str, path: str, *args: Any, **kwargs: Any) -> Result:
    """``call_asgi_async`` in a fresh event loop."""
    return asyncio.run(call_asgi_async(app, method, path, *args, **kwargs))


def call_wsgi(
    app: Any,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | Sequence[bytes] = b"",
    *,
    query: str = "",
    root_path: str = "",
    chunked: bool = False,
) -> Result:
    """Run one HTTP request through a WSGI app (root_path becomes SCRIPT_NAME)."""
    data = body if isinstance(body, bytes) else b"".join(body)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": root_path,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "5555",
        "wsgi.input": io.BytesIO(data),
        "wsgi.url_scheme": "http",
        "wsgi.input_terminated": True,
    }
    if not chunked:
        environ["CONTENT_LENGTH"] = str(len(data))
    for k, v in headers:
        key = k.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = v
        elif key == "CONTENT_LENGTH":
            environ["CONTENT_LENGTH"] = v
        else:
            environ["HTTP_" + key] = v
    started: list[Any] = []

    def start_response(status: str, hs: list[tuple[str, str]], exc: Any = None) -> Any:
        started.append((status, hs))
        return lambda b: None

    it = app(environ, start_response)
    try:
        out = b"".join(it)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    status, hs = started[-1]
    return Result(int(status.split()[0]), Headers(hs), out)
