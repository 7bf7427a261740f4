"""The runner's framing: each message is a 4-byte big-endian length, then protobuf."""

from __future__ import annotations

import struct
import threading
from typing import BinaryIO, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

_write_lock = threading.Lock()


def read_message(stream: BinaryIO, message_type: type[M]) -> M | None:
    """The next message, or None at a clean end of input."""
    head = _read_exactly(stream, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    body = _read_exactly(stream, size) if size else b""
    if body is None:
        raise EOFError(f"input ended inside a {size}-byte message")
    msg = message_type()
    msg.ParseFromString(body)
    return msg


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            if got:
                raise EOFError(f"input ended after {got} of {n} bytes")
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def write_message(stream: BinaryIO, message: Message) -> None:
    """Write one framed message; safe to call from several threads."""
    data = message.SerializeToString()
    with _write_lock:
        stream.write(struct.pack(">I", len(data)) + data)
        stream.flush()
