"""Compression: round trips, negotiation and bounded decompression (bombs)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protoc_gen_connect_python.runtime import Code, ConnectError
from protoc_gen_connect_python.runtime.compression import COMPRESSIONS, negotiate

NAMES = sorted(COMPRESSIONS)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.binary(max_size=2000))
@settings(max_examples=30)
def test_round_trip(name: str, data: bytes) -> None:
    c = COMPRESSIONS[name]
    assert c.decompress(c.compress(data), len(data) or 1) == data


@pytest.mark.parametrize("name", NAMES)
def test_bomb_is_stopped_at_the_limit(name: str) -> None:
    c = COMPRESSIONS[name]
    bomb = c.compress(b"\0" * 20_000_000)
    assert len(bomb) < 100_000
    with pytest.raises(ConnectError) as e:
        c.decompress(bomb, 1_000_000)
    assert e.value.code is Code.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("name", NAMES)
def test_corrupt_and_truncated_input(name: str) -> None:
    c = COMPRESSIONS[name]
    data = c.compress(b"hello world" * 100)
    for bad in (b"not compressed at all", data[: len(data) // 2]):
        with pytest.raises(ConnectError) as e:
            c.decompress(bad, 10_000)
        assert e.value.code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize("name", NAMES)
def test_empty_input_is_an_empty_message(name: str) -> None:
    # connect-go sends a zero-length message uncompressed under any encoding.
    assert COMPRESSIONS[name].decompress(b"", 10) == b""


def test_negotiate() -> None:
    assert negotiate("br, gzip", COMPRESSIONS) == (
        "br" if "br" in COMPRESSIONS else "gzip"
    )
    assert negotiate("lzma, gzip;q=0.5", COMPRESSIONS) == "gzip"
    assert negotiate("lzma", COMPRESSIONS) is None
    assert negotiate(None, COMPRESSIONS) is None
    assert negotiate("identity", COMPRESSIONS) is None
