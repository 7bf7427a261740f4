"""Clients that never hang: connect and read-idle timeouts, keepalive, pools.

The first part checks the sans-IO decisions of ``client/timers.py`` on a clock
the test sets. The rest runs both clients over loopback against peers that
misbehave on purpose, each a real socket served by a thread: one that accepts
and never answers, one that stops reading, one that vanishes mid-stream (RST
with SO_LINGER 0), one that sends GOAWAY, and well-behaved ones for the
keepalive, pool and per-host cap cases. Every test asserts the code, and that
the call ended within ten times the timeout configured (a bound on a hang,
never a measure of speed).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hpack
import pyqwest
import pytest
from client_env import SERVER_STREAM_SPEC, UNARY_SPEC, make_certs
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    ConnectError,
    ConnectionOptions,
    SyncClient,
)
from protoc_gen_connect_python.runtime.client.config import build_config
from protoc_gen_connect_python.runtime.client.http2 import PREFACE, Connection
from protoc_gen_connect_python.runtime.client.net import (
    TCP_KEEPALIVE_IDLE,
    set_keepalive,
)
from protoc_gen_connect_python.runtime.client.timers import (
    ConnectionClock,
    HostSlots,
    IdlePool,
    bound,
    timeout_error,
)
from protoc_gen_connect_python.runtime.client.transport import map_transport_error
from protoc_gen_connect_python.runtime.envelope import encode_envelope

pytestmark = pytest.mark.anyio

MSG = StringValue(value="hi")
OK = StringValue(value="ok").SerializeToString()
SHORT = 0.3  # the timeouts the tests configure, in seconds
BOUND = 10 * SHORT  # a call taking longer than this hung


# -- sans-IO ---------------------------------------------------------------------


def test_bound_picks_the_nearer_limit() -> None:
    assert bound(None, None, 5.0) == (None, False)
    assert bound(2.0, None, 5.0) == (2.0, False)
    assert bound(None, 8.0, 5.0) == (3.0, True)
    assert bound(2.0, 8.0, 5.0) == (2.0, False)
    assert bound(4.0, 8.0, 5.0) == (3.0, True)
    assert bound(4.0, 3.0, 5.0) == (0.0, True)


def test_timeout_error_codes() -> None:
    assert timeout_error(True, 1.0).code == Code.DEADLINE_EXCEEDED
    assert timeout_error(False, None).code == Code.DEADLINE_EXCEEDED
    err = timeout_error(False, 1.5)
    assert err.code == Code.UNAVAILABLE
    assert "1.5 s" in err.message and "read_idle_timeout" in err.message


def test_idle_pool_expires_and_caps() -> None:
    pool: IdlePool[str, str] = IdlePool(10.0, 2)
    assert pool.put("a", "a1", 0.0)
    assert pool.put("a", "a2", 5.0)
    assert not pool.put("a", "a3", 5.0)  # at max_per_key: the caller closes it
    assert pool.put("b", "b1", 1.0)
    assert pool.next_expiry() == 10.0
    assert pool.take("a", 9.0) == ("a2", [])  # newest first
    assert pool.expired(10.5) == ["a1"]
    assert pool.next_expiry() == 11.0
    assert pool.take("b", 11.0) == (None, ["b1"])
    assert len(pool) == 0 and pool.next_expiry() is None
    pool.put("c", "c1", 0.0)
    pool.discard("c", "c1")
    assert pool.take("c", 0.0) == (None, [])


def test_idle_pool_without_timeout_keeps_connections() -> None:
    pool: IdlePool[str, str] = IdlePool(None, 4)
    pool.put("a", "a1", 0.0)
    assert pool.expired(1e9) == [] and pool.next_expiry() is None
    assert pool.take("a", 1e9) == ("a1", [])


def test_host_slots() -> None:
    slots: HostSlots[str] = HostSlots(2)
    assert slots.try_open("a") and slots.try_open("a")
    assert not slots.try_open("a")
    assert slots.try_open("b")
    slots.closed("a")
    assert slots.count("a") == 1 and slots.try_open("a")
    unlimited: HostSlots[str] = HostSlots(None)
    assert all(unlimited.try_open("a") for _ in range(1000))


def test_clock_settings_timeout() -> None:
    clock = ConnectionClock(ConnectionOptions(settings_timeout=2.0), 100.0)
    clock.streams(1, 100.0)
    assert clock.check(101.0) == (None, 102.0)
    assert clock.check(102.0) == ("settings", None)
    clock.settings_acked = True
    assert clock.check(102.0) == (None, None)


def test_clock_keepalive_pings_only_with_calls_and_after_silence() -> None:
    opts = ConnectionOptions(
        keepalive_interval=10.0, keepalive_timeout=3.0, pool_idle_timeout=None
    )
    clock = ConnectionClock(opts, 0.0)
    clock.settings_acked = True
    assert clock.check(50.0) == (None, None)  # no call: no PING
    assert clock.streams(1, 50.0)
    assert not clock.streams(2, 50.0)
    assert clock.check(50.0) == ("ping", None)  # silent since 0
    clock.received(50.0)
    assert clock.check(55.0) == (None, 60.0)
    assert clock.check(60.0) == ("ping", None)
    clock.ping_sent(60.0)
    clock.received(61.0)  # other frames do not stand in for the ack
    assert clock.check(62.0) == (None, 63.0)
    assert clock.check(63.0) == ("dead", None)
    clock.ping_acked()
    clock.received(63.0)
    assert clock.check(63.0) == (None, 73.0)


def test_clock_expires_an_idle_connection() -> None:
    clock = ConnectionClock(ConnectionOptions(pool_idle_timeout=5.0), 0.0)
    clock.settings_acked = True
    clock.streams(1, 1.0)
    assert clock.check(100.0) == (None, None)  # busy: never expires
    assert clock.streams(0, 100.0)
    assert clock.check(104.0) == (None, 105.0)
    assert clock.check(105.0) == ("expire", None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("connect_timeout", 0),
        ("connect_timeout", None),
        ("connect_timeout", "1"),
        ("read_idle_timeout", -1.0),
        ("read_idle_timeout", float("nan")),
        ("keepalive_interval", True),
        ("keepalive_timeout", float("inf")),
        ("settings_timeout", 0.0),
        ("pool_idle_timeout", "90"),
        ("max_connections_per_host", 0),
        ("max_connections_per_host", 1.5),
        ("max_connections_per_host", True),
    ],
)
def test_bad_options_raise_value_error(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        ConnectionOptions(**{field: value})


def test_connection_option_is_checked_when_the_client_is_built() -> None:
    with pytest.raises(ValueError, match="ConnectionOptions"):
        build_config("http://x", connection={"connect_timeout": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ConnectionOptions"):
        SyncClient("http://x", connection=5)  # type: ignore[arg-type]
    default = build_config("http://x").connection
    assert default.connect_timeout == 10.0 and default.read_idle_timeout is None
    assert default.keepalive_interval is None and default.pool_idle_timeout == 90.0


def test_pyqwest_timeouts_are_told_apart() -> None:
    err = map_transport_error(TimeoutError("t"), 2.0, None)
    assert err.code == Code.UNAVAILABLE and "read_idle_timeout" in err.message
    future = time.monotonic() + 60
    assert map_transport_error(TimeoutError("t"), 2.0, future).code == Code.UNAVAILABLE
    past = time.monotonic() - 1
    assert (
        map_transport_error(TimeoutError("t"), 2.0, past).code == Code.DEADLINE_EXCEEDED
    )
    assert map_transport_error(TimeoutError("t")).code == Code.DEADLINE_EXCEEDED


SECRET = "internal detail 0x5f3a"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (pyqwest.StreamError(SECRET, pyqwest.StreamErrorCode.CANCEL), Code.CANCELED),
        (
            pyqwest.StreamError(SECRET, pyqwest.StreamErrorCode.PROTOCOL_ERROR),
            Code.INTERNAL,
        ),
        (pyqwest.ConnectTimeout(SECRET), Code.UNAVAILABLE),
        (TimeoutError(SECRET), Code.DEADLINE_EXCEEDED),
        (ConnectionRefusedError(SECRET), Code.UNAVAILABLE),
        (pyqwest.WriteError(SECRET), Code.UNAVAILABLE),
        (pyqwest.ReadError(SECRET), Code.UNAVAILABLE),
        (pyqwest.RemoteProtocolError(SECRET), Code.UNAVAILABLE),
        (ConnectionError(SECRET), Code.UNAVAILABLE),
        (RuntimeError(SECRET), Code.UNKNOWN),
    ],
)
def test_pyqwest_errors_are_told_in_our_words(error: Exception, code: Code) -> None:
    err = map_transport_error(error)
    assert err.code == code
    assert SECRET not in err.message and type(error).__name__ not in err.message


def test_h2_connection_counts_settings_and_ping_acks() -> None:
    conn = Connection()
    conn.data_to_send()  # the preface and SETTINGS
    conn.ping(b"12345678")
    assert conn.data_to_send() == frame(PING, 0, 0, b"12345678")
    conn.receive(frame(SETTINGS, 0, 0))
    assert not conn.settings_acked and conn.ping_acks == 0
    conn.receive(frame(SETTINGS, ACK, 0) + frame(PING, ACK, 0, b"12345678"))
    assert conn.settings_acked and conn.ping_acks == 1
    conn.receive(frame(PING, 0, 0, b"abcdefgh"))  # the server's own: answered
    assert conn.ping_acks == 1
    assert conn.data_to_send().endswith(frame(PING, ACK, 0, b"abcdefgh"))


def test_tcp_keepalive_is_set() -> None:
    with socket.socket() as sock:
        set_keepalive(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            assert idle == TCP_KEEPALIVE_IDLE
    set_keepalive(None)  # a transport without a socket: nothing to do


# -- peers on loopback -----------------------------------------------------------

Handler = Callable[[socket.socket, "Peer"], None]


class Peer:
    """A TCP server on loopback running ``handler`` for each connection in a thread.

    ``tls`` wraps accepted sockets lazily: the handler decides whether the
    handshake ever happens. ``events`` records what handlers report.
    """

    def __init__(self, handler: Handler, backlog: int = 16) -> None:
        self.handler = handler
        self.server = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.events: list[str] = []
        self.changed = threading.Condition()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def note(self, event: str) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def wait_for(self, event: str, timeout: float = 5.0) -> bool:
        """Whether ``event`` was noted within ``timeout`` (a bound, not a measure)."""
        with self.changed:
            return self.changed.wait_for(lambda: event in self.events, timeout)

    def _accept(self) -> None:
        self.server.settimeout(0.05)  # to see ``stop``; accepted sockets block
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)
            self.note("connection")
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            self.handler(conn, self)

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()
        self._thread.join(5)


@pytest.fixture
def peer() -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def start(handler: Handler, backlog: int = 16) -> Peer:
        p = Peer(handler, backlog)
        peers.append(p)
        return p

    yield start
    for p in peers:
        p.close()


def silent(conn: socket.socket, peer: Peer) -> None:
    """Accepts, reads whatever comes, never answers."""
    conn.settimeout(0.1)
    while not peer.stop.is_set():
        try:
            if not conn.recv(65536):
                peer.note("eof")
                return
        except TimeoutError:
            continue


def deaf(conn: socket.socket, peer: Peer) -> None:
    """Accepts, then neither reads nor answers."""
    peer.stop.wait()


def read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("eof")
        data += chunk
    return data


def rst(conn: socket.socket) -> None:
    """Drop the connection with a reset: the peer vanishes."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def h1_unary(conn: socket.socket, peer: Peer) -> None:
    """Answers unary Connect calls on a keep-alive connection; notes its EOF."""
    while True:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                peer.note("eof")
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            body += conn.recv(65536)
        peer.note("request")
        if b"hold" in body:
            peer.wait_for("release")
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\n"
            + f"content-length: {len(OK)}\r\n\r\n".encode()
            + OK
        )


def h1_vanish(conn: socket.socket, peer: Peer) -> None:
    """Starts a server stream, sends one message, then resets the connection."""
    read_head(conn)
    first = encode_envelope(0, OK)
    conn.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/connect+proto\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
        + f"{len(first):x}\r\n".encode()
        + first
        + b"\r\n"
    )
    peer.wait_for("got first")
    rst(conn)


def async_client(url: str, **kw: Any) -> AsyncClient:
    return AsyncClient(url, connection=ConnectionOptions(**kw.pop("opts", {})), **kw)


def sync_client(url: str, **kw: Any) -> SyncClient:
    return SyncClient(url, connection=ConnectionOptions(**kw.pop("opts", {})), **kw)


async def async_fails(client: AsyncClient, code: Code, **kw: Any) -> ConnectError:
    start = time.monotonic()
    async with client:
        with pytest.raises(ConnectError) as info:
            await client.call_unary(UNARY_SPEC, MSG, **kw)
    assert time.monotonic() - start < BOUND
    assert info.value.code == code, info.value.message
    return info.value


def sync_fails(client: SyncClient, code: Code, **kw: Any) -> ConnectError:
    start = time.monotonic()
    with client, pytest.raises(ConnectError) as info:
        client.call_unary(UNARY_SPEC, MSG, **kw)
    assert time.monotonic() - start < BOUND
    assert info.value.code == code, info.value.message
    return info.value


# -- a peer that accepts and never answers ----------------------------------------

IDLE = {"read_idle_timeout": SHORT}


async def test_silent_peer_h1_async_read_idle(peer: Any) -> None:
    p = peer(silent)
    err = await async_fails(async_client(p.url(), opts=IDLE), Code.UNAVAILABLE)
    assert "read_idle_timeout" in err.message


def test_silent_peer_h1_sync_read_idle(peer: Any) -> None:
    p = peer(silent)
    err = sync_fails(sync_client(p.url(), opts=IDLE), Code.UNAVAILABLE)
    assert "read_idle_timeout" in err.message


async def test_silent_peer_the_shorter_deadline_wins(peer: Any) -> None:
    p = peer(silent)
    opts = {"read_idle_timeout": 30.0}
    await async_fails(
        async_client(p.url(), opts=opts), Code.DEADLINE_EXCEEDED, timeout=SHORT
    )
    sync_fails(sync_client(p.url(), opts=opts), Code.DEADLINE_EXCEEDED, timeout=SHORT)


async def test_silent_peer_h2_async_settings_timeout(peer: Any) -> None:
    p = peer(silent)
    client = async_client(p.url(), http_version="2", opts={"settings_timeout": SHORT})
    err = await async_fails(client, Code.UNAVAILABLE)
    assert "SETTINGS" in err.message


async def test_silent_peer_h2_async_read_idle(peer: Any) -> None:
    p = peer(h2_peer(lambda c, sid, fields: None))  # a head that never comes
    client = async_client(p.url(), http_version="2", opts=IDLE)
    err = await async_fails(client, Code.UNAVAILABLE)
    assert "read_idle_timeout" in err.message


def test_silent_peer_h2_sync_read_idle(peer: Any) -> None:
    p = peer(h2_peer(lambda c, sid, fields: None))
    sync_fails(sync_client(p.url(), http_version="2", opts=IDLE), Code.UNAVAILABLE)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("timeouts-certs"))


CONNECT = {"connect_timeout": SHORT}


@pytest.mark.parametrize("http_version", ["1.1", "2"])
async def test_tls_handshake_never_answered_async(
    peer: Any, certs: dict[str, Path], http_version: Any
) -> None:
    p = peer(silent)  # TCP accepted, ClientHello never answered
    client = async_client(
        p.url("https"),
        http_version=http_version,
        tls_ca_cert=certs["ca"],
        opts=CONNECT,
    )
    err = await async_fails(client, Code.UNAVAILABLE)
    assert "connect_timeout" in err.message


@pytest.mark.parametrize("http_version", ["1.1", None])
def test_tls_handshake_never_answered_sync(
    peer: Any, certs: dict[str, Path], http_version: Any
) -> None:
    # "1.1": the pure-Python transport; None: pyqwest (ALPN).
    p = peer(silent)
    client = sync_client(
        p.url("https"),
        http_version=http_version,
        tls_ca_cert=certs["ca"],
        opts=CONNECT,
    )
    sync_fails(client, Code.UNAVAILABLE)


async def test_connect_timeout_is_bounded_by_the_deadline(
    peer: Any, certs: dict[str, Path]
) -> None:
    p = peer(silent)
    opts = {"connect_timeout": 30.0}
    url = p.url("https")
    client = async_client(url, http_version="1.1", tls_ca_cert=certs["ca"], opts=opts)
    await async_fails(client, Code.DEADLINE_EXCEEDED, timeout=SHORT)
    client2 = sync_client(url, http_version="1.1", tls_ca_cert=certs["ca"], opts=opts)
    err = sync_fails(client2, Code.DEADLINE_EXCEEDED, timeout=SHORT)
    assert "TLS" in err.message


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """A URL whose connections never open: the listener's queue is full and
    it accepts nothing, so the kernel drops further SYNs."""
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), 5)
    probe = socket.socket()
    probe.settimeout(0.2)
    with pytest.raises(TimeoutError):  # the queue is full indeed
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield f"http://127.0.0.1:{port}"
    filler.close()
    server.close()


@pytest.mark.parametrize("http_version", ["1.1", "2"])
async def test_connect_never_completes_async(
    full_backlog: str, http_version: Any
) -> None:
    client = async_client(full_backlog, http_version=http_version, opts=CONNECT)
    err = await async_fails(client, Code.UNAVAILABLE)
    assert "connect_timeout" in err.message


@pytest.mark.parametrize("http_version", ["1.1", "2"])
def test_connect_never_completes_sync(full_backlog: str, http_version: Any) -> None:
    # "2": pyqwest, with its connect_timeout.
    client = sync_client(full_backlog, http_version=http_version, opts=CONNECT)
    sync_fails(client, Code.UNAVAILABLE)


def test_connect_never_completes_sync_deadline_first(full_backlog: str) -> None:
    client = sync_client(full_backlog, opts={"connect_timeout": 30.0})
    err = sync_fails(client, Code.DEADLINE_EXCEEDED, timeout=SHORT)
    assert "connecting" in err.message


# -- a peer that stops reading ----------------------------------------------------


def big_requests() -> Iterator[StringValue]:
    for _ in range(2000):  # 32 MiB: more than any socket buffer holds
        yield StringValue(value="x" * 16384)


def test_deaf_peer_h1_sync_upload(peer: Any) -> None:
    p = peer(deaf)
    start = time.monotonic()
    with sync_client(p.url(), opts=IDLE) as client, pytest.raises(ConnectError) as info:
        client.call_client_stream(SERVER_STREAM_SPEC, big_requests())
    assert time.monotonic() - start < BOUND
    assert info.value.code == Code.UNAVAILABLE, info.value.message


async def test_deaf_peer_h1_async_upload(peer: Any) -> None:
    p = peer(deaf)

    async def requests() -> Any:
        for m in big_requests():
            yield m

    start = time.monotonic()
    async with async_client(p.url(), opts=IDLE) as client:
        with pytest.raises(ConnectError) as info:
            await client.call_client_stream(SERVER_STREAM_SPEC, requests())
    assert time.monotonic() - start < BOUND
    assert info.value.code == Code.UNAVAILABLE, info.value.message


# -- HTTP/2 peers: keepalive, GOAWAY, vanishing -------------------------------------

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, kind, flags, sid) + payload


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("eof")
        data += chunk
    return data


class H2:
    """The server side of one HTTP/2 connection, as far as the tests need it."""

    def __init__(self, conn: socket.socket, peer: Peer) -> None:
        self.conn = conn
        self.peer = peer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()

    def send(self, data: bytes) -> None:
        # A write may follow the client's leaving (answers sent from threads).
        with contextlib.suppress(OSError):
            self.conn.sendall(data)

    def head(self, sid: int, grpc: bool = True, end: bool = False) -> None:
        ctype = "application/grpc+proto" if grpc else "application/proto"
        block = self.encoder.encode([(":status", "200"), ("content-type", ctype)])
        flags = END_HEADERS | (END_STREAM if end else 0)
        self.send(frame(HEADERS, flags, sid, block))

    def message(self, sid: int, payload: bytes = OK) -> None:
        self.send(frame(DATA, 0, sid, encode_envelope(0, payload)))

    def trailers(self, sid: int) -> None:
        block = self.encoder.encode([("grpc-status", "0")])
        self.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))

    def goaway(self, last: int, code: int = 0) -> None:
        self.send(frame(GOAWAY, 0, 0, struct.pack(">LL", last, code)))

    def frames(self) -> Iterator[tuple[int, int, int, bytes]]:
        assert recv_exactly(self.conn, len(PREFACE)) == PREFACE
        self.send(frame(SETTINGS, 0, 0))
        while True:
            hi, lo, kind, flags, sid = struct.unpack(
                ">HBBBL", recv_exactly(self.conn, 9)
            )
            payload = recv_exactly(self.conn, hi << 8 | lo)
            if kind == SETTINGS and not flags & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                self.peer.note("ping")
                self.send(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                self.peer.note("goaway")
            yield kind, flags, sid, payload


Script = Callable[[H2, int, Any], Any]


def h2_peer(script: Script) -> Handler:
    """A handler running ``script`` for each request's HEADERS (one frame)."""

    def handle(conn: socket.socket, peer: Peer) -> None:
        h2 = H2(conn, peer)
        try:
            for kind, _, sid, payload in h2.frames():
                if kind == HEADERS:
                    script(h2, sid, h2.decoder.decode(payload))
        except ConnectionError:
            peer.note("eof")

    return handle


def deaf_after_settings(conn: socket.socket, peer: Peer) -> None:
    """Completes the HTTP/2 handshake, then reads nothing more."""
    h2 = H2(conn, peer)
    frames = h2.frames()
    for kind, flags, _, _ in frames:
        if kind == SETTINGS and not flags & ACK:
            break
    peer.stop.wait()


async def test_keepalive_drops_a_peer_that_stopped_reading(peer: Any) -> None:
    p = peer(deaf_after_settings)
    opts = {"keepalive_interval": SHORT / 2, "keepalive_timeout": SHORT}
    client = async_client(p.url(), protocol="grpc", opts=opts)
    err = await async_fails(client, Code.UNAVAILABLE)
    assert "keepalive" in err.message


async def test_keepalive_keeps_a_slow_live_peer(peer: Any) -> None:
    def script(h2: H2, sid: int, fields: Any) -> None:
        h2.head(sid)

        def later() -> None:
            # Silent until the client's PING came (and was answered).
            if h2.peer.wait_for("ping"):
                h2.message(sid)
                h2.trailers(sid)

        threading.Thread(target=later, daemon=True).start()

    p = peer(h2_peer(script))
    opts = {"keepalive_interval": SHORT / 3, "keepalive_timeout": SHORT}
    async with async_client(p.url(), protocol="grpc", opts=opts) as client:
        reply = await client.call_unary(UNARY_SPEC, MSG, timeout=BOUND)
    assert reply.value == "ok"
    assert "ping" in p.events


def goaway_always(h2: H2, sid: int, fields: Any) -> None:
    h2.goaway(0)  # this stream was never processed


async def test_goaway_before_processing_async(peer: Any) -> None:
    p = peer(h2_peer(goaway_always))
    err = await async_fails(async_client(p.url(), protocol="grpc"), Code.UNAVAILABLE)
    assert "going away" in err.message
    assert p.events.count("connection") == 3  # sent again twice, then given up


def test_goaway_before_processing_sync(peer: Any) -> None:
    p = peer(h2_peer(goaway_always))
    sync_fails(sync_client(p.url(), protocol="grpc"), Code.UNAVAILABLE)


def goaway_mid_stream(h2: H2, sid: int, fields: Any) -> None:
    h2.head(sid)
    h2.message(sid)
    h2.goaway(sid, 0x2)  # INTERNAL_ERROR: what was processed cannot finish
    h2.conn.close()


async def test_goaway_with_an_error_mid_stream_async(peer: Any) -> None:
    p = peer(h2_peer(goaway_mid_stream))
    start = time.monotonic()
    async with async_client(p.url(), protocol="grpc") as client:
        got = []
        with pytest.raises(ConnectError) as info:
            async for m in client.call_server_stream(SERVER_STREAM_SPEC, MSG):
                got.append(m.value)
    assert time.monotonic() - start < BOUND
    assert info.value.code == Code.UNAVAILABLE
    assert got in ([], ["ok"])


def test_goaway_with_an_error_mid_stream_sync(peer: Any) -> None:
    p = peer(h2_peer(goaway_mid_stream))
    start = time.monotonic()
    client = sync_client(p.url(), protocol="grpc")
    with client, pytest.raises(ConnectError) as info:
        for _ in client.call_server_stream(SERVER_STREAM_SPEC, MSG):
            pass
    assert time.monotonic() - start < BOUND
    assert info.value.code == Code.UNAVAILABLE


async def test_graceful_goaway_lets_the_call_finish(peer: Any) -> None:
    def script(h2: H2, sid: int, fields: Any) -> None:
        h2.goaway(sid)  # NO_ERROR, this stream included
        h2.head(sid)
        h2.message(sid)
        h2.trailers(sid)

    p = peer(h2_peer(script))
    async with async_client(p.url(), protocol="grpc") as client:
        assert (await client.call_unary(UNARY_SPEC, MSG)).value == "ok"
        assert (await client.call_unary(UNARY_SPEC, MSG)).value == "ok"
    assert p.events.count("connection") == 2  # the second call on a new one


def h2_vanish(h2: H2, sid: int, fields: Any) -> None:
    h2.head(sid)
    h2.message(sid)
    h2.peer.wait_for("got first")
    rst(h2.conn)


async def check_vanish_async(p: Peer, **kw: Any) -> None:
    start = time.monotonic()
    async with AsyncClient(p.url(), **kw) as client:
        got = []
        with pytest.raises(ConnectError) as info:
            async for m in client.call_server_stream(SERVER_STREAM_SPEC, MSG):
                got.append(m.value)
                p.note("got first")
    assert time.monotonic() - start < BOUND
    assert info.value.code == Code.UNAVAILABLE, info.value.message
    assert got == ["ok"]


def check_vanish_sync(p: Peer, **kw: Any) -> None:
    start = time.monotonic()
    with SyncClient(p.url(), **kw) as client:
        got = []
        with pytest.raises(ConnectError) as info:
            for m in client.call_server_stream(SERVER_STREAM_SPEC, MSG):
                got.append(m.value)
                p.note("got first")
    assert time.monotonic() - start < BOUND
    assert info.value.code == Code.UNAVAILABLE, info.value.message
    assert got == ["ok"]


async def test_peer_vanishes_mid_stream_h1_async(peer: Any) -> None:
    await check_vanish_async(peer(h1_vanish))


def test_peer_vanishes_mid_stream_h1_sync(peer: Any) -> None:
    check_vanish_sync(peer(h1_vanish))


async def test_peer_vanishes_mid_stream_h2_async(peer: Any) -> None:
    await check_vanish_async(peer(h2_peer(h2_vanish)), protocol="grpc")


def test_peer_vanishes_mid_stream_h2_sync(peer: Any) -> None:
    check_vanish_sync(peer(h2_peer(h2_vanish)), protocol="grpc")


# -- pools: idle expiry and the cap per host ------------------------------------------

EXPIRE = {"pool_idle_timeout": SHORT}


async def test_idle_h1_connection_expires_async(peer: Any) -> None:
    p = peer(h1_unary)
    async with async_client(p.url(), opts=EXPIRE) as client:
        assert (await client.call_unary(UNARY_SPEC, MSG)).value == "ok"
        # The client closes it by itself; the peer sees the end.
        assert await asyncio.to_thread(p.wait_for, "eof", BOUND)


def test_h1_sync_sockets_have_tcp_keepalive(peer: Any) -> None:
    p = peer(h1_unary)
    with sync_client(p.url()) as client:
        assert client.call_unary(UNARY_SPEC, MSG).value == "ok"
        (pooled,) = client._transport._idle.clear()  # type: ignore[attr-defined]
        assert pooled.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        pooled.close()


def test_idle_h1_connection_expires_sync(peer: Any) -> None:
    p = peer(h1_unary)
    with sync_client(p.url(), opts=EXPIRE) as client:
        assert client.call_unary(UNARY_SPEC, MSG).value == "ok"
        assert client.call_unary(UNARY_SPEC, MSG).value == "ok"
        assert p.events.count("connection") == 1  # reused while fresh
        time.sleep(SHORT * 1.5)
        assert client.call_unary(UNARY_SPEC, MSG).value == "ok"
        assert p.events.count("connection") == 2  # expired: a new one
        assert p.wait_for("eof", BOUND)


async def test_idle_h2_connection_expires_async(peer: Any) -> None:
    def script(h2: H2, sid: int, fields: Any) -> None:
        h2.head(sid)
        h2.message(sid)
        h2.trailers(sid)

    p = peer(h2_peer(script))
    async with async_client(p.url(), protocol="grpc", opts=EXPIRE) as client:
        assert (await client.call_unary(UNARY_SPEC, MSG)).value == "ok"
        assert await asyncio.to_thread(p.wait_for, "goaway", BOUND)
        assert await asyncio.to_thread(p.wait_for, "eof", BOUND)


def test_idle_h2_connection_expires_sync(peer: Any) -> None:
    def script(h2: H2, sid: int, fields: Any) -> None:
        h2.head(sid)
        h2.message(sid)
        h2.trailers(sid)

    p = peer(h2_peer(script))
    with sync_client(p.url(), protocol="grpc", opts=EXPIRE) as client:
        assert client.call_unary(UNARY_SPEC, MSG).value == "ok"
        # pyqwest closes it by itself.
        assert p.wait_for("eof", BOUND)


HOLD = StringValue(value="hold")
CAP = {"max_connections_per_host": 1}


async def test_cap_per_host_h1_async(peer: Any) -> None:
    p = peer(h1_unary)
    async with async_client(p.url(), opts=CAP) as client:
        first = asyncio.ensure_future(client.call_unary(UNARY_SPEC, HOLD))
        assert await asyncio.to_thread(p.wait_for, "request")
        second = asyncio.ensure_future(client.call_unary(UNARY_SPEC, MSG))
        # The second call waits for the first one's connection, within its deadline.
        with pytest.raises(ConnectError) as info:
            await client.call_unary(UNARY_SPEC, MSG, timeout=SHORT)
        assert info.value.code == Code.DEADLINE_EXCEEDED
        p.note("release")
        assert (await first).value == "ok"
        assert (await second).value == "ok"
    assert p.events.count("connection") == 1


def test_cap_per_host_h1_sync(peer: Any) -> None:
    p = peer(h1_unary)
    with sync_client(p.url(), opts=CAP) as client:
        results: list[str] = []
        t = threading.Thread(
            target=lambda: results.append(client.call_unary(UNARY_SPEC, HOLD).value)
        )
        t.start()
        assert p.wait_for("request")
        start = time.monotonic()
        with pytest.raises(ConnectError) as info:
            client.call_unary(UNARY_SPEC, MSG, timeout=SHORT)
        assert time.monotonic() - start < BOUND
        assert info.value.code == Code.DEADLINE_EXCEEDED
        assert "max_connections_per_host" in info.value.message
        p.note("release")
        t.join(BOUND)
        assert results == ["ok"]
        assert client.call_unary(UNARY_SPEC, MSG).value == "ok"
    assert p.events.count("connection") == 1


def one_stream_at_a_time(conn: socket.socket, p: Peer) -> None:
    """An HTTP/2 peer allowing one stream at a time: a second call needs
    another connection. The first stream is answered once "release" is noted."""
    h2 = H2(conn, p)
    conn.sendall(frame(SETTINGS, 0, 0, struct.pack(">HL", 0x3, 1)))

    def answer(sid: int) -> None:
        if sid == 1:
            p.wait_for("release")
        h2.head(sid)
        h2.message(sid)
        h2.trailers(sid)

    with contextlib.suppress(ConnectionError):
        for kind, _, sid, _ in h2.frames():
            if kind == HEADERS:
                p.note("request")
                threading.Thread(target=answer, args=(sid,), daemon=True).start()


async def test_cap_per_host_h2_async(peer: Any) -> None:
    p = peer(one_stream_at_a_time)
    async with async_client(p.url(), protocol="grpc", opts=CAP) as client:
        first = asyncio.ensure_future(client.call_unary(UNARY_SPEC, MSG))
        assert await asyncio.to_thread(p.wait_for, "request")
        with pytest.raises(ConnectError) as info:
            await client.call_unary(UNARY_SPEC, MSG, timeout=SHORT)
        assert info.value.code == Code.DEADLINE_EXCEEDED
        p.note("release")
        assert (await first).value == "ok"
        assert (await client.call_unary(UNARY_SPEC, MSG)).value == "ok"
    assert p.events.count("connection") == 1


def test_silent_peer_h2_sync_without_settings(peer: Any) -> None:
    # pyqwest has no SETTINGS timeout: its read timeout covers the handshake.
    p = peer(silent)
    sync_fails(sync_client(p.url(), http_version="2", opts=IDLE), Code.UNAVAILABLE)


def test_deaf_peer_h2_sync_read_idle(peer: Any) -> None:
    p = peer(deaf_after_settings)
    sync_fails(sync_client(p.url(), protocol="grpc", opts=IDLE), Code.UNAVAILABLE)


async def test_deaf_peer_h2_async_read_idle(peer: Any) -> None:
    p = peer(deaf_after_settings)
    client = async_client(p.url(), protocol="grpc", opts=IDLE)
    err = await async_fails(client, Code.UNAVAILABLE)
    assert "read_idle_timeout" in err.message


def test_cap_per_host_h2_sync(peer: Any) -> None:
    # pyqwest's max_connections_per_address, for the one address of loopback.
    p = peer(one_stream_at_a_time)
    with sync_client(p.url(), protocol="grpc", opts=CAP) as client:
        results: list[str] = []
        t = threading.Thread(
            target=lambda: results.append(client.call_unary(UNARY_SPEC, MSG).value)
        )
        t.start()
        assert p.wait_for("request")
        with pytest.raises(ConnectError) as info:
            client.call_unary(UNARY_SPEC, MSG, timeout=SHORT)
        assert info.value.code == Code.DEADLINE_EXCEEDED
        p.note("release")
        t.join(BOUND)
        assert results == ["ok"]
    assert p.events.count("connection") == 1


async def test_calls_waiting_for_room_end_when_the_client_closes(peer: Any) -> None:
    p = peer(h1_unary)
    client = async_client(p.url(), opts=CAP)
    first = asyncio.ensure_future(client.call_unary(UNARY_SPEC, HOLD))
    assert await asyncio.to_thread(p.wait_for, "request")
    second = asyncio.ensure_future(client.call_unary(UNARY_SPEC, MSG))
    slots = client._transport._slots  # type: ignore[attr-defined]
    for _ in range(1000):  # until the second call waits for room
        if slots._waiting:
            break
        await asyncio.sleep(0.001)
    assert slots._waiting
    await client.aclose()
    with pytest.raises(ConnectError) as info:
        await second
    assert info.value.code == Code.CANCELED
    p.note("release")
    assert (await first).value == "ok"  # a call in flight finishes
