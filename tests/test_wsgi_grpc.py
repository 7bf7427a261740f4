"""gRPC over WSGI: served with a server's trailers extension, refused without it.

- In-process: ``WSGIApp`` under a stand-in server that offers
  ``wsgi.ext.http.send_trailers`` (as pyvoy does) and records what the app
  does, in order: trailers after the last body bytes, trailers-only errors,
  the refusal on HTTP/1.1 or without the extension, whole unary bodies from
  short reads, and no drain that could block a full-duplex HTTP/2 client.
- Real servers: our sync and async gRPC clients run every interop scenario
  against the sync ``py_service`` on pyvoy (grpcio's client is in
  ``test_grpcio_interop.py``); on granian, whose WSGI has no trailers
  extension, grpcio and our client get the clear refusal.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
import pytest
import server_apps
from interop_env import (
    Call,
    Generated,
    check_all,
    generated_code,
    generated_module,
    run_python_client,
    serve_py_service,
)
from server_apps import pb
from server_harness import Result, call_wsgi, envelope, split_envelopes

from protoc_gen_connect_python.runtime import Code, ConnectError, Headers, WSGIApp
from protoc_gen_connect_python.runtime.headers import decode_binary_header
from protoc_gen_connect_python.runtime.protocol import grpc as wire
from protoc_gen_connect_python.runtime.server.wsgi import SEND_TRAILERS

P = "/testing.v1.PingService/"
GRPC = [("content-type", "application/grpc"), ("te", "trailers")]


class TrailersServer:
    """A WSGI server stand-in with the trailers extension; records events in order.

    ``events`` holds ``("body", bytes)`` for every chunk the app yields and
    ``("trailers", Headers)`` for the extension's calls. ``input`` replaces
    ``wsgi.input`` when given; ``chunked`` drops ``CONTENT_LENGTH`` as a
    streaming HTTP/2 request has none.
    """

    def __init__(
        self,
        app: Any,
        *,
        protocol: str = "HTTP/2",
        extension: bool = True,
        input: Any = None,
        chunked: bool = False,
    ) -> None:
        self.app = app
        self.protocol = protocol
        self.extension = extension
        self.input = input
        self.chunked = chunked
        self.events: list[tuple[str, Any]] = []

    def send_trailers(self, pairs: list[tuple[str, str]]) -> None:
        # pyvoy takes str pairs only and ends the response with them.
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in pairs)
        assert not any(e[0] == "trailers" for e in self.events), "trailers twice"
        self.events.append(("trailers", Headers(pairs)))

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ["SERVER_PROTOCOL"] = self.protocol
        if self.extension:
            environ[SEND_TRAILERS] = self.send_trailers
        if self.input is not None:
            environ["wsgi.input"] = self.input
        if self.chunked:
            environ.pop("CONTENT_LENGTH", None)
        body = self.app(environ, start_response)
        try:
            for chunk in body:
                assert not any(e[0] == "trailers" for e in self.events), (
                    "body after the trailers"
                )
                self.events.append(("body", chunk))
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def trailers(self) -> Headers | None:
        found = [e[1] for e in self.events if e[0] == "trailers"]
        return found[0] if found else None


def grpc_call(
    server: TrailersServer, method: str, body: bytes, headers: Any = ()
) -> Result:
    return call_wsgi(server, "POST", P + method, [*GRPC, *headers], body)


def ping(text: str = "hi") -> bytes:
    return envelope(pb.PingRequest(text=text).SerializeToString())


def test_unary_trailers_follow_the_body() -> None:
    server = TrailersServer(server_apps.wsgi_app)
    r = grpc_call(server, "Ping", ping("w"))
    assert r.status == 200 and r.headers["content-type"] == "application/grpc+proto"
    assert r.headers["x-ping"] == "pong" and "grpc-status" not in r.headers
    assert [e[0] for e in server.events] == ["body", "trailers"]
    assert pb.PingResponse.FromString(split_envelopes(r.body)[0][1]).text == "w"
    trailers = server.trailers()
    assert trailers is not None
    assert trailers["grpc-status"] == "0" and trailers["x-ping-trailer"] == "done"


def test_unary_error_is_trailers_only() -> None:
    server = TrailersServer(server_apps.wsgi_app)
    r = grpc_call(server, "Ping", ping(), [("x-deny", "1")])
    assert r.status == 200 and r.body == b"" and server.events == []
    assert r.headers["content-type"] == "application/grpc+proto"
    assert r.headers["grpc-status"] == str(int(Code.PERMISSION_DENIED))


def test_unary_error_keeps_response_headers_apart() -> None:
    """Headers the call set (the interceptor's) stay headers: no trailers-only."""
    server = TrailersServer(server_apps.wsgi_app)
    body = envelope(pb.FailRequest(code=5, message="nö").SerializeToString())
    r = grpc_call(server, "Fail", body)
    assert r.status == 200 and r.body == b""
    assert r.headers["x-intercepted"] == "unary" and "grpc-status" not in r.headers
    assert [e[0] for e in server.events] == ["trailers"]
    trailers = server.trailers()
    assert trailers is not None
    assert trailers["grpc-status"] == "5" and trailers["x-error-meta"] == "yes"
    assert wire.decode_message(trailers["grpc-message"]) == "nö"
    details = decode_binary_header(trailers["grpc-status-details-bin"])
    assert wire.parse_status_details(details)[0] == 5


def test_stream_refused_by_interceptor_is_trailers_only() -> None:
    server = TrailersServer(server_apps.wsgi_app)
    r = grpc_call(server, "CountUp", b"", [("x-deny", "1")])
    assert r.body == b"" and server.events == []
    assert r.headers["grpc-status"] == str(int(Code.PERMISSION_DENIED))


def test_stream_error_after_messages_in_trailers() -> None:
    server = TrailersServer(server_apps.wsgi_app)
    req = envelope(pb.CountUpRequest(number=2, fail_code=9).SerializeToString())
    r = grpc_call(server, "CountUp", req)
    assert r.headers["x-count"] == "2" and "grpc-status" not in r.headers
    assert [e[0] for e in server.events] == ["body", "body", "trailers"]
    numbers = [
        pb.CountUpResponse.FromString(p).number for _, p in split_envelopes(r.body)
    ]
    assert numbers == [1, 2]
    trailers = server.trailers()
    assert trailers is not None
    assert trailers["grpc-status"] == "9" and trailers["x-count-trailer"] == "done"


def test_stream_without_messages_still_ends_with_trailers() -> None:
    server = TrailersServer(server_apps.wsgi_app)
    req = envelope(pb.CountUpRequest(number=0).SerializeToString())
    r = grpc_call(server, "CountUp", req)
    # No empty yield: the status goes in trailers after the head alone.
    assert r.body == b"" and [e[0] for e in server.events] == ["trailers"]
    trailers = server.trailers()
    assert trailers is not None and trailers["grpc-status"] == "0"


@pytest.mark.parametrize(
    ("protocol", "extension"),
    [("HTTP/1.1", True), ("HTTP/2", False)],
    ids=["http1-with-extension", "http2-without-extension"],
)
def test_refused_without_usable_trailers(protocol: str, extension: bool) -> None:
    server = TrailersServer(
        server_apps.wsgi_app, protocol=protocol, extension=extension
    )
    r = grpc_call(server, "Ping", ping())
    assert r.body == b"" and server.trailers() is None
    assert r.headers["grpc-status"] == str(int(Code.UNIMPLEMENTED))
    message = wire.decode_message(r.headers["grpc-message"])
    assert "cannot send HTTP trailers" in message and "grpc" in message


class Trickle(io.RawIOBase):
    """A request body handed over at most ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.step = step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        k = self.step if n < 0 else min(n, self.step)
        out, self.data = self.data[:k], self.data[k:]
        return out


@pytest.mark.parametrize("content_type", ["application/grpc", "application/proto"])
def test_unary_body_from_short_reads(content_type: str) -> None:
    payload = pb.PingRequest(text="x" * 5000).SerializeToString()
    body = envelope(payload) if content_type == "application/grpc" else payload
    server = TrailersServer(server_apps.wsgi_app, input=Trickle(body, 1000))
    r = call_wsgi(server, "POST", P + "Ping", [("content-type", content_type)], body)
    assert r.status == 200
    data = (
        split_envelopes(r.body)[0][1] if content_type == "application/grpc" else r.body
    )
    assert pb.PingResponse.FromString(data).text == "x" * 5000


class Waiting(io.RawIOBase):
    """A body whose client sends nothing until it sees the response end.

    Reading it would block for good on a real server; here it fails the test.
    """

    def __init__(self, sent: bytes) -> None:
        self.sent = sent
        self.blocked = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if not self.sent:
            self.blocked = True
            raise AssertionError("read a body the client is not sending yet")
        k = len(self.sent) if n < 0 else n
        out, self.sent = self.sent[:k], self.sent[k:]
        return out


@pytest.mark.parametrize(
    "content_type", ["application/grpc", "application/connect+proto"]
)
def test_early_error_on_http2_does_not_wait_for_the_client(content_type: str) -> None:
    """A full-duplex client waits for our answer: no drain of its open body."""
    body = Waiting(b"")
    server = TrailersServer(server_apps.wsgi_app, input=body, chunked=True)
    hs = [("content-type", content_type), ("x-deny", "1")]
    r = call_wsgi(server, "POST", P + "Echo", hs, b"")
    assert not body.blocked
    if content_type == "application/grpc":
        assert r.headers["grpc-status"] == str(int(Code.PERMISSION_DENIED))
    else:
        end = split_envelopes(r.body)[-1]
        assert end[0] == 2 and b"permission_denied" in end[1]


def test_early_error_on_http2_drains_a_server_stream_request() -> None:
    """Only a bidi client waits: other requests are read to their end.

    (Envoy resets an HTTP/3 stream whose request is unread when it ends.)
    """
    rest = envelope(pb.CountUpRequest(number=1).SerializeToString())
    body = io.BytesIO(rest)
    server = TrailersServer(server_apps.wsgi_app, input=body, chunked=True)
    hs = [("content-type", "application/connect+proto"), ("x-deny", "1")]
    r = call_wsgi(server, "POST", P + "CountUp", hs, b"")
    assert body.tell() == len(rest)
    end = split_envelopes(r.body)[-1]
    assert end[0] == 2 and b"permission_denied" in end[1]


def test_oversized_unary_request_is_drained_by_the_app() -> None:
    """A unary body refused unread is drained before the reply ends.

    gunicorn drains only 64 KiB itself and then closes a connection whose
    response announced keep-alive; a client reusing it loses its next call.
    """
    app = WSGIApp(server_apps.PingerSync(), read_max_bytes=100)
    data = pb.PingRequest(text="x" * 200_000).SerializeToString()
    body = io.BytesIO(data)
    server = TrailersServer(app, protocol="HTTP/1.1", input=body)
    r = call_wsgi(
        server, "POST", P + "Ping", [("content-type", "application/proto")], data
    )
    assert r.status == 429 and b"resource_exhausted" in r.body
    assert body.tell() == len(data)


@pytest.mark.parametrize(
    ("path", "ctype", "status"),
    [(P + "Nope", "application/proto", 404), (P + "Ping", "text/plain", 415)],
)
def test_refused_request_is_drained_by_the_app(
    path: str, ctype: str, status: int
) -> None:
    """Requests refused before routing or by content type are drained too."""
    app = WSGIApp(server_apps.PingerSync())
    data = b"x" * 200_000
    body = io.BytesIO(data)
    server = TrailersServer(app, protocol="HTTP/1.1", input=body)
    r = call_wsgi(server, "POST", path, [("content-type", ctype)], data)
    assert r.status == status
    assert body.tell() == len(data)


def test_early_error_on_http1_still_drains() -> None:
    """HTTP/1.1 clients send their whole body first; it is read to its end."""
    rest = envelope(pb.EchoRequest(text="a").SerializeToString())
    body = io.BytesIO(rest)
    server = TrailersServer(
        server_apps.wsgi_app, protocol="HTTP/1.1", input=body, chunked=True
    )
    hs = [("content-type", "application/connect+proto"), ("x-deny", "1")]
    call_wsgi(server, "POST", P + "Echo", hs, b"")
    assert body.tell() == len(rest)


# --- real servers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    with generated_code(tmp_path_factory, grpc_stubs=True) as out:
        yield out


@pytest.fixture(scope="module")
def pyvoy_wsgi(gen: Generated) -> Iterator[str]:
    with serve_py_service(gen, "pyvoy-wsgi") as srv:
        yield srv.url


@pytest.mark.parametrize("flavor", ["async", "sync"])
@pytest.mark.parametrize("gz", [False, True], ids=["proto", "proto-gzip"])
def test_scenarios_over_grpc_on_pyvoy_wsgi(
    pyvoy_wsgi: str, flavor: str, gz: bool
) -> None:
    """Every interop scenario: our gRPC client, the sync service on pyvoy."""
    results = run_python_client(
        flavor, pyvoy_wsgi, protocol="grpc", http2=True, gzip=gz
    )
    check_all(results, Call("grpc", True, gz, client="python", server="python"))


def test_granian_wsgi_refuses_grpc_clearly(gen: Generated) -> None:
    """No trailers extension: grpcio and our client both read why."""
    interop_pb2 = generated_module("interop_pb2")
    interop_pb2_grpc = generated_module("interop_pb2_grpc")
    interop_connect = generated_module("interop_connect")
    with serve_py_service(gen, "granian-wsgi") as srv:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = interop_pb2_grpc.InteropServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Echo(interop_pb2.EchoRequest(text="x"), timeout=10)
        assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert "cannot send HTTP trailers" in raised.value.details()
        with (
            interop_connect.InteropServiceClientSync(
                srv.url, protocol="grpc", http_version="2"
            ) as client,
            pytest.raises(ConnectError) as err,
        ):
            client.echo(interop_pb2.EchoRequest(text="x"), timeout=10)
        assert err.value.code is Code.UNIMPLEMENTED
        assert "cannot send HTTP trailers" in err.value.message
