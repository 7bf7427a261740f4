"""Hostile and broken requests against the apps on real servers, over raw sockets.

Each case sends one request no well-behaved client sends (a body cut short of
its length, a stream without its end, a huge declared length and no body,
wrong JSON, broken compression, unknown envelope flags, an escaped path, a
reset mid-request), checks the answer (code, HTTP status, our own words in the
message, never a handler's success on part of a request), and then that the
server still serves a normal call. Servers that speak h2c also get the cases
that only HTTP/2 has (a stream reset mid-request, a body shorter than its
``content-length``), sent with the ``h2`` package as the client. Last, the
server's log must hold no traceback: a peer going away is not a server error.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from bad_input_app import DONE, TellingPinger, TellingPingerSync
from server_apps import pb
from servers import H2C_SERVERS, Server, start_server

from protoc_gen_connect_python.runtime import ASGIApp, Code, WSGIApp
from protoc_gen_connect_python.runtime.codec import JSON as JSON_CODEC
from protoc_gen_connect_python.runtime.codec import PROTO
from protoc_gen_connect_python.runtime.compression import COMPRESSIONS
from protoc_gen_connect_python.runtime.errors import ConnectError

P = "/testing.v1.PingService/"
LIMIT = 4 * 1024 * 1024
"""The apps' default ``read_max_bytes``."""
WAIT = 20.0
"""How long a socket read may block before the case fails as a hang."""

ASGI = "bad_input_app:asgi_app"
WSGI = "bad_input_app:wsgi_app"
MATRIX = [
    ("uvicorn", ASGI),
    ("hypercorn", ASGI),
    ("pyvoy", ASGI),
    ("granian", ASGI),
    ("gunicorn", WSGI),
    ("pyvoy-wsgi", WSGI),
    ("granian-wsgi", WSGI),
]
NO_RAW_PATH = frozenset({"pyvoy-wsgi", "granian-wsgi"})
"""WSGI servers that give no raw request path: routes match the decoded one."""

# Messages a request cut short may end with, all of them ours.
CUT_SHORT = {
    "request body ended before its declared length",
    "the request ended before its body did",
    "protocol error: incomplete envelope",
}


@dataclass
class Response:
    """An HTTP/1.1 response as read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes
    informational: list[int] = field(default_factory=list)


@dataclass
class Outcome:
    """What the client saw: a response, or the connection ending without one."""

    response: Response | None


@pytest.fixture(scope="module", params=MATRIX, ids=[s for s, _ in MATRIX])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    name, app = request.param
    srv = start_server(name, app)
    try:
        yield srv
    finally:
        srv.stop()
        srv.log.unlink(missing_ok=True)


# -- HTTP/1.1 over a raw socket -------------------------------------------------


def _connect(srv: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT)
    return sock


def _head(method: str, path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.closed = False

    def _more(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            raise AssertionError(f"no answer within {WAIT}s") from None
        if not data:
            self.closed = True
            return False
        self.buf += data
        return True

    def until(self, sep: bytes) -> bytes | None:
        while sep not in self.buf:
            if not self._more():
                return None
        out, _, self.buf = self.buf.partition(sep)
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise AssertionError("response body cut short")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def read_response(sock: socket.socket) -> Response | None:
    """The next response on ``sock``, or None if it closes before one starts."""
    reader = _Reader(sock)
    informational = []
    while True:
        head = reader.until(b"\r\n\r\n")
        if head is None:
            assert not reader.buf, f"a partial response head: {reader.buf!r}"
            return None
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in lines:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if status >= 200:
            break
        informational.append(status)
    if "content-length" in headers:
        body = reader.exactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size_line = reader.until(b"\r\n")
            assert size_line is not None, "chunked response cut short"
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                reader.until(b"\r\n")
                break
            parts.append(reader.exactly(size))
            reader.exactly(2)
        body = b"".join(parts)
    else:
        while reader._more():
            pass
        body = reader.buf
    return Response(status, headers, body, informational)


def exchange(
    srv: Server,
    head: bytes,
    body: bytes = b"",
    *,
    shut: bool = False,
    reset: bool = False,
) -> Outcome:
    """Send a request (maybe incomplete) and read what comes back.

    ``shut`` closes our sending side after the bytes; ``reset`` aborts the
    connection instead (RST), so nothing can come back.
    """
    sock = _connect(srv)
    try:
        sock.sendall(head + body)
        if reset:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            return Outcome(None)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        return Outcome(read_response(sock))
    finally:
        sock.close()


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def connect_error(resp: Response) -> tuple[str, str]:
    """(code, message) of a Connect unary error response."""
    try:
        err = json.loads(resp.body)
    except ValueError:
        raise AssertionError(f"not a Connect error: {resp!r}") from None
    return err["code"], err["message"]


def end_stream_error(resp: Response) -> tuple[str, str] | None:
    """(code, message) from a Connect stream's end message; None on success."""
    body = resp.body
    while body:
        flags, n = struct.unpack(">BI", body[:5])
        payload, body = body[5 : 5 + n], body[5 + n :]
        if flags & 0x02:
            err = json.loads(payload).get("error")
            return None if err is None else (err["code"], err.get("message", ""))
    raise AssertionError(f"no end-of-stream message in {resp.body!r}")


def grpc_web_status(resp: Response) -> tuple[str, str]:
    """(grpc-status, grpc-message) from a gRPC-Web response's trailers frame."""
    body = resp.body
    while body:
        flags, n = struct.unpack(">BI", body[:5])
        payload, body = body[5 : 5 + n], body[5 + n :]
        if flags & 0x80:
            fields = {}
            for line in payload.decode("latin-1").split("\r\n"):
                k, _, v = line.partition(":")
                if k:
                    fields[k.strip().lower()] = v.strip()
            return fields["grpc-status"], fields.get("grpc-message", "")
    if "grpc-status" in resp.headers:
        return resp.headers["grpc-status"], resp.headers.get("grpc-message", "")
    raise AssertionError(f"no gRPC-Web status in {resp!r}")


JSON = {"Content-Type": "application/json"}
STREAM_JSON = {"Content-Type": "application/connect+json"}


def assert_serves(srv: Server) -> None:
    """A normal unary call on a fresh connection succeeds."""
    body = b'{"text":"still here"}'
    out = exchange(srv, _head("POST", P + "Ping", JSON, len(body)), body)
    assert out.response is not None, "the server closed instead of answering"
    assert out.response.status == 200, out.response
    assert json.loads(out.response.body)["text"] == "still here"


def assert_unary_error(
    out: Outcome, status: int, code: str, message: str | set[str]
) -> None:
    resp = out.response
    assert resp is not None, "no answer"
    assert resp.status == status, resp
    got_code, got_message = connect_error(resp)
    assert got_code == code
    if isinstance(message, str):
        assert got_message == message
    else:
        assert got_message in message


def assert_failed_or_gone(out: Outcome, stream: bool = False) -> None:
    """A cut-off request: no answer at all, or an error in our words; never
    the handler's success on what arrived."""
    resp = out.response
    if resp is None:
        return
    if resp.status == 400 and not resp.body and "content-type" not in resp.headers:
        # The server's own refusal of a broken HTTP/1.1 message, sent before
        # the app could answer (hypercorn's h11, at times): no words at all.
        return
    if stream:
        assert resp.status == 200, resp
        err = end_stream_error(resp)
        assert err is not None, "a stream cut short ended as a success"
        code, message = err
    else:
        assert resp.status != 200, resp
        code, message = connect_error(resp)
    assert code in ("invalid_argument", "canceled"), (code, message)
    assert message in CUT_SHORT, message


# -- the cases --------------------------------------------------------------------


def case_short_body(srv: Server) -> None:
    # Content-Length 60, 19 bytes, then the client stops sending.
    body = b'{"text":"cut-Ada"} '
    out = exchange(srv, _head("POST", P + "Ping", JSON, 60), body, shut=True)
    assert_failed_or_gone(out)


def case_over_limit_no_body(srv: Server) -> None:
    out = exchange(srv, _head("POST", P + "Ping", JSON, LIMIT + 1024 * 1024))
    assert_unary_error(
        out,
        429,
        "resource_exhausted",
        f"request message is larger than configured max {LIMIT} bytes",
    )


def case_over_limit_expect_continue(srv: Server) -> None:
    head = _head(
        "POST", P + "Ping", {**JSON, "Expect": "100-continue"}, LIMIT + 1024 * 1024
    )
    out = exchange(srv, head)
    assert_unary_error(
        out,
        429,
        "resource_exhausted",
        f"request message is larger than configured max {LIMIT} bytes",
    )


def _json_case(body: bytes, message: str) -> Callable[[Server], None]:
    def case(srv: Server) -> None:
        out = exchange(srv, _head("POST", P + "Ping", JSON, len(body)), body)
        assert_unary_error(out, 400, "invalid_argument", message)

    return case


case_json_null = _json_case(
    b"null", "unmarshal into PingRequest: expected a JSON object, got null"
)
case_json_array = _json_case(
    b"[1]", "unmarshal into PingRequest: expected a JSON object, got an array"
)
case_json_wrong_type = _json_case(
    b'{"number":"many"}',
    "unmarshal into PingRequest: invalid value for field 'number' (int64)",
)
case_json_wrong_string = _json_case(
    b'{"text":{"a":1}}',
    "unmarshal into PingRequest: invalid value for field 'text' (string)",
)
case_json_syntax = _json_case(
    b'{"text":', "unmarshal into PingRequest: invalid JSON at line 1 column 9"
)
case_json_not_utf8 = _json_case(
    b'{"text":"\xff"}', "unmarshal into PingRequest: JSON is not valid UTF-8"
)


def case_proto_garbage(srv: Server) -> None:
    body = b"\xff\xff\xff\xff"
    headers = {"Content-Type": "application/proto"}
    out = exchange(srv, _head("POST", P + "Ping", headers, len(body)), body)
    assert_unary_error(
        out,
        400,
        "invalid_argument",
        "unmarshal into PingRequest: invalid protobuf binary data",
    )


def case_gzip_garbage(srv: Server) -> None:
    body = b"\x1f\x8b\x08\x00this is not deflate"
    headers = {**JSON, "Content-Encoding": "gzip"}
    out = exchange(srv, _head("POST", P + "Ping", headers, len(body)), body)
    assert_unary_error(
        out, 400, "invalid_argument", "decompress gzip: invalid compressed data"
    )


def case_gzip_truncated(srv: Server) -> None:
    import gzip

    body = gzip.compress(b'{"text":"Ada"}')[:-6]
    headers = {**JSON, "Content-Encoding": "gzip"}
    out = exchange(srv, _head("POST", P + "Ping", headers, len(body)), body)
    assert_unary_error(out, 400, "invalid_argument", "decompress gzip: truncated data")


def _escaped_case(path: str) -> Callable[[Server], None]:
    def case(srv: Server) -> None:
        body = b'{"text":"routed"}'
        out = exchange(srv, _head("POST", path, JSON, len(body)), body)
        resp = out.response
        assert resp is not None, "no answer"
        if srv.name in NO_RAW_PATH:
            # Documented: without a raw path, the decoded one is routed.
            assert resp.status == 200, resp
        else:
            assert resp.status == 404, resp

    return case


case_escaped_slash = _escaped_case("/testing.v1.PingService%2FPing")
case_escaped_letter = _escaped_case(P + "P%69ng")


def _sum_request(*numbers: int) -> bytes:
    return b"".join(envelope(b'{"number":%d}' % i) for i in numbers)


CUT = (7001, 7002)
"""The numbers a cut stream sends: no handler may finish with their sum."""
CUT_DONE = f"{DONE} sum sum={sum(CUT)} "
CUT_PING_DONE = f"{DONE} ping text=cut-"


def case_stream_cut_at_boundary(srv: Server) -> None:
    # Two whole messages of the three declared, then the client stops.
    sent = _sum_request(*CUT)
    declared = len(_sum_request(*CUT, 7003))
    head = _head("POST", P + "Sum", STREAM_JSON, declared)
    out = exchange(srv, head, sent, shut=True)
    assert_failed_or_gone(out, stream=True)


def case_stream_chunked_without_end(srv: Server) -> None:
    # Chunked, two whole messages, no last chunk, then the client stops.
    head = _head(
        "POST", P + "Sum", {**STREAM_JSON, "Transfer-Encoding": "chunked"}, None
    )
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(e), e)
        for e in (envelope(b'{"number":7001}'), envelope(b'{"number":7002}'))
    )
    out = exchange(srv, head, chunks, shut=True)
    assert_failed_or_gone(out, stream=True)


def case_stream_complete(srv: Server) -> None:
    # The control: the same stream, whole, succeeds with every message.
    body = _sum_request(1, 2, 3)
    out = exchange(srv, _head("POST", P + "Sum", STREAM_JSON, len(body)), body)
    resp = out.response
    assert resp is not None and resp.status == 200, resp
    assert end_stream_error(resp) is None
    first = resp.body[5 : 5 + struct.unpack(">I", resp.body[1:5])[0]]
    assert json.loads(first) == {"sum": "6", "count": "3"}
    # The handler's line is in the log before its answer was sent.
    assert f"{DONE} sum sum=6 count=3" in srv.output()


def _flags_case(
    content_type: str, flags: int, status: Callable[[Response], tuple[str, str] | None]
) -> Callable[[Server], None]:
    def case(srv: Server) -> None:
        body = envelope(b'{"number":1}', flags)
        headers = {"Content-Type": content_type}
        out = exchange(srv, _head("POST", P + "Sum", headers, len(body)), body)
        resp = out.response
        assert resp is not None and resp.status == 200, resp
        code = "internal" if content_type.endswith("connect+json") else "13"
        message = f"protocol error: invalid envelope flags 0x{flags:02x}"
        assert status(resp) == (code, message)

    return case


case_connect_unknown_flags = _flags_case(
    "application/connect+json", 0x04, end_stream_error
)
case_grpc_web_unknown_flags = _flags_case(
    "application/grpc-web+json", 0x40, grpc_web_status
)


def case_reset_mid_request(srv: Server) -> None:
    head = _head("POST", P + "Sum", STREAM_JSON, 1000)
    exchange(srv, head, _sum_request(*CUT), reset=True)


def case_reset_mid_unary(srv: Server) -> None:
    body = b'{"text":"cut-reset"}'
    exchange(srv, _head("POST", P + "Ping", JSON, 1000), body, reset=True)


CASES = {
    name[len("case_") :]: fn
    for name, fn in sorted(globals().items())
    if name.startswith("case_")
}


KNOWN_LIMITS = {
    ("granian-wsgi", "stream_chunked_without_end"): (
        "granian's WSGI input ends a chunked body cut before its last chunk "
        "as if it were whole: the handler sees the messages that arrived and "
        "then an end an app cannot tell from a real one"
    ),
}
"""Server behaviour the app cannot see past: asserted as it is, so a fix in
the server shows up here (docs/server.md lists these)."""


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(server: Server, case: str) -> None:
    """One hostile request, answered in our words; the server serves on."""
    if (server.name, case) in KNOWN_LIMITS:
        with pytest.raises(AssertionError, match="ended as a success"):
            CASES[case](server)
    else:
        CASES[case](server)
    assert_serves(server)


# -- HTTP/2 -------------------------------------------------------------------------


class H2Client:
    """A prior-knowledge h2c connection driven by the ``h2`` package."""

    def __init__(self, srv: Server) -> None:
        self.sock = _connect(srv)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self._flush()
        self.port = srv.port

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def start(self, path: str, content_type: str, length: int | None = None) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", f"127.0.0.1:{self.port}"),
            (":path", path),
            ("content-type", content_type),
        ]
        if length is not None:
            headers.append(("content-length", str(length)))
        self.conn.send_headers(stream_id, headers)
        self._flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.conn.send_data(stream_id, data, end_stream=end)
        self._flush()

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id, error_code=8)  # CANCEL
        self._flush()

    def result(self, stream_id: int) -> tuple[int | None, bytes, bool]:
        """(status, body, reset) of a stream once it ends or is reset."""
        status: int | None = None
        body = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer within {WAIT}s") from None
            if not data:
                raise AssertionError("the server closed the connection")
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                raise AssertionError(f"HTTP/2 protocol error: {e}") from None
            for ev in events:
                if getattr(ev, "stream_id", None) != stream_id:
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    self.conn.acknowledge_received_data(
                        ev.flow_controlled_length, stream_id
                    )
                elif isinstance(ev, h2.events.StreamEnded):
                    self._flush()
                    return status, body, False
                elif isinstance(ev, h2.events.StreamReset):
                    self._flush()
                    return status, body, True
            self._flush()

    def ping_call(self) -> None:
        """A normal unary call on this connection succeeds."""
        body = b'{"text":"h2 still here"}'
        sid = self.start(P + "Ping", "application/json", len(body))
        self.send(sid, body, end=True)
        status, data, reset = self.result(sid)
        assert (status, reset) == (200, False)
        assert json.loads(data)["text"] == "h2 still here"

    def close(self) -> None:
        self.sock.close()


H2_MATRIX = [m for m in MATRIX if m[0] in H2C_SERVERS]


@pytest.mark.parametrize(
    "server", H2_MATRIX, ids=[s for s, _ in H2_MATRIX], indirect=True
)
def test_h2_reset_mid_stream(server: Server) -> None:
    """A stream reset mid-request ends that call; the connection serves on."""
    client = H2Client(server)
    try:
        sid = client.start(P + "Sum", "application/connect+json")
        client.send(sid, _sum_request(*CUT))
        client.reset(sid)
        client.ping_call()
    finally:
        client.close()
    assert_serves(server)


@pytest.mark.parametrize(
    "server", H2_MATRIX, ids=[s for s, _ in H2_MATRIX], indirect=True
)
def test_h2_body_shorter_than_length(server: Server) -> None:
    """A body shorter than its content-length never reaches the handler whole."""
    client = H2Client(server)
    try:
        body = b'{"text":"cut-h2"}'
        sid = client.start(P + "Ping", "application/json", 60)
        client.send(sid, body, end=True)
        status, data, reset = client.result(sid)
        if not reset:
            assert status is not None and status != 200, (status, data)
            code, message = json.loads(data)["code"], json.loads(data)["message"]
            assert code in ("invalid_argument", "canceled"), code
            assert message in CUT_SHORT, message
    except AssertionError as e:
        if "closed the connection" not in str(e):
            raise
    finally:
        client.close()
    assert_serves(server)


PYVOY_RECV_RACE = "RecvFutureExecutor"
"""pyvoy's own callback that completes a ``receive()`` already cancelled (an
app may cancel a pending receive; pyvoy then logs InvalidStateError). It
appears after well-formed streams too, so it is not one of the cases here."""


def test_log_has_no_partial_success_or_traceback(server: Server) -> None:
    """After the cases above (run first on the same server): no handler
    finished on a request cut short, and no traceback (a peer that goes away
    or sends garbage is not a server error)."""
    log = server.output()
    known = sum(name == server.name for name, _ in KNOWN_LIMITS)
    assert log.count(CUT_DONE) == known, log
    assert CUT_PING_DONE not in log, log
    # Nor a cut taken for an empty request (a reset read as a clean end).
    assert f"{DONE} sum sum=0 count=0" not in log, log
    blocks = log.split("Traceback (most recent call last):")
    for before in blocks[:-1]:
        lead = "\n".join(before.splitlines()[-2:])
        if server.name == "pyvoy" and PYVOY_RECV_RACE in lead:
            continue
        raise AssertionError(f"a traceback in the server log:\n{log}")


# -- the same rules in-process, one shell at a time ----------------------------------
#
# Faster and more direct than the matrix: each names the rule it checks.


def run_asgi(
    app: Any,
    path: str,
    headers: dict[str, str],
    events: list[dict[str, Any]],
    *,
    raw_path: bytes | None = None,
    log: list[str] | None = None,
    http_version: str = "1.1",
) -> list[dict[str, Any]]:
    """Drive ``app`` with these receive events, then ``http.disconnect``.

    ``log`` records ``receive`` and each sent event's type, in order.
    """
    pending = list(events)
    order = log if log is not None else []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        order.append("receive")
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    async def send(msg: Any) -> None:
        order.append(msg["type"])
        sent.append(dict(msg))

    # What the app reads of a scope; servers add more.
    scope = {
        "type": "http",
        "http_version": http_version,
        "method": "POST",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    return sent


def run_wsgi(
    app: Any, path: str, headers: dict[str, str], body: Any, **environ: Any
) -> tuple[int, bytes]:
    """Drive ``app`` with ``body`` as ``wsgi.input`` (any object with read)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": body,
        **environ,
    }
    for k, v in headers.items():
        key = k.upper().replace("-", "_")
        env[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = v
    status: list[int] = []

    def start_response(line: str, hs: Any, exc: Any = None) -> Any:
        status.append(int(line.split()[0]))
        return lambda b: None

    out = b"".join(app(env, start_response))
    return status[-1], out


def _status_and_body(sent: list[dict[str, Any]]) -> tuple[int, bytes]:
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(
        m.get("body", b"") for m in sent if m["type"] == "http.response.body"
    )
    return status, body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"null", "expected a JSON object, got null"),
        (b"true", "expected a JSON object, got a boolean"),
        (b"3", "expected a JSON object, got a number"),
        (b'"x"', "expected a JSON object, got a string"),
        (b"[]", "expected a JSON object, got an array"),
        (b"{", "invalid JSON at line 1 column 2"),
        (b'{"text": 1,\n "number": }', "invalid JSON at line 2 column 12"),
        (b'{"text":"\xc3"}', "JSON is not valid UTF-8"),
        (b'{"text":"a","text":"b"}', "a JSON object repeats a key"),
        (b"[" * 100_000, "JSON nested too deeply"),
        (b'{"text":5}', "invalid value for field 'text' (string)"),
        (b'{"number":"x"}', "invalid value for field 'number' (int64)"),
        (b'{"sleepMs":1.5}', "invalid value for field 'sleep_ms' (int32)"),
        (
            b'{"sleep_ms":null,"payload":5}',
            "invalid value for field 'payload' (bytes)",
        ),
    ],
)
def test_json_errors_are_our_words(data: bytes, message: str) -> None:
    with pytest.raises(ConnectError) as e:
        JSON_CODEC.decode(data, pb.PingRequest)
    assert e.value.code is Code.INVALID_ARGUMENT
    assert e.value.message == f"unmarshal into PingRequest: {message}"


def test_json_well_known_types_keep_their_own_forms() -> None:
    from google.protobuf import struct_pb2, wrappers_pb2

    assert JSON_CODEC.decode(b'"hi"', wrappers_pb2.StringValue).value == "hi"
    assert len(JSON_CODEC.decode(b"[1, 2]", struct_pb2.ListValue).values) == 2
    with pytest.raises(ConnectError) as e:
        JSON_CODEC.decode(b"[1]", wrappers_pb2.StringValue)
    assert (
        e.value.message == "unmarshal into StringValue: invalid JSON for this message"
    )


def test_proto_errors_are_our_words() -> None:
    with pytest.raises(ConnectError) as e:
        PROTO.decode(b"\xff\xff\xff", pb.PingRequest)
    assert e.value.code is Code.INVALID_ARGUMENT
    assert e.value.message == "unmarshal into PingRequest: invalid protobuf binary data"


@pytest.mark.parametrize("name", sorted(COMPRESSIONS))
def test_decompress_errors_are_our_words(name: str) -> None:
    comp = COMPRESSIONS[name]
    with pytest.raises(ConnectError) as e:
        comp.decompress(b"\x00\x01 certainly not compressed " * 4, 10_000)
    assert (e.value.code, e.value.message) == (
        Code.INVALID_ARGUMENT,
        f"decompress {name}: invalid compressed data",
    )
    whole = comp.compress(b"some text that compresses " * 20)
    with pytest.raises(ConnectError) as e:
        comp.decompress(whole[: len(whole) // 2], 10_000)
    assert e.value.message in (
        f"decompress {name}: truncated data",
        f"decompress {name}: invalid compressed data",
    )


@pytest.mark.parametrize("flags", [0x02, 0x04, 0x40, 0x80, 0x03])
@pytest.mark.parametrize("shell", ["asgi", "wsgi"])
def test_request_envelope_flags_other_than_compressed_are_refused(
    shell: str, flags: int
) -> None:
    body = envelope(b'{"number":1}', flags)
    headers = {
        "content-type": "application/connect+json",
        "content-length": str(len(body)),
    }
    if shell == "asgi":
        sent = run_asgi(
            ASGIApp(TellingPinger()),
            P + "Sum",
            headers,
            [{"type": "http.request", "body": body}],
        )
        status, data = _status_and_body(sent)
    else:
        status, data = run_wsgi(
            WSGIApp(TellingPingerSync()), P + "Sum", headers, io.BytesIO(body)
        )
    assert status == 200
    err = end_stream_error(Response(status, {}, data))
    if flags & 0x02:  # end of stream: a client must not send it
        assert err == (
            "invalid_argument",
            "protocol error: end-of-stream message from the client",
        )
    else:
        assert err == (
            "internal",
            f"protocol error: invalid envelope flags 0x{flags:02x}",
        )


def test_wsgi_body_shorter_than_its_length_fails() -> None:
    app = WSGIApp(TellingPingerSync())
    headers = {"content-type": "application/json", "content-length": "60"}
    status, data = run_wsgi(app, P + "Ping", headers, io.BytesIO(b'{"text":"cut-x"}'))
    assert status == 400
    assert json.loads(data) == {
        "code": "invalid_argument",
        "message": "request body ended before its declared length",
    }
    body = _sum_request(*CUT)
    headers = {
        "content-type": "application/connect+json",
        "content-length": str(len(body) + 17),
    }
    status, data = run_wsgi(app, P + "Sum", headers, io.BytesIO(body))
    assert end_stream_error(Response(status, {}, data)) == (
        "invalid_argument",
        "request body ended before its declared length",
    )


class _Broken(io.RawIOBase):
    """A request body whose peer resets after ``good`` bytes."""

    def __init__(self, good: bytes) -> None:
        self.good = good

    def read(self, n: int = -1) -> bytes:
        if self.good:
            out, self.good = self.good[:n], self.good[n:]
            return out
        raise ConnectionResetError(104, "Connection reset by peer")


def test_wsgi_read_failure_is_canceled_and_logged_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = WSGIApp(TellingPingerSync())
    caplog.set_level(logging.DEBUG, "protoc_gen_connect_python")
    body = _sum_request(*CUT)
    headers = {"content-type": "application/connect+json", "content-length": "1000"}
    status, data = run_wsgi(app, P + "Sum", headers, _Broken(body))
    assert end_stream_error(Response(status, {}, data)) == (
        "canceled",
        "the request ended before its body did",
    )
    records = [r for r in caplog.records if r.name.startswith("protoc_gen")]
    assert [(r.levelno, r.exc_info) for r in records] == [(logging.DEBUG, None)]
    assert "Connection reset" not in data.decode()


def test_asgi_over_limit_length_is_answered_before_any_read() -> None:
    order: list[str] = []
    headers = {"content-type": "application/json", "content-length": str(LIMIT + 1)}
    sent = run_asgi(ASGIApp(TellingPinger()), P + "Ping", headers, [], log=order)
    assert order[:2] == ["http.response.start", "http.response.body"]
    status, body = _status_and_body(sent)
    assert status == 429
    assert json.loads(body)["code"] == "resource_exhausted"


def test_asgi_over_limit_length_over_http2_is_drained_first() -> None:
    # Go's client stops sending once it sees the answer, and hypercorn then
    # fails the whole connection: over HTTP/2 the (bounded) drain goes first.
    order: list[str] = []
    headers = {"content-type": "application/json", "content-length": str(LIMIT + 1)}
    events = [{"type": "http.request", "body": b"x" * (LIMIT + 1)}]
    app = ASGIApp(TellingPinger())
    sent = run_asgi(app, P + "Ping", headers, events, log=order, http_version="2")
    assert order[:2] == ["receive", "http.response.start"]
    assert _status_and_body(sent)[0] == 429


@pytest.mark.parametrize("protocol", ["HTTP/1.1", "HTTP/2"])
def test_wsgi_over_limit_length_is_answered_before_any_read(protocol: str) -> None:
    # start_response sends nothing: the first yield does. Over HTTP/2 the
    # drain goes first, as on ASGI.
    order: list[str] = []

    class Body(io.RawIOBase):
        def read(self, n: int = -1) -> bytes:
            order.append("read")
            return b""

    app = WSGIApp(TellingPingerSync())
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": P + "Ping",
        "SERVER_PROTOCOL": protocol,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(LIMIT + 1),
        "wsgi.input": Body(),
    }

    def start_response(line: str, hs: Any, exc: Any = None) -> Any:
        order.append(line)
        return lambda b: None

    for chunk in app(env, start_response):
        order.append(json.loads(chunk)["code"])
    if protocol == "HTTP/1.1":
        assert order[:2] == ["429 Too Many Requests", "resource_exhausted"]
    else:
        assert order == ["429 Too Many Requests", "read", "resource_exhausted"]


def test_asgi_body_cut_short_is_answered_canceled() -> None:
    # The client closed its side mid-body but may still read (granian tells
    # the app so with http.disconnect): the answer is ours, not the server's.
    headers = {"content-type": "application/json", "content-length": "60"}
    events = [{"type": "http.request", "body": b'{"text":"cut-x"', "more_body": True}]
    status, body = _status_and_body(
        run_asgi(ASGIApp(TellingPinger()), P + "Ping", headers, events)
    )
    assert status == 499
    assert json.loads(body) == {
        "code": "canceled",
        "message": "the request ended before its body did",
    }
    headers = {"content-type": "application/connect+json"}
    events = [{"type": "http.request", "body": _sum_request(*CUT), "more_body": True}]
    status, body = _status_and_body(
        run_asgi(ASGIApp(TellingPinger()), P + "Sum", headers, events)
    )
    assert end_stream_error(Response(status, {}, body)) == (
        "canceled",
        "the request ended before its body did",
    )


ESCAPED = ["/testing.v1.PingService%2FPing", P + "P%69ng", P + "Ping%00"]


@pytest.mark.parametrize("raw", ESCAPED)
def test_asgi_routes_on_the_raw_path(raw: str) -> None:
    body = b'{"text":"x"}'
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    events = [{"type": "http.request", "body": body}]
    app = ASGIApp(TellingPinger())
    sent = run_asgi(app, P + "Ping", headers, events, raw_path=raw.encode())
    assert _status_and_body(sent)[0] == 404
    # Escapes elsewhere (a mount prefix, the query) do not matter.
    for ok in (b"/a%20b" + P.encode() + b"Ping", (P + "Ping?x=%41").encode()):
        sent = run_asgi(app, P + "Ping", headers, list(events), raw_path=ok)
        assert _status_and_body(sent)[0] == 200


@pytest.mark.parametrize("key", ["RAW_URI", "REQUEST_URI", None])
@pytest.mark.parametrize("raw", ESCAPED)
def test_wsgi_routes_on_the_raw_path_where_given(raw: str, key: str | None) -> None:
    body = b'{"text":"x"}'
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    extra = {} if key is None else {key: raw + "?q=1"}
    app = WSGIApp(TellingPingerSync())
    status, _ = run_wsgi(app, P + "Ping", headers, io.BytesIO(body), **extra)
    # Without a raw path (granian, pyvoy) the decoded one is all there is.
    assert status == (200 if key is None else 404)


@pytest.mark.parametrize("flags", [0x04, 0x40, 0x80, 0x06])
def test_connect_client_refuses_unknown_response_envelope_flags(flags: int) -> None:
    from google.protobuf.wrappers_pb2 import StringValue

    from protoc_gen_connect_python.runtime import Headers
    from protoc_gen_connect_python.runtime.client.connect import ConnectResponseStream

    stream = ConnectResponseStream(JSON_CODEC, StringValue, None, 0, Headers())
    assert [m.value for m in stream.feed(envelope(b'"ok"'))] == ["ok"]
    with pytest.raises(ConnectError) as e:
        stream.feed(envelope(b'"x"', flags))
    assert (e.value.code, e.value.message) == (
        Code.INTERNAL,
        f"protocol error: invalid envelope flags 0x{flags:02x}",
    )
