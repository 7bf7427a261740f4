"""HTTP/2 for the client, without I/O: frames in, bytes out (RFC 9113).

:class:`Connection` is the client side of one HTTP/2 connection. The shell
(``http2_transport.py``) feeds it what the socket delivered with
:meth:`Connection.receive`, writes what :meth:`Connection.data_to_send`
returns, and opens streams, sends bodies and resets streams through it. Each
request is a :class:`Stream`, whose fields tell the shell what arrived: the
response head, body chunks, trailers, the end, or why the stream failed.

What the connection takes care of:

* the preface and SETTINGS exchange; it advertises large windows and frames
  (:data:`STREAM_WINDOW`, :data:`CONNECTION_WINDOW`, :data:`MAX_FRAME_SIZE`)
  and no server push;
* flow control both ways: DATA is sent within the peer's windows and frame
  size; received DATA is handed out as it arrives (even before a frame is
  complete), and window is returned only as the application consumes it
  (:meth:`Connection.consume`), in batches of half a window;
* header blocks (HEADERS and CONTINUATION, with HPACK from the ``hpack``
  package), informational responses, trailers;
* PING replies and PINGs of its own (keepalive, counted back in
  ``ping_acks``), the SETTINGS acknowledgement (``settings_acked``),
  RST_STREAM both ways, GOAWAY (streams the server never
  processed fail as refused, and no new stream starts on the connection),
  connection errors (GOAWAY sent, every stream failed).

What the server can make it hold is bounded by :class:`Limits`: windows and
frame size, the size and number of frames of a header block, the decoded
header list, the HPACK table kept for requests. Windows may go negative when
the server lowers its initial window (RFC 9113 section 6.9.2). A server that
answers in HTTP/1.1 is named as such instead of being read as frames.

The receive path never copies a buffer over and over: DATA payloads are sliced
once out of the bytes the socket delivered, and only the bytes of an
incomplete control frame wait in a small buffer.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

import hpack

__all__ = [
    "CONNECTION_WINDOW",
    "MAX_ENCODER_TABLE",
    "MAX_FRAME_SIZE",
    "MAX_HEADER_BLOCK",
    "MAX_HEADER_FRAMES",
    "MAX_HEADER_LIST",
    "MAX_QUEUED_CONTROL",
    "PREFACE",
    "STREAM_WINDOW",
    "Connection",
    "ErrorCode",
    "Limits",
    "ProtocolError",
    "Stream",
    "StreamReset",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""What a client sends first on every HTTP/2 connection."""

STREAM_WINDOW = 8 * 1024 * 1024
"""Flow-control window advertised for each stream (response bytes in flight)."""
CONNECTION_WINDOW = 16 * 1024 * 1024
"""Flow-control window advertised for the whole connection."""
MAX_FRAME_SIZE = 1024 * 1024
"""Largest frame payload the server may send."""
MAX_HEADER_BLOCK = 256 * 1024
"""Largest header block (HEADERS and CONTINUATION together), before decoding."""
MAX_HEADER_LIST = 256 * 1024
"""Largest decoded header list (RFC 7541 size: names, values, 32 per field)."""
MAX_HEADER_FRAMES = 64
"""Most frames in one header block (HEADERS and its CONTINUATION frames).

Empty CONTINUATION frames add nothing to a block's size: this bound is what
stops a server sending them forever. A 256 KiB block fits in 16 frames of
the smallest size a server may send (16 KiB).
"""
MAX_ENCODER_TABLE = 4096
"""Largest HPACK table kept for request headers, whatever the server allows.

The server's SETTINGS_HEADER_TABLE_SIZE is a ceiling, not an order (RFC 7541
section 4.2): the client keeps at most this much of what it sent.
"""
MAX_QUEUED_CONTROL = 1024 * 1024
"""Most bytes of answers (PING and SETTINGS acknowledgements and the like) the
async shell queues while the server reads nothing; past it the connection fails."""
TAKE_BYTES = 16 * 1024
"""Buffered chunks smaller than this are joined into one read, up to its size."""
DEFAULT_MAX_STREAMS = 100
"""Concurrent streams assumed until the server's SETTINGS say otherwise."""

_MAX_WINDOW = 2**31 - 1
_MAX_STREAM_ID = 2**31 - 1
_DEFAULT_WINDOW = 65535
_DEFAULT_FRAME = 16384

# Frame types (RFC 9113 section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings.
_HEADER_TABLE_SIZE = 0x1
_ENABLE_PUSH = 0x2
_MAX_CONCURRENT_STREAMS = 0x3
_INITIAL_WINDOW_SIZE = 0x4
_MAX_FRAME_SIZE = 0x5
_MAX_HEADER_LIST_SIZE = 0x6

_HEAD = struct.Struct(">HBBBL")  # length as 16 + 8 bits, type, flags, stream id
_U32 = struct.Struct(">L")
_U32x2 = struct.Struct(">LL")
_SETTING = struct.Struct(">HL")

# Request fields that mean something only to HTTP/1.1 (RFC 9113 section 8.2.2).
_CONNECTION_FIELDS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)


class ErrorCode:
    """HTTP/2 error codes (RFC 9113 section 7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


_ERROR_NAMES = {
    v: k for k, v in vars(ErrorCode).items() if isinstance(v, int) and k.isupper()
}


def error_name(code: int) -> str:
    """The name of an HTTP/2 error code, or its hex value when unknown."""
    return _ERROR_NAMES.get(code, f"0x{code:x}")


@dataclass(frozen=True)
class Limits:
    """What one connection allows the server, and the most it holds for it.

    A server beyond a size limit fails the connection (GOAWAY with
    ``ENHANCE_YOUR_CALM``, or ``FRAME_SIZE_ERROR`` for a frame) and every call
    on it; one beyond a window breaks flow control (RST_STREAM or GOAWAY with
    ``FLOW_CONTROL_ERROR``). ``max_encoder_table`` only caps what the client
    keeps. Each field defaults to the module constant of the same name.
    """

    stream_window: int = STREAM_WINDOW
    """Flow-control window advertised for each stream."""
    connection_window: int = CONNECTION_WINDOW
    """Flow-control window advertised for the connection."""
    max_frame_size: int = MAX_FRAME_SIZE
    """Largest frame payload the server may send."""
    max_header_block: int = MAX_HEADER_BLOCK
    """Largest header block, encoded."""
    max_header_frames: int = MAX_HEADER_FRAMES
    """Most frames one header block may span."""
    max_header_list: int = MAX_HEADER_LIST
    """Largest header list, decoded (also sent as SETTINGS_MAX_HEADER_LIST_SIZE)."""
    max_encoder_table: int = MAX_ENCODER_TABLE
    """Largest HPACK table for request headers."""
    max_queued_control: int = MAX_QUEUED_CONTROL
    """Most answer bytes queued while the server reads nothing (async shell)."""

    def __post_init__(self) -> None:
        # A connection window starts at 65535 and can only grow (RFC 9113 6.9.2).
        if not _DEFAULT_WINDOW <= self.connection_window <= _MAX_WINDOW:
            raise ValueError("connection_window must be within 65535..2**31-1")
        if not 0 <= self.stream_window <= _MAX_WINDOW:
            raise ValueError("stream_window must be within 0..2**31-1")
        if not _DEFAULT_FRAME <= self.max_frame_size <= 2**24 - 1:
            raise ValueError("max_frame_size must be within 16384..2**24-1")


class ProtocolError(Exception):
    """The connection failed: the peer broke HTTP/2, or the connection ended.

    ``code`` is the HTTP/2 error code sent (or received) with GOAWAY.
    """

    def __init__(self, message: str, code: int = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class StreamReset(Exception):
    """A stream ended early: reset by the server (or by this side), or refused.

    ``remote`` tells who reset it. ``refused`` streams were never processed by
    the server (REFUSED_STREAM, or above a GOAWAY's last stream id), so the
    request may be sent again.
    """

    def __init__(
        self, message: str, code: int, *, remote: bool, refused: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.remote = remote
        self.refused = refused


class Stream:
    """One request and its response, as far as the connection has seen them.

    Read by the shell: ``status`` and ``headers`` once the response head came
    (``head_received``), ``chunks`` of body not yet taken (``buffered`` bytes),
    ``trailers``, ``remote_ended`` once the server ended its side, ``error``
    when the stream failed (a :class:`StreamReset` or :class:`ProtocolError`).
    ``send_window`` is what may be sent now, before the connection's window.
    ``waiter`` and ``send_waiter`` belong to the shell.
    """

    __slots__ = (
        "buffered",
        "chunks",
        "error",
        "head_received",
        "headers",
        "id",
        "local_ended",
        "recv_window",
        "remote_ended",
        "send_waiter",
        "send_window",
        "status",
        "trailers",
        "unacked",
        "waiter",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.head_received = False
        self.trailers: list[tuple[str, str]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.remote_ended = False
        self.local_ended = False
        self.error: Exception | None = None
        self.send_window = send_window
        self.recv_window = recv_window
        self.unacked = 0  # consumed, not yet returned with WINDOW_UPDATE
        self.waiter: object = None
        self.send_waiter: object = None

    @property
    def done(self) -> bool:
        """Whether nothing more will arrive on this stream."""
        return self.remote_ended or self.error is not None

    def take(self) -> bytes:
        """Buffered body bytes: small chunks joined, up to :data:`TAKE_BYTES`.

        Call :meth:`Connection.consume` with their size. Large reads are not
        joined: the consumer would copy them again, and the copies grow with
        the size of a read.
        """
        chunks = self.chunks
        data = chunks.popleft()
        if chunks and len(data) < TAKE_BYTES:
            parts = [data]
            size = len(data)
            while chunks and size < TAKE_BYTES:
                data = chunks.popleft()
                parts.append(data)
                size += len(data)
            data = b"".join(parts)
        self.buffered -= len(data)
        return data


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


class Connection:
    """The client side of one HTTP/2 connection (see the module docstring).

    The preface and SETTINGS are queued at construction: call
    :meth:`data_to_send` and write them before anything else. ``limits``
    default to :class:`Limits` ().
    """

    def __init__(self, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        self.limits = limits
        stream_window = limits.stream_window
        connection_window = limits.connection_window
        max_frame_size = limits.max_frame_size
        self.streams: dict[int, Stream] = {}
        self.next_stream_id = 1
        self.closed = False
        """No new stream may start: GOAWAY came or went, or the connection failed."""
        self.error: ProtocolError | None = None
        """Why the connection failed, once it did."""
        self.goaway: int | None = None  # last stream id of a GOAWAY received
        self.window_opened = False
        """Set when the peer's windows grew: blocked senders may retry; clear it."""
        self.settings_received = False
        self.settings_acked = False
        """Set when the server acknowledged this side's SETTINGS."""
        self.ping_acks = 0
        """PING acknowledgements received (the shell's keepalive counts them)."""

        # What the peer allows this side.
        self.max_streams = DEFAULT_MAX_STREAMS
        self.peer_initial_window = _DEFAULT_WINDOW
        self.peer_max_frame = _DEFAULT_FRAME
        self.send_window = _DEFAULT_WINDOW  # the connection's

        # What this side allows the peer.
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.max_frame_size = max_frame_size
        self.recv_window = connection_window
        self._unacked = 0  # connection-level bytes consumed, not yet returned

        self._encoder = hpack.Encoder()
        self._encoder.header_table_size = min(
            self._encoder.header_table_size, limits.max_encoder_table
        )
        # Table sizes the server allowed since the last header block: the next
        # block announces the smallest, then the last (RFC 7541 section 4.2).
        self._table_low = -1
        self._table_last = 0
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = limits.max_header_list
        self._out: list[bytes | memoryview] = []

        # Receive state: an incomplete frame's bytes; the DATA frame whose
        # payload is being handed out; an unfinished header block.
        self._buf = bytearray()
        self._data_left = 0
        self._pad_left = 0
        self._data_stream: Stream | None = None
        self._data_end = False
        self._in_data = False
        self._block_stream = 0
        self._block_end = False
        self._block: list[bytes] = []
        self._block_size = 0
        self._block_frames = 0
        # The server's first bytes, until they show a frame header: an HTTP/2
        # server starts with SETTINGS (RFC 9113 section 3.4).
        self._opening: bytes | None = b""
        self._touched: dict[int, Stream] = {}

        settings = b"".join(
            [
                _SETTING.pack(_ENABLE_PUSH, 0),
                _SETTING.pack(_INITIAL_WINDOW_SIZE, stream_window),
                _SETTING.pack(_MAX_FRAME_SIZE, max_frame_size),
                _SETTING.pack(_MAX_HEADER_LIST_SIZE, limits.max_header_list),
            ]
        )
        self._out.append(PREFACE)
        self._out.append(_frame(SETTINGS, 0, 0, settings))
        if connection_window > _DEFAULT_WINDOW:
            self._out.append(
                _frame(
                    WINDOW_UPDATE, 0, 0, _U32.pack(connection_window - _DEFAULT_WINDOW)
                )
            )

    # -- output ---------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """The bytes queued for the peer since the last call (may be empty)."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    @property
    def has_output(self) -> bool:
        """Whether :meth:`data_to_send` has something."""
        return bool(self._out)

    # -- streams ----------------------------------------------------------------

    @property
    def can_open(self) -> bool:
        """Whether a new stream may start now."""
        return (
            not self.closed
            and len(self.streams) < self.max_streams
            and self.next_stream_id <= _MAX_STREAM_ID
        )

    def open_stream(
        self,
        method: str,
        scheme: str,
        authority: str,
        path: str,
        headers: list[tuple[str, str]],
        end_stream: bool,
    ) -> Stream:
        """Start a request: queue its HEADERS (and CONTINUATION frames).

        ``headers`` are the request's regular fields; names are sent in lower
        case, and fields specific to HTTP/1.1 are left out. ``ValueError`` for
        names or values with CR, LF or NUL; ``ProtocolError`` when no stream
        may start (see :attr:`can_open`).
        """
        if not self.can_open:
            if self.error is not None:
                raise self.error
            raise ProtocolError("no new stream may start on this connection")
        fields = [
            (":method", method),
            (":scheme", scheme),
            (":authority", authority),
            (":path", path),
        ]
        for name, value in headers:
            name = name.lower()
            if name in _CONNECTION_FIELDS or name == "host":
                continue
            if name == "te" and value.lower() != "trailers":
                continue
            if _bad(name) or _bad(value) or not name or name[0] == ":":
                raise ValueError(f"invalid header field {name!r}")
            fields.append((name, value))
        sid = self.next_stream_id
        self.next_stream_id += 2
        stream = Stream(sid, self.peer_initial_window, self.stream_window)
        self.streams[sid] = stream
        if self._table_low >= 0:
            # hpack announces each size that differs from the one before (and
            # forgets the first if the second set is no change).
            self._encoder.header_table_size = self._table_low
            if self._table_last != self._table_low:
                self._encoder.header_table_size = self._table_last
            self._table_low = -1
        self._send_headers(sid, self._encoder.encode(fields), end_stream)
        if end_stream:
            stream.local_ended = True
        return stream

    def _send_headers(self, sid: int, block: bytes, end_stream: bool) -> None:
        limit = self.peer_max_frame
        flags = END_STREAM if end_stream else 0
        if len(block) <= limit:
            self._out.append(_frame(HEADERS, flags | END_HEADERS, sid, block))
            return
        self._out.append(_frame(HEADERS, flags, sid, block[:limit]))
        pos = limit
        while pos < len(block):
            piece = block[pos : pos + limit]
            pos += limit
            last = END_HEADERS if pos >= len(block) else 0
            self._out.append(_frame(CONTINUATION, last, sid, piece))

    def send_data(
        self, stream: Stream, data: bytes | memoryview, end_stream: bool
    ) -> int:
        """Queue as much of ``data`` as the windows allow; returns how much.

        With ``end_stream``, the last frame ends the request once all of
        ``data`` went (an empty ``data`` just ends it). Nothing is sent on a
        stream that failed or already ended.
        """
        if stream.local_ended or stream.error is not None or self.error is not None:
            return 0
        size = len(data)
        allowed = min(size, stream.send_window, self.send_window)
        if allowed <= 0:
            # Windows may be negative after the server lowered its initial
            # window (RFC 9113 6.9.2): data waits, but an empty frame that
            # ends the stream takes no window and goes now.
            if size or not end_stream:
                return 0
            allowed = 0
        frame_max = self.peer_max_frame
        out = self._out
        sid = stream.id
        if allowed == size and size <= frame_max:
            # One frame (the usual case): no slicing.
            flags = END_STREAM if end_stream else 0
            out.append(_HEAD.pack(size >> 8, size & 0xFF, DATA, flags, sid))
            if size:
                out.append(data)
        else:
            view = memoryview(data)
            pos = 0
            while pos < allowed:
                n = min(frame_max, allowed - pos)
                last = pos + n == size and end_stream
                out.append(
                    _HEAD.pack(n >> 8, n & 0xFF, DATA, END_STREAM if last else 0, sid)
                )
                out.append(bytes(view[pos : pos + n]))
                pos += n
        stream.send_window -= allowed
        self.send_window -= allowed
        if end_stream and allowed == size:
            stream.local_ended = True
            self._maybe_forget(stream)
        return allowed

    def end_stream(self, stream: Stream) -> None:
        """End the request body (an empty DATA frame with END_STREAM)."""
        self.send_data(stream, b"", True)

    def reset(self, stream: Stream, code: int = ErrorCode.CANCEL) -> None:
        """Abandon ``stream``: queue RST_STREAM unless it is over; drop its data.

        Unread response bytes go back to the connection's window.
        """
        if stream.id in self.streams and self.error is None:
            del self.streams[stream.id]
            self._out.append(_frame(RST_STREAM, 0, stream.id, _U32.pack(code)))
        if stream.error is None and not stream.remote_ended:
            stream.error = StreamReset(
                f"stream reset by the client ({error_name(code)})", code, remote=False
            )
        self.release(stream)

    def release(self, stream: Stream) -> None:
        """Give back the connection window held by ``stream``'s unread bytes."""
        if stream.buffered:
            n = stream.buffered
            stream.chunks.clear()
            stream.buffered = 0
            self._credit(n)

    def consume(self, stream: Stream, n: int) -> None:
        """The application took ``n`` body bytes of ``stream``: return window.

        WINDOW_UPDATE frames go out once half a window is owed, not per read.
        """
        if (
            not stream.remote_ended
            and stream.error is None
            and stream.id in self.streams
        ):
            owed = stream.unacked + n
            if owed >= self.stream_window // 2:
                stream.unacked = 0
                stream.recv_window += owed
                self._out.append(_frame(WINDOW_UPDATE, 0, stream.id, _U32.pack(owed)))
            else:
                stream.unacked = owed
        self._credit(n)

    def _credit(self, n: int) -> None:
        owed = self._unacked + n
        if owed >= self.connection_window // 2 and self.error is None:
            self._unacked = 0
            self.recv_window += owed
            self._out.append(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(owed)))
        else:
            self._unacked = owed

    def ping(self, payload: bytes = bytes(8)) -> None:
        """Queue a PING (keepalive); its acknowledgement counts in ``ping_acks``."""
        if self.error is None:
            self._out.append(_frame(PING, 0, 0, payload[:8].ljust(8, b"\0")))

    def close(self, code: int = ErrorCode.NO_ERROR) -> None:
        """Queue GOAWAY; no new stream starts (streams open may finish)."""
        if self.error is None and not self.closed:
            self._out.append(_frame(GOAWAY, 0, 0, _U32x2.pack(0, code)))
        self.closed = True

    def connection_lost(self, message: str) -> list[Stream]:
        """The transport ended: every open stream fails. Returns them."""
        if self.error is None:
            self.error = ProtocolError(message, ErrorCode.NO_ERROR)
        self.closed = True
        streams = list(self.streams.values())
        self.streams.clear()
        for s in streams:
            if s.error is None and not s.remote_ended:
                s.error = self.error
        return streams

    def _maybe_forget(self, stream: Stream) -> None:
        if stream.local_ended and stream.remote_ended:
            self.streams.pop(stream.id, None)

    # -- input ------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Stream]:
        """Process bytes from the peer; returns the streams that changed.

        A connection error does not raise: it sets :attr:`error`, queues GOAWAY
        and fails every stream (all returned).
        """
        touched = self._touched
        touched.clear()
        if self.error is not None:
            return []
        try:
            if self._opening is not None:
                self._check_opening(data)
            self._receive(data)
        except ProtocolError as e:
            self._fail(e)
        return list(touched.values())

    def fail(self, message: str, code: int) -> list[Stream]:
        """Fail the connection from this side: GOAWAY, and every stream fails.

        For limits the shell enforces. Returns the streams that failed.
        """
        touched = self._touched
        touched.clear()
        if self.error is None:
            self._fail(ProtocolError(message, code))
        return list(touched.values())

    def _check_opening(self, data: bytes) -> None:
        opening = self._opening
        assert opening is not None
        opening += data[: 9 - len(opening)]
        if opening[:5] == b"HTTP/":
            line = (self._opening or b"") + data[:200]
            status = line.split(b"\n", 1)[0].strip().decode("latin-1")
            raise ProtocolError(
                f"the server answered in HTTP/1.1 ({status!r}), not HTTP/2:"
                " it does not accept HTTP/2 on this port"
            )
        if len(opening) < 9:
            self._opening = opening
            return
        self._opening = None
        if opening[3] != SETTINGS or opening[4] & ACK:
            raise ProtocolError("the server did not start with SETTINGS")

    def _fail(self, e: ProtocolError) -> None:
        # The last stream id of a client's GOAWAY counts pushed streams: none.
        self._out.append(_frame(GOAWAY, 0, 0, _U32x2.pack(0, e.code)))
        self.error = e
        self.closed = True
        for s in self.streams.values():
            if s.error is None and not s.remote_ended:
                s.error = e
            self._touched[s.id] = s
        self.streams.clear()
        self._buf.clear()

    def _receive(self, data: bytes) -> None:
        pos = 0
        end = len(data)
        buf = self._buf
        streams = self.streams
        touched = self._touched
        while True:
            if self._in_data:
                if self._data_left:
                    take = end - pos
                    if take <= 0:
                        return
                    if take > self._data_left:
                        take = self._data_left
                    s = self._data_stream
                    if s is not None:
                        chunk = (
                            data if pos == 0 and take == end else data[pos : pos + take]
                        )
                        s.chunks.append(chunk)
                        s.buffered += take
                        self._touched[s.id] = s
                    else:
                        self._credit(take)
                    pos += take
                    self._data_left -= take
                    if self._data_left:
                        return
                if self._pad_left:
                    take = min(end - pos, self._pad_left)
                    pos += take
                    self._pad_left -= take
                    if self._pad_left:
                        return
                self._in_data = False
                s = self._data_stream
                self._data_stream = None
                if s is not None and self._data_end:
                    self._remote_end(s)
                continue
            if buf:
                # Complete the frame that began in an earlier read.
                if len(buf) < 9:
                    take = min(9 - len(buf), end - pos)
                    buf += data[pos : pos + take]
                    pos += take
                    if len(buf) < 9:
                        return
                hi, lo, kind, flags, sid = _HEAD.unpack_from(buf)
                length = hi << 8 | lo
                sid &= _MAX_STREAM_ID
                if length > self.max_frame_size:
                    self._oversize(length)
                if kind == DATA:
                    if flags & PADDED and len(buf) < 10:
                        if pos >= end:
                            return
                        buf.append(data[pos])
                        pos += 1
                    pad = buf[9] if flags & PADDED else -1
                    buf.clear()
                    self._start_data(flags, sid, length, pad)
                    continue
                total = 9 + length
                take = min(total - len(buf), end - pos)
                buf += data[pos : pos + take]
                pos += take
                if len(buf) < total:
                    return
                payload = bytes(buf[9:])
                buf.clear()
                self._frame(kind, flags, sid, payload)
                continue
            left = end - pos
            if left < 9:
                if left:
                    buf += data[pos:]
                return
            hi, lo, kind, flags, sid = _HEAD.unpack_from(data, pos)
            length = hi << 8 | lo
            sid &= _MAX_STREAM_ID
            if length > self.max_frame_size:
                self._oversize(length)
            if kind == DATA:
                # The common case in one step: a whole unpadded frame for a
                # stream in good standing.
                s = streams.get(sid)
                if (
                    s is not None
                    and not flags & PADDED
                    and left >= 9 + length
                    and s.head_received
                    and not s.remote_ended
                    and length <= s.recv_window
                    and length <= self.recv_window
                    and not self._block_stream
                ):
                    self.recv_window -= length
                    s.recv_window -= length
                    if length:
                        pos += 9
                        s.chunks.append(data[pos : pos + length])
                        s.buffered += length
                        pos += length
                        touched[sid] = s
                    else:
                        pos += 9
                    if flags & END_STREAM:
                        self._remote_end(s)
                    continue
                if flags & PADDED:
                    if left < 10:
                        buf += data[pos:]
                        return
                    pad = data[pos + 9]
                    pos += 10
                else:
                    pad = -1
                    pos += 9
                self._start_data(flags, sid, length, pad)
                continue
            if left < 9 + length:
                buf += data[pos:]
                return
            payload = data[pos + 9 : pos + 9 + length]
            pos += 9 + length
            self._frame(kind, flags, sid, payload)

    def _oversize(self, length: int) -> None:
        raise ProtocolError(
            f"frame of {length} bytes exceeds the advertised {self.max_frame_size}",
            ErrorCode.FRAME_SIZE_ERROR,
        )

    def _start_data(self, flags: int, sid: int, length: int, pad: int) -> None:
        """A DATA frame header (and pad length) was read: set up its payload."""
        if self._block_stream:
            raise ProtocolError("DATA inside a header block")
        if sid == 0:
            raise ProtocolError("DATA on stream 0")
        if pad >= 0:
            if pad + 1 > length:
                raise ProtocolError("DATA padding exceeds the frame")
            payload = length - 1 - pad
        else:
            pad = 0
            payload = length
        if length > self.recv_window:
            raise ProtocolError(
                "DATA beyond the connection window", ErrorCode.FLOW_CONTROL_ERROR
            )
        self.recv_window -= length
        s = self.streams.get(sid)
        if s is not None and (s.remote_ended or not s.head_received):
            self._stream_error(
                s,
                ErrorCode.STREAM_CLOSED if s.remote_ended else ErrorCode.PROTOCOL_ERROR,
                "DATA after the end of the stream"
                if s.remote_ended
                else "DATA before the response head",
            )
            s = None
        elif s is not None and length > s.recv_window:
            self._stream_error(
                s, ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the stream window"
            )
            s = None
        elif s is None and (sid >= self.next_stream_id or not sid % 2):
            raise ProtocolError(f"DATA on idle stream {sid}")
        if s is not None:
            s.recv_window -= length
        # Padding, and the payload of streams gone, count as consumed now.
        if s is None:
            self._credit(length - payload)
        elif length - payload:
            self.consume(s, length - payload)
        self._in_data = True
        self._data_stream = s
        self._data_left = payload
        self._pad_left = pad
        self._data_end = bool(flags & END_STREAM)
        if not payload and not pad:
            # Nothing to wait for; the loop finishes it at once.
            return

    def _remote_end(self, s: Stream) -> None:
        s.remote_ended = True
        self._touched[s.id] = s
        if s.local_ended:
            self.streams.pop(s.id, None)

    def _stream_error(self, s: Stream, code: int, message: str) -> None:
        if s.error is None:
            s.error = StreamReset(message, code, remote=False)
        self.reset(s, code)
        self._touched[s.id] = s

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._block_stream and kind != CONTINUATION:
            raise ProtocolError("header block interrupted by another frame")
        if kind == HEADERS:
            self._headers(flags, sid, payload)
        elif kind == CONTINUATION:
            if not self._block_stream or sid != self._block_stream:
                raise ProtocolError("CONTINUATION without a header block")
            self._block_frames += 1
            if self._block_frames > self.limits.max_header_frames:
                raise ProtocolError(
                    "the server sent a header block of more than"
                    f" {self.limits.max_header_frames} frames",
                    ErrorCode.ENHANCE_YOUR_CALM,
                )
            self._fragment(payload)
            if flags & END_HEADERS:
                self._end_block()
        elif kind == SETTINGS:
            self._settings(flags, sid, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == PING:
            if sid:
                raise ProtocolError("PING on a stream")
            if len(payload) != 8:
                raise ProtocolError("PING of wrong size", ErrorCode.FRAME_SIZE_ERROR)
            if not flags & ACK:
                self._out.append(_frame(PING, ACK, 0, bytes(payload)))
            else:
                self.ping_acks += 1
        elif kind == RST_STREAM:
            self._rst_stream(sid, payload)
        elif kind == GOAWAY:
            self._goaway(sid, payload)
        elif kind == PRIORITY:
            if sid == 0:
                raise ProtocolError("PRIORITY on stream 0")
            if len(payload) != 5:
                raise ProtocolError(
                    "PRIORITY of wrong size", ErrorCode.FRAME_SIZE_ERROR
                )
        elif kind == PUSH_PROMISE:
            raise ProtocolError("PUSH_PROMISE although push is disabled")
        # Unknown frame types are ignored (RFC 9113 section 4.1).

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ProtocolError("HEADERS on stream 0")
        start, stop = 0, len(payload)
        if flags & PADDED:
            if not stop:
                raise ProtocolError("HEADERS padding without its length")
            stop -= payload[0]
            start = 1
        if flags & PRIORITY_FLAG:
            start += 5
        if start > stop:
            raise ProtocolError("HEADERS padding exceeds the frame")
        self._block_stream = sid
        self._block_end = bool(flags & END_STREAM)
        self._block = []
        self._block_size = 0
        self._block_frames = 1
        self._fragment(payload[start:stop])
        if flags & END_HEADERS:
            self._end_block()

    def _fragment(self, piece: bytes) -> None:
        self._block_size += len(piece)
        limit = self.limits.max_header_block
        if self._block_size > limit:
            raise ProtocolError(
                f"the server sent a header block larger than {limit} bytes",
                ErrorCode.ENHANCE_YOUR_CALM,
            )
        self._block.append(piece)

    def _end_block(self) -> None:
        sid = self._block_stream
        block = b"".join(self._block)
        self._block = []
        self._block_stream = 0
        try:
            # Always decoded: the HPACK table must follow every block.
            fields: list[tuple[str, str]] = self._decoder.decode(block)  # type: ignore[assignment]
        except hpack.OversizedHeaderListError:
            raise ProtocolError(
                "the server sent a header list larger than"
                f" {self.limits.max_header_list} bytes",
                ErrorCode.ENHANCE_YOUR_CALM,
            ) from None
        except (hpack.HPACKError, UnicodeDecodeError, ValueError):
            raise ProtocolError(
                "the server sent a header block that does not decode (HPACK)",
                ErrorCode.COMPRESSION_ERROR,
            ) from None
        s = self.streams.get(sid)
        if s is None:
            if sid >= self.next_stream_id or not sid % 2:
                raise ProtocolError(f"HEADERS on stream {sid}, never opened")
            return  # a stream already reset or finished
        if s.remote_ended:
            self._stream_error(s, ErrorCode.STREAM_CLOSED, "HEADERS after the end")
            return
        end = self._block_end
        if not s.head_received:
            status = 0
            regular: list[tuple[str, str]] = []
            for name, value in fields:
                if name[:1] == ":":
                    if name != ":status" or regular:
                        self._stream_error(
                            s,
                            ErrorCode.PROTOCOL_ERROR,
                            f"unexpected pseudo-header {name!r} in the response",
                        )
                        return
                    ok = len(value) == 3 and value.isascii() and value.isdigit()
                    status = int(value) if ok else -1
                else:
                    regular.append((name, value))
            if status < 100:
                self._stream_error(
                    s, ErrorCode.PROTOCOL_ERROR, "response without a valid :status"
                )
                return
            if status < 200:
                if end:
                    self._stream_error(
                        s, ErrorCode.PROTOCOL_ERROR, "informational response ends"
                    )
                return  # 1xx: the final response follows
            s.status = status
            s.headers = regular
            s.head_received = True
        else:
            if not end:
                self._stream_error(
                    s, ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM"
                )
                return
            trailers: list[tuple[str, str]] = []
            for name, value in fields:
                if name[:1] == ":":
                    self._stream_error(
                        s, ErrorCode.PROTOCOL_ERROR, "pseudo-header in trailers"
                    )
                    return
                trailers.append((name, value))
            s.trailers = trailers
        self._touched[s.id] = s
        if end:
            self._remote_end(s)

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise ProtocolError("SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolError(
                    "SETTINGS ACK with a payload", ErrorCode.FRAME_SIZE_ERROR
                )
            self.settings_acked = True
            return
        if len(payload) % 6:
            raise ProtocolError("SETTINGS of wrong size", ErrorCode.FRAME_SIZE_ERROR)
        for off in range(0, len(payload), 6):
            ident, value = _SETTING.unpack_from(payload, off)
            if ident == _HEADER_TABLE_SIZE:
                size = min(value, self.limits.max_encoder_table)
                low = self._table_low
                self._table_low = size if low < 0 else min(low, size)
                self._table_last = size
            elif ident == _ENABLE_PUSH:
                if value > 1:
                    raise ProtocolError("ENABLE_PUSH must be 0 or 1")
            elif ident == _MAX_CONCURRENT_STREAMS:
                self.max_streams = value
            elif ident == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise ProtocolError(
                        "INITIAL_WINDOW_SIZE too large", ErrorCode.FLOW_CONTROL_ERROR
                    )
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for s in self.streams.values():
                    s.send_window += delta
                    if s.send_window > _MAX_WINDOW:
                        raise ProtocolError(
                            "stream window overflow", ErrorCode.FLOW_CONTROL_ERROR
                        )
                if delta > 0:
                    self.window_opened = True
            elif ident == _MAX_FRAME_SIZE:
                if not _DEFAULT_FRAME <= value <= 2**24 - 1:
                    raise ProtocolError("MAX_FRAME_SIZE out of range")
                self.peer_max_frame = value
            # MAX_HEADER_LIST_SIZE is advisory; unknown settings are ignored.
        self.settings_received = True
        self._out.append(_frame(SETTINGS, ACK, 0))

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(
                "WINDOW_UPDATE of wrong size", ErrorCode.FRAME_SIZE_ERROR
            )
        inc = _U32.unpack(payload)[0] & _MAX_WINDOW
        if sid == 0:
            if inc == 0:
                raise ProtocolError("WINDOW_UPDATE of 0 for the connection")
            self.send_window += inc
            if self.send_window > _MAX_WINDOW:
                raise ProtocolError(
                    "connection window overflow", ErrorCode.FLOW_CONTROL_ERROR
                )
            self.window_opened = True
            return
        s = self.streams.get(sid)
        if s is None:
            if sid >= self.next_stream_id:
                raise ProtocolError(f"WINDOW_UPDATE on idle stream {sid}")
            return
        if inc == 0:
            self._stream_error(s, ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            return
        s.send_window += inc
        if s.send_window > _MAX_WINDOW:
            self._stream_error(s, ErrorCode.FLOW_CONTROL_ERROR, "window overflow")
            return
        self.window_opened = True
        self._touched[s.id] = s

    def _rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ProtocolError("RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ProtocolError("RST_STREAM of wrong size", ErrorCode.FRAME_SIZE_ERROR)
        code = _U32.unpack(payload)[0]
        s = self.streams.pop(sid, None)
        if s is None:
            if sid >= self.next_stream_id:
                raise ProtocolError(f"RST_STREAM on idle stream {sid}")
            return
        # After a complete response, a reset only stops the request body.
        s.local_ended = True
        if not s.remote_ended and s.error is None:
            s.error = StreamReset(
                f"stream reset by the server ({error_name(code)})",
                code,
                remote=True,
                refused=code == ErrorCode.REFUSED_STREAM,
            )
        self._touched[sid] = s

    def _goaway(self, sid: int, payload: bytes) -> None:
        if sid:
            raise ProtocolError("GOAWAY on a stream")
        if len(payload) < 8:
            raise ProtocolError("GOAWAY too short", ErrorCode.FRAME_SIZE_ERROR)
        last, code = _U32x2.unpack_from(payload)
        last &= _MAX_STREAM_ID
        self.closed = True
        self.goaway = last if self.goaway is None else min(last, self.goaway)
        debug = bytes(payload[8:]).decode("utf-8", "replace")
        for s in [s for s in self.streams.values() if s.id > last]:
            del self.streams[s.id]
            if s.error is None:
                s.error = StreamReset(
                    "stream not processed: the server is going away"
                    f" ({error_name(code)}{': ' + debug if debug else ''})",
                    ErrorCode.REFUSED_STREAM,
                    remote=True,
                    refused=True,
                )
            self._touched[s.id] = s
        if code != ErrorCode.NO_ERROR:
            # The server stopped on an error: what it processed cannot finish.
            err = ProtocolError(
                f"connection closed by the server ({error_name(code)}"
                f"{': ' + debug if debug else ''})",
                code,
            )
            for s in self.streams.values():
                if s.error is None and not s.remote_ended:
                    s.error = err
                self._touched[s.id] = s


def _bad(text: str) -> bool:
    return "\r" in text or "\n" in text or "\0" in text
