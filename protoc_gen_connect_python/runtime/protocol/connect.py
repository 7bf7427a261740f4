"""The Connect protocol's wire rules (https://connectrpc.com/docs/protocol).

Pure functions over bytes, headers and errors, used by both servers and clients.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError, ErrorDetail
from protoc_gen_connect_python.runtime.headers import Headers

PROTOCOL_VERSION = "1"
VERSION_HEADER = "connect-protocol-version"
TIMEOUT_HEADER = "connect-timeout-ms"
STREAM_ENCODING = "connect-content-encoding"
STREAM_ACCEPT_ENCODING = "connect-accept-encoding"
UNARY_ENCODING = "content-encoding"
UNARY_ACCEPT_ENCODING = "accept-encoding"
TRAILER_PREFIX = "trailer-"

UNARY_PREFIX = "application/"
STREAM_PREFIX = "application/connect+"
ERROR_CONTENT_TYPE = "application/json"


def unary_content_type(codec_name: str) -> str:
    """``application/<codec>`` for unary requests and responses."""
    return UNARY_PREFIX + codec_name


def stream_content_type(codec_name: str) -> str:
    """``application/connect+<codec>`` for streaming requests and responses."""
    return STREAM_PREFIX + codec_name


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    text += "=" * (-len(text) % 4)
    if "-" in text or "_" in text:
        return base64.urlsafe_b64decode(text)
    return base64.b64decode(text, validate=True)


def error_to_dict(err: ConnectError) -> dict[str, Any]:
    """The JSON object Connect uses for errors (unary body and end-stream)."""
    out: dict[str, Any] = {"code": err.code.wire_name}
    if err.message:
        out["message"] = err.message
    if err.details:
        out["details"] = [
            {"type": d.type_name, "value": _b64encode(d.value)} for d in err.details
        ]
    return out


def error_body(err: ConnectError) -> bytes:
    """The body of a unary error response."""
    return json.dumps(error_to_dict(err), separators=(",", ":")).encode()


def error_from_dict(obj: object, fallback: Code) -> ConnectError:
    """Rebuild a ConnectError from its JSON object; ``fallback`` for a bad code."""
    if not isinstance(obj, dict):
        raise ValueError("error is not a JSON object")
    code = (
        Code.from_wire_name(obj.get("code", ""))
        if isinstance(obj.get("code"), str)
        else None
    )
    message = obj.get("message", "")
    if not isinstance(message, str):
        raise ValueError("error message is not a string")
    details: list[ErrorDetail] = []
    raw_details = obj.get("details", [])
    if not isinstance(raw_details, list):
        raise ValueError("error details are not a list")
    for d in raw_details:
        if not isinstance(d, dict) or not isinstance(d.get("type"), str):
            raise ValueError("malformed error detail")
        try:
            value = _b64decode(d.get("value", ""))
        except (binascii.Error, ValueError, TypeError):
            raise ValueError("malformed error detail value") from None
        details.append(ErrorDetail.from_wire(d["type"], value))
    return ConnectError(code or fallback, message, details=details)


def parse_error_body(body: bytes, http_status: int, headers: Headers) -> ConnectError:
    """The error a client reports for a non-200 unary response.

    A body that is not a Connect error (a proxy's page, say) yields the code
    mapped from the HTTP status, per the protocol's table.
    """
    status_code = Code.from_http_status(http_status)
    try:
        err = error_from_dict(json.loads(body), status_code)
    except (ValueError, UnicodeDecodeError):
        err = ConnectError(status_code, f"HTTP {http_status}")
    meta, trailers = split_unary_trailers(headers)
    meta.extend(trailers)
    err.metadata = meta
    return err


def end_stream_payload(err: ConnectError | None, trailers: Headers) -> bytes:
    """The JSON payload of the end-of-stream message."""
    obj: dict[str, Any] = {}
    if err is not None:
        obj["error"] = error_to_dict(err)
        merged = trailers.copy()
        merged.extend(err.metadata)
        trailers = merged
    if trailers:
        meta: dict[str, list[str]] = {}
        for k, v in trailers.multi_items():
            meta.setdefault(k, []).append(v)
        obj["metadata"] = meta
    return json.dumps(obj, separators=(",", ":")).encode()


def parse_end_stream(payload: bytes) -> tuple[ConnectError | None, Headers]:
    """The error (if any) and trailers of an end-of-stream message.

    Raises ConnectError(internal) when the payload is malformed.
    """
    try:
        obj = json.loads(payload) if payload else {}
        if not isinstance(obj, dict):
            raise ValueError("end-of-stream message is not a JSON object")
        trailers = Headers()
        meta = obj.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ValueError("metadata is not an object")
        for k, vs in meta.items():
            if not isinstance(vs, list) or not all(isinstance(v, str) for v in vs):
                raise ValueError("metadata values are not string lists")
            for v in vs:
                trailers.add(k, v)
        err = None
        if obj.get("error") is not None:
            err = error_from_dict(obj["error"], Code.UNKNOWN)
            err.metadata = trailers.copy()
    except (ValueError, UnicodeDecodeError) as e:
        raise ConnectError(
            Code.INTERNAL, f"protocol error: invalid end-of-stream message: {e}"
        ) from None
    return err, trailers


def add_unary_trailers(headers: Headers, trailers: Headers) -> None:
    """Unary responses carry trailers as ``trailer-``-prefixed headers."""
    for k, v in trailers.multi_items():
        headers.add(TRAILER_PREFIX + k, v)


def split_unary_trailers(headers: Headers) -> tuple[Headers, Headers]:
    """Split a unary response's headers into (headers, trailers)."""
    plain = Headers()
    trailers = Headers()
    n = len(TRAILER_PREFIX)
    for k, v in headers.multi_items():
        if k.startswith(TRAILER_PREFIX):
            trailers.add(k[n:], v)
        else:
            plain.add(k, v)
    return plain, trailers


@dataclass(frozen=True)
class GetRequest:
    """The parts of a Connect unary GET request's query string."""

    message: bytes
    codec: str
    compression: str | None


def encode_get_query(message: bytes, codec_name: str, compression: str | None) -> str:
    """The query string of a Connect GET request (message always base64url)."""
    parts = [
        "connect=v" + PROTOCOL_VERSION,
        "encoding=" + quote(codec_name, safe=""),
        "base64=1",
    ]
    if compression:
        parts.append("compression=" + quote(compression, safe=""))
    b64 = base64.urlsafe_b64encode(message).decode("ascii").rstrip("=")
    parts.append("message=" + b64)
    return "&".join(parts)


def parse_get_query(query: str, require_version: bool = False) -> GetRequest:
    """Read a Connect GET query string; raises ConnectError(invalid_argument)."""
    # Parsed by hand: the message may be percent-encoded binary, not UTF-8.
    params: dict[str, bytes] = {}
    for pair in query.split("&"):
        k, _, v = pair.partition("=")
        key = unquote_to_bytes(k.replace("+", " ")).decode("utf-8", "replace")
        if key not in params:
            params[key] = unquote_to_bytes(v.replace("+", " "))
    text = {
        k: v.decode("utf-8", "replace") for k, v in params.items() if k != "message"
    }
    connect = text.get("connect")
    if connect is None:
        if require_version:
            raise ConnectError(
                Code.INVALID_ARGUMENT, 'missing required query parameter "connect"'
            )
    elif connect != "v" + PROTOCOL_VERSION:
        raise ConnectError(
            Code.INVALID_ARGUMENT, f"unsupported connect query value {connect!r}"
        )
    codec = text.get("encoding")
    if not codec:
        raise ConnectError(
            Code.INVALID_ARGUMENT, 'missing required query parameter "encoding"'
        )
    raw = params.get("message", b"")
    if text.get("base64") == "1":
        try:
            # A space here is a "+" some client did not escape.
            data = _b64decode(raw.decode("ascii").replace(" ", "+"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise ConnectError(
                Code.INVALID_ARGUMENT, "invalid base64 in message query parameter"
            ) from None
    else:
        data = raw
    return GetRequest(data, codec, text.get("compression") or None)


def check_protocol_version(value: str | None, required: bool) -> None:
    """Validate ``Connect-Protocol-Version``; raises invalid_argument."""
    if value is None:
        if required:
            raise ConnectError(
                Code.INVALID_ARGUMENT,
                'missing required header: set "Connect-Protocol-Version" to "1"',
            )
    elif value != PROTOCOL_VERSION:
        raise ConnectError(
            Code.INVALID_ARGUMENT,
            f'"Connect-Protocol-Version" must be "1": got {value!r}',
        )
