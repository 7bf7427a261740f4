"""Envelope framing: round trips under any chunking, limits, truncation."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protoc_gen_connect_python.runtime import Code, ConnectError
from protoc_gen_connect_python.runtime.compression import Gzip
from protoc_gen_connect_python.runtime.envelope import (
    FLAG_COMPRESSED,
    HEADER_SIZE,
    EnvelopeDecoder,
    decode_payload,
    encode_envelope,
    encode_message,
    joined,
    message_framer,
)

frames = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=8)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(data)]:
        out.append(data[last:p])
        last = p
    return out


@given(frames, st.lists(st.integers(0, 10_000), max_size=20))
def test_any_chunking_yields_the_same_frames(
    items: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(encode_envelope(f, p) for f, p in items)
    d = EnvelopeDecoder()
    got = []
    for chunk in chunked(wire, cuts):
        got.extend(d.feed(chunk))
    d.close()
    assert got == items
    assert not d.pending


@given(
    frames,
    st.lists(st.integers(0, 10_000), max_size=20),
    st.sampled_from([bytes, bytearray, memoryview]),
)
def test_chunks_of_any_buffer_type(
    items: list[tuple[int, bytes]], cuts: list[int], kind: type
) -> None:
    # Transports hand over bytes, bytearray or memoryview slices; the decoder
    # must not keep views of them past feed() (the caller reuses its buffer).
    wire = b"".join(encode_envelope(f, p) for f, p in items)
    d = EnvelopeDecoder()
    got = []
    for chunk in chunked(wire, cuts):
        scratch = bytearray(chunk)
        got.extend(d.feed(kind(scratch)))
        scratch[:] = b"\xff" * len(scratch)
    d.close()
    assert got == items
    assert all(type(p) is bytes for _, p in got)


@given(
    frames,
    st.lists(st.integers(0, 10_000), max_size=20),
    st.sampled_from([bytes, bytearray]),
)
def test_views_of_any_chunking(
    items: list[tuple[int, bytes]], cuts: list[int], kind: type
) -> None:
    # The same frames; those that lie whole in a bytes chunk are views of it,
    # never of a buffer the caller may reuse.
    wire = b"".join(encode_envelope(f, p) for f, p in items)
    d = EnvelopeDecoder()
    got: list[tuple[int, bytes]] = []
    for chunk in chunked(wire, cuts):
        scratch = bytearray(chunk)
        frames_now = d.feed_views(kind(scratch))
        scratch[:] = b"\xff" * len(scratch)
        if kind is bytearray:
            assert all(type(p) is bytes for _, p in frames_now)
        got.extend((f, bytes(p)) for f, p in frames_now)
    d.close()
    assert got == items


def test_views_share_the_chunk() -> None:
    chunk = encode_envelope(0, b"a" * 100) + encode_envelope(1, b"b" * 50)
    (f1, p1), (f2, p2) = EnvelopeDecoder().feed_views(chunk)
    assert (f1, f2) == (0, 1)
    assert isinstance(p1, memoryview) and isinstance(p2, memoryview)
    assert p1.obj is chunk and p2.obj is chunk
    assert bytes(p1) == b"a" * 100 and bytes(p2) == b"b" * 50


@given(frames, st.integers(1, 7))
def test_reading_exactly_what_is_needed(
    items: list[tuple[int, bytes]], extra: int
) -> None:
    # What a blocking reader does: ask for `needed` bytes, never more.
    wire = b"".join(encode_envelope(f, p) for f, p in items)
    d = EnvelopeDecoder()
    got: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(wire):
        n = d.needed
        assert n >= 1
        got.extend(d.feed(wire[pos : pos + n]))
        pos += n
    assert got == items


@given(st.integers(1, 1000), st.integers(0, 2000))
def test_limit_is_checked_on_the_declared_length(limit: int, size: int) -> None:
    d = EnvelopeDecoder(read_max_bytes=limit)
    header = encode_envelope(0, b"\0" * size)[:HEADER_SIZE]
    if size > limit:
        with pytest.raises(ConnectError) as e:
            d.feed(header)  # refused before any payload is buffered
        assert e.value.code is Code.RESOURCE_EXHAUSTED
    else:
        assert d.feed(header) == ([] if size else [(0, b"")])


def test_truncated_input() -> None:
    d = EnvelopeDecoder()
    assert d.feed(encode_envelope(0, b"abc")[:-1]) == []
    assert d.pending
    with pytest.raises(ConnectError) as e:
        d.close()
    assert e.value.code is Code.INVALID_ARGUMENT


def test_encode_message_compression_and_send_limit() -> None:
    gz = Gzip()
    small = encode_message(b"x" * 10, gz, 100, 0)
    assert small[0] == 0 and small[5:] == b"x" * 10
    big = encode_message(b"x" * 1000, gz, 100, 0)
    assert big[0] == FLAG_COMPRESSED and gzip.decompress(big[5:]) == b"x" * 1000
    with pytest.raises(ConnectError) as e:
        encode_message(b"x" * 1000, None, 0, 999)
    assert e.value.code is Code.RESOURCE_EXHAUSTED


def test_message_framer_adds_pieces_of_one_write() -> None:
    # Plain: a header and the payload itself, not a copy of it.
    payload = b"y" * 70
    frame = message_framer(lambda m: payload, None, 100, 0)
    out: list[bytes] = [b"before"]
    assert frame("msg", out) == 75
    assert out[0] == b"before" and out[2] is payload
    assert b"".join(out[1:]) == encode_envelope(0, payload)
    # Compressed or checked: one framed piece, as encode_message makes it.
    frame = message_framer(lambda m: b"x" * 1000, Gzip(), 100, 0)
    out = []
    n = frame("msg", out)
    assert len(out) == 1 and n == len(out[0]) and out[0][0] == FLAG_COMPRESSED
    frame = message_framer(lambda m: b"x" * 1000, None, 0, 999)
    with pytest.raises(ConnectError) as e:
        frame("msg", out)
    assert e.value.code is Code.RESOURCE_EXHAUSTED and len(out) == 1


def test_joined_writes() -> None:
    frames = [bytes([i]) * 30_000 for i in range(5)]
    out = list(joined(frames))
    # 30 000 + 30 000 + 30 000 passes 64 KiB; the other two are what is left.
    assert [len(w) for w in out] == [90_000, 60_000]
    assert b"".join(out) == b"".join(frames)
    assert list(joined([])) == []


def test_decode_payload() -> None:
    gz = Gzip()
    assert decode_payload(0, b"raw", None, 10) == b"raw"
    assert decode_payload(FLAG_COMPRESSED, gz.compress(b"abc"), gz, 10) == b"abc"
    with pytest.raises(ConnectError) as e:
        decode_payload(FLAG_COMPRESSED, gz.compress(b"a" * 100), gz, 10)
    assert e.value.code is Code.RESOURCE_EXHAUSTED
    with pytest.raises(ConnectError) as e:
        decode_payload(FLAG_COMPRESSED, b"zz", None, 10)
    assert e.value.code is Code.INTERNAL


class _BytesOnly(Gzip):
    """A compression that, like a third-party one may, refuses views."""

    def decompress(self, data: bytes, max_size: int) -> bytes:
        assert type(data) is bytes
        return super().decompress(data, max_size)


def test_decode_payload_views() -> None:
    # A plain view stays a view (upb parses it in place); a compressed one
    # reaches the compression as bytes.
    read = b"xx" + gzip.compress(b"abc")
    plain = decode_payload(0, memoryview(read)[:2], None, 10)
    assert isinstance(plain, memoryview) and plain.obj is read
    got = decode_payload(FLAG_COMPRESSED, memoryview(read)[2:], _BytesOnly(), 10)
    assert got == b"abc"
