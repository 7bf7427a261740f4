"""The client's protocol core without I/O: requests it builds, responses it accepts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from client_env import BIDI_SPEC, SERVER_STREAM_SPEC, UNARY_SPEC
from google.protobuf.wrappers_pb2 import StringValue
from hypothesis import given
from hypothesis import strategies as st

from protoc_gen_connect_python.runtime import (
    Code,
    ConnectError,
    Headers,
    SyncClient,
)
from protoc_gen_connect_python.runtime.client.config import build_config
from protoc_gen_connect_python.runtime.client.connect import ConnectProtocol
from protoc_gen_connect_python.runtime.client.core import HTTPRequest
from protoc_gen_connect_python.runtime.compression import Gzip
from protoc_gen_connect_python.runtime.envelope import (
    FLAG_COMPRESSED,
    FLAG_END_STREAM,
    JOIN_MAX,
    encode_envelope,
)
from protoc_gen_connect_python.runtime.protocol import connect


def proto(**kw: Any) -> ConnectProtocol:
    return ConnectProtocol(build_config("http://h:1/base/", **kw))


def test_post_request_head() -> None:
    p = proto(headers={"x-default": "d"}, accept_compression=["gzip"])
    pm = p.prepare(UNARY_SPEC)
    assert p.prepare(UNARY_SPEC) is pm
    req = p.unary_request(pm, StringValue(value="v"), {"x-call": "c"}, 1.5)
    assert (req.method, req.url) == ("POST", "http://h:1/base/t.v1.S/Get")
    h = Headers(req.headers)
    assert h["content-type"] == "application/proto"
    assert h["connect-protocol-version"] == "1"
    assert h["accept-encoding"] == "gzip"
    assert h["x-default"] == "d" and h["x-call"] == "c"
    assert h["connect-timeout-ms"] == "1500"
    assert "content-encoding" not in h
    assert StringValue.FromString(req.body or b"").value == "v"


def test_get_and_fallback_to_post() -> None:
    p = proto(use_get=True, codec="json", get_url_max_bytes=200)
    pm = p.prepare(UNARY_SPEC)
    req = p.unary_request(pm, StringValue(value="short"), None, None)
    assert req.method == "GET" and req.body is None
    query = req.url.partition("?")[2]
    got = connect.parse_get_query(query, require_version=True)
    assert (got.codec, got.message) == ("json", b'"short"')
    assert "content-type" not in Headers(req.headers)
    req = p.unary_request(pm, StringValue(value="x" * 300), None, None)
    assert req.method == "POST"


def test_compressed_post() -> None:
    p = proto(send_compression="gzip", compress_min_bytes=10)
    pm = p.prepare(UNARY_SPEC)
    small = p.unary_request(pm, StringValue(value="a"), None, None)
    assert "content-encoding" not in Headers(small.headers)
    big = p.unary_request(pm, StringValue(value="a" * 100), None, None)
    assert Headers(big.headers)["content-encoding"] == "gzip"
    assert (
        Gzip().decompress(big.body or b"", 0)
        == StringValue(value="a" * 100).SerializeToString()
    )


def test_send_limit() -> None:
    p = proto(send_max_bytes=10)
    with pytest.raises(ConnectError) as info:
        p.unary_request(p.prepare(UNARY_SPEC), StringValue(value="a" * 20), None, None)
    assert info.value.code is Code.RESOURCE_EXHAUSTED


def unary(p: ConnectProtocol, status: int, headers: dict[str, str], body: bytes) -> Any:
    return p.unary_response(
        p.prepare(UNARY_SPEC), status, Headers(headers), body, Headers()
    )


def test_unary_success_with_trailers() -> None:
    p = proto()
    res = unary(
        p, 200, {"content-type": "application/proto", "trailer-x-t": "1", "x-h": "2"},
        StringValue(value="ok").SerializeToString(),
    )  # fmt: skip
    assert res.message.value == "ok"
    assert res.trailers["x-t"] == "1" and res.headers["x-h"] == "2"
    assert "trailer-x-t" not in res.headers


@pytest.mark.parametrize(
    ("status", "ctype", "body", "code"),
    [
        (
            404,
            "application/json",
            b'{"code":"not_found","message":"m"}',
            Code.NOT_FOUND,
        ),
        (502, "text/html", b"<html>bad gateway</html>", Code.UNAVAILABLE),
        (429, "", b"", Code.UNAVAILABLE),
        (500, "application/json", b"not json", Code.UNKNOWN),
        (200, "text/plain", b"hi", Code.UNKNOWN),
        (200, "application/json", b"{}", Code.INTERNAL),
        (200, "application/proto", b"\xff\xff", Code.INTERNAL),
    ],
)
def test_unary_errors(status: int, ctype: str, body: bytes, code: Code) -> None:
    with pytest.raises(ConnectError) as info:
        unary(proto(), status, {"content-type": ctype, "trailer-x-t": "1"}, body)
    assert info.value.code is code
    assert info.value.metadata["x-t"] == "1"


def test_json_charset_is_accepted() -> None:
    p = proto(codec="json")
    res = unary(p, 200, {"content-type": "application/json; charset=utf-8"}, b'"v"')
    assert res.message.value == "v"


def test_unknown_response_encoding() -> None:
    with pytest.raises(ConnectError) as info:
        unary(
            proto(),
            200,
            {"content-type": "application/proto", "content-encoding": "lz4"},
            b"x",
        )
    assert info.value.code is Code.INTERNAL


def stream_body(*values: str, end: bytes = b"{}", compress: bool = False) -> bytes:
    out = b""
    for v in values:
        data = StringValue(value=v).SerializeToString()
        if compress:
            out += encode_envelope(FLAG_COMPRESSED, Gzip().compress(data))
        else:
            out += encode_envelope(0, data)
    return out + encode_envelope(FLAG_END_STREAM, end)


def decoder(p: ConnectProtocol, **headers: str) -> Any:
    h = Headers({"content-type": "application/connect+proto", **headers})
    return p.response_stream(p.prepare(SERVER_STREAM_SPEC), 200, h)


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_stream_any_chunking(cuts: list[int]) -> None:
    body = stream_body("a", "bb", "", "ccc", end=b'{"metadata":{"x-t":["1"]}}')
    d = decoder(proto())
    got = []
    pos = 0
    for n in [*cuts, len(body)]:
        got += [m.value for m in d.feed(body[pos : pos + n])]
        pos += n
    assert got == ["a", "bb", "", "ccc"]
    assert d.done
    assert d.finish(Headers())["x-t"] == "1"


def test_stream_error_end() -> None:
    d = decoder(proto())
    end = b'{"error":{"code":"aborted","message":"m"},"metadata":{"x-t":["1"]}}'
    assert [m.value for m in d.feed(stream_body("a", end=end))] == ["a"]
    with pytest.raises(ConnectError) as info:
        d.finish(Headers())
    assert info.value.code is Code.ABORTED
    assert info.value.metadata["x-t"] == "1"


def test_stream_compressed() -> None:
    d = decoder(proto(), **{"connect-content-encoding": "gzip"})
    end = Gzip().compress(b'{"metadata":{"k":["v"]}}')
    body = stream_body("zip", compress=True)[: -len(encode_envelope(2, b"{}"))]
    body += encode_envelope(FLAG_END_STREAM | FLAG_COMPRESSED, end)
    assert [m.value for m in d.feed(body)] == ["zip"]
    assert d.finish(Headers())["k"] == "v"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (stream_body("a")[:-7], "missing end-of-stream"),
        (stream_body("a") + b"\x00", "after the end-of-stream"),
        (stream_body("a", end=b"[1]"), "invalid end-of-stream"),
    ],
)
def test_stream_protocol_errors(body: bytes, message: str) -> None:
    d = decoder(proto())
    with pytest.raises(ConnectError) as info:
        d.feed(body)
        d.finish(Headers())
    assert info.value.code is Code.INTERNAL
    assert message in info.value.message


def test_stream_read_limit() -> None:
    d = decoder(proto(read_max_bytes=10))
    with pytest.raises(ConnectError) as info:
        d.feed(stream_body("x" * 50))
    assert info.value.code is Code.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("status", "headers", "code"),
    [
        (503, {"content-type": "application/connect+proto"}, Code.UNAVAILABLE),
        (200, {"content-type": "application/grpc"}, Code.UNKNOWN),
        (200, {"content-type": "application/connect+json"}, Code.INTERNAL),
        (200, {"content-type": "application/connect+proto", "connect-content-encoding": "x"}, Code.INTERNAL),
    ],
)  # fmt: skip
def test_stream_head_errors(status: int, headers: dict[str, str], code: Code) -> None:
    p = proto()
    with pytest.raises(ConnectError) as info:
        p.response_stream(p.prepare(SERVER_STREAM_SPEC), status, Headers(headers))
    assert info.value.code is code


@pytest.mark.parametrize(
    "kw",
    [
        {"codec": "xml"},
        {"send_compression": "lz77"},
        {"protocol": "smoke-signals"},
        {"timeout": 0},
        {"read_max_bytes": -1},
        {"http_version": "3"},
        {"tls_cert": b"pem"},
    ],
)
def test_config_rejects(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        build_config("http://h", **kw)


def test_config_rejects_bad_url() -> None:
    with pytest.raises(ValueError):
        build_config("h:80")


def test_zstd_is_safe_to_share_between_threads() -> None:
    """Sync clients compress from many threads with one Compression object."""
    # zstandard is a dev dependency: without it Zstd() fails, not skips.
    from concurrent.futures import ThreadPoolExecutor

    from protoc_gen_connect_python.runtime.compression import Zstd

    zstd = Zstd()
    payloads = [bytes([i]) * (50_000 + i) for i in range(64)]

    def round_trip(data: bytes) -> bool:
        return zstd.decompress(zstd.compress(data), 0) == data

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trip, payloads * 4))


class _Recording:
    """A sync transport that takes the whole request body, notes the size of
    each piece, and answers an empty Connect stream."""

    def __init__(self) -> None:
        self.pieces: list[int] = []
        self._end = [encode_envelope(FLAG_END_STREAM, b"{}")]

    def send(self, request: HTTPRequest, body: Iterator[bytes] | None) -> Any:
        assert body is not None
        self.pieces = [len(p) for p in body]
        return self

    status = 200
    headers = Headers({"content-type": "application/connect+proto"})
    trailers = Headers()

    def read(self) -> bytes:
        return self._end.pop() if self._end else b""

    def close(self) -> None:
        pass


def test_sync_client_joins_a_list_of_requests() -> None:
    # A list is all there: its messages share writes of about JOIN_MAX. A
    # generator may block between messages, so each goes alone.
    msgs = [StringValue(value=c * 16384) for c in "abcdefghij"]
    frame = len(encode_envelope(0, msgs[0].SerializeToString()))
    assert JOIN_MAX == 65536
    for requests, want in (
        (msgs, [4 * frame, 4 * frame, 2 * frame]),
        (tuple(msgs), [4 * frame, 4 * frame, 2 * frame]),
        ((m for m in msgs), [frame] * 10),
    ):
        t = _Recording()
        client = SyncClient("http://h", transport=t)
        assert list(client.call_bidi_stream(BIDI_SPEC, requests)) == []
        assert t.pieces == want
