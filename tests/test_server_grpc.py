"""gRPC and gRPC-Web on the same apps: in-process, and grpcio against hypercorn."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import server_apps
from google.protobuf.wrappers_pb2 import StringValue
from server_apps import pb
from server_harness import Result, call_asgi, call_wsgi, envelope, split_envelopes
from servers import Server, start_server

from protoc_gen_connect_python.runtime import Code, ConnectError, Headers
from protoc_gen_connect_python.runtime.headers import decode_binary_header
from protoc_gen_connect_python.runtime.protocol import grpc as wire

P = "/testing.v1.PingService/"
TRAILERS_EXT: dict[str, Any] = {"http.response.trailers": {}}


def ping(text: str = "hi", **kw: Any) -> bytes:
    return envelope(pb.PingRequest(text=text, **kw).SerializeToString())


def web_end(r: Result) -> tuple[list[bytes], Headers]:
    frames = split_envelopes(r.body)
    assert frames[-1][0] == 0x80
    return [p for _, p in frames[:-1]], wire.parse_trailers_block(frames[-1][1])


# -- wire rules -------------------------------------------------------------------


def test_message_percent_encoding() -> None:
    for text in ("plain", "100% sure", "naïve ☃", "line\nbreak", ""):
        assert wire.decode_message(wire.encode_message(text)) == text
    assert wire.encode_message("a%b") == "a%25b"
    assert wire.decode_message("bad %zz") == "bad %zz"


def test_status_details_round_trip() -> None:
    err = ConnectError(Code.ABORTED, "why", details=[StringValue(value="d")])
    code, message, details = wire.parse_status_details(wire.status_details(err))
    assert (code, message, details) == (10, "why", err.details)
    trailers = wire.status_trailers(err, Headers({"x-t": "1"}))
    back = wire.error_from_trailers(trailers)
    assert (
        back is not None and back.code is Code.ABORTED and back.details == err.details
    )
    assert wire.error_from_trailers(Headers({"grpc-status": "0"})) is None
    bad = wire.error_from_trailers(Headers())
    assert bad is not None and bad.code is Code.INTERNAL


def test_grpc_status_details_match_googleapis() -> None:
    # From grpcio-status, a dev dependency: its absence fails, not skips.
    from google.rpc import status_pb2  # type: ignore[import-untyped]

    err = ConnectError(Code.NOT_FOUND, "gone", details=[StringValue(value="d")])
    s = status_pb2.Status.FromString(wire.status_details(err))
    assert (s.code, s.message, s.details[0].type_url) == (
        5,
        "gone",
        "type.googleapis.com/google.protobuf.StringValue",
    )


# -- gRPC-Web in-process, both shells ----------------------------------------------------


@pytest.fixture(params=["asgi", "wsgi"])
def web(request: pytest.FixtureRequest) -> Any:
    def run(
        path: str, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> Result:
        hs = [("content-type", "application/grpc-web+proto"), *(headers or [])]
        if request.param == "asgi":
            return call_asgi(server_apps.asgi_app, "POST", P + path, hs, body)
        return call_wsgi(server_apps.wsgi_app, "POST", P + path, hs, body)

    return run


def test_grpc_web_unary(web: Any) -> None:
    r = web("Ping", ping("web"))
    assert r.status == 200 and r.headers["content-type"] == "application/grpc-web+proto"
    msgs, trailers = web_end(r)
    assert pb.PingResponse.FromString(msgs[0]).text == "web"
    assert trailers["grpc-status"] == "0" and trailers["x-ping-trailer"] == "done"
    assert r.headers["x-ping"] == "pong"


def test_grpc_web_error_and_stream(web: Any) -> None:
    body = envelope(pb.FailRequest(code=5, message="nö").SerializeToString())
    msgs, trailers = web_end(web("Fail", body))
    assert msgs == [] and trailers["grpc-status"] == "5"
    assert wire.decode_message(trailers["grpc-message"]) == "nö"
    details = decode_binary_header(trailers["grpc-status-details-bin"])
    assert (
        wire.parse_status_details(details)[2][0].type_name
        == "google.protobuf.StringValue"
    )
    req = envelope(pb.CountUpRequest(number=3).SerializeToString())
    msgs, trailers = web_end(web("CountUp", req))
    assert len(msgs) == 3 and trailers["grpc-status"] == "0"


def test_grpc_web_timeout_and_compression(web: Any) -> None:
    _, trailers = web_end(web("Ping", ping(sleep_ms=300), [("grpc-timeout", "50m")]))
    assert trailers["grpc-status"] == str(int(Code.DEADLINE_EXCEEDED))
    _, trailers = web_end(web("Ping", ping(), [("grpc-timeout", "1x")]))
    assert trailers["grpc-status"] == str(int(Code.INVALID_ARGUMENT))
    payload = pb.PingRequest(text="g" * 3000).SerializeToString()
    body = envelope(gzip.compress(payload), flags=1)
    r = web("Ping", body, [("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")])
    assert r.headers["grpc-encoding"] == "gzip"
    frames = split_envelopes(r.body)
    assert frames[0][0] == 1
    assert pb.PingResponse.FromString(gzip.decompress(frames[0][1])).text == "g" * 3000
    _, trailers = web_end(web("Ping", ping(), [("grpc-encoding", "lzma")]))
    assert trailers["grpc-status"] == str(int(Code.UNIMPLEMENTED))


# -- gRPC in-process --------------------------------------------------------------------


def test_grpc_uses_http_trailers() -> None:
    hs = [("content-type", "application/grpc"), ("te", "trailers")]
    r = call_asgi(
        server_apps.asgi_app, "POST", P + "Ping", hs, ping("g"), extensions=TRAILERS_EXT
    )
    assert r.status == 200 and r.headers["content-type"] == "application/grpc+proto"
    assert r.messages[0]["trailers"] is True
    assert r.messages[-1]["type"] == "http.response.trailers"
    assert pb.PingResponse.FromString(split_envelopes(r.body)[0][1]).text == "g"
    assert r.trailers["grpc-status"] == "0" and r.trailers["x-ping-trailer"] == "done"


def test_grpc_early_error_in_trailers() -> None:
    hs = [("content-type", "application/grpc"), ("x-deny", "1")]
    r = call_asgi(
        server_apps.asgi_app, "POST", P + "Ping", hs, ping(), extensions=TRAILERS_EXT
    )
    assert r.status == 200 and r.body == b""
    assert r.trailers["grpc-status"] == str(int(Code.PERMISSION_DENIED))


def test_grpc_refused_without_trailers() -> None:
    hs = [("content-type", "application/grpc")]
    r = call_asgi(server_apps.asgi_app, "POST", P + "Ping", hs, ping())
    assert r.headers["grpc-status"] == str(int(Code.UNIMPLEMENTED))
    assert "trailers" in wire.decode_message(r.headers["grpc-message"])
    r = call_wsgi(server_apps.wsgi_app, "POST", P + "Ping", hs, ping())
    assert r.headers["grpc-status"] == str(int(Code.UNIMPLEMENTED))


# -- grpcio against hypercorn (HTTP/2 with trailers) --------------------------------------


@pytest.fixture(scope="module")
def hypercorn() -> Iterator[Server]:
    s = start_server("hypercorn", "server_apps:asgi_app")
    yield s
    s.stop()


def _stub(channel: grpc.Channel, kind: str, name: str, resp: Any) -> Any:
    factory = getattr(channel, kind)
    return factory(
        P + name,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=resp.FromString,
    )


def test_grpcio_client(hypercorn: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{hypercorn.port}") as ch:
        out, call = _stub(ch, "unary_unary", "Ping", pb.PingResponse).with_call(
            pb.PingRequest(text="grpcio"), metadata=[("x-echo", "meta")]
        )
        assert out.text == "meta"
        assert dict(call.trailing_metadata())["x-ping-trailer"] == "done"
        got = [
            m.number
            for m in _stub(ch, "unary_stream", "CountUp", pb.CountUpResponse)(
                pb.CountUpRequest(number=4)
            )
        ]
        assert got == [1, 2, 3, 4]
        total = _stub(ch, "stream_unary", "Sum", pb.SumResponse)(
            iter([pb.SumRequest(number=i) for i in range(5)])
        )
        assert total.sum == 10
        echoed = [
            m.text
            for m in _stub(ch, "stream_stream", "Echo", pb.EchoResponse)(
                iter([pb.EchoRequest(text=t) for t in "abc"])
            )
        ]
        assert echoed == ["a", "b", "c"]
        with pytest.raises(grpc.RpcError) as e:
            _stub(ch, "unary_unary", "Fail", pb.PingResponse)(
                pb.FailRequest(code=9, message="pré")
            )
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert e.value.details() == "pré"
        with pytest.raises(grpc.RpcError) as e:
            _stub(ch, "unary_unary", "Ping", pb.PingResponse)(
                pb.PingRequest(sleep_ms=500), timeout=0.1
            )
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(grpc.RpcError) as e:
            _stub(ch, "unary_unary", "Unimplemented", pb.PingResponse)(pb.PingRequest())
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as e:
            _stub(ch, "unary_unary", "Ping", pb.PingResponse)(
                pb.PingRequest(), metadata=[("x-deny", "1")]
            )
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        stream = _stub(ch, "unary_stream", "CountUp", pb.CountUpResponse)(
            pb.CountUpRequest(number=2, fail_code=14)
        )
        with pytest.raises(grpc.RpcError) as e:
            list(stream)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpcio_gzip(hypercorn: Server) -> None:
    with grpc.insecure_channel(
        f"127.0.0.1:{hypercorn.port}", compression=grpc.Compression.Gzip
    ) as ch:
        out = _stub(ch, "unary_unary", "Ping", pb.PingResponse)(
            pb.PingRequest(text="z" * 5000)
        )
        assert out.text == "z" * 5000
