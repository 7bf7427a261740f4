"""The wire rules of gRPC and gRPC-Web, shared by servers and clients.

Status travels in ``grpc-status`` / ``grpc-message`` (percent-encoded) and
``grpc-status-details-bin`` (a serialized ``google.rpc.Status``), as HTTP
trailers (gRPC) or as a trailers block in a 0x80-flagged envelope (gRPC-Web).
``google.rpc.Status`` is encoded here by hand: three fields, and no dependency
on googleapis-common-protos.
"""

from __future__ import annotations

import contextlib

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError, ErrorDetail
from protoc_gen_connect_python.runtime.headers import (
    Headers,
    decode_binary_header,
    encode_binary_header,
)

GRPC_PREFIX = "application/grpc"
GRPC_WEB_PREFIX = "application/grpc-web"
TIMEOUT_HEADER = "grpc-timeout"
ENCODING = "grpc-encoding"
ACCEPT_ENCODING = "grpc-accept-encoding"
STATUS = "grpc-status"
MESSAGE = "grpc-message"
DETAILS = "grpc-status-details-bin"


def content_type(web: bool, codec_name: str) -> str:
    """``application/grpc[-web]+<codec>``."""
    return (GRPC_WEB_PREFIX if web else GRPC_PREFIX) + "+" + codec_name


def codec_from_content_type(media_type: str, web: bool) -> str | None:
    """The codec named by a lower-case media type; bare ``application/grpc`` is proto."""
    prefix = GRPC_WEB_PREFIX if web else GRPC_PREFIX
    if media_type == prefix:
        return "proto"
    if media_type.startswith(prefix + "+"):
        return media_type[len(prefix) + 1 :]
    return None


_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


def encode_message(message: str) -> str:
    """Percent-encode a ``grpc-message`` value (UTF-8, then %XX outside printable ASCII)."""
    data = message.encode("utf-8")
    if all(b in _UNRESERVED for b in data):
        return message
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in data)


def decode_message(value: str) -> str:
    """Undo ``encode_message``; malformed escapes are kept as they are."""
    if "%" not in value:
        return value
    raw = value.encode("latin-1", "replace")
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25 and i + 2 < len(raw) and _is_hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(b: bytes) -> bool:
    return len(b) == 2 and all(c in b"0123456789abcdefABCDEF" for c in b)


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def status_details(err: ConnectError) -> bytes:
    """A serialized ``google.rpc.Status`` for ``err`` (code, message, details)."""
    out = bytearray(_varint(1 << 3) + _varint(int(err.code)))
    if err.message:
        out += _field(2, err.message.encode("utf-8"))
    for d in err.details:
        out += _field(3, d.as_any().SerializeToString())
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def parse_status_details(data: bytes) -> tuple[int, str, list[ErrorDetail]]:
    """Code, message and details from a serialized ``google.rpc.Status``.

    Raises ValueError when the bytes are malformed.
    """
    code, message, details = 0, "", []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
            if number == 1:
                code = value
            continue
        if wire_type == 2:
            n, pos = _read_varint(data, pos)
            if pos + n > len(data):
                raise ValueError("truncated field")
            chunk, pos = data[pos : pos + n], pos + n
            if number == 2:
                message = chunk.decode("utf-8", "replace")
            elif number == 3:
                a = any_pb2.Any()
                try:
                    a.ParseFromString(chunk)
                except DecodeError:
                    raise ValueError("malformed detail") from None
                details.append(ErrorDetail(a))
            continue
        if wire_type == 5:
            pos += 4
        elif wire_type == 1:
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    return code, message, details


def status_trailers(err: ConnectError | None, trailers: Headers) -> Headers:
    """The trailers ending a call: status, message, details, then the metadata."""
    out = Headers()
    if err is None:
        out.add(STATUS, "0")
    else:
        out.add(STATUS, str(int(err.code)))
        if err.message:
            out.add(MESSAGE, encode_message(err.message))
        if err.details:
            out.add(DETAILS, encode_binary_header(status_details(err)))
    out.extend(trailers)
    if err is not None:
        out.extend(err.metadata)
    return out


def error_from_trailers(trailers: Headers) -> ConnectError | None:
    """The error a call ended with, or None for ``grpc-status: 0``.

    A missing or unparsable status is an ``internal`` protocol error.
    """
    status = trailers.get(STATUS)
    if status is None or not status.isascii() or not status.isdigit():
        return ConnectError(
            Code.INTERNAL, f"protocol error: invalid grpc-status {status!r}"
        )
    n = int(status)
    if n == 0:
        return None
    code = Code(n) if 1 <= n <= 16 else Code.UNKNOWN
    message = decode_message(trailers.get(MESSAGE, ""))
    details: list[ErrorDetail] = []
    raw = trailers.get(DETAILS)
    if raw:
        # Details are a bonus: a malformed value must not hide the status.
        with contextlib.suppress(ValueError):
            _, _, details = parse_status_details(decode_binary_header(raw))
    return ConnectError(code, message, details=details, metadata=trailers.copy())


def encode_trailers_block(trailers: Headers) -> bytes:
    """gRPC-Web: trailers as an HTTP/1-style header block (the 0x80 frame's payload)."""
    return "".join(f"{k}: {v}\r\n" for k, v in trailers.multi_items()).encode("latin-1")


def parse_trailers_block(payload: bytes) -> Headers:
    """gRPC-Web: the trailers in a 0x80 frame's payload."""
    out = Headers()
    for line in payload.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        k, sep, v = line.partition(":")
        if not sep:
            raise ValueError(f"malformed trailer line {line!r}")
        out.add(k.strip().lower(), v.strip())
    return out
