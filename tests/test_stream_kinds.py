"""Every streaming kind on every server the docs list, with the response head.

Server, client and bidi streams (bidi half duplex, as the sync client sends
it) over Connect and gRPC-Web, through the sync client, on uvicorn, hypercorn,
pyvoy and granian (ASGI) and gunicorn, pyvoy and granian (WSGI); over HTTP/1.1
on all of them and over h2c where the server speaks it. Each call checks the
response's ``content-type``, the header the handler set before its first
message, the messages and the trailers: a server that drops a streaming
response's head (granian's WSGI ignores a ``start_response`` made from the
response iterator) fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from server_apps import COUNT_UP, ECHO, SUM, pb
from servers import H2C_SERVERS, SERVERS, WSGI_SERVERS, Server, run_server

from protoc_gen_connect_python.runtime import Code, ConnectError, SyncClient
from protoc_gen_connect_python.runtime.client.config import HTTPVersionName, Protocol

PROTOCOLS = {
    "connect": "application/connect+proto",
    "grpc-web": "application/grpc-web+proto",
}


@pytest.fixture(scope="module", params=SERVERS)
def srv(request: pytest.FixtureRequest) -> Iterator[Server]:
    name: str = request.param
    app = "server_apps:wsgi_app" if name in WSGI_SERVERS else "server_apps:asgi_app"
    with run_server(name, app) as s:
        yield s


def _versions(srv: Server) -> list[HTTPVersionName]:
    return ["1.1", "2"] if srv.name in H2C_SERVERS else ["1.1"]


def _client(srv: Server, protocol: str, version: HTTPVersionName) -> SyncClient:
    proto = cast(Protocol, protocol)
    return SyncClient(srv.url, protocol=proto, http_version=version, timeout=30)


def _check_head(headers: Any, protocol: str, kind: str) -> None:
    assert headers.get("content-type") == PROTOCOLS[protocol]
    # Set by the interceptor before the handler's first message.
    assert headers.get("x-intercepted") == kind


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_server_stream(srv: Server, protocol: str) -> None:
    for version in _versions(srv):
        with _client(srv, protocol, version) as c:
            stream = c.call_server_stream(COUNT_UP, pb.CountUpRequest(number=3))
            with stream:
                got = [m.number for m in stream]
            assert got == [1, 2, 3], version
            _check_head(stream.headers, protocol, "server_stream")
            assert stream.headers.get("x-count") == "3"
            assert stream.trailers.get("x-count-trailer") == "done"
            assert stream.trailers.get("x-sent") == "3"


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_server_stream_error_before_any_message(srv: Server, protocol: str) -> None:
    for version in _versions(srv):
        with _client(srv, protocol, version) as c:
            req = pb.CountUpRequest(number=0, fail_code=Code.ABORTED.value)
            stream = c.call_server_stream(COUNT_UP, req)
            with stream, pytest.raises(ConnectError) as info:
                list(stream)
            assert info.value.code is Code.ABORTED, version
            assert info.value.message == "count failed"
            _check_head(stream.headers, protocol, "server_stream")


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_client_stream(srv: Server, protocol: str) -> None:
    for version in _versions(srv):
        with _client(srv, protocol, version) as c:
            reqs = [pb.SumRequest(number=n) for n in (1, 2, 3, 4)]
            res = c.call_client_stream_detailed(SUM, iter(reqs))
            assert (res.message.sum, res.message.count) == (10, 4), version
            _check_head(res.headers, protocol, "client_stream")
            assert res.trailers.get("x-sent") == "1"


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_bidi_stream(srv: Server, protocol: str) -> None:
    for version in _versions(srv):
        with _client(srv, protocol, version) as c:
            reqs = [pb.EchoRequest(text=t) for t in ("a", "b", "c")]
            stream = c.call_bidi_stream(ECHO, iter(reqs))
            with stream:
                got = [m.text for m in stream]
            assert got == ["a", "b", "c"], version
            _check_head(stream.headers, protocol, "bidi_stream")
            assert stream.trailers.get("x-sent") == "3"
