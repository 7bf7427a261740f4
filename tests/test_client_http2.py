"""The pure-Python HTTP/2 client: the sans-IO connection and the asyncio transport.

The first part feeds frames to ``http2.Connection`` and checks the bytes it
queues. The second runs ``AsyncHTTP2Transport`` against a scripted HTTP/2
server (resets, GOAWAY, CONTINUATION, padding, a dropped connection), and the
third against real servers over loopback: hypercorn (h2c and TLS with ALPN)
serving the client tests' peer.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import hpack
import pytest
from client_env import PeerEnv, make_certs, peer_env

from protoc_gen_connect_python.runtime import AsyncClient, Code, ConnectError
from protoc_gen_connect_python.runtime.client.core import HTTPRequest
from protoc_gen_connect_python.runtime.client.http2 import (
    CONNECTION_WINDOW,
    MAX_FRAME_SIZE,
    PREFACE,
    STREAM_WINDOW,
    Connection,
    ErrorCode,
    Limits,
    ProtocolError,
    Stream,
    StreamReset,
)
from protoc_gen_connect_python.runtime.client.http2_transport import (
    AsyncHTTP2Transport,
    stream_error,
)

pytestmark = pytest.mark.anyio


DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, kind, flags, sid) + payload


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame in ``data``."""
    out = []
    pos = 0
    while pos < len(data):
        hi, lo, kind, flags, sid = struct.unpack_from(">HBBBL", data, pos)
        n = hi << 8 | lo
        out.append((kind, flags, sid & 0x7FFFFFFF, data[pos + 9 : pos + 9 + n]))
        pos += 9 + n
    assert pos == len(data)
    return out


def settings(**values: int) -> bytes:
    ids = {"table": 1, "push": 2, "streams": 3, "window": 4, "frame": 5, "list": 6}
    return b"".join(struct.pack(">HL", ids[k], v) for k, v in values.items())


def u32(n: int) -> bytes:
    return struct.pack(">L", n)


class Peer:
    """The server side, by hand: encodes header blocks, reads what the client sent."""

    def __init__(self) -> None:
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()

    def block(self, fields: list[tuple[str, str]]) -> bytes:
        data: bytes = self.enc.encode(fields)
        return data

    def head(
        self,
        sid: int,
        status: int = 200,
        end: bool = False,
        fields: dict[str, str] | None = None,
    ) -> bytes:
        fields_ = [(":status", str(status)), *(fields or {}).items()]
        flags = END_HEADERS | (END_STREAM if end else 0)
        return frame(HEADERS, flags, sid, self.block(fields_))

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        return [(str(k), str(v)) for k, v in self.dec.decode(block)]


def client() -> tuple[Connection, Peer]:
    conn = Connection()
    conn.data_to_send()
    conn.receive(frame(SETTINGS, 0, 0))
    conn.data_to_send()
    return conn, Peer()


def request(conn: Connection, end: bool = True) -> Stream:
    """Open a stream; its HEADERS are taken from the output."""
    s = conn.open_stream("POST", "http", "h", "/p", [("a", "1")], end)
    conn.data_to_send()
    return s


# -- the sans-IO connection ------------------------------------------------------


def test_preface_settings_and_connection_window() -> None:
    conn = Connection()
    out = conn.data_to_send()
    assert out.startswith(PREFACE)
    frames = parse_frames(out[len(PREFACE) :])
    assert [f[0] for f in frames] == [SETTINGS, WINDOW]
    values = dict(
        struct.unpack_from(">HL", frames[0][3], i)
        for i in range(0, len(frames[0][3]), 6)
    )
    assert values[2] == 0  # no push
    assert values[4] == STREAM_WINDOW
    assert values[5] == MAX_FRAME_SIZE
    assert frames[1][2] == 0
    assert struct.unpack(">L", frames[1][3])[0] == CONNECTION_WINDOW - 65535
    assert conn.data_to_send() == b""


def test_settings_are_acknowledged_and_applied() -> None:
    conn = Connection()
    conn.data_to_send()
    s = request(conn, end=False)
    conn.data_to_send()
    assert s.send_window == 65535
    conn.receive(frame(SETTINGS, 0, 0, settings(streams=1, window=10, frame=20000)))
    assert parse_frames(conn.data_to_send()) == [(SETTINGS, ACK, 0, b"")]
    assert conn.max_streams == 1 and not conn.can_open
    assert s.send_window == 10  # the change applies to open streams
    assert conn.peer_max_frame == 20000
    # An ACK of our settings needs no answer.
    assert conn.receive(frame(SETTINGS, ACK, 0)) == []
    assert conn.data_to_send() == b""


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (settings(frame=100), ErrorCode.PROTOCOL_ERROR),
        (settings(window=2**31), ErrorCode.FLOW_CONTROL_ERROR),
        (settings(push=2), ErrorCode.PROTOCOL_ERROR),
        (b"\0\0\0", ErrorCode.FRAME_SIZE_ERROR),
    ],
)
def test_bad_settings_fail_the_connection(payload: bytes, code: int) -> None:
    conn = Connection()
    s = request(conn, end=False)
    conn.data_to_send()
    assert conn.receive(frame(SETTINGS, 0, 0, payload)) == [s]
    assert conn.error is not None and conn.error.code == code
    assert isinstance(s.error, ProtocolError)
    kind, _, _, payload = parse_frames(conn.data_to_send())[-1]
    assert kind == GOAWAY and struct.unpack(">LL", payload) == (0, code)
    assert not conn.can_open
    with pytest.raises(ProtocolError):
        request(conn)


def test_request_headers() -> None:
    conn, peer = client()
    s = conn.open_stream(
        "GET",
        "https",
        "example.com:8443",
        "/svc/M?x=1",
        [
            ("Content-Type", "application/proto"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("host", "ignored"),
            ("te", "trailers"),
            ("x-multi", "1"),
            ("x-multi", "2"),
        ],
        True,
    )
    assert s.id == 1 and s.local_ended
    [(kind, flags, sid, block)] = parse_frames(conn.data_to_send())
    assert (kind, flags, sid) == (HEADERS, END_HEADERS | END_STREAM, 1)
    assert peer.decode(block) == [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "example.com:8443"),
        (":path", "/svc/M?x=1"),
        ("content-type", "application/proto"),
        ("te", "trailers"),
        ("x-multi", "1"),
        ("x-multi", "2"),
    ]
    assert request(conn).id == 3


@pytest.mark.parametrize("bad", [("x", "a\r\nb"), ("x\n", "v"), (":path", "/x")])
def test_invalid_request_fields_raise(bad: tuple[str, str]) -> None:
    conn, _ = client()
    with pytest.raises(ValueError):
        conn.open_stream("POST", "http", "h", "/", [bad], True)


def test_large_header_block_is_split_into_continuation_frames() -> None:
    conn, peer = client()
    big = "v" * 40_000  # beyond the default frame size of 16384
    conn.open_stream("POST", "http", "h", "/", [("x-big", big)], False)
    frames = parse_frames(conn.data_to_send())
    assert [f[0] for f in frames] == [HEADERS, CONT, CONT]
    assert [f[1] for f in frames] == [0, 0, END_HEADERS]
    assert all(len(f[3]) <= 16384 for f in frames)
    fields = peer.decode(b"".join(f[3] for f in frames))
    assert ("x-big", big) in fields


def test_response_head_data_and_trailers() -> None:
    conn, peer = client()
    s = request(conn)
    conn.data_to_send()
    # A 103 first: skipped.
    assert conn.receive(peer.head(1, 103, fields={"link": "</x>"})) == []
    assert not s.head_received
    touched = conn.receive(
        peer.head(1, 200, fields={"content-type": "a/b"}) + frame(DATA, 0, 1, b"hello")
    )
    assert touched == [s]
    assert (s.status, s.headers) == (200, [("content-type", "a/b")])
    assert s.take() == b"hello"
    trailers = peer.block([("grpc-status", "0"), ("x-t", "1")])
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, trailers))
    assert s.remote_ended and s.error is None
    assert s.trailers == [("grpc-status", "0"), ("x-t", "1")]
    assert 1 not in conn.streams  # both sides ended


def test_trailers_only_response() -> None:
    conn, peer = client()
    s = request(conn)
    conn.receive(peer.head(1, 200, end=True, fields={"grpc-status": "5"}))
    assert s.head_received and s.remote_ended
    assert s.headers == [("grpc-status", "5")] and s.trailers == []


def test_headers_continuation_padding_and_priority_in() -> None:
    conn, peer = client()
    s = request(conn)
    block = peer.block([(":status", "200"), ("x-long", "z" * 100)])
    first = b"\x03" + b"\0\0\0\1\x10" + block[:10] + b"pad"  # padded, with priority
    data = (
        frame(HEADERS, PADDED | PRIO, 1, first)
        + frame(CONT, 0, 1, block[10:20])
        + frame(CONT, END_HEADERS, 1, block[20:])
    )
    conn.receive(data)
    assert s.status == 200 and s.headers == [("x-long", "z" * 100)]


def test_header_block_interrupted_is_a_connection_error() -> None:
    conn, peer = client()
    s = request(conn)
    block = peer.block([(":status", "200")])
    conn.receive(frame(HEADERS, 0, 1, block) + frame(PING, 0, 0, b"12345678"))
    assert conn.error is not None and conn.error.code == ErrorCode.PROTOCOL_ERROR
    assert isinstance(s.error, ProtocolError)


@pytest.mark.parametrize("step", [1, 2, 7, 9, 10, 100, 10_000])
def test_data_in_any_pieces_and_with_padding(step: int) -> None:
    conn, peer = client()
    s = request(conn)
    body = bytes(range(256)) * 40
    padded = b"\x07" + body[:3000] + b"\0" * 7
    wire = (
        peer.head(1)
        + frame(DATA, PADDED, 1, padded)
        + frame(DATA, 0, 1, body[3000:6000])
        + frame(DATA, PADDED, 1, b"\x00" + body[6000:])
        + frame(DATA, PADDED | END_STREAM, 1, b"\x02\0\0")
    )
    got = []
    for i in range(0, len(wire), step):
        conn.receive(wire[i : i + step])
        if s.buffered:
            got.append(s.take())
    assert b"".join(got) == body
    assert s.remote_ended and s.error is None


def test_oversize_frame_is_a_frame_size_error() -> None:
    conn, _ = client()
    s = request(conn)
    big = MAX_FRAME_SIZE + 1
    conn.receive(struct.pack(">HBBBL", big >> 8, big & 0xFF, DATA, 0, 1))
    assert conn.error is not None and conn.error.code == ErrorCode.FRAME_SIZE_ERROR
    assert isinstance(s.error, ProtocolError)
    assert parse_frames(conn.data_to_send())[-1][0] == GOAWAY
    # Nothing more is processed.
    assert conn.receive(frame(PING, 0, 0, b"12345678")) == []
    assert conn.data_to_send() == b""


def test_ping_is_answered() -> None:
    conn, _ = client()
    conn.receive(frame(PING, 0, 0, b"abcdefgh") + frame(PING, ACK, 0, b"zzzzzzzz"))
    assert parse_frames(conn.data_to_send()) == [(PING, ACK, 0, b"abcdefgh")]
    conn.receive(frame(PING, 0, 0, b"short"))
    assert conn.error is not None and conn.error.code == ErrorCode.FRAME_SIZE_ERROR


def test_send_respects_windows_and_frame_size() -> None:
    conn, _ = client()
    s = request(conn, end=False)
    conn.data_to_send()
    body = b"x" * 100_000
    sent = conn.send_data(s, body, True)
    assert sent == 65535  # the peer's initial windows
    frames = parse_frames(conn.data_to_send())
    assert [len(f[3]) for f in frames] == [16384] * 3 + [65535 - 3 * 16384]
    assert not any(f[1] & END_STREAM for f in frames)
    assert conn.send_data(s, body[sent:], True) == 0
    # The stream's window grows, the connection's not yet: still blocked.
    conn.receive(frame(WINDOW, 0, 1, u32(100_000)))
    assert conn.send_data(s, body[sent:], True) == 0
    conn.receive(frame(WINDOW, 0, 0, u32(100_000)))
    assert conn.window_opened
    assert conn.send_data(s, body[sent:], True) == 100_000 - sent
    frames = parse_frames(conn.data_to_send())
    assert frames[-1][1] & END_STREAM and s.local_ended
    assert sum(len(f[3]) for f in frames) == 100_000 - sent


def test_window_update_of_zero_and_overflow() -> None:
    conn, _ = client()
    s = request(conn, end=False)
    conn.data_to_send()
    conn.receive(frame(WINDOW, 0, 1, u32(2**31 - 1)))
    assert isinstance(s.error, StreamReset) and not s.error.remote
    assert s.error.code == ErrorCode.FLOW_CONTROL_ERROR
    assert parse_frames(conn.data_to_send()) == [(RST, 0, 1, u32(3))]
    conn.receive(frame(WINDOW, 0, 0, u32(0)))
    assert conn.error is not None


def test_window_is_returned_in_batches_as_data_is_consumed() -> None:
    conn, peer = client()
    s = request(conn)
    conn.receive(peer.head(1))
    conn.data_to_send()
    chunk = b"d" * 65536
    updates = []
    total = 0
    for _ in range(200):
        conn.receive(frame(DATA, 0, 1, chunk))
        data = s.take()
        total += len(data)
        conn.consume(s, len(data))
        updates += parse_frames(conn.data_to_send())
    assert all(f[0] == WINDOW for f in updates)
    stream_updates = [struct.unpack(">L", f[3])[0] for f in updates if f[2] == 1]
    conn_updates = [struct.unpack(">L", f[3])[0] for f in updates if f[2] == 0]
    # Once per half window, not per frame.
    assert stream_updates and min(stream_updates) >= STREAM_WINDOW // 2
    assert conn_updates and min(conn_updates) >= CONNECTION_WINDOW // 2
    assert len(updates) < 200 // 10
    # The peer can never get more ahead than the windows.
    assert s.recv_window == STREAM_WINDOW - total + sum(stream_updates)


def test_unread_data_is_bounded_by_the_window() -> None:
    conn, peer = client()
    s = request(conn)
    conn.receive(peer.head(1))
    chunk = b"d" * MAX_FRAME_SIZE
    for _ in range(STREAM_WINDOW // MAX_FRAME_SIZE):
        conn.receive(frame(DATA, 0, 1, chunk))
    assert s.buffered == STREAM_WINDOW and s.recv_window == 0
    assert conn.data_to_send() == b""  # nothing consumed: no window back
    conn.receive(frame(DATA, 0, 1, b"x"))
    assert isinstance(s.error, StreamReset)
    assert s.error.code == ErrorCode.FLOW_CONTROL_ERROR


def test_connection_window_overrun_is_a_connection_error() -> None:
    conn, peer = client()
    streams = [request(conn) for _ in range(3)]
    for s in streams:
        conn.receive(peer.head(s.id))
    chunk = b"d" * MAX_FRAME_SIZE
    n = 0
    while conn.error is None:
        conn.receive(frame(DATA, 0, streams[n % 3].id, chunk))
        n += 1
    assert n * MAX_FRAME_SIZE > CONNECTION_WINDOW
    assert conn.error.code == ErrorCode.FLOW_CONTROL_ERROR


def test_reset_by_the_server() -> None:
    conn, peer = client()
    s = request(conn, end=False)
    conn.receive(peer.head(1) + frame(DATA, 0, 1, b"part"))
    conn.receive(frame(RST, 0, 1, u32(ErrorCode.ENHANCE_YOUR_CALM)))
    assert isinstance(s.error, StreamReset) and s.error.remote
    assert s.error.code == ErrorCode.ENHANCE_YOUR_CALM
    assert s.buffered == 4  # what came before the reset is still there
    assert conn.send_data(s, b"more", True) == 0
    assert 1 not in conn.streams


def test_reset_after_a_complete_response_only_stops_the_request() -> None:
    conn, peer = client()
    s = request(conn, end=False)
    conn.receive(peer.head(1) + frame(DATA, END_STREAM, 1, b"all"))
    conn.receive(frame(RST, 0, 1, u32(ErrorCode.NO_ERROR)))
    assert s.error is None and s.remote_ended and s.take() == b"all"
    assert conn.send_data(s, b"more", True) == 0


def test_reset_by_the_client_returns_the_connection_window() -> None:
    conn, peer = client()
    s = request(conn, end=False)
    conn.receive(peer.head(1) + frame(DATA, 0, 1, b"x" * 100))
    conn.data_to_send()
    conn.reset(s)
    assert parse_frames(conn.data_to_send()) == [(RST, 0, 1, u32(ErrorCode.CANCEL))]
    assert isinstance(s.error, StreamReset) and not s.error.remote
    assert s.buffered == 0
    # DATA still in flight for it counts against the connection only.
    before = conn.recv_window
    conn.receive(frame(DATA, 0, 1, b"y" * 50) + frame(HEADERS, 0, 1, b""))
    conn.receive(frame(CONT, END_HEADERS, 1, peer.block([("x", "1")])))
    assert conn.error is None
    assert conn.recv_window == before - 50
    # A second reset sends nothing.
    conn.reset(s)
    assert conn.data_to_send() == b""


def test_goaway_refuses_streams_above_its_last_id() -> None:
    conn, peer = client()
    a, b, c = request(conn), request(conn), request(conn)
    conn.receive(frame(GOAWAY, 0, 0, struct.pack(">LL", 3, 0) + b"bye"))
    assert not conn.can_open and conn.goaway == 3
    assert a.error is None and b.error is None
    assert isinstance(c.error, StreamReset) and c.error.refused
    assert "bye" in str(c.error)
    conn.receive(peer.head(1, end=True))
    assert a.remote_ended
    with pytest.raises(ProtocolError):
        request(conn)


def test_goaway_with_an_error_fails_the_remaining_streams() -> None:
    conn, _ = client()
    s = request(conn)
    conn.receive(frame(GOAWAY, 0, 0, struct.pack(">LL", 1, ErrorCode.INTERNAL_ERROR)))
    assert isinstance(s.error, ProtocolError)
    assert s.error.code == ErrorCode.INTERNAL_ERROR


@pytest.mark.parametrize(
    "wire",
    [
        frame(PUSH, END_HEADERS, 1, b"\0\0\0\2"),
        frame(DATA, 0, 0, b"x"),
        frame(DATA, 0, 7, b"x"),  # a stream never opened
        frame(DATA, 0, 2, b"x"),  # a stream only the server could open
        frame(CONT, END_HEADERS, 1, b""),
        frame(RST, 0, 0, u32(0)),
        frame(GOAWAY, 0, 1, b"\0" * 8),
        frame(DATA, PADDED, 1, b"\x09abc"),  # padding beyond the frame
    ],
)
def test_protocol_violations_fail_the_connection(wire: bytes) -> None:
    conn, peer = client()
    request(conn)
    conn.receive(peer.head(1))
    conn.receive(wire)
    assert conn.error is not None


def test_data_before_the_head_resets_the_stream() -> None:
    conn, _ = client()
    s = request(conn)
    conn.receive(frame(DATA, 0, 1, b"x"))
    assert isinstance(s.error, StreamReset) and s.error.code == ErrorCode.PROTOCOL_ERROR
    assert conn.error is None


def test_unknown_frames_and_priority_are_ignored() -> None:
    conn, peer = client()
    s = request(conn)
    conn.receive(frame(0x42, 0xFF, 1, b"whatever") + frame(PRIORITY, 0, 1, b"\0" * 5))
    conn.receive(peer.head(1, end=True))
    assert conn.error is None and s.remote_ended


def test_connection_lost_fails_open_streams() -> None:
    conn, peer = client()
    a, b = request(conn), request(conn)
    conn.receive(peer.head(1, end=True))
    assert conn.connection_lost("gone") == [b]
    assert a.error is None and isinstance(b.error, ProtocolError)
    assert not conn.can_open


# -- flow control and header blocks: regression cases -------------------------------


def test_lowered_initial_window_makes_a_window_negative() -> None:
    # RFC 9113 6.9.2: lowering SETTINGS_INITIAL_WINDOW_SIZE can leave a stream
    # with a negative window; nothing is sent until it is positive again.
    conn, _ = client()
    conn.receive(frame(SETTINGS, 0, 0, settings(window=100)))
    s = request(conn, end=False)
    assert conn.send_data(s, b"a" * 100, False) == 100
    conn.receive(frame(SETTINGS, 0, 0, settings(window=40)))
    conn.data_to_send()
    assert s.send_window == -60
    assert conn.send_data(s, b"b", False) == 0
    conn.receive(frame(WINDOW, 0, 1, u32(50)))
    assert s.send_window == -10
    assert conn.send_data(s, b"b", False) == 0
    assert conn.data_to_send() == b""
    conn.receive(frame(WINDOW, 0, 1, u32(15)))
    assert conn.send_data(s, b"bbbbbbbb", True) == 5
    assert parse_frames(conn.data_to_send()) == [(DATA, 0, 1, b"bbbbb")]
    assert s.send_window == 0 and conn.send_window == 65535 - 105


def test_end_of_stream_needs_no_window() -> None:
    conn, _ = client()
    conn.receive(frame(SETTINGS, 0, 0, settings(window=100)))
    s = request(conn, end=False)
    conn.send_data(s, b"a" * 100, False)
    conn.receive(frame(SETTINGS, 0, 0, settings(window=0)))
    conn.data_to_send()
    before = conn.send_window
    assert s.send_window == -100
    conn.end_stream(s)
    assert parse_frames(conn.data_to_send()) == [(DATA, END_STREAM, 1, b"")]
    assert s.local_ended and s.error is None
    # The empty frame took nothing from either window.
    assert s.send_window == -100 and conn.send_window == before
    assert conn.send_data(s, b"", True) == 0
    assert conn.data_to_send() == b""


def test_raising_the_initial_window_wakes_senders() -> None:
    conn, _ = client()
    conn.receive(frame(SETTINGS, 0, 0, settings(window=10)))
    s = request(conn, end=False)
    assert conn.send_data(s, b"x" * 30, False) == 10
    conn.window_opened = False
    conn.receive(frame(SETTINGS, 0, 0, settings(window=25)))
    assert conn.window_opened and s.send_window == 15
    conn.receive(frame(WINDOW, 0, 1, u32(100)))
    conn.receive(frame(SETTINGS, 0, 0, settings(window=2**31 - 1)))
    assert conn.error is not None
    assert conn.error.code == ErrorCode.FLOW_CONTROL_ERROR


class WindowedPeer:
    """A server that keeps the flow-control books of RFC 9113 section 6.9.

    It sends only within the windows the client granted, and checks that the
    client never sends beyond the windows the server granted.
    """

    def __init__(self, conn: Connection, stream_window: int, conn_window: int) -> None:
        self.conn = conn
        self.send_conn = 65535  # until the client's WINDOW_UPDATE
        self.send_stream: dict[int, int] = {}
        self.stream_window = stream_window
        self.recv_conn = conn_window
        self.recv_stream: dict[int, int] = {}
        self.received: dict[int, bytearray] = {}

    def read(self) -> None:
        """Take what the client sent; check every DATA frame against the windows."""
        out = self.conn.data_to_send()
        if out.startswith(PREFACE):
            out = out[len(PREFACE) :]
        for kind, _, sid, payload in parse_frames(out):
            if kind == WINDOW:
                inc = struct.unpack(">L", payload)[0]
                if sid:
                    self.send_stream[sid] = self.send_stream.get(sid, 0) + inc
                else:
                    self.send_conn += inc
            elif kind == HEADERS:
                self.recv_stream[sid] = self.stream_window
                self.send_stream.setdefault(sid, self.conn.limits.stream_window)
            elif kind == DATA:
                n = len(payload)
                assert n <= self.recv_conn and n <= self.recv_stream[sid]
                self.recv_conn -= n
                self.recv_stream[sid] -= n
                self.received.setdefault(sid, bytearray()).extend(payload)

    def grant(self, sid: int, n: int) -> None:
        self.recv_conn += n
        self.recv_stream[sid] += n
        self.conn.receive(frame(WINDOW, 0, 0, u32(n)) + frame(WINDOW, 0, sid, u32(n)))

    def data(self, sid: int, payload: bytes, pad: int = -1) -> None:
        """A DATA frame, padded with ``pad`` bytes; asserts it fits the windows."""
        body = payload if pad < 0 else bytes([pad]) + payload + b"\0" * pad
        assert len(body) <= self.send_conn and len(body) <= self.send_stream[sid]
        self.send_conn -= len(body)
        self.send_stream[sid] -= len(body)
        self.conn.receive(frame(DATA, PADDED if pad >= 0 else 0, sid, body))


def test_padding_is_credited_back() -> None:
    # Padding counts against the windows (RFC 9113 6.1): the client must give
    # it back even though the application never sees it.
    limits = Limits(stream_window=4096, connection_window=65535)
    conn = Connection(limits)
    peer = WindowedPeer(conn, 65535, 65535)
    conn.receive(frame(SETTINGS, 0, 0))
    s = conn.open_stream("POST", "http", "h", "/p", [], True)
    peer.read()
    conn.receive(Peer().head(1))
    got = bytearray()
    for i in range(500):  # ~450 KiB of padding: many times both windows
        peer.data(1, b"%03d" % (i % 1000), pad=255 - i % 7)
        got += s.take()
        conn.consume(s, 3)
        peer.read()
    assert bytes(got) == b"".join(b"%03d" % (i % 1000) for i in range(500))
    assert conn.error is None and s.error is None


def test_client_never_overruns_the_server_windows() -> None:
    conn, _ = client()
    peer = WindowedPeer(conn, 1000, 65535)
    conn.receive(frame(SETTINGS, 0, 0, settings(window=1000)))
    streams = [request(conn, end=False) for _ in range(3)]
    for s in streams:
        peer.recv_stream[s.id] = 1000
    bodies = {s.id: bytes([s.id]) * 30_000 for s in streams}
    sent = dict.fromkeys(bodies, 0)
    rounds = 0
    while any(not s.local_ended for s in streams):
        rounds += 1
        assert rounds < 100
        for s in streams:
            if not s.local_ended:
                sent[s.id] += conn.send_data(s, bodies[s.id][sent[s.id] :], True)
            peer.read()
        for s in streams:
            if not s.local_ended:
                peer.grant(s.id, 700)
        if rounds == 3:
            # Lowered midway: windows go negative, then recover.
            conn.receive(frame(SETTINGS, 0, 0, settings(window=100)))
            for s in streams:
                peer.recv_stream[s.id] -= 900
            assert min(s.send_window for s in streams) < 0
        peer.read()
    assert {sid: bytes(b) for sid, b in peer.received.items()} == bodies


def test_continuation_flood_fails_the_connection() -> None:
    conn, peer = client()
    a, b = request(conn), request(conn)
    conn.receive(frame(HEADERS, 0, 1, peer.block([(":status", "200")])))
    # A header block may take up to 64 frames; the 65th fails the connection.
    for _ in range(62):
        conn.receive(frame(CONT, 0, 1, b""))
    assert conn.error is None
    conn.receive(frame(CONT, 0, 1, b"") * 10_000)
    assert conn.error is not None
    assert conn.error.code == ErrorCode.ENHANCE_YOUR_CALM
    assert "64 frames" in str(conn.error)
    # Every stream fails now, none waits for the block to end.
    assert a.error is conn.error and b.error is conn.error
    assert parse_frames(conn.data_to_send())[-1][:3] == (GOAWAY, 0, 0)


def test_a_block_of_64_frames_is_accepted() -> None:
    conn, peer = client()
    s = request(conn)
    block = peer.block([(":status", "200"), ("x-long", "v" * 630)])
    pieces = [block[i * 10 : i * 10 + 10] for i in range(64)]
    assert b"".join(pieces) == block
    wire = frame(HEADERS, 0, 1, pieces[0])
    wire += b"".join(frame(CONT, 0, 1, p) for p in pieces[1:-1])
    wire += frame(CONT, END_HEADERS, 1, pieces[-1])
    conn.receive(wire)
    assert conn.error is None and s.head_received
    assert s.headers == [("x-long", "v" * 630)]


@pytest.mark.parametrize(
    ("limits", "blocks", "needle"),
    [
        (Limits(max_header_frames=3), [b"", b"", b""], "3 frames"),
        (Limits(max_header_block=100), [b"x" * 60, b"x" * 60], "100 bytes"),
    ],
)
def test_header_block_limits_are_parameters(
    limits: Limits, blocks: list[bytes], needle: str
) -> None:
    conn = Connection(limits)
    conn.data_to_send()
    conn.receive(frame(SETTINGS, 0, 0))
    s = request(conn)
    conn.receive(
        frame(HEADERS, 0, 1, b"") + b"".join(frame(CONT, 0, 1, b) for b in blocks)
    )
    assert isinstance(s.error, ProtocolError)
    assert s.error.code == ErrorCode.ENHANCE_YOUR_CALM and needle in str(s.error)


def test_decoded_header_list_limit() -> None:
    conn = Connection(Limits(max_header_list=200))
    out = conn.data_to_send()
    assert struct.pack(">HL", 6, 200) in out  # advertised in SETTINGS
    conn.receive(frame(SETTINGS, 0, 0))
    s = request(conn)
    conn.receive(Peer().head(1, fields={"x-big": "v" * 300}))
    assert isinstance(s.error, ProtocolError)
    assert s.error.code == ErrorCode.ENHANCE_YOUR_CALM
    assert "200 bytes" in str(s.error)


def test_undecodable_header_block_names_no_library_text() -> None:
    conn, _ = client()
    s = request(conn)
    conn.receive(frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"))
    assert isinstance(s.error, ProtocolError)
    assert s.error.code == ErrorCode.COMPRESSION_ERROR
    assert str(s.error) == "the server sent a header block that does not decode (HPACK)"


@pytest.mark.parametrize("announced", [0, 1000, 4096, 100_000, 2**32 - 1])
def test_encoder_table_is_capped(announced: int) -> None:
    conn, _ = client()
    conn.receive(frame(SETTINGS, 0, 0, settings(table=announced)))
    conn.data_to_send()
    # The server's decoder accepts table sizes up to what it announced; ours
    # keeps at most 4096 bytes of it.
    dec = hpack.Decoder()
    dec.max_allowed_table_size = announced
    for i in range(200):
        conn.open_stream("POST", "http", "h", "/p", [("x-id", f"{i:090d}")], True)
        for kind, _, _, payload in parse_frames(conn.data_to_send()):
            if kind == HEADERS:
                fields = [(str(k), str(v)) for k, v in dec.decode(payload)]
                assert ("x-id", f"{i:090d}") in fields
        assert dec.header_table.maxsize <= min(announced, 4096)
        conn.receive(frame(RST, 0, 2 * i + 1, u32(0)))  # keep under the stream cap


def test_end_stream_on_headers_takes_effect_when_the_block_ends() -> None:
    # RFC 9113 6.2: END_STREAM rides on HEADERS; CONTINUATION frames that
    # carry the rest of the block still belong to it.
    conn, peer = client()
    s = request(conn)
    block = peer.block([(":status", "200"), ("x-a", "1")])
    conn.receive(frame(HEADERS, END_STREAM, 1, block[:2]))
    assert not s.head_received and not s.remote_ended
    conn.receive(frame(CONT, END_HEADERS, 1, block[2:]))
    assert s.head_received and s.remote_ended and s.error is None


def test_continuation_on_another_stream_is_a_connection_error() -> None:
    conn, peer = client()
    request(conn)
    s3 = request(conn)
    block = peer.block([(":status", "200")])
    conn.receive(frame(HEADERS, 0, 1, block) + frame(CONT, END_HEADERS, 3, b""))
    assert conn.error is not None and conn.error.code == ErrorCode.PROTOCOL_ERROR
    assert s3.error is conn.error


def test_blocks_of_streams_gone_still_update_the_hpack_table() -> None:
    # RFC 9113 4.3: every header block is decoded, even for a stream the
    # client reset, or the shared table would go out of step.
    conn, peer = client()
    a, b = request(conn), request(conn)
    conn.reset(a)
    conn.receive(peer.head(1, fields={"x-shared": "v" * 20}))
    conn.receive(peer.head(3, end=True, fields={"x-shared": "v" * 20}))
    assert conn.error is None
    assert b.headers == [("x-shared", "v" * 20)] and b.remote_ended


def table_size_updates(block: bytes) -> list[int]:
    """The dynamic table size updates that open an HPACK block (RFC 7541 6.3)."""
    sizes = []
    pos = 0
    while pos < len(block) and block[pos] & 0xE0 == 0x20:
        value = block[pos] & 0x1F
        pos += 1
        if value == 0x1F:
            shift = 0
            while True:
                b = block[pos]
                pos += 1
                value += (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
        sizes.append(value)
    return sizes


@pytest.mark.parametrize(
    ("announced", "updates"),
    [
        ([4096], []),
        ([1, 0], [0]),
        ([0, 1], [0, 1]),
        ([100, 5000], [100, 4096]),
        ([100, 4096, 200], [100, 200]),
    ],
)
def test_table_size_changes_announce_the_smallest_then_the_last(
    announced: list[int], updates: list[int]
) -> None:
    # RFC 7541 4.2: after several changes, the next block signals the smallest
    # size, then the final one; a size above the last one allowed is an error.
    conn, _ = client()
    conn.receive(b"".join(frame(SETTINGS, 0, 0, settings(table=v)) for v in announced))
    conn.data_to_send()
    for expected in (updates, []):
        conn.open_stream("POST", "http", "h", "/p", [("x-a", "1")], True)
        (kind, _, _, block), *_ = parse_frames(conn.data_to_send())
        assert kind == HEADERS
        assert table_size_updates(block) == expected


@pytest.mark.parametrize("step", [1, 3, 5, 1000])
def test_an_http1_answer_is_named(step: int) -> None:
    conn, _ = client_without_settings()
    s = request(conn)
    wire = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
    for i in range(0, len(wire), step):
        conn.receive(wire[i : i + step])
    assert isinstance(s.error, ProtocolError)
    message = str(s.error)
    assert message.startswith("the server answered in HTTP/1.1 (")
    assert message.endswith("not HTTP/2: it does not accept HTTP/2 on this port")
    if step > len("HTTP/1.1 400 Bad Request"):
        assert "'HTTP/1.1 400 Bad Request'" in message


def test_the_server_must_start_with_settings() -> None:
    conn, peer = client_without_settings()
    s = request(conn)
    conn.receive(peer.head(1, end=True))
    assert isinstance(s.error, ProtocolError)
    assert "SETTINGS" in str(s.error)


def client_without_settings() -> tuple[Connection, Peer]:
    conn = Connection()
    conn.data_to_send()
    return conn, Peer()


# -- the transport against a scripted server -------------------------------------

Script = Callable[["ScriptedConn", int, list[tuple[str, str]]], Awaitable[None]]


class ScriptedConn:
    """One connection of the scripted server; ``script`` answers each request."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        script: Script,
        log: list[Any],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.script = script
        self.log = log
        self.peer = Peer()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def run(self) -> None:
        assert await self.reader.readexactly(len(PREFACE)) == PREFACE
        self.send(frame(SETTINGS, 0, 0, settings(streams=10)))
        block = b""
        try:
            while True:
                head = await self.reader.readexactly(9)
                hi, lo, kind, flags, sid = struct.unpack(">HBBBL", head)
                payload = await self.reader.readexactly(hi << 8 | lo)
                self.log.append((kind, flags, sid, payload))
                if kind == SETTINGS and not flags & ACK:
                    self.send(frame(SETTINGS, ACK, 0))
                elif kind in (HEADERS, CONT):
                    block += payload
                    if flags & END_HEADERS:
                        fields = self.peer.decode(block)
                        block = b""
                        await self.script(self, sid, fields)
                await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[
    Callable[[Script], Awaitable[tuple[str, list[Any]]]]
]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> tuple[str, list[Any]]:
        log: list[Any] = []

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            log.append("connection")
            await ScriptedConn(r, w, script, log).run()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}", log

    yield start
    for s in servers:
        s.close()


def raw_request(url: str, body: bytes = b"hi") -> HTTPRequest:
    return HTTPRequest("POST", url + "/svc/M", [("content-type", "x/y")], body, None)


async def read_all(t: AsyncHTTP2Transport, req: HTTPRequest) -> tuple[int, bytes, Any]:
    resp = await t.send(req, None)
    parts = []
    while chunk := await resp.read():
        parts.append(chunk)
    await resp.aclose()
    return resp.status, b"".join(parts), resp.trailers


async def answer(c: ScriptedConn, sid: int, body: bytes = b"ok") -> None:
    c.send(c.peer.head(sid) + frame(DATA, END_STREAM, sid, body))


def misbehave_on(
    n: int, misbehave: Callable[[ScriptedConn, int], None]
) -> tuple[Script, list[int]]:
    """A script that meets the ``n``th stream with ``misbehave`` and answers
    every other one; and the ids of the streams it saw, in order."""
    seen: list[int] = []

    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        seen.append(sid)
        if len(seen) == n:
            misbehave(c, sid)
        else:
            await answer(c, sid)

    return script, seen


async def test_transport_continuation_padding_and_trailers(scripted: Any) -> None:
    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        block = c.peer.block([(":status", "200"), ("x-h", "v" * 50)])
        c.send(
            frame(HEADERS, 0, sid, block[:5])
            + frame(CONT, END_HEADERS, sid, block[5:])
            + frame(DATA, PADDED, sid, b"\x04abc\0\0\0\0")
            + frame(DATA, 0, sid, b"def")
            + frame(HEADERS, END_HEADERS | END_STREAM, sid, c.peer.block([("t", "1")]))
        )

    url, _ = await scripted(script)
    t = AsyncHTTP2Transport()
    try:
        resp = await t.send(raw_request(url), None)
        assert resp.headers["x-h"] == "v" * 50
        body = b""
        while chunk := await resp.read():
            body += chunk
        assert body == b"abcdef"
        assert resp.trailers["t"] == "1"
    finally:
        await t.aclose()


async def test_refused_stream_is_sent_again(scripted: Any) -> None:
    script, seen = misbehave_on(
        1, lambda c, sid: c.send(frame(RST, 0, sid, u32(ErrorCode.REFUSED_STREAM)))
    )
    url, log = await scripted(script)
    t = AsyncHTTP2Transport()
    try:
        assert (await read_all(t, raw_request(url)))[:2] == (200, b"ok")
        assert seen == [1, 3] and log.count("connection") == 1
    finally:
        await t.aclose()


async def test_goaway_moves_calls_to_a_new_connection(scripted: Any) -> None:
    # Going away without having processed the request.
    script, seen = misbehave_on(
        1, lambda c, sid: c.send(frame(GOAWAY, 0, 0, struct.pack(">LL", 0, 0)))
    )
    url, log = await scripted(script)
    t = AsyncHTTP2Transport()
    try:
        assert (await read_all(t, raw_request(url)))[:2] == (200, b"ok")
        assert log.count("connection") == 2 and seen == [1, 1]
        assert (await read_all(t, raw_request(url)))[:2] == (200, b"ok")
        assert log.count("connection") == 2
    finally:
        await t.aclose()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_connection_lost_under_a_request(scripted: Any, method: str) -> None:
    # A reused connection lost without a GOAWAY: the server may have run the
    # request, so only a GET (side-effect free) is sent again.
    script, seen = misbehave_on(2, lambda c, sid: c.writer.close())
    url, log = await scripted(script)
    t = AsyncHTTP2Transport()
    req = raw_request(url)
    req.method = method
    try:
        assert (await read_all(t, req))[:2] == (200, b"ok")
        if method == "GET":
            assert (await read_all(t, req))[:2] == (200, b"ok")
            assert seen == [1, 3, 1] and log.count("connection") == 2
        else:
            with pytest.raises(ConnectError) as info:
                await read_all(t, req)
            assert info.value.code is Code.UNAVAILABLE
            assert seen == [1, 3] and log.count("connection") == 1
    finally:
        await t.aclose()


async def test_streamed_request_is_not_sent_again(scripted: Any) -> None:
    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        c.send(frame(RST, 0, sid, u32(ErrorCode.REFUSED_STREAM)))

    async def body() -> AsyncIterator[bytes]:
        yield b"x"

    url, log = await scripted(script)
    t = AsyncHTTP2Transport()
    try:
        with pytest.raises(ConnectError) as info:
            await t.send(raw_request(url, b""), body())
        assert info.value.code is Code.UNAVAILABLE
        assert len([f for f in log if isinstance(f, tuple) and f[0] == HEADERS]) == 1
    finally:
        await t.aclose()


@pytest.mark.parametrize(
    ("h2code", "code"),
    [
        (ErrorCode.CANCEL, Code.CANCELED),
        (ErrorCode.ENHANCE_YOUR_CALM, Code.RESOURCE_EXHAUSTED),
        (ErrorCode.INADEQUATE_SECURITY, Code.PERMISSION_DENIED),
        (ErrorCode.INTERNAL_ERROR, Code.INTERNAL),
        (ErrorCode.PROTOCOL_ERROR, Code.INTERNAL),
    ],
)
async def test_server_reset_codes(scripted: Any, h2code: int, code: Code) -> None:
    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        c.send(c.peer.head(sid) + frame(RST, 0, sid, u32(h2code)))

    url, _ = await scripted(script)
    t = AsyncHTTP2Transport()
    try:
        resp = await t.send(raw_request(url), None)
        with pytest.raises(ConnectError) as info:
            await resp.read()
        assert info.value.code is code
    finally:
        await t.aclose()


async def test_connection_dropped_mid_response_is_unavailable(scripted: Any) -> None:
    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        c.send(c.peer.head(sid) + frame(DATA, 0, sid, b"part"))
        await c.writer.drain()
        c.writer.close()

    url, _ = await scripted(script)
    t = AsyncHTTP2Transport()
    try:
        resp = await t.send(raw_request(url), None)
        assert await resp.read() == b"part"
        with pytest.raises(ConnectError) as info:
            await resp.read()
        assert info.value.code is Code.UNAVAILABLE
    finally:
        await t.aclose()


async def test_large_request_body_waits_for_window(scripted: Any) -> None:
    received = bytearray()

    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        async def drain_body() -> None:
            # Grant window in small steps while reading the body frames.
            while True:
                await asyncio.sleep(0)
                data = [f for f in c.log if isinstance(f, tuple) and f[0] == DATA]
                got = sum(len(f[3]) for f in data)
                if data and data[-1][1] & END_STREAM:
                    received.extend(b"".join(f[3] for f in data))
                    await answer(c, sid, b"%d" % got)
                    return
                c.send(
                    frame(WINDOW, 0, 0, u32(10_000))
                    + frame(WINDOW, 0, sid, u32(10_000))
                )
                await asyncio.sleep(0.001)

        asyncio.get_running_loop().create_task(drain_body())

    url, log = await scripted(script)
    t = AsyncHTTP2Transport()
    body = bytes(range(256)) * 1000
    try:
        status, data, _ = await read_all(t, raw_request(url, body))
        assert (status, data) == (200, b"%d" % len(body))
        assert bytes(received) == body
        frames = [f for f in log if isinstance(f, tuple) and f[0] == DATA]
        assert max(len(f[3]) for f in frames) <= 16384
        headers = next(f for f in log if isinstance(f, tuple) and f[0] == HEADERS)
        assert ("content-length", str(len(body))) in Peer().decode(headers[3])
    finally:
        await t.aclose()


async def test_cancel_sends_rst_stream_and_keeps_the_connection(scripted: Any) -> None:
    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        if dict(fields)[":path"] == "/svc/slow":
            c.send(c.peer.head(sid))  # and never more
        else:
            await answer(c, sid)

    url, log = await scripted(script)
    t = AsyncHTTP2Transport()
    try:
        slow = HTTPRequest("POST", url + "/svc/slow", [], b"", None)
        resp = await t.send(slow, None)
        reader = asyncio.ensure_future(resp.read())
        await asyncio.sleep(0.01)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert (await read_all(t, raw_request(url)))[:2] == (200, b"ok")
        resets = [f for f in log if isinstance(f, tuple) and f[0] == RST]
        assert resets == [(RST, 0, 1, u32(ErrorCode.CANCEL))]
        assert log.count("connection") == 1
    finally:
        await t.aclose()


async def test_aclose_before_the_end_resets_the_stream(scripted: Any) -> None:
    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        c.send(c.peer.head(sid) + frame(DATA, 0, sid, b"x" * 1000))

    url, log = await scripted(script)
    t = AsyncHTTP2Transport()
    try:
        resp = await t.send(raw_request(url), None)
        assert await resp.read() == b"x" * 1000
        await resp.aclose()
        with pytest.raises(ConnectError) as info:
            await resp.read()
        assert info.value.code is Code.CANCELED
        for _ in range(100):
            if any(isinstance(f, tuple) and f[0] == RST for f in log):
                break
            await asyncio.sleep(0.01)
        assert (RST, 0, 1, u32(ErrorCode.CANCEL)) in log
    finally:
        await t.aclose()


async def test_tls_without_h2_in_alpn_fails(tmp_path: Path) -> None:
    import ssl

    certs = make_certs(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs["cert"], certs["key"])
    ctx.set_alpn_protocols(["http/1.1"])

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    c = AsyncClient(
        f"https://127.0.0.1:{port}", http_version="2", tls_ca_cert=certs["ca"]
    )
    try:
        resp_error = None
        try:
            await c._transport.send(
                HTTPRequest("POST", f"https://127.0.0.1:{port}/x", [], b"", None), None
            )
        except ConnectError as e:
            resp_error = e
        assert resp_error is not None and resp_error.code is Code.UNAVAILABLE
        assert "ALPN" in resp_error.message
    finally:
        await c.aclose()
        server.close()


# -- real servers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerEnv]:
    with peer_env(
        tmp_path_factory.mktemp("h2client"), h2c="hypercorn", h1="uvicorn"
    ) as env:
        yield env


def h2client(env: PeerEnv, which: str = "h2c", **kw: Any) -> AsyncClient:
    if which == "tls":
        kw.update(env.tls_options())
    c = AsyncClient(env.urls[which], http_version="2", **kw)
    assert isinstance(c._transport, AsyncHTTP2Transport)
    return c


def connections(c: AsyncClient) -> int:
    t = c._transport
    assert isinstance(t, AsyncHTTP2Transport)
    return sum(len(v) for v in t._conns.values())


@pytest.mark.parametrize("which", ["h2c", "tls"])
async def test_all_stream_kinds(env: PeerEnv, which: str) -> None:
    pb, specs = env.pb, env.specs
    async with h2client(env, which) as c:
        res = await c.call_unary_detailed(
            specs.post, pb.Req(text="hi"), headers={"x-echo-a": "1", "x-trail-b": "2"}
        )
        assert res.message.text == "hi"
        assert res.headers["x-echo-a"] == "1" and res.trailers["x-trail-b"] == "2"
        got = [
            m.index
            async for m in c.call_server_stream(specs.server_stream, pb.Req(count=5))
        ]
        assert got == list(range(5))

        async def reqs() -> AsyncIterator[Any]:
            for t in "abc":
                yield pb.Req(text=t)

        res2 = await c.call_client_stream(specs.client_stream, reqs())
        assert res2.text == "a,b,c"
        bidi = [m.text async for m in c.call_bidi_stream(specs.bidi, reqs())]
        assert bidi == ["a", "b", "c"]
        assert connections(c) == 1


async def test_grpc_with_trailers(env: PeerEnv, scripted: Any) -> None:
    """gRPC: the status comes in trailers, or alone in the head (trailers-only)."""
    seen: list[dict[str, str]] = []

    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        seen.append(dict(fields))
        head = {"content-type": "application/grpc"}
        if len(seen) == 1:
            msg = env.pb.Res(text="hello", index=7).SerializeToString()
            c.send(
                c.peer.head(sid, fields=head)
                + frame(DATA, 0, sid, struct.pack(">BL", 0, len(msg)) + msg)
                + frame(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    sid,
                    c.peer.block([("grpc-status", "0"), ("x-t", "v")]),
                )
            )
        else:
            head.update({"grpc-status": "5", "grpc-message": "gone"})
            c.send(c.peer.head(sid, end=True, fields=head))

    url, _ = await scripted(script)
    async with AsyncClient(url, protocol="grpc") as c:
        assert isinstance(c._transport, AsyncHTTP2Transport)
        res = await c.call_unary_detailed(env.specs.post, env.pb.Req(text="x"))
        assert (res.message.text, res.message.index) == ("hello", 7)
        assert res.trailers["x-t"] == "v"
        with pytest.raises(ConnectError) as info:
            await c.call_unary(env.specs.post, env.pb.Req(text="x"))
        assert (info.value.code, info.value.message) == (Code.NOT_FOUND, "gone")
    assert seen[0]["te"] == "trailers"
    assert seen[0][":path"] == "/clienttest.v1.TestService/Post"


async def test_errors(env: PeerEnv) -> None:
    async with h2client(env) as c:
        with pytest.raises(ConnectError) as info:
            await c.call_unary(
                env.specs.post, env.pb.Req(error_code="not_found", error_message="no")
            )
        assert (info.value.code, info.value.message) == (Code.NOT_FOUND, "no")
        with pytest.raises(ConnectError) as info:
            async for _ in c.call_server_stream(
                env.specs.server_stream,
                env.pb.Req(count=2, error_code="aborted", error_message="stop"),
            ):
                pass
        assert info.value.code is Code.ABORTED


async def test_many_concurrent_calls_share_one_connection(env: PeerEnv) -> None:
    async with h2client(env) as c:

        async def one(i: int) -> str:
            res = await c.call_unary(
                env.specs.post, env.pb.Req(text=str(i), delay_ms=50)
            )
            return str(res.text)

        got = await asyncio.gather(*(one(i) for i in range(60)))
        assert got == [str(i) for i in range(60)]
        assert connections(c) == 1


async def test_more_calls_than_the_server_allows_open_more_connections(
    env: PeerEnv,
) -> None:
    async with h2client(env) as c:
        await c.call_unary(env.specs.post, env.pb.Req(text="warm"))
        t = c._transport
        assert isinstance(t, AsyncHTTP2Transport)
        [conn] = [x for v in t._conns.values() for x in v]
        limit = conn.h2.max_streams
        n = limit + 10

        async def one(i: int) -> int:
            res = await c.call_unary(env.specs.post, env.pb.Req(delay_ms=200))
            return int(res.index)

        await asyncio.gather(*(one(i) for i in range(n)))
        assert connections(c) >= 2


async def test_large_download_beyond_the_windows(env: PeerEnv) -> None:
    size = 512 * 1024
    count = (CONNECTION_WINDOW * 2) // size
    async with h2client(env) as c:
        total = 0
        most = 0
        stream = c.call_server_stream(
            env.specs.server_stream, env.pb.Req(count=count, size=size)
        )
        async for m in stream:
            total += len(m.padding)
            if total == size:
                # A slow reader: the server must stop at the window.
                await asyncio.sleep(0.5)
            t = c._transport
            assert isinstance(t, AsyncHTTP2Transport)
            for conns in t._conns.values():
                for conn in conns:
                    for s in conn.h2.streams.values():
                        most = max(most, s.buffered)
        assert total == count * size
        assert 0 < most <= STREAM_WINDOW


async def test_an_unread_stream_does_not_block_other_calls(env: PeerEnv) -> None:
    size = 1024 * 1024
    count = 2 * STREAM_WINDOW // size
    async with h2client(env) as c:
        stream = c.call_server_stream(
            env.specs.server_stream, env.pb.Req(count=count, size=size)
        )
        assert len((await stream.__anext__()).padding) == size
        # The stream's window fills up unread; calls on the same connection
        # still get through.
        for i in range(3):
            await asyncio.sleep(0.1)
            res = await c.call_unary(env.specs.post, env.pb.Req(text=str(i)))
            assert res.text == str(i)
        assert connections(c) == 1
        rest = [len(m.padding) async for m in stream]
        assert rest == [size] * (count - 1)


async def test_full_duplex_bidi(env: PeerEnv) -> None:
    async with h2client(env) as c:
        assert await env.full_duplex(c) == [True]


async def test_deadline(env: PeerEnv) -> None:
    async with h2client(env) as c:
        with pytest.raises(ConnectError) as info:
            await c.call_unary(
                env.specs.post, env.pb.Req(delay_ms=5000, test_id="h2-dl"), timeout=0.2
            )
        assert info.value.code is Code.DEADLINE_EXCEEDED
        # The connection carries on.
        assert (await c.call_unary(env.specs.post, env.pb.Req(text="a"))).text == "a"
        assert connections(c) == 1
    await asyncio.to_thread(env.wait_disconnected, "h2-dl", "h2c")


async def test_cancel_mid_stream_resets_only_that_stream(env: PeerEnv) -> None:
    async with h2client(env) as c:
        other = asyncio.ensure_future(
            c.call_unary(env.specs.post, env.pb.Req(text="other", delay_ms=300))
        )
        stream = c.call_server_stream(
            env.specs.server_stream,
            env.pb.Req(count=100, delay_ms=100, test_id="h2-cx"),
        )
        assert (await stream.__anext__()).index == 0
        await stream.aclose()
        assert (await other).text == "other"
        assert connections(c) == 1
    await asyncio.to_thread(env.wait_disconnected, "h2-cx", "h2c")


async def test_transport_aclose_with_a_call_in_flight(env: PeerEnv) -> None:
    c = h2client(env)
    stream = c.call_server_stream(
        env.specs.server_stream, env.pb.Req(count=3, delay_ms=50)
    )
    assert (await stream.__anext__()).index == 0
    await c.aclose()
    # The call in flight finishes; no new call starts.
    assert [m.index async for m in stream] == [1, 2]
    with pytest.raises(ConnectError) as info:
        await c.call_unary(env.specs.post, env.pb.Req())
    assert info.value.code is Code.CANCELED
    gc.collect()


async def test_pyqwest_stays_available_for_http2(env: PeerEnv) -> None:
    import pyqwest

    from protoc_gen_connect_python.runtime.client import PyqwestAsyncTransport

    pool = pyqwest.HTTPTransport(http_version=pyqwest.HTTPVersion.HTTP2)
    try:
        async with AsyncClient(env.urls["h2c"], http_version="2", transport=pool) as c:
            assert isinstance(c._transport, PyqwestAsyncTransport)
            res = await c.call_unary(env.specs.post, env.pb.Req(text="via pyqwest"))
            assert res.text == "via pyqwest"
    finally:
        await pool.aclose()


async def test_a_server_that_never_reads_cannot_grow_the_answers(
    scripted: Any,
) -> None:
    """PINGs while the client's writes are stuck: answers are bounded."""
    pings = 0

    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        nonlocal pings
        # Stop reading and ask for answers until the client gives up.
        sock = c.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        burst = frame(PING, 0, 0, b"12345678") * 4096
        try:
            while True:
                c.send(burst)
                pings += 4096
                await c.writer.drain()
        except (ConnectionError, OSError):
            pass

    url, _ = await scripted(script)
    limit = 64 * 1024
    t = AsyncHTTP2Transport(limits=Limits(max_queued_control=limit))
    try:
        with pytest.raises(ConnectError) as info:
            await asyncio.wait_for(read_all(t, raw_request(url)), 60)
        assert info.value.code is Code.RESOURCE_EXHAUSTED
        assert info.value.message == (
            "the server does not read what it makes the client answer"
            f" (over {limit} bytes queued)"
        )
        assert pings * 17 > limit
    finally:
        await t.aclose()


async def test_grpc_against_an_http1_only_server(env: PeerEnv) -> None:
    async with AsyncClient(env.urls["h1"], protocol="grpc") as c:
        assert isinstance(c._transport, AsyncHTTP2Transport)
        with pytest.raises(ConnectError) as info:
            await c.call_unary(env.specs.post, env.pb.Req(text="x"))
    assert info.value.code is Code.UNAVAILABLE
    assert info.value.message.startswith("the server answered in HTTP/1.1 (")
    assert "('HTTP/1.1 " in info.value.message  # the server's status line
    assert info.value.message.endswith(
        "not HTTP/2: it does not accept HTTP/2 on this port"
    )


async def test_continuation_flood_fails_every_call_on_the_connection(
    scripted: Any,
) -> None:
    flood = 100_000
    heads: list[int] = []

    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        heads.append(sid)
        if len(heads) == 2:
            # Both calls are open: an endless header block on the second.
            c.send(frame(HEADERS, 0, sid, c.peer.block([(":status", "200")])))
            c.send(frame(CONT, 0, sid, b"") * flood)

    url, log = await scripted(script)
    t = AsyncHTTP2Transport()
    try:
        calls = [asyncio.ensure_future(read_all(t, raw_request(url))) for _ in range(2)]
        done = await asyncio.wait_for(
            asyncio.gather(*calls, return_exceptions=True), 30
        )
        for err in done:
            assert isinstance(err, ConnectError)
            assert err.code is Code.RESOURCE_EXHAUSTED
            assert (
                err.message == "the server sent a header block of more than 64 frames"
            )
        goaway = [f for f in log if isinstance(f, tuple) and f[0] == GOAWAY]
        assert goaway and goaway[0][3][4:8] == u32(ErrorCode.ENHANCE_YOUR_CALM)
    finally:
        await t.aclose()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            ProtocolError("over a limit", ErrorCode.ENHANCE_YOUR_CALM),
            Code.RESOURCE_EXHAUSTED,
        ),
        (ProtocolError("broken", ErrorCode.PROTOCOL_ERROR), Code.UNAVAILABLE),
        (ProtocolError("closed", ErrorCode.NO_ERROR), Code.UNAVAILABLE),
        (
            StreamReset("r", ErrorCode.ENHANCE_YOUR_CALM, remote=True),
            Code.RESOURCE_EXHAUSTED,
        ),
    ],
)
def test_connection_errors_map_to_codes(error: Exception, code: Code) -> None:
    err = stream_error(error)
    assert (err.code, err.message) == (code, str(error))


async def test_streamed_request_ends_while_its_window_is_negative(
    scripted: Any,
) -> None:
    """The end of a streamed request is an empty DATA frame: it goes even
    when the server lowered the window below what was sent and never gives
    it back (RFC 9113 6.9.2)."""
    lowered = asyncio.Event()

    async def script(c: ScriptedConn, sid: int, fields: list[Any]) -> None:
        async def watch() -> None:
            def data() -> list[Any]:
                return [f for f in c.log if isinstance(f, tuple) and f[0] == DATA]

            while sum(len(f[3]) for f in data()) < 20_000:
                await asyncio.sleep(0.001)
            c.send(frame(SETTINGS, 0, 0, settings(window=100)))
            await c.writer.drain()
            while not any(f[1] & END_STREAM for f in data()):
                await asyncio.sleep(0.001)
            await answer(c, sid, b"%d" % sum(len(f[3]) for f in data()))

        asyncio.get_running_loop().create_task(watch())

    url, log = await scripted(script)
    t = AsyncHTTP2Transport()

    async def body() -> AsyncIterator[bytes]:
        yield b"b" * 20_000
        # End only once the client has applied the lowered window.
        (conn,) = [c for conns in t._conns.values() for c in conns]
        while conn.h2.peer_initial_window != 100:
            await asyncio.sleep(0.001)
        lowered.set()

    try:
        req = HTTPRequest("POST", url + "/svc/M", [], None, None)
        resp = await asyncio.wait_for(t.send(req, body()), 30)
        got = b""
        while chunk := await asyncio.wait_for(resp.read(), 30):
            got += chunk
        assert lowered.is_set() and got == b"20000"
        window = resp._stream.send_window  # type: ignore[attr-defined]
        assert window == 100 - 20_000  # negative, and the request ended anyway
        await resp.aclose()
        ends = [f for f in log if isinstance(f, tuple) and f[0] == DATA and f[1]]
        assert ends == [(DATA, END_STREAM, 1, b"")]
    finally:
        await t.aclose()
