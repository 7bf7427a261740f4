"""Headers, binary values and the two timeout formats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protoc_gen_connect_python.runtime import Headers
from protoc_gen_connect_python.runtime.headers import (
    decode_binary_header,
    encode_binary_header,
    format_connect_timeout,
    format_grpc_timeout,
    parse_connect_timeout,
    parse_grpc_timeout,
)


def test_multi_valued_case_insensitive() -> None:
    h = Headers([("X-A", "1"), ("x-a", "2")])
    assert h["X-a"] == "1" and h.getall("X-A") == ["1", "2"]
    h["x-a"] = "3"
    assert h.getall("x-a") == ["3"]
    assert Headers.from_raw(h.to_raw()) == h


@given(st.binary(max_size=64))
def test_binary_headers_round_trip(data: bytes) -> None:
    assert decode_binary_header(encode_binary_header(data)) == data


def test_binary_header_forms() -> None:
    assert decode_binary_header("AQI=") == b"\x01\x02"
    assert decode_binary_header("_-8") == b"\xff\xef"
    assert decode_binary_header("AQI, AwQ") == b"\x01\x02\x03\x04"
    with pytest.raises(ValueError):
        decode_binary_header("!!")


@pytest.mark.parametrize(
    ("value", "seconds"), [("1", 0.001), ("1500", 1.5), ("9999999999", 9999999.999)]
)
def test_connect_timeout(value: str, seconds: float) -> None:
    assert parse_connect_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "-1", "+1", "1.5", "1e3", " 1", "12345678901", "\u0661"]
)
def test_connect_timeout_is_strict(value: str) -> None:
    with pytest.raises(ValueError):
        parse_connect_timeout(value)


def test_format_connect_timeout() -> None:
    assert format_connect_timeout(1.5) == "1500"
    assert format_connect_timeout(0.0001) == "1"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1H", 3600), ("2M", 120), ("3S", 3), ("4m", 0.004), ("5u", 5e-6), ("6n", 6e-9)],
)
def test_grpc_timeout_units(value: str, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "1", "1s", "123456789S", "-1S", "1.5S"])
def test_grpc_timeout_is_strict(value: str) -> None:
    with pytest.raises(ValueError):
        parse_grpc_timeout(value)


@given(st.floats(0.000001, 10_000_000))
def test_grpc_timeout_round_trip(seconds: float) -> None:
    value = format_grpc_timeout(seconds)
    assert len(value) <= 9
    # Eight digits in the coarsest unit that fits: at most half a unit off.
    assert parse_grpc_timeout(value) == pytest.approx(seconds, rel=1e-5, abs=1e-9)
