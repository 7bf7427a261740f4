"""Fuzz targets: every parser a peer can reach, each checked against its contract.

A target takes one ``bytes`` and raises AssertionError when the contract is
broken: a ConnectError with the wrong code, an exception of another kind, or
output larger than the limit allows. Anything else it returns is a pass.
``tests/test_fuzz_*.py`` drive the targets with hypothesis (inputs built to
look like the real thing, then cut and mutated); ``scripts/fuzz.py`` drives
the same targets for longer, with atheris (raw bytes, coverage-guided) where it
is installed. Raw bytes are read with :class:`Reader` so that both work.

Incremental parsers are also checked against themselves: input fed in pieces
(sizes from the input's first byte) must give what it gives fed whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    Code,
    ConnectError,
    Headers,
    WSGIApp,
)
from protoc_gen_connect_python.runtime.client import http1, http2
from protoc_gen_connect_python.runtime.client.config import Protocol as ProtocolName
from protoc_gen_connect_python.runtime.codec import JSON, PROTO, codec_for
from protoc_gen_connect_python.runtime.compression import COMPRESSIONS
from protoc_gen_connect_python.runtime.envelope import (
    FLAG_END_STREAM,
    EnvelopeDecoder,
    decode_payload,
)
from protoc_gen_connect_python.runtime.headers import (
    decode_binary_header,
    parse_connect_timeout,
    parse_grpc_timeout,
)
from protoc_gen_connect_python.runtime.protocol import connect as connect_wire
from protoc_gen_connect_python.runtime.protocol import grpc as grpc_wire

# -- the example budget ---------------------------------------------------------

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
"""Examples per hypothesis test: small in the suite, ``scripts/fuzz.py`` raises it."""

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The suite draws the same examples on every run, so that it passes or
    # fails the same way; a long run (FUZZ_EXAMPLES set) explores anew.
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""The settings every fuzz test uses."""

LIMIT = 4096
"""The read limit the targets give decoders: small, so that bombs are cheap."""


# -- reading structure out of raw bytes -------------------------------------------


class Reader:
    """Takes numbers and slices off the front of a byte string; never fails.

    Past the end every number is 0 and every slice empty, so that any input,
    including one from a coverage-guided fuzzer, is a valid request.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        """The next byte, or 0."""
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes, or fewer at the end."""
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def until(self, sep: bytes) -> bytes:
        """Bytes up to ``sep`` (dropped), or the rest."""
        i = self.data.find(sep, self.pos)
        if i == -1:
            return self.rest()
        out = self.data[self.pos : i]
        self.pos = i + len(sep)
        return out

    def rest(self) -> bytes:
        """Everything not taken yet."""
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


def pieces(seed: int, data: bytes) -> list[bytes]:
    """``data`` cut into pieces whose sizes cycle from ``seed`` (0: one piece)."""
    if not seed or not data:
        return [data]
    sizes = [seed % 7 + 1, seed % 13 + 1, seed % 97 + 1, 1]
    out = []
    pos = i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[pos : pos + n])
        pos += n
        i += 1
    return out


def expect_code(err: ConnectError, *codes: Code) -> None:
    """``err`` carries one of ``codes``."""
    assert err.code in codes, f"{err.code!r} not in {codes}: {err.message}"


# -- envelopes ----------------------------------------------------------------------


def _envelopes(chunks: list[bytes], limit: int) -> tuple[list[tuple[int, bytes]], Any]:
    dec = EnvelopeDecoder(limit)
    frames: list[tuple[int, bytes]] = []
    try:
        for c in chunks:
            for flags, payload in dec.feed_views(c):
                frames.append((flags, bytes(payload)))
        dec.close()
    except ConnectError as e:
        return frames, e.code
    return frames, None


def envelope_target(data: bytes) -> None:
    """The incremental envelope decoder: bounded frames, same under any cutting.

    A declared length over the limit is resource_exhausted; a partial frame
    at the end is invalid_argument.
    """
    r = Reader(data)
    seed = r.byte()
    limit = r.byte() * 16
    body = r.rest()
    whole, whole_err = _envelopes([body], limit)
    cut, cut_err = _envelopes(pieces(seed, body), limit)
    assert cut_err == whole_err
    if whole_err is None:
        assert cut == whole
    else:
        # Frames complete before the failing one may or may not have come
        # out first, depending on the cut; never different ones.
        assert cut[: len(whole)] == whole or whole[: len(cut)] == cut
    assert whole_err in (None, Code.RESOURCE_EXHAUSTED, Code.INVALID_ARGUMENT)
    for _, payload in whole:
        assert not limit or len(payload) <= limit
    if whole_err is None:
        assert sum(5 + len(p) for _, p in whole) == len(body)


# -- decompression ------------------------------------------------------------------

ALGORITHMS = sorted(COMPRESSIONS)
"""What this process can decompress: gzip, and br and zstd when installed."""


def decompress_target(data: bytes) -> None:
    """Each algorithm: at most ``limit`` bytes out, or invalid_argument or
    resource_exhausted; through an envelope flag too."""
    r = Reader(data)
    comp = COMPRESSIONS[ALGORITHMS[r.byte() % len(ALGORITHMS)]]
    limit = r.byte() * 64
    payload = r.rest()
    try:
        out = comp.decompress(payload, limit)
    except ConnectError as e:
        expect_code(e, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED)
    else:
        assert not limit or len(out) <= limit
    try:
        framed = decode_payload(1, payload, comp, limit)
    except ConnectError as e:
        expect_code(e, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED)
    else:
        assert not limit or len(framed) <= limit


# -- headers --------------------------------------------------------------------------


def headers_target(data: bytes) -> None:
    """Timeouts, ``-bin`` values and content types as a peer may send them."""
    text = data.decode("latin-1")
    for parse in (parse_connect_timeout, parse_grpc_timeout):
        try:
            seconds = parse(text)
        except ValueError:
            pass
        else:
            assert 0 <= seconds < 100_000_000 * 3600
    try:
        value = decode_binary_header(text)
    except ValueError:
        pass
    else:
        assert len(value) <= len(text)
    codec = codec_for(text)
    assert codec is None or codec.name in ("proto", "json")
    for web in (False, True):
        name = grpc_wire.codec_from_content_type(text.lower(), web)
        assert name is None or text.lower().startswith("application/grpc")


# -- codecs ----------------------------------------------------------------------------


def _message_types() -> list[type[Any]]:
    # Imported late: the ping module is generated at first use.
    from server_apps import pb

    return [pb.PingRequest, pb.CountUpRequest, pb.SumRequest, pb.EchoRequest]


def codec_target(data: bytes) -> None:
    """Proto and JSON decoding: a message, or invalid_argument; a decoded
    message encodes and decodes to itself."""
    r = Reader(data)
    types = _message_types()
    kind = types[r.byte() % len(types)]
    body = r.rest()
    for codec in (PROTO, JSON):
        try:
            msg = codec.decode(body, kind)
        except ConnectError as e:
            expect_code(e, Code.INVALID_ARGUMENT)
            continue
        assert codec.decode(codec.encode(msg), kind) == msg


# -- what a client reads -------------------------------------------------------------


def client_messages_target(data: bytes) -> None:
    """A Connect end-of-stream message, a unary error body, gRPC(-Web) trailers."""
    r = Reader(data)
    status = 100 + r.byte() * 2
    grpc_status = r.byte() % 20
    body = r.rest()
    try:
        err, _ = connect_wire.parse_end_stream(body)
    except ConnectError as e:
        expect_code(e, Code.INTERNAL)
    else:
        assert err is None or isinstance(err.code, Code)
    err = connect_wire.parse_error_body(body, status, Headers())
    assert isinstance(err, ConnectError) and isinstance(err.code, Code)
    try:
        block = grpc_wire.parse_trailers_block(body)
    except ValueError:
        block = Headers({"grpc-status": "2"})
    grpc_err = grpc_wire.error_from_trailers(block)
    assert grpc_err is None or isinstance(grpc_err.code, Code)
    raw = Headers(
        {
            "grpc-status": str(grpc_status),
            "grpc-message": body.decode("latin-1"),
            "grpc-status-details-bin": body.decode("latin-1"),
        }
    )
    grpc_err = grpc_wire.error_from_trailers(raw)
    assert grpc_err is None or isinstance(grpc_err.code, Code)
    with contextlib.suppress(ValueError):
        grpc_wire.parse_status_details(body)


def get_query_target(data: bytes) -> None:
    """A Connect GET query string: its parts, or invalid_argument."""
    query = data.decode("latin-1")
    for strict in (False, True):
        try:
            req = connect_wire.parse_get_query(query, strict)
        except ConnectError as e:
            expect_code(e, Code.INVALID_ARGUMENT)
        else:
            assert req.codec
            assert len(req.message) <= len(query)


# -- what a client makes of a response, per protocol --------------------------------------

CLIENT_PROTOCOLS: list[tuple[ProtocolName, str]] = [
    ("connect", "proto"),
    ("connect", "json"),
    ("grpc", "proto"),
    ("grpc-web", "proto"),
]
"""The client protocols and codecs the response target picks from."""


def _fields(block: bytes) -> Headers:
    out = Headers()
    for line in block.split(b"\n"):
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            out.add(name.strip().lower(), value.strip())
    return out


def _client_stream(
    protocol: Any,
    pm: Any,
    status: int,
    head: Headers,
    chunks: list[bytes],
    trailers: Headers,
) -> tuple[Any, ...]:
    got: list[Any] = []
    try:
        stream = protocol.response_stream(pm, status, head)
        for c in chunks:
            got += stream.feed(c)
        stream.finish(trailers)
    except ConnectError as e:
        return ("error", e.code, got)
    return ("ok", got)


def client_response_target(data: bytes) -> None:
    """A response as each client protocol reads it (unary whole, streams in
    pieces): the messages, or a ConnectError; the same however cut."""
    from google.protobuf.wrappers_pb2 import StringValue

    from protoc_gen_connect_python.runtime.client.config import build_config
    from protoc_gen_connect_python.runtime.client.protocols import make_protocol
    from protoc_gen_connect_python.runtime.method import MethodSpec, StreamType

    r = Reader(data)
    name, codec = CLIENT_PROTOCOLS[r.byte() % len(CLIENT_PROTOCOLS)]
    seed = r.byte()
    status = [200, 200, 200, 400, 404, 500, 503, 0][r.byte() % 8] or r.byte() + 100
    head = _fields(r.until(b"\n\n"))
    trailers = _fields(r.until(b"\n\n"))
    body = r.rest()
    config = build_config(
        "http://peer", protocol=name, codec=codec, read_max_bytes=LIMIT
    )
    protocol = make_protocol(config)
    for kind in (StreamType.UNARY, StreamType.SERVER_STREAM):
        spec = MethodSpec("fuzz.v1.S", "M", "m", kind, StringValue, StringValue)
        pm = protocol.prepare(spec)
        if kind == StreamType.UNARY:
            try:
                res = protocol.unary_response(pm, status, head, body, trailers)
            except ConnectError as e:
                assert isinstance(e.code, Code)
            else:
                assert isinstance(res.message, StringValue)
            continue
        whole = _client_stream(protocol, pm, status, head, [body], trailers)
        cut = _client_stream(protocol, pm, status, head, pieces(seed, body), trailers)
        if whole[0] == "ok":
            assert cut == whole
        else:
            # Which of two faults is met first, and how many messages come
            # out before it, may depend on the cut; that the call fails may not.
            assert cut[0] == "error", (whole, cut)
        for m in whole[-1]:
            assert isinstance(m, StringValue)


# -- the client's HTTP/1.1 engine -------------------------------------------------------


def _http1(chunks: list[bytes], method: str) -> tuple[Any, ...]:
    p = http1.ResponseParser(method)
    body: list[bytes] = []
    fed = 0
    try:
        for c in [*chunks, None]:
            if c is None:
                p.feed_eof()
            else:
                p.feed(c)
                fed += len(c)
            assert p.buffered <= fed
            head = p.head()
            if head is None:
                continue
            while not p.complete:
                piece = p.body()
                if not piece:
                    break
                body.append(piece)
            if p.complete:
                break
    except http1.ProtocolError:
        return ("error", b"".join(body))
    got = b"".join(body)
    assert len(got) <= fed
    if head is None:
        return ("incomplete",)
    return (head.status, head.headers, got, p.complete, p.trailers)


def http1_target(data: bytes) -> None:
    """A response to the HTTP/1.1 client: head and body or ProtocolError, the
    same however the bytes arrive, never more body than was sent."""
    r = Reader(data)
    seed = r.byte()
    method = "HEAD" if r.byte() == 1 else "POST"
    wire = r.rest()
    whole = _http1([wire], method)
    cut = _http1(pieces(seed, wire), method)
    if whole[0] == "error" or cut[0] == "error":
        # The same verdict; a piece may have carried out some body before it.
        assert whole[0] == cut[0], (whole, cut)
        return
    assert cut == whole


# -- the client's HTTP/2 engine ------------------------------------------------------------


def _http2(chunks: list[bytes], send: int) -> tuple[Any, ...]:
    conn = http2.Connection(
        http2.Limits(stream_window=LIMIT, connection_window=16 * LIMIT)
    )
    stream = conn.open_stream("POST", "http", "peer", "/svc/Method", [], False)
    conn.data_to_send()
    body: list[bytes] = []
    fed = out = 0
    for c in chunks:
        conn.receive(c)
        fed += len(c)
        while stream.chunks:
            piece = stream.take()
            body.append(piece)
            conn.consume(stream, len(piece))
        if send:
            n = conn.send_data(stream, b"x" * send, False)
            assert 0 <= n <= send
            out -= n + 9 * (n // 16384 + 1)  # our own DATA, not a reply
        out += len(conn.data_to_send())
        # Replies (PING and SETTINGS acks, window updates, GOAWAY) grow at
        # most with what came in.
        assert out <= 2 * fed + 64, (out, fed)
        assert stream.buffered <= fed
    got = b"".join(body)
    assert len(got) <= fed
    err = stream.error
    assert err is None or isinstance(err, (http2.ProtocolError, http2.StreamReset))
    conn.connection_lost("done")
    return (
        stream.status,
        stream.headers,
        got,
        stream.trailers,
        stream.remote_ended,
        type(err).__name__,
        conn.error is None,
    )


def http2_target(data: bytes) -> None:
    """Server bytes to the HTTP/2 client (after its request went out): never
    an exception, never more out than in, the same however the bytes arrive."""
    r = Reader(data)
    seed = r.byte()
    send = r.byte() * 64
    wire = r.rest()
    # Sending changes the windows, hence what a WINDOW_UPDATE may do: a run
    # that sends is checked on its own, the comparison is made without.
    if send:
        _http2(pieces(seed, wire), send)
    whole = _http2([wire], 0)
    cut = _http2(pieces(seed, wire), 0)
    if whole[5] == cut[5] == "NoneType":
        assert cut == whole
    else:
        # A failed stream drops what it held unread: the cut may have taken
        # more of it out before the failure.
        assert whole[:2] == cut[:2] and whole[5:] == cut[5:], (whole, cut)
        assert cut[2].startswith(whole[2]) or whole[2].startswith(cut[2])


# -- the server apps, in-process -------------------------------------------------------------

PROCEDURES = ["Ping", "CountUp", "Sum", "Echo", "Unimplemented", "Nope"]
"""The fuzz service's methods (one of each kind) and a path that routes nowhere."""


class _Errors(logging.Handler):
    """Collects ERROR records: an unhandled exception is logged at ERROR."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_APPS: list[Any] = []


def _apps() -> tuple[Any, Any]:
    """The ASGI and WSGI apps of a Ping service whose handlers never wait.

    Made at first use: the service's module is generated then. A fuzzed
    request may ask ``Ping`` to sleep or ``CountUp`` for billions of
    messages; these handlers answer at once, and at most a few messages.
    """
    if _APPS:
        return _APPS[0], _APPS[1]
    import server_apps
    from server_apps import pb

    class Fuzzed(server_apps.PingServiceBase):
        async def ping(self, request: Any, ctx: Any) -> Any:
            return pb.PingResponse(text=request.text, payload=request.payload)

        async def count_up(self, request: Any, ctx: Any) -> Any:
            for i in range(min(request.number, 3)):
                yield pb.CountUpResponse(number=i)

        async def sum(self, requests: Any, ctx: Any) -> Any:
            return pb.SumResponse(count=len([r async for r in requests]))

        async def echo(self, requests: Any, ctx: Any) -> Any:
            async for r in requests:
                yield pb.EchoResponse(text=r.text)

    class FuzzedSync(server_apps.PingServiceSyncBase):
        def ping(self, request: Any, ctx: Any) -> Any:
            return pb.PingResponse(text=request.text, payload=request.payload)

        def count_up(self, request: Any, ctx: Any) -> Any:
            for i in range(min(request.number, 3)):
                yield pb.CountUpResponse(number=i)

        def sum(self, requests: Any, ctx: Any) -> Any:
            return pb.SumResponse(count=len(list(requests)))

        def echo(self, requests: Any, ctx: Any) -> Any:
            for r in requests:
                yield pb.EchoResponse(text=r.text)

    send = 4 * LIMIT
    _APPS.append(ASGIApp(Fuzzed(), read_max_bytes=LIMIT, send_max_bytes=send))
    _APPS.append(WSGIApp(FuzzedSync(), read_max_bytes=LIMIT, send_max_bytes=send))
    return _APPS[0], _APPS[1]


def _check_reply(status: int, headers: Headers, body: bytes, trailers: Headers) -> None:
    ct = headers.get("content-type", "")
    if status == 200 and ct.startswith("application/connect+"):
        dec = EnvelopeDecoder()
        frames = dec.feed(body)
        dec.close()
        assert frames and frames[-1][0] == FLAG_END_STREAM, frames
        connect_wire.parse_end_stream(frames[-1][1])
    elif status == 200 and ct.startswith("application/grpc"):
        status_value = trailers.get("grpc-status") or headers.get("grpc-status")
        if ct.startswith("application/grpc-web") and status_value is None:
            dec = EnvelopeDecoder()
            frames = dec.feed(body)
            dec.close()
            assert frames and frames[-1][0] & 0x80, frames
            status_value = grpc_wire.parse_trailers_block(frames[-1][1])["grpc-status"]
        assert status_value is not None and status_value.isdigit()
        assert 0 <= int(status_value) <= 16
    elif status != 200 and ct == "application/json":
        obj = json.loads(body)
        code = Code.from_wire_name(obj["code"])
        assert code is not None, obj
        assert code.http_status == status, (code, status)
        assert isinstance(obj.get("message", ""), str)
    else:
        assert status in (200, 404, 405, 415, 400, 408, 413, 431), status


def server_target(data: bytes) -> None:
    """One request to the ASGI or WSGI app: a well-formed reply with a right
    code, never an unhandled exception (it would be logged at ERROR)."""
    from server_harness import call_asgi_async, call_wsgi

    r = Reader(data)
    first = r.byte()
    wsgi = bool(first & 1)
    method = "GET" if first & 2 else "POST"
    path = "/testing.v1.PingService/" + PROCEDURES[(first >> 2) % len(PROCEDURES)]
    headers: list[tuple[str, str]] = []
    for line in r.until(b"\n\n").split(b"\n"):
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        # The server, not the app, owns the framing; names must be tokens.
        token = name.isascii() and name.isprintable() and " " not in name
        if name and token and name not in ("content-length", "transfer-encoding"):
            headers.append((name, value.strip()))
    rest = r.rest()
    query = rest.decode("latin-1") if method == "GET" else ""
    body = b"" if method == "GET" else rest
    errors = _Errors()
    log = logging.getLogger("protoc_gen_connect_python")
    log.addHandler(errors)
    asgi_app, wsgi_app = _apps()
    try:
        if wsgi:
            res = call_wsgi(wsgi_app, method, path, headers, body, query=query)
        else:
            # ASGI servers hand header values over as bytes; the harness
            # encodes them as UTF-8, so only ASCII keeps them byte-exact.
            ascii_headers = [
                (k, v.encode("latin-1").decode("ascii", "replace")) for k, v in headers
            ]
            res = asyncio.run(
                asyncio.wait_for(
                    call_asgi_async(
                        asgi_app, method, path, ascii_headers, body, query=query
                    ),
                    10,
                )
            )
    finally:
        log.removeHandler(errors)
    assert not errors.records, [rec.getMessage() for rec in errors.records]
    _check_reply(res.status, res.headers, res.body, res.trailers)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "envelope": envelope_target,
    "decompress": decompress_target,
    "headers": headers_target,
    "codec": codec_target,
    "client_messages": client_messages_target,
    "get_query": get_query_target,
    "client_response": client_response_target,
    "http1": http1_target,
    "http2": http2_target,
    "server": server_target,
}
"""Every target by name, as ``scripts/fuzz.py`` lists them."""
