"""The floor: raw ASGI and WSGI apps that speak just enough Connect to answer.

No RPC framework at all. Unary ``Echo`` sends the request body back (an
``EchoRequest`` without ``response_size`` has the bytes of the matching
``EchoResponse``, in proto and JSON alike); ``Download`` repeats one prebuilt
frame, in writes of about 64 KiB; ``Upload`` drains the body; ``PingPong``
(ASGI) sends each frame back as it arrives. Whatever a server costs beyond
this is the RPC layer's.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

pb: Any = importlib.import_module("connectbench.v1.bench_pb2")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
StartResponse = Callable[..., Any]

PREFIX = "/connectbench.v1.BenchService/"
END = b"\x02\x00\x00\x00\x02{}"
_FRAMES: dict[int, bytes] = {}
JOIN = 64 * 1024

# As the RPC apps do by default (ServerOptions.prime_allocator): free one
# 4 MiB block up front so glibc keeps the servers' large read buffers for
# reuse instead of faulting them in anew. The floor must not pay a cost the
# apps are spared.
bytearray(4 << 20)


def frame(data: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(data)) + data


def download_frame(size: int) -> bytes:
    """The one framed EchoResponse a Download of this payload size repeats."""
    found = _FRAMES.get(size)
    if found is None:
        msg = pb.EchoResponse(payload=pb.Payload(data=b"x" * size))
        found = _FRAMES[size] = frame(msg.SerializeToString())
    return found


def stream_request(body: bytes) -> tuple[int, bytes]:
    """Count and frame of a Download request body (one framed StreamRequest)."""
    req = pb.StreamRequest.FromString(body[5:])
    return req.count, download_frame(req.size)


def sink_reply(count: int, size: int) -> bytes:
    return frame(pb.SinkResponse(count=count, bytes=size).SerializeToString()) + END


def content_type(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    for k, v in headers:
        if k == b"content-type":
            return v
    return b"application/proto"


async def _body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        event = await receive()
        chunks.append(event.get("body", b""))
        more = event.get("more_body", False)
    return b"".join(chunks)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The bare ASGI app."""
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            kind = event["type"].replace("startup", "startup.complete")
            kind = kind.replace("shutdown", "shutdown.complete")
            await send({"type": kind})
            if event["type"] == "lifespan.shutdown":
                return
    method = scope["path"].removeprefix(PREFIX)
    ctype = content_type(scope["headers"])
    start = {"type": "http.response.start", "status": 200}
    if method == "Echo":
        body = await _body(receive)
        start["headers"] = [(b"content-type", ctype)]
        await send(start)
        await send({"type": "http.response.body", "body": body})
        return
    start["headers"] = [(b"content-type", b"application/connect+proto")]
    if method == "Download":
        count, one = stream_request(await _body(receive))
        await send(start)
        for piece in _repeat(one, count):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif method == "Upload":
        size = 0
        more = True
        while more:
            event = await receive()
            size += len(event.get("body", b""))
            more = event.get("more_body", False)
        await send(start)
        await send({"type": "http.response.body", "body": sink_reply(0, size)})
    else:  # PingPong: send every complete frame back as soon as it is in
        await send(start)
        buf = b""
        more = True
        while more:
            event = await receive()
            buf += event.get("body", b"")
            more = event.get("more_body", False)
            while len(buf) >= 5:
                n = 5 + int.from_bytes(buf[1:5], "big")
                if len(buf) < n:
                    break
                if buf[0] & 2:
                    more = False
                    break
                await send(
                    {"type": "http.response.body", "body": buf[:n], "more_body": True}
                )
                buf = buf[n:]
        await send({"type": "http.response.body", "body": END})


def wsgi_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The bare WSGI app (PingPong is half-duplex here, as WSGI is)."""
    method = environ["PATH_INFO"].removeprefix(PREFIX)
    stream = environ["wsgi.input"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if method == "Echo":
        body = stream.read(length)
        ctype = environ.get("CONTENT_TYPE", "application/proto")
        start_response(
            "200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        )
        return [body]
    headers = [("Content-Type", "application/connect+proto")]
    if method == "Download":
        count, one = stream_request(stream.read(length))
        start_response("200 OK", headers)
        return _repeat(one, count)
    size = 0
    chunks = []
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if method != "Upload":
            chunks.append(chunk)
    start_response("200 OK", headers)
    if method == "Upload":
        return [sink_reply(0, size)]
    return [*chunks, END]


def _repeat(one: bytes, count: int) -> Iterator[bytes]:
    """``count`` copies of ``one``, then the end, in writes of about 64 KiB.

    As few writes as the response allows, the same size the RPC apps' ASGI
    shell joins messages to (a frame is added until 64 KiB is reached).
    """
    per = -(-JOIN // len(one))
    block = one * per
    for _ in range(count // per):
        yield block
    if count % per:
        yield one * (count % per)
    yield END
