"""Property tests of what a peer's bytes go through whole: the client's
HTTP/1.1 and HTTP/2 engines (responses) and the ASGI and WSGI apps (requests).

The example budget is ``FUZZ_EXAMPLES`` (see ``fuzz_targets``).
"""

from __future__ import annotations

import fuzz_inputs as inputs
import fuzz_targets as t
from hypothesis import example, given
from hypothesis import strategies as st

raw = st.binary(max_size=512)


@t.FUZZ
@given(inputs.http1_inputs | raw)
# Found by this test: fed whole, the "\n\r\n" ending the 100 response was
# passed over for the "\n\n" ending the final one, and the two heads read as one.
@example(
    b"\x01\x00HTTP/1.1 100 Continue\x0c\n\r\nHTTP/1.1 200 OK\nContent-Length: 0\n\n"
)
# Found by atheris: fed in pieces, the quick path took "HTTP/1.1 9" as status 9.
@example(b"\x01\x00HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 9\r\n\r\n")
# Found by atheris: fed whole, a "\n\r\n" just before a "\r\n\r\n" was missed.
@example(b"\x01\x00HTTP/1.1 200 OK\n\r\n\r\nbody")
# Found by atheris: status "002" was informational fed whole, final in pieces.
@example(b"\x01\x00HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 002 X\r\n\r\nbody")
def test_fuzz_http1(data: bytes) -> None:
    t.http1_target(data)


@t.FUZZ
@given(inputs.http2_inputs | raw)
# A :status of non-ASCII digits raised int()'s ValueError out of receive():
# (seed, send), SETTINGS, HEADERS ":status: ¹²³".
@example(
    b"\0\0"
    + b"\0\0\0\x04\0\0\0\0\0"
    + b"\0\0\x08\x01\x04\0\0\0\x01H\x06\xc2\xb9\xc2\xb2\xc2\xb3"
)
def test_fuzz_http2(data: bytes) -> None:
    t.http2_target(data)


@t.FUZZ
@given(inputs.server_inputs | raw)
def test_fuzz_server(data: bytes) -> None:
    t.server_target(data)
