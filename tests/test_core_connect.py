"""Connect wire rules: error JSON, end-of-stream, trailers, GET queries."""

from __future__ import annotations

import json

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from hypothesis import given
from hypothesis import strategies as st

from protoc_gen_connect_python.runtime import Code, ConnectError, Headers
from protoc_gen_connect_python.runtime.protocol import connect as wire


def test_error_body_round_trip() -> None:
    err = ConnectError(Code.NOT_FOUND, "gone", details=[StringValue(value="x")])
    body = wire.error_body(err)
    obj = json.loads(body)
    assert obj["code"] == "not_found" and obj["message"] == "gone"
    assert "=" not in obj["details"][0]["value"]  # unpadded base64
    back = wire.parse_error_body(body, 404, Headers())
    assert back.code is Code.NOT_FOUND and back.details == err.details
    assert back.details[0].unpack(StringValue) == StringValue(value="x")


def test_error_body_from_a_proxy() -> None:
    err = wire.parse_error_body(b"<html>bad gateway</html>", 502, Headers())
    assert err.code is Code.UNAVAILABLE


def test_end_stream_round_trip() -> None:
    err = ConnectError(Code.ABORTED, "stop", metadata=Headers({"x-err": "1"}))
    payload = wire.end_stream_payload(err, Headers([("x-t", "a"), ("x-t", "b")]))
    back, trailers = wire.parse_end_stream(payload)
    assert back is not None and back.code is Code.ABORTED
    assert trailers.getall("x-t") == ["a", "b"] and trailers["x-err"] == "1"
    assert wire.parse_end_stream(wire.end_stream_payload(None, Headers())) == (
        None,
        Headers(),
    )
    with pytest.raises(ConnectError) as e:
        wire.parse_end_stream(b"[]")
    assert e.value.code is Code.INTERNAL


def test_unary_trailers_as_headers() -> None:
    h = Headers({"a": "1"})
    wire.add_unary_trailers(h, Headers({"t": "2"}))
    assert h["trailer-t"] == "2"
    plain, trailers = wire.split_unary_trailers(h)
    assert dict(plain) == {"a": "1"} and dict(trailers) == {"t": "2"}


@given(
    st.binary(max_size=200),
    st.sampled_from(["proto", "json"]),
    st.sampled_from([None, "gzip"]),
)
def test_get_query_round_trip(
    message: bytes, codec: str, compression: str | None
) -> None:
    q = wire.parse_get_query(wire.encode_get_query(message, codec, compression), True)
    assert (q.message, q.codec, q.compression) == (message, codec, compression)


def test_get_query_forms() -> None:
    q = wire.parse_get_query("encoding=json&message=%7B%22a%22%3A1%7D")
    assert q.message == b'{"a":1}' and q.compression is None
    # Standard base64 with an unescaped "+" that arrived as a space.
    q = wire.parse_get_query("encoding=proto&base64=1&message=+/8")
    assert q.message == b"\xfb\xff"
    for bad in (
        "message=x",
        "encoding=proto&connect=v2",
        "encoding=proto&base64=1&message=!!",
    ):
        with pytest.raises(ConnectError) as e:
            wire.parse_get_query(bad)
        assert e.value.code is Code.INVALID_ARGUMENT
    with pytest.raises(ConnectError):
        wire.parse_get_query("encoding=proto", require_version=True)


def test_protocol_version() -> None:
    wire.check_protocol_version("1", True)
    wire.check_protocol_version(None, False)
    for value, required in (("2", False), (None, True)):
        with pytest.raises(ConnectError):
            wire.check_protocol_version(value, required)
