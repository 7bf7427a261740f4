"""Property tests of every parser a peer can reach, on the targets of
``fuzz_targets``: realistic inputs, mutated, and raw bytes.

The example budget is ``FUZZ_EXAMPLES`` (small here; ``scripts/fuzz.py`` runs
the same tests with a large one).
"""

from __future__ import annotations

import tracemalloc

import fuzz_inputs as inputs
import fuzz_targets as t
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from protoc_gen_connect_python.runtime import Code, ConnectError, Headers
from protoc_gen_connect_python.runtime.compression import COMPRESSIONS
from protoc_gen_connect_python.runtime.headers import encode_binary_header
from protoc_gen_connect_python.runtime.protocol import grpc as grpc_wire

raw = st.binary(max_size=512)


@t.FUZZ
@given(inputs.envelope_inputs | raw)
def test_fuzz_envelope(data: bytes) -> None:
    t.envelope_target(data)


@t.FUZZ
@given(inputs.decompress_inputs | raw)
def test_fuzz_decompress(data: bytes) -> None:
    t.decompress_target(data)


@t.FUZZ
@given(inputs.headers_inputs | raw)
def test_fuzz_headers(data: bytes) -> None:
    t.headers_target(data)


@t.FUZZ
@given(inputs.codec_inputs | raw)
def test_fuzz_codec(data: bytes) -> None:
    t.codec_target(data)


@t.FUZZ
@given(inputs.client_message_inputs | raw)
def test_fuzz_client_messages(data: bytes) -> None:
    t.client_messages_target(data)


@t.FUZZ
@given(inputs.client_response_inputs | raw)
# Found by atheris: a grpc-status of non-ASCII digits raised int()'s ValueError.
@example(b"\x02\0\0content-type: application/grpc+proto\ngrpc-status: 0\xb9\n\n\n\n")
def test_fuzz_client_response(data: bytes) -> None:
    t.client_response_target(data)


@t.FUZZ
@given(inputs.get_query_inputs | raw)
def test_fuzz_get_query(data: bytes) -> None:
    t.get_query_target(data)


@pytest.mark.parametrize("name", t.ALGORITHMS)
def test_decompression_bomb_memory_is_bounded(name: str) -> None:
    """A 64 MiB bomb against a 1 MiB limit: refused, and the peak of memory
    allocated meanwhile stays within a few times the limit."""
    comp = COMPRESSIONS[name]
    limit = 1 << 20
    bomb = comp.compress(b"\0" * (64 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(ConnectError) as e:
            comp.decompress(bomb, limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.code == Code.RESOURCE_EXHAUSTED
    assert peak < 4 * limit + len(bomb), peak


def test_malformed_grpc_status_details_keep_the_status() -> None:
    # Found by the client_messages target: a detail that is not a valid Any
    # raised protobuf's DecodeError out of the client instead of the error.
    details = encode_binary_header(b"\x1a\x02\x0a\xff")  # Any with a cut field
    trailers = Headers({"grpc-status": "3", "grpc-status-details-bin": details})
    err = grpc_wire.error_from_trailers(trailers)
    assert err is not None and err.code is Code.INVALID_ARGUMENT
    assert err.details == []
    with pytest.raises(ValueError):
        grpc_wire.parse_status_details(b"\x1a\x02\x0a\xff")


@t.FUZZ
@given(st.sampled_from(t.ALGORITHMS), st.binary(min_size=2, max_size=3000))
def test_decompression_limit_is_exact(name: str, plain: bytes) -> None:
    # A message of exactly the limit passes whole; one byte more is refused.
    comp = COMPRESSIONS[name]
    packed = comp.compress(plain)
    assert comp.decompress(packed, len(plain)) == plain
    with pytest.raises(ConnectError) as e:
        comp.decompress(packed, len(plain) - 1)  # (0 would mean no limit)
    assert e.value.code == Code.RESOURCE_EXHAUSTED
