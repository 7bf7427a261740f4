"""The 5-byte envelope shared by Connect streaming, gRPC and gRPC-Web.

Each message is framed as one flags byte, a big-endian uint32 length and the
payload. The decoder is incremental and checks the declared length against the
limit before buffering the payload.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast, overload

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.codec import Payload
from protoc_gen_connect_python.runtime.compression import Compression
from protoc_gen_connect_python.runtime.errors import ConnectError

FLAG_COMPRESSED = 0x01
"""The payload is compressed with the stream's negotiated algorithm."""
FLAG_END_STREAM = 0x02
"""Connect: the end-of-stream message (JSON error and trailers)."""
FLAG_TRAILERS = 0x80
"""gRPC-Web: the payload is the trailers block."""
JOIN_MAX = 64 * 1024
"""The most bytes of framed messages joined into one write: each write costs
the peer an event or a syscall of its own, and 64 KiB keeps the copy cheap."""

_HEADER = struct.Struct(">BI")
HEADER_SIZE = 5


def encode_envelope(flags: int, payload: bytes) -> bytes:
    """Frame one payload."""
    return _HEADER.pack(flags, len(payload)) + payload


def encode_message(
    payload: bytes,
    compression: Compression | None,
    compress_min_bytes: int,
    send_max_bytes: int,
) -> bytes:
    """Frame one message payload, compressing it when worth it.

    Raises resource_exhausted when the (possibly compressed) payload is larger
    than ``send_max_bytes`` (0 means no limit).
    """
    flags = 0
    if compression is not None and len(payload) >= compress_min_bytes:
        payload = compression.compress(payload)
        flags = FLAG_COMPRESSED
    if send_max_bytes and len(payload) > send_max_bytes:
        raise ConnectError(
            Code.RESOURCE_EXHAUSTED,
            f"message size {len(payload)} exceeds send limit {send_max_bytes}",
        )
    return _HEADER.pack(flags, len(payload)) + payload


def message_framer(
    encode: Callable[[Any], bytes],
    compression: Compression | None,
    compress_min_bytes: int,
    send_max_bytes: int,
) -> Callable[[Any, list[bytes]], int]:
    """``encode`` then ``encode_message`` as one callable, made once per stream.

    The callable adds the framed message to a list of pieces to be joined
    into one write and returns how many bytes it added. Without compression
    or a send limit (the usual case) each message costs its encoding and a
    header, no copy: the join that sends it is the only one.
    """
    if compression is None and not send_max_bytes:
        pack = _HEADER.pack

        def frame(message: Any, out: list[bytes]) -> int:
            payload = encode(message)
            n = len(payload)
            out.append(pack(0, n))
            out.append(payload)
            return n + HEADER_SIZE

        return frame

    def frame_checked(message: Any, out: list[bytes]) -> int:
        data = encode_message(
            encode(message), compression, compress_min_bytes, send_max_bytes
        )
        out.append(data)
        return len(data)

    return frame_checked


def joined(frames: Iterable[bytes]) -> Iterator[bytes]:
    """``frames`` joined into writes of about ``JOIN_MAX`` bytes.

    Only for frames that are all ready (a list): nothing may wait behind one
    that is held.
    """
    held: list[bytes] = []
    size = 0
    for f in frames:
        held.append(f)
        size += len(f)
        if size >= JOIN_MAX:
            yield b"".join(held)
            held.clear()
            size = 0
    if held:
        yield b"".join(held)


class EnvelopeDecoder:
    """Splits a byte stream into (flags, payload) frames.

    ``read_max_bytes`` (0 = unlimited) bounds each payload as sent on the wire;
    a larger declared length fails at once with resource_exhausted.
    """

    __slots__ = ("_buf", "_flags", "_need", "read_max_bytes")

    def __init__(self, read_max_bytes: int = 0) -> None:
        self._buf = bytearray()
        self._need = -1  # payload length once a header is parsed
        self._flags = 0
        self.read_max_bytes = read_max_bytes

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add bytes; return every frame now complete, in order."""
        return cast("list[tuple[int, bytes]]", self._feed(data, False))

    def feed_views(self, data: bytes) -> list[tuple[int, Payload]]:
        """``feed``, with payloads that lie whole in ``data`` as views of it.

        Saves a copy, and an allocation, per message. A view keeps ``data``
        alive while it lives; ``data`` of any type but bytes is copied from,
        as by ``feed``, since its owner may reuse it.
        """
        return self._feed(data, True)

    def _feed(self, data: bytes, views: bool) -> list[tuple[int, Payload]]:
        out: list[tuple[int, Payload]] = []
        pos = 0
        if self._buf:
            # Complete the buffered part first, with only the bytes it lacks.
            pos = self._finish(data, out)
            if self._buf:
                return out
        # Frames are cut from ``data`` at a walking offset; only an incomplete
        # last one is kept, in the buffer. Views only of bytes: a caller may
        # reuse any other buffer once feed returns.
        views = views and type(data) is bytes
        src: bytes | memoryview = (
            data if type(data) is bytes and not views else memoryview(data)
        )
        end = len(src)
        need = self._need
        try:
            while True:
                if need < 0:
                    if end - pos < HEADER_SIZE:
                        break
                    self._flags, need = _HEADER.unpack_from(src, pos)
                    pos += HEADER_SIZE
                    self._check(need)
                if end - pos < need:
                    break
                payload = src[pos : pos + need]
                if not views and type(payload) is not bytes:
                    payload = bytes(payload)
                out.append((self._flags, payload))
                pos += need
                need = -1
        finally:
            self._need = need
        if pos < end:
            self._buf += src[pos:]
        return out

    def _finish(self, data: bytes, out: list[tuple[int, Payload]]) -> int:
        """Add to the buffered header or payload what it lacks from ``data``.

        Returns how many bytes of ``data`` were used; a completed payload goes
        to ``out``, a completed header leaves its payload to be cut from
        ``data``.
        """
        buf = self._buf
        if self._need < 0:
            take = HEADER_SIZE - len(buf)
            buf += data[:take]
            if len(buf) < HEADER_SIZE:
                return len(data)
            self._flags, self._need = _HEADER.unpack_from(buf)
            buf.clear()
            self._check(self._need)
            return take
        take = self._need - len(buf)
        buf += memoryview(data)[:take]
        if len(buf) < self._need:
            return len(data)
        out.append((self._flags, bytes(buf)))
        buf.clear()
        self._need = -1
        return take

    def _check(self, size: int) -> None:
        limit = self.read_max_bytes
        if limit and size > limit:
            raise ConnectError(
                Code.RESOURCE_EXHAUSTED,
                f"message size {size} is larger than configured max {limit}",
            )

    @property
    def needed(self) -> int:
        """Bytes still missing for the next header or payload (at least 1).

        Blocking readers read exactly this much, so they never wait for bytes
        the peer has not sent yet.
        """
        if self._need < 0:
            return HEADER_SIZE - len(self._buf)
        return max(1, self._need - len(self._buf))

    @property
    def pending(self) -> bool:
        """Whether a partial frame is buffered."""
        return self._need >= 0 or bool(self._buf)

    def close(self, code: Code = Code.INVALID_ARGUMENT) -> None:
        """Declare the end of input; a partial frame raises ConnectError(code)."""
        if self.pending:
            raise ConnectError(code, "protocol error: incomplete envelope")


@overload
def decode_payload(
    flags: int,
    payload: bytes,
    compression: Compression | None,
    read_max_bytes: int,
    error_code: Code = ...,
) -> bytes: ...


@overload
def decode_payload(
    flags: int,
    payload: Payload,
    compression: Compression | None,
    read_max_bytes: int,
    error_code: Code = ...,
) -> Payload: ...


def decode_payload(
    flags: int,
    payload: Payload,
    compression: Compression | None,
    read_max_bytes: int,
    error_code: Code = Code.INTERNAL,
) -> Payload:
    """Decompress a message payload when its flag says so, within the limit.

    A payload that is not compressed comes back as it was (a view stays a
    view); a compressed one is handed to ``compression`` as ``bytes``.
    """
    if flags & FLAG_COMPRESSED:
        if compression is None:
            raise ConnectError(
                error_code,
                "protocol error: received compressed message without an encoding",
            )
        return compression.decompress(bytes(payload), read_max_bytes)
    return payload
