"""The gRPC and gRPC-Web clients.

The sans-IO core first (requests it builds, every kind of response it must
accept or turn into the right error), then both clients end to end against this
project's own server (``interop/py_service.py``): gRPC on hypercorn (h2c),
gRPC-Web on hypercorn (h2c), uvicorn and gunicorn (HTTP/1.1), running every
interop scenario. grpcio and connect-node peers are in
``test_grpcio_interop.py`` and ``test_interop_node.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Iterator
from typing import Any

import pytest
from client_env import SERVER_STREAM_SPEC, UNARY_SPEC
from google.protobuf.wrappers_pb2 import StringValue
from interop_env import (
    Call,
    Generated,
    check_all,
    generated_code,
    run_python_client,
    serve_py_service,
)

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    ConnectError,
    Headers,
)
from protoc_gen_connect_python.runtime.client.config import build_config
from protoc_gen_connect_python.runtime.client.grpc import (
    GRPCProtocol,
    GRPCWebProtocol,
)
from protoc_gen_connect_python.runtime.client.protocols import make_protocol
from protoc_gen_connect_python.runtime.envelope import encode_envelope
from protoc_gen_connect_python.runtime.headers import encode_binary_header
from protoc_gen_connect_python.runtime.protocol import grpc as wire


def grpc_proto(**kw: Any) -> GRPCProtocol:
    p = make_protocol(build_config("http://h:1/base/", protocol="grpc", **kw))
    assert isinstance(p, GRPCProtocol) and not isinstance(p, GRPCWebProtocol)
    return p


def web_proto(**kw: Any) -> GRPCWebProtocol:
    p = make_protocol(build_config("http://h:1/base/", protocol="grpc-web", **kw))
    assert isinstance(p, GRPCWebProtocol)
    return p


def msg(text: str, flags: int = 0) -> bytes:
    return encode_envelope(flags, StringValue(value=text).SerializeToString())


def block(pairs: list[tuple[str, str]], flags: int = 0x80) -> bytes:
    return encode_envelope(flags, "".join(f"{k}: {v}\r\n" for k, v in pairs).encode())


OK_HEAD = Headers({"content-type": "application/grpc+proto"})
WEB_HEAD = Headers({"content-type": "application/grpc-web+proto"})


def unary(
    p: GRPCProtocol,
    body: bytes,
    trailers: dict[str, str] | None = None,
    *,
    status: int = 200,
    head: Headers | None = None,
) -> Any:
    if head is None:
        head = WEB_HEAD if p.web else OK_HEAD
    pm = p.prepare(UNARY_SPEC)
    return p.unary_response(pm, status, head, body, Headers(trailers or {}))


def error_of(fn: Any, *args: Any, **kw: Any) -> ConnectError:
    with pytest.raises(ConnectError) as raised:
        fn(*args, **kw)
    return raised.value


# --- requests ------------------------------------------------------------------


def test_config_http_versions() -> None:
    assert build_config("http://h", protocol="grpc").http_version == "2"
    assert build_config("https://h", protocol="grpc").http_version == "2"
    assert build_config("http://h", protocol="grpc-web").http_version is None
    with pytest.raises(ValueError, match="HTTP/2"):
        build_config("http://h", protocol="grpc", http_version="1.1")


def test_grpc_request_head() -> None:
    p = grpc_proto(
        send_compression="gzip",
        accept_compression=["gzip"],
        headers={"x-all": "1"},
        use_get=True,
    )
    req = p.unary_request(
        p.prepare(UNARY_SPEC), StringValue(value="hi"), {"x-one": "2"}, 1.5
    )
    assert (req.method, req.url) == ("POST", "http://h:1/base/t.v1.S/Get")
    h = Headers(req.headers)
    assert h["content-type"] == "application/grpc+proto"
    assert h["te"] == "trailers"
    assert h["grpc-encoding"] == "gzip" and h["grpc-accept-encoding"] == "gzip"
    assert h["grpc-timeout"] == "1500000u"
    assert (h["x-all"], h["x-one"]) == ("1", "2")
    assert h["user-agent"].startswith("protoc-gen-connect-python/")
    # Small messages stay uncompressed (flag 0) below compress_min_bytes.
    assert req.body == msg("hi")


def test_grpc_web_request_head_json_and_compressed_messages() -> None:
    p = web_proto(codec="json", send_compression="gzip", compress_min_bytes=0)
    req = p.stream_request(p.prepare(SERVER_STREAM_SPEC), None, None)
    h = Headers(req.headers)
    assert h["content-type"] == "application/grpc-web+json"
    assert "te" not in h and "grpc-timeout" not in h and "x-user-agent" in h
    assert req.body is None
    frame = p.encode_stream_message(StringValue(value="x"))
    assert frame[0] == 1 and gzip.decompress(frame[5:]) == b'"x"'


# --- unary responses -------------------------------------------------------------


def test_unary_ok_with_trailers() -> None:
    res = unary(grpc_proto(), msg("yo"), {"grpc-status": "0", "x-t": "v"})
    assert res.message.value == "yo"
    assert res.trailers == Headers({"x-t": "v"})


def test_unary_error_in_trailers_with_details_and_metadata() -> None:
    err = ConnectError(Code.NOT_FOUND, "gone: ünï", details=[StringValue(value="d")])
    trailers = dict(wire.status_trailers(err, Headers({"x-t": "v"})).multi_items())
    head = Headers({"content-type": "application/grpc", "x-h": "1"})
    e = error_of(unary, grpc_proto(), b"", trailers, head=head)
    assert (e.code, e.message) == (Code.NOT_FOUND, "gone: ünï")
    assert e.details == err.details
    assert (e.metadata["x-h"], e.metadata["x-t"]) == ("1", "v")
    assert "grpc-status" not in e.metadata


def test_error_headers_and_trailers_are_kept_apart() -> None:
    head = Headers({"content-type": "application/grpc", "x-h": "1"})
    e = error_of(unary, grpc_proto(), b"", {"grpc-status": "5", "x-t": "v"}, head=head)
    assert (e.response_headers["x-h"], e.response_trailers["x-t"]) == ("1", "v")
    assert "x-t" not in e.response_headers and "x-h" not in e.response_trailers
    assert "grpc-status" not in e.response_trailers
    # Trailers-only: the one block of headers counts as trailers.
    head = Headers({"grpc-status": "5", "x-t": "v"})
    e = error_of(unary, grpc_proto(), b"", head=head)
    assert e.response_trailers["x-t"] == "v" and not e.response_headers


def test_trailers_only_error() -> None:
    head = Headers(
        {
            "content-type": "application/grpc",
            "grpc-status": "7",
            "grpc-message": "no%20way%20%E2%9C%97",
            "x-t": "v",
        }
    )
    e = error_of(unary, grpc_proto(), b"", head=head)
    assert (e.code, e.message, e.metadata["x-t"]) == (
        Code.PERMISSION_DENIED,
        "no way ✗",
        "v",
    )
    # Without a content type, and through the streaming path too (where the
    # empty body and the missing trailers make it trailers-only).
    del head["content-type"]
    p = grpc_proto()
    s = p.response_stream(p.prepare(SERVER_STREAM_SPEC), 200, head)
    assert s.feed(b"") == []
    e = error_of(s.finish, Headers())
    assert e.code is Code.PERMISSION_DENIED


@pytest.mark.parametrize("web", [False, True])
def test_status_in_head_is_ignored_when_a_body_follows(web: bool) -> None:
    p = web_proto() if web else grpc_proto()
    head = (WEB_HEAD if web else OK_HEAD).copy()
    head["grpc-status"] = "8"
    head["grpc-message"] = "from the head"
    end = {"grpc-status": "9", "grpc-message": "from the end"}
    body = msg("x") + (block(list(end.items())) if web else b"")
    e = error_of(unary, p, body, None if web else end, head=head)
    assert (e.code, e.message) == (Code.FAILED_PRECONDITION, "from the end")
    # An OK end with one message is a success, whatever the head said.
    body = msg("x") + (block([("grpc-status", "0")]) if web else b"")
    res = unary(p, body, None if web else {"grpc-status": "0"}, head=head)
    assert res.message.value == "x"
    # A body that is not gRPC at all is the server's error, not the head's.
    del head["content-type"]
    e = error_of(unary, p, b"garbage", None if web else end, head=head)
    assert e.code is Code.UNKNOWN


def test_status_in_head_is_ignored_when_trailers_follow() -> None:
    p = grpc_proto()
    head = OK_HEAD.copy()
    head["grpc-status"] = "8"
    end = {"grpc-status": "9", "grpc-message": "from the trailers", "x-t": "v"}
    e = error_of(unary, p, b"", end, head=head)
    assert (e.code, e.message) == (Code.FAILED_PRECONDITION, "from the trailers")
    assert e.metadata["x-t"] == "v"
    # The streaming path decides the same way.
    s = p.response_stream(p.prepare(SERVER_STREAM_SPEC), 200, head)
    e = error_of(s.finish, Headers(end))
    assert e.code is Code.FAILED_PRECONDITION


def test_trailers_only_ok_stream_is_empty() -> None:
    p = grpc_proto()
    head = Headers({"content-type": "application/grpc", "grpc-status": "0"})
    s = p.response_stream(p.prepare(SERVER_STREAM_SPEC), 200, head)
    assert s.feed(b"") == []
    assert s.finish(Headers()) == Headers({"content-type": "application/grpc"})
    # A unary call must produce one message.
    assert error_of(unary, p, b"", head=head).code is Code.UNIMPLEMENTED


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, Code.UNAVAILABLE), (404, Code.UNIMPLEMENTED), (400, Code.INTERNAL),
     (401, Code.UNAUTHENTICATED), (500, Code.UNKNOWN)],
)  # fmt: skip
def test_http_status_without_grpc_status(status: int, code: Code) -> None:
    head = Headers({"content-type": "text/html"})
    assert error_of(unary, grpc_proto(), b"<p>", status=status, head=head).code is code


def test_http_error_with_grpc_status_prefers_it() -> None:
    head = Headers({"grpc-status": "8", "grpc-message": "slow down"})
    e = error_of(unary, grpc_proto(), b"", status=429, head=head)
    assert (e.code, e.message) == (Code.RESOURCE_EXHAUSTED, "slow down")


def test_bad_content_types() -> None:
    p = grpc_proto()
    assert error_of(unary, p, b"", head=Headers()).code is Code.UNKNOWN
    head = Headers({"content-type": "application/grpc-web+proto"})
    assert error_of(unary, p, b"", head=head).code is Code.UNKNOWN
    head = Headers({"content-type": "application/grpc+json"})
    assert error_of(unary, p, b"", head=head).code is Code.INTERNAL
    # Bare application/grpc means proto; parameters are ignored.
    head = Headers({"content-type": "application/grpc; charset=x"})
    res = unary(p, msg("ok"), {"grpc-status": "0"}, head=head)
    assert res.message.value == "ok"


def test_missing_status_is_internal() -> None:
    e = error_of(unary, grpc_proto(), msg("x"), {"x-t": "v"})
    assert e.code is Code.INTERNAL and "grpc-status" in e.message
    e = error_of(unary, grpc_proto(), msg("x")[:-1], {})
    assert e.code is Code.INTERNAL


def test_cardinality_violations() -> None:
    p = grpc_proto()
    e = error_of(unary, p, msg("a") + msg("b"), {"grpc-status": "0"})
    assert e.code is Code.UNIMPLEMENTED
    assert error_of(unary, p, b"", {"grpc-status": "0"}).code is Code.UNIMPLEMENTED


def test_compression_errors() -> None:
    p = grpc_proto()
    compressed = encode_envelope(1, gzip.compress(b"\n\x01x"))
    e = error_of(unary, p, compressed, {"grpc-status": "0"})
    assert e.code is Code.INTERNAL
    head = Headers({"content-type": "application/grpc", "grpc-encoding": "snappy"})
    assert error_of(unary, p, b"", head=head).code is Code.INTERNAL
    head = Headers({"content-type": "application/grpc", "grpc-encoding": "gzip"})
    res = unary(p, compressed, {"grpc-status": "0"}, head=head)
    assert res.message.value == "x"


def test_grpc_rejects_the_web_trailers_flag() -> None:
    body = msg("x") + block([("grpc-status", "0")])
    assert error_of(unary, grpc_proto(), body, {"grpc-status": "0"}).code is (
        Code.INTERNAL
    )


def test_undecodable_message_is_internal() -> None:
    body = encode_envelope(0, b"\xff\xff\xff")
    assert error_of(unary, grpc_proto(), body, {"grpc-status": "0"}).code is (
        Code.INTERNAL
    )


# --- gRPC-Web ----------------------------------------------------------------------


def test_web_trailers_in_body_any_case() -> None:
    body = msg("hi") + block([("Grpc-Status", "0"), ("X-Trailer", "t")])
    res = unary(web_proto(), body)
    assert res.message.value == "hi" and res.trailers == Headers({"x-trailer": "t"})


def test_web_error_in_body_and_compressed_trailers() -> None:
    err = ConnectError(Code.ABORTED, "no", details=[StringValue(value="d")])
    pairs = list(wire.status_trailers(err, Headers()).multi_items())
    e = error_of(unary, web_proto(), block(pairs))
    assert (e.code, e.details) == (Code.ABORTED, err.details)
    raw = "".join(f"{k}: {v}\r\n" for k, v in pairs).encode()
    head = Headers({"content-type": "application/grpc-web+proto"})
    head["grpc-encoding"] = "gzip"
    e = error_of(
        unary, web_proto(), encode_envelope(0x81, gzip.compress(raw)), head=head
    )
    assert e.code is Code.ABORTED


def test_web_stream_byte_by_byte_and_protocol_errors() -> None:
    p = web_proto()
    body = msg("a") + msg("b") + block([("grpc-status", "0")])
    s = p.response_stream(p.prepare(SERVER_STREAM_SPEC), 200, WEB_HEAD)
    got = [m.value for i in range(len(body)) for m in s.feed(body[i : i + 1])]
    assert got == ["a", "b"] and s.done
    assert s.finish(Headers()) == Headers()
    with pytest.raises(ConnectError):
        s.feed(b"more")
    # No trailers frame at all.
    s = p.response_stream(p.prepare(SERVER_STREAM_SPEC), 200, WEB_HEAD)
    s.feed(msg("a"))
    assert error_of(s.finish, Headers()).code is Code.INTERNAL
    # A message after the trailers.
    s = p.response_stream(p.prepare(SERVER_STREAM_SPEC), 200, WEB_HEAD)
    bad = block([("grpc-status", "0")]) + msg("late")
    assert error_of(s.feed, bad).code is Code.INTERNAL
    # Real HTTP trailers are accepted when the body has none.
    s = p.response_stream(p.prepare(SERVER_STREAM_SPEC), 200, WEB_HEAD)
    s.feed(msg("a"))
    assert s.finish(Headers({"grpc-status": "0", "x": "1"})) == Headers({"x": "1"})


def test_bin_metadata_round_trip() -> None:
    value = b"\x00\xffbin"
    trailers = {"grpc-status": "0", "x-d-bin": encode_binary_header(value)}
    res = unary(grpc_proto(), msg("x"), trailers)
    assert res.trailers.get_bin("x-d-bin") == value


# --- end to end against our own server -------------------------------------------


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    with generated_code(tmp_path_factory) as out:
        yield out


def serve(gen: Generated, server: str) -> Iterator[str]:
    with serve_py_service(gen, server) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def hypercorn(gen: Generated) -> Iterator[str]:
    yield from serve(gen, "hypercorn")


@pytest.fixture(scope="module")
def uvicorn(gen: Generated) -> Iterator[str]:
    yield from serve(gen, "uvicorn")


@pytest.fixture(scope="module")
def gunicorn(gen: Generated) -> Iterator[str]:
    yield from serve(gen, "gunicorn")


E2E = [
    ("grpc", "hypercorn", True, False, False),
    ("grpc", "hypercorn", True, True, True),
    ("grpc-web", "hypercorn", True, False, False),
    ("grpc-web", "uvicorn", False, True, True),
    ("grpc-web", "gunicorn", False, False, True),
]


@pytest.mark.parametrize("flavor", ["async", "sync"])
@pytest.mark.parametrize(
    ("protocol", "server", "http2", "json", "gz"),
    E2E,
    ids=[
        f"{p}-{s}-{'h2' if h else 'h1'}-{'json' if j else 'proto'}{'-gzip' if g else ''}"
        for p, s, h, j, g in E2E
    ],
)
def test_scenarios_against_our_server(
    gen: Generated,
    request: pytest.FixtureRequest,
    flavor: str,
    protocol: str,
    server: str,
    http2: bool,
    json: bool,
    gz: bool,
) -> None:
    """Every interop scenario, our client and our server, over gRPC or gRPC-Web."""
    results = run_python_client(
        flavor,
        request.getfixturevalue(server),
        protocol=protocol,
        http2=http2,
        json=json,
        gzip=gz,
    )
    check_all(results, Call(protocol, http2, gz, client="python", server="python"))


class _ResetAfterDeadline:
    """A transport whose stream is reset (CANCEL) just as the deadline passes."""

    async def send(self, request: Any, body: Any) -> Any:
        # Block the loop so the client's own timer cannot fire first.
        time.sleep(request.timeout + 0.05)
        raise ConnectError(Code.CANCELED, "StreamError: CANCEL")

    async def aclose(self) -> None:
        pass


def test_cancel_after_the_deadline_is_deadline_exceeded() -> None:
    async def main() -> ConnectError:
        client = AsyncClient(
            "http://h", protocol="grpc", transport=_ResetAfterDeadline()
        )
        with pytest.raises(ConnectError) as raised:
            await client.call_unary(UNARY_SPEC, StringValue(), timeout=0.05)
        return raised.value

    assert asyncio.run(main()).code is Code.DEADLINE_EXCEEDED
