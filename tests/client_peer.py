"""A Connect server written by hand as a raw ASGI app: the client tests' peer.

It speaks the protocol with the runtime's wire helpers only (no server code),
so the client is tested against an independent implementation, and it can
misbehave on request. Run it with uvicorn or hypercorn: ``client_peer:app``;
``clienttest.v1.client_test_pb2`` must be importable (tests compile it).

Controls, besides the request message's fields:

- ``x-echo-*`` request headers come back as response headers,
  ``x-trail-*`` ones as trailers;
- ``x-compress: 1`` compresses the response with the negotiated algorithm;
- ``x-misbehave``: ``html502`` (a proxy's HTML error page), ``text200``
  (a 200 with a foreign content type), ``other-codec`` (a response in the other
  codec), ``no-end`` (a stream without its end message), ``bad-encoding``
  (a response compressed with an algorithm nobody asked for);
- ``GET /_events/<test_id>`` returns what the peer recorded for a call, as JSON
  (``"disconnected"`` when the client went away mid-call).
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import CODECS, Codec
from protoc_gen_connect_python.runtime.compression import COMPRESSIONS, negotiate
from protoc_gen_connect_python.runtime.envelope import (
    FLAG_COMPRESSED,
    FLAG_END_STREAM,
    EnvelopeDecoder,
    decode_payload,
    encode_envelope,
)
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers
from protoc_gen_connect_python.runtime.protocol import connect

pb: Any = importlib.import_module("clienttest.v1.client_test_pb2")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVICE = "/clienttest.v1.TestService/"
EVENTS: dict[str, list[str]] = {}


def record(test_id: str, event: str) -> None:
    if test_id:
        EVENTS.setdefault(test_id, []).append(event)


class Disconnected(Exception):
    pass


class Call:
    """One request: its headers, a body reader and what to send back."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = Headers.from_raw(scope["headers"])
        self.more_body = scope["method"] != "GET"
        self.disconnected = False
        self.test_id = ""
        self._waiter: asyncio.Future[Message] | None = None
        self._stash: list[Message] = []

    async def _recv(self) -> Message:
        if self._stash:
            return self._stash.pop(0)
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            return await waiter
        return await self.receive()

    async def body_chunk(self) -> bytes:
        if not self.more_body:
            return b""
        msg = await self._recv()
        if msg["type"] == "http.disconnect":
            self.disconnected = True
            raise Disconnected
        self.more_body = msg.get("more_body", False)
        return bytes(msg.get("body", b""))

    async def whole_body(self) -> bytes:
        parts = []
        while self.more_body:
            parts.append(await self.body_chunk())
        return b"".join(parts)

    async def sleep(self, seconds: float) -> None:
        """Sleep, but notice a client disconnect meanwhile (and raise Disconnected)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            if self._waiter is None:
                self._waiter = asyncio.ensure_future(self.receive())
            done, _ = await asyncio.wait({self._waiter}, timeout=left)
            if not done:
                return
            msg = self._waiter.result()
            self._waiter = None
            if msg["type"] == "http.disconnect":
                self.disconnected = True
                raise Disconnected
            self._stash.append(msg)

    def echo_headers(self) -> tuple[Headers, Headers]:
        head = Headers()
        trailers = Headers()
        for k, v in self.headers.multi_items():
            if k.startswith("x-echo-"):
                head.add(k, v)
            elif k.startswith("x-trail-"):
                trailers.add(k, v)
        for name in (connect.TIMEOUT_HEADER, "content-encoding", "user-agent"):
            if name in self.headers:
                head["x-seen-" + name] = self.headers[name]
        head["x-seen-method"] = self.scope["method"]
        head["x-seen-query"] = self.scope.get("query_string", b"").decode()
        return head, trailers

    async def start(self, status: int, headers: Headers) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers.to_raw(),
            }
        )

    async def body(self, data: bytes, more: bool = False) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})


def error_for(req: Any) -> ConnectError | None:
    if not req.error_code:
        return None
    code = Code.from_wire_name(req.error_code) or Code.UNKNOWN
    return ConnectError(
        code, req.error_message, details=[pb.Res(text="detail", index=7)]
    )


def reply(req: Any, index: int) -> Any:
    return pb.Res(text=req.text, index=index, padding=b"x" * req.size)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    call = Call(scope, receive, send)
    path: str = scope["path"]
    try:
        if path.startswith("/_events/"):
            body = json.dumps(EVENTS.get(path[len("/_events/") :], [])).encode()
            await call.start(200, Headers({"content-type": "application/json"}))
            await call.body(body)
            return
        misbehave = call.headers.get("x-misbehave", "")
        if misbehave == "html502":
            await call.whole_body()
            await call.start(502, Headers({"content-type": "text/html"}))
            await call.body(b"<html><body><h1>502 Bad Gateway</h1></body></html>")
            return
        if misbehave == "text200":
            await call.whole_body()
            await call.start(200, Headers({"content-type": "text/plain"}))
            await call.body(b"hello")
            return
        name = path[len(SERVICE) :] if path.startswith(SERVICE) else ""
        if name in ("Unary", "Post"):
            await unary(call, misbehave)
        elif name in ("ClientStream", "ServerStream", "Bidi"):
            await stream(call, name, misbehave)
        else:
            await call.start(404, Headers({"content-type": "text/plain"}))
            await call.body(b"not found")
    except Disconnected:
        record(call.test_id, "disconnected")


async def unary(call: Call, misbehave: str) -> None:
    h = call.headers
    if call.scope["method"] == "GET":
        get = connect.parse_get_query(call.scope["query_string"].decode())
        codec_name, encoding, data = get.codec, get.compression, get.message
    else:
        ctype = h.get("content-type", "")
        codec_name = ctype[len(connect.UNARY_PREFIX) :]
        encoding = h.get(connect.UNARY_ENCODING)
        data = await call.whole_body()
    codec: Codec = CODECS[codec_name]
    if encoding and encoding != "identity":
        data = COMPRESSIONS[encoding].decompress(data, 0)
    req = codec.decode(data, pb.Req)
    call.test_id = req.test_id
    head, trailers = call.echo_headers()
    if req.delay_ms:
        await call.sleep(req.delay_ms / 1000)
    err = error_for(req)
    if err is not None:
        err.metadata = trailers
        head["content-type"] = connect.ERROR_CONTENT_TYPE
        connect.add_unary_trailers(head, trailers)
        await call.start(err.code.http_status, head)
        await call.body(connect.error_body(err))
        return
    if misbehave == "other-codec":
        codec = CODECS["json" if codec.name == "proto" else "proto"]
    out = codec.encode(reply(req, 0))
    head["content-type"] = connect.unary_content_type(codec.name)
    if misbehave == "bad-encoding":
        head[connect.UNARY_ENCODING] = "snappy"
    elif h.get("x-compress") == "1":
        algo = negotiate(h.get(connect.UNARY_ACCEPT_ENCODING), COMPRESSIONS)
        if algo:
            out = COMPRESSIONS[algo].compress(out)
            head[connect.UNARY_ENCODING] = algo
    connect.add_unary_trailers(head, trailers)
    await call.start(200, head)
    await call.body(out)


async def stream(call: Call, name: str, misbehave: str) -> None:
    h = call.headers
    ctype = h.get("content-type", "")
    codec: Codec = CODECS[ctype[len(connect.STREAM_PREFIX) :]]
    encoding = h.get(connect.STREAM_ENCODING)
    req_comp = COMPRESSIONS.get(encoding) if encoding else None
    head, trailers = call.echo_headers()
    head["content-type"] = ctype
    res_comp = None
    if misbehave == "bad-encoding":
        head[connect.STREAM_ENCODING] = "snappy"
    elif h.get("x-compress") == "1":
        algo = negotiate(h.get(connect.STREAM_ACCEPT_ENCODING), COMPRESSIONS)
        if algo:
            res_comp = COMPRESSIONS[algo]
            head[connect.STREAM_ENCODING] = algo
    if misbehave == "other-codec":
        other = "json" if codec.name == "proto" else "proto"
        head["content-type"] = connect.stream_content_type(other)
    decoder = EnvelopeDecoder()
    started = False

    async def start() -> None:
        nonlocal started
        if not started:
            started = True
            await call.start(200, head)

    def frame(msg: Any) -> bytes:
        data = codec.encode(msg)
        if res_comp is not None:
            return encode_envelope(FLAG_COMPRESSED, res_comp.compress(data))
        return encode_envelope(0, data)

    async def requests() -> Any:
        while call.more_body:
            for flags, payload in decoder.feed(await call.body_chunk()):
                data = decode_payload(flags, payload, req_comp, 0)
                yield codec.decode(data, pb.Req)

    err: ConnectError | None = None
    count = 0
    texts = []
    async for req in requests():
        call.test_id = call.test_id or req.test_id
        count += 1
        texts.append(req.text)
        err = err or error_for(req)
        if name == "ClientStream" or err is not None:
            continue
        await start()
        for i in range(max(req.count, 1)):
            if req.delay_ms:
                await call.sleep(req.delay_ms / 1000)
            await call.body(frame(reply(req, i)), more=True)
    await start()
    if name == "ClientStream" and err is None:
        await call.body(frame(pb.Res(text=",".join(texts), index=count)), more=True)
    if misbehave == "no-end":
        await call.body(b"")
        return
    end = connect.end_stream_payload(err, trailers)
    await call.body(encode_envelope(FLAG_END_STREAM, end))
