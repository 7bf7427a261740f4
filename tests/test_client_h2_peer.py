"""The HTTP/2 client engine against h2 as the server, driven by hypothesis.

``http2.Connection`` and an ``h2`` server connection talk in memory. Hypothesis
picks the plays: streams opened with request bodies, responses with padding
and trailers, window updates, settings changed midway (windows lowered below
what was sent, frame and table sizes), resets from either side, PING and
GOAWAY, and where the bytes between the two are cut. h2 checks every byte the
client sends (frame sizes, windows, HPACK, stream limits) and raises on any
violation; the test checks that each call ends as it should, with exactly the
bytes the other side sent.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Any

import h2.events as ev
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError
from h2.settings import SettingCodes
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from protoc_gen_connect_python.runtime.client.core import HTTPRequest
from protoc_gen_connect_python.runtime.client.http2 import (
    Connection,
    Limits,
    ProtocolError,
    Stream,
    StreamReset,
)
from protoc_gen_connect_python.runtime.client.http2_transport import (
    AsyncHTTP2Transport,
)

SPLITS = [1, 3, 9, 10, 100, 16_393, 1 << 30]


def sizes(top: int) -> st.SearchStrategy[int]:
    """Sizes small and large alike (hypothesis prefers small ones)."""
    return st.one_of(st.integers(0, 100), st.integers(0, top))


def payload(size: int, seed: int) -> bytes:
    return bytes((seed + i * 7) % 251 for i in range(size))


@dataclass
class Call:
    """One request and what each side did with it."""

    stream: Stream
    body: bytes
    response: bytes
    trailers: list[tuple[str, str]]
    pad: int
    sent: int = 0  # request bytes the client engine took
    seen: bool = False  # the server got the request head
    got: bytearray = field(default_factory=bytearray)  # request bytes at the server
    request_ended: bool = False
    unacked: int = 0  # flow-controlled bytes the server has not given back
    headed: bool = False
    resp_sent: int = 0
    server_ended: bool = False
    server_reset: bool = False
    client_reset: bool = False
    closed_at_server: bool = False  # reset by the client, as the server saw it
    received: bytearray = field(default_factory=bytearray)


class Pair:
    """Our client engine and an h2 server, with the bytes between them cut."""

    def __init__(self, limits: Limits, server_settings: dict[int, int]) -> None:
        self.client = Connection(limits)
        self.server = H2Connection(
            H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.server.initiate_connection()
        if server_settings:
            self.server.update_settings(server_settings)
        self.calls: dict[int, Call] = {}
        self.split = 1 << 30
        self.goaway: int | None = None
        self.pings = 0
        self.ping_acks = 0
        self.notes: set[str] = set()  # what happened, for hypothesis' statistics

    # moving bytes

    def pump(self) -> int:
        """Move bytes both ways until neither side has anything to send.

        Returns how many bytes moved.
        """
        moved = 0
        for _ in range(10_000):
            up = self.client.data_to_send()
            down = self.server.data_to_send()
            if not up and not down:
                return moved
            moved += len(up) + len(down)
            for piece in cut(up, self.split):
                self.on_server(self.server.receive_data(piece))
            for piece in cut(down, self.split):
                self.client.receive(piece)
        raise AssertionError("the two sides never went quiet")

    def on_server(self, events: list[Any]) -> None:
        for e in events:
            if isinstance(e, ev.RequestReceived):
                call = self.calls[e.stream_id]
                call.seen = True
                fields = [(str(k), str(v)) for k, v in e.headers]
                assert ("x-call", str(e.stream_id)) in fields
            elif isinstance(e, ev.DataReceived):
                call = self.calls[e.stream_id]
                call.got += e.data
                call.unacked += e.flow_controlled_length
            elif isinstance(e, ev.StreamEnded):
                self.calls[e.stream_id].request_ended = True
            elif isinstance(e, ev.StreamReset):
                self.calls[e.stream_id].closed_at_server = True
            elif isinstance(e, ev.PingAckReceived):
                self.ping_acks += 1
            elif isinstance(e, ev.ConnectionTerminated):
                raise AssertionError(f"the client closed the connection: {e}")

    # the client's moves

    def open(self, body: bytes, response: bytes, trailers: bool, pad: int) -> None:
        if not self.client.can_open:
            return
        sid = self.client.next_stream_id
        s = self.client.open_stream(
            "POST", "http", "peer", "/svc/M", [("x-call", str(sid))], not body
        )
        self.calls[sid] = Call(
            s, body, response, [("x-t", str(sid))] if trailers else [], pad
        )

    def send(self, call: Call) -> None:
        s = call.stream
        if s.send_window < 0:
            self.notes.add("a negative stream window")
        if call.sent < len(call.body):
            call.sent += self.client.send_data(s, call.body[call.sent :], True)

    def read(self, call: Call) -> None:
        s = call.stream
        while s.buffered:
            data = s.take()
            call.received += data
            self.client.consume(s, len(data))

    def client_reset(self, call: Call) -> None:
        if not call.stream.done:
            call.client_reset = True
        self.client.reset(call.stream)

    # the server's moves

    def respond(self, call: Call, more: bool) -> None:
        """Send the response head, and ``more`` of the body as windows allow."""
        sid = call.stream.id
        if (
            not call.seen
            or self.goaway is not None
            or call.server_ended
            or call.server_reset
            or call.closed_at_server
        ):
            return
        try:
            if not call.headed:
                self.server.send_headers(sid, [(":status", "200"), ("x-s", "1")])
                call.headed = True
            while more:
                left = len(call.response) - call.resp_sent
                room = min(
                    self.server.local_flow_control_window(sid),
                    self.server.max_outbound_frame_size,
                )
                pad = call.pad if call.pad + 1 + min(left, 1) <= room else -1
                n = min(left, room - (pad + 1 if pad >= 0 else 0))
                if n <= 0 and left:
                    return
                chunk = call.response[call.resp_sent : call.resp_sent + n]
                call.resp_sent += n
                last = call.resp_sent == len(call.response)
                self.server.send_data(
                    sid,
                    chunk,
                    end_stream=last and not call.trailers,
                    pad_length=pad if pad >= 0 else None,
                )
                if last:
                    if call.trailers:
                        self.server.send_headers(sid, call.trailers, end_stream=True)
                    call.server_ended = True
                    return
        except StreamClosedError:
            call.closed_at_server = True

    def server_reset(self, call: Call) -> None:
        if (
            call.seen
            and self.goaway is None
            and not call.server_ended
            and not call.closed_at_server
        ):
            try:
                self.server.reset_stream(call.stream.id, ErrorCodes.INTERNAL_ERROR)
            except StreamClosedError:
                return
            call.server_reset = True

    def ack(self, call: Call) -> None:
        if call.unacked and self.goaway is None:
            n, call.unacked = call.unacked, 0
            self.server.acknowledge_received_data(n, call.stream.id)

    def unblock(self, call: Call) -> None:
        """Grant window to a request the client cannot send more of."""
        s = call.stream
        if (
            call.seen
            and call.sent < len(call.body)
            and s.error is None
            and not call.closed_at_server
            and self.goaway is None
        ):
            sid = s.id
            try:
                self.server.increment_flow_control_window(65_535, sid)
            except StreamClosedError:
                return
            self.server.increment_flow_control_window(65_535)

    def change_settings(self, changes: dict[int, int]) -> None:
        if self.goaway is None:
            self.server.update_settings(changes)

    def ping(self) -> None:
        if self.goaway is not None:
            return
        self.pings += 1
        self.server.ping(b"%08d" % self.pings)

    def go_away(self) -> None:
        """GOAWAY for the streams not seen yet; h2 then closes the connection."""
        if self.goaway is None:
            self.pump()
            seen = [sid for sid, c in self.calls.items() if c.seen]
            self.goaway = max(seen, default=0)
            self.server.close_connection(last_stream_id=self.goaway)
            self.pump()
            self.client.connection_lost("the server closed the connection")

    # the end

    def settled(self) -> bool:
        if self.goaway is not None:
            return True  # the connection is gone: nothing more can happen
        for call in self.calls.values():
            s = call.stream
            if not s.done or call.stream.buffered:
                return False
            if s.error is None and call.sent < len(call.body):
                return False
        return True

    def finish(self) -> None:
        """Play on with every side willing until every call has ended."""
        idle = 0
        while idle < 3:
            moved = self.pump()
            for call in list(self.calls.values()):
                self.read(call)
                self.send(call)
                self.ack(call)
                self.respond(call, more=True)
            moved += self.pump()
            if self.settled():
                return
            if not moved:
                idle += 1
                for call in self.calls.values():
                    self.unblock(call)
            else:
                idle = 0
        raise AssertionError("the calls never ended")


def cut(data: bytes, step: int) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)]


def check(pair: Pair) -> None:
    if pair.goaway is None:
        assert pair.client.error is None
    else:
        assert str(pair.client.error) == "the server closed the connection"
    assert pair.ping_acks == pair.pings
    for sid, call in pair.calls.items():
        s = call.stream
        assert bytes(call.received) == call.response[: len(call.received)]
        assert bytes(call.got) == call.body[: len(call.got)]
        refused = pair.goaway is not None and sid > pair.goaway
        lost = pair.goaway is not None and not refused
        if call.client_reset:
            assert isinstance(s.error, StreamReset) and not s.error.remote
        elif refused:
            assert isinstance(s.error, StreamReset) and s.error.refused
        elif call.server_reset:
            assert isinstance(s.error, StreamReset) and s.error.remote
            assert s.error.code == ErrorCodes.INTERNAL_ERROR
        elif lost:
            # The connection closed after GOAWAY: a response not complete
            # by then fails, the request may be cut.
            if s.error is not None:
                assert isinstance(s.error, ProtocolError)
                assert str(s.error) == "the server closed the connection"
            else:
                assert bytes(call.received) == call.response
            continue
        else:
            pair.notes.add("a call completed")
            if call.trailers:
                pair.notes.add("a call completed with trailers")
            if len(call.response) > pair.client.limits.stream_window:
                pair.notes.add("a response larger than the stream window")
            assert s.error is None, s.error
            assert s.status == 200 and s.headers == [("x-s", "1")]
            assert bytes(call.received) == call.response
            assert s.trailers == call.trailers
            assert call.request_ended and bytes(call.got) == call.body


settings_strategy: st.SearchStrategy[dict[int, int]] = st.fixed_dictionaries(
    {},
    optional={
        SettingCodes.INITIAL_WINDOW_SIZE: sizes(1 << 20),
        SettingCodes.MAX_FRAME_SIZE: st.integers(16_384, 1 << 20),
        SettingCodes.HEADER_TABLE_SIZE: st.integers(0, 1 << 16),
        SettingCodes.MAX_CONCURRENT_STREAMS: st.integers(1, 8),
    },
)

limits_strategy = st.builds(
    Limits,
    stream_window=st.one_of(st.integers(16, 1000), st.integers(16, 1 << 20)),
    connection_window=st.integers(65_535, 1 << 21),
    max_frame_size=st.integers(16_384, 1 << 20),
)

moves = st.sampled_from(
    [
        "open",
        "open",
        "send",
        "read",
        "respond",
        "respond",
        "ack",
        "pump",
        "pump",
        "settings",
        "lower",
        "server_reset",
        "client_reset",
        "ping",
        "goaway",
        "unblock",
    ]
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    limits=limits_strategy,
    initial=settings_strategy,
    data=st.data(),
)
def test_client_against_h2_server(
    limits: Limits, initial: dict[int, int], data: st.DataObject
) -> None:
    pair = Pair(limits, initial)
    pair.split = data.draw(st.sampled_from(SPLITS), "split")
    pair.pump()
    for move in data.draw(st.lists(moves, min_size=3, max_size=40), "moves"):
        calls = list(pair.calls.values())
        call = data.draw(st.sampled_from(calls)) if calls else None
        if move == "open":
            pair.open(
                payload(data.draw(sizes(20_000)), len(pair.calls)),
                payload(data.draw(sizes(20_000)), 100 + len(pair.calls)),
                data.draw(st.booleans()),
                data.draw(st.integers(0, 255)),
            )
        elif move == "pump":
            pair.split = data.draw(st.sampled_from(SPLITS))
            pair.pump()
        elif move == "settings":
            pair.change_settings(data.draw(settings_strategy))
        elif move == "lower":
            small = data.draw(st.integers(0, 100))
            pair.change_settings({SettingCodes.INITIAL_WINDOW_SIZE: small})
        elif move == "ping":
            pair.ping()
        elif move == "goaway":
            pair.go_away()
        elif call is not None and move == "respond":
            pair.respond(call, data.draw(st.booleans()))
        elif call is not None:
            getattr(pair, move)(call)
    pair.finish()
    check(pair)
    for note in sorted(pair.notes):
        event(note)


@pytest.mark.parametrize("split", SPLITS)
def test_a_lowered_window_with_h2(split: int) -> None:
    """The server lowers INITIAL_WINDOW_SIZE below what the client already
    sent: the client waits for the window to come back, then ends the stream."""
    pair = Pair(Limits(), {SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    pair.split = split
    pair.pump()
    pair.open(b"x" * 5000, b"ok", False, 0)
    call = pair.calls[1]
    pair.send(call)
    assert call.sent == 1000
    pair.change_settings({SettingCodes.INITIAL_WINDOW_SIZE: 10})
    pair.pump()
    assert call.stream.send_window == 10 - 1000
    pair.send(call)
    assert call.sent == 1000  # nothing while the window is negative
    pair.finish()
    check(pair)


def raw_frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, kind, flags, sid) + payload


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            st.integers(0, 11),
            st.integers(0, 255),
            st.sampled_from([0, 1, 2, 3, 5, 1 << 31 | 1]),
            st.binary(max_size=40),
        ),
        max_size=20,
    ),
    tail=st.binary(max_size=100),
    split=st.sampled_from(SPLITS),
)
def test_any_frames_end_in_a_clean_failure(
    frames: list[tuple[int, int, int, bytes]], tail: bytes, split: int
) -> None:
    """Whatever the server sends, ``receive`` never raises: a violation fails
    the connection (GOAWAY) or the stream (RST_STREAM) with a message."""
    conn = Connection(Limits(max_header_frames=4, max_header_block=256))
    conn.data_to_send()
    s = conn.open_stream("POST", "http", "peer", "/p", [], False)
    wire = raw_frame(4, 0, 0, b"") + b"".join(raw_frame(*f) for f in frames) + tail
    for piece in cut(wire, split):
        conn.receive(piece)
        while s.buffered:
            conn.consume(s, len(s.take()))
        conn.send_data(s, b"x" * 100, False)
    out = conn.data_to_send()
    if conn.error is not None:
        assert str(conn.error)
        # The last frame out is GOAWAY with the error's code.
        assert out[-17:-8] == raw_frame(7, 0, 0, b"\0" * 8)[:9]
        assert struct.unpack(">L", out[-4:])[0] == conn.error.code
        assert s.error is not None or s.remote_ended
    if s.error is not None:
        assert str(s.error)


class H2Server(asyncio.Protocol):
    """An h2 server on loopback, hard on flow control.

    It lowers SETTINGS_INITIAL_WINDOW_SIZE once the request body is under way
    (the client's window goes negative), then gives window back; it answers
    with the size of the body it got, in padded DATA frames sent only within
    the client's windows. h2 raises if the client sends beyond a window.
    """

    def __init__(self, response_size: int) -> None:
        self.h2 = H2Connection(
            H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.response_size = response_size
        self.transport: asyncio.Transport | None = None
        self.bodies: dict[int, bytearray] = {}
        self.left: dict[int, int] = {}
        self.lowered = False
        self.errors: list[BaseException] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 30_000})
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            for e in self.h2.receive_data(data):
                self.handle(e)
        except Exception as e:  # the test reports what h2 found
            self.errors.append(e)
            assert self.transport is not None
            self.transport.close()
            return
        self.flush()

    def handle(self, e: Any) -> None:
        h2c = self.h2
        if isinstance(e, ev.RequestReceived):
            self.bodies[e.stream_id] = bytearray()
        elif isinstance(e, ev.DataReceived):
            self.bodies[e.stream_id] += e.data
            if e.flow_controlled_length:
                h2c.increment_flow_control_window(e.flow_controlled_length)
            if not self.lowered:
                self.lowered = True
                h2c.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 100})
            elif e.flow_controlled_length and e.stream_id in h2c.streams:
                h2c.increment_flow_control_window(e.flow_controlled_length, e.stream_id)
        elif isinstance(e, ev.SettingsAcknowledged) and self.lowered:
            for sid in list(self.bodies):
                if sid in h2c.streams and sid not in self.left:
                    h2c.increment_flow_control_window(65_535, sid)
        elif isinstance(e, ev.StreamEnded):
            sid = e.stream_id
            h2c.send_headers(
                sid, [(":status", "200"), ("x-got", str(len(self.bodies[sid])))]
            )
            self.left[sid] = self.response_size
            self.answer(sid)
        elif isinstance(e, ev.WindowUpdated):
            for sid in list(self.left):
                self.answer(sid)

    def answer(self, sid: int) -> None:
        h2c = self.h2
        pad = 200
        while self.left[sid]:
            room = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
            n = min(self.left[sid], 1000, room - pad - 1)
            if n <= 0:
                return
            self.left[sid] -= n
            h2c.send_data(sid, b"r" * n, end_stream=not self.left[sid], pad_length=pad)
        del self.left[sid]


@pytest.mark.anyio
async def test_transport_with_a_lowered_window_and_padding() -> None:
    loop = asyncio.get_running_loop()
    servers: list[H2Server] = []

    def make() -> H2Server:
        servers.append(H2Server(300_000))
        return servers[-1]

    listener = await loop.create_server(make, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    limits = Limits(stream_window=4096, connection_window=65_535)
    t = AsyncHTTP2Transport(limits=limits)
    body = bytes(range(256)) * 800  # 200 KiB: beyond every window
    try:

        async def call() -> tuple[str, int]:
            req = HTTPRequest("POST", f"http://127.0.0.1:{port}/svc/M", [], body, None)
            resp = await t.send(req, None)
            size = 0
            while chunk := await resp.read():
                assert set(chunk) == {ord("r")}
                size += len(chunk)
            await resp.aclose()
            return resp.headers["x-got"], size

        got = await asyncio.wait_for(asyncio.gather(call(), call()), 60)
        assert list(got) == [(str(len(body)), 300_000)] * 2
        assert [s.errors for s in servers] == [[]]
        assert all(bytes(b) == body for b in servers[0].bodies.values())
    finally:
        await t.aclose()
        listener.close()
