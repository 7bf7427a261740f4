"""What HTTP/1.1-only servers do with bidi streams and gRPC (docs/server.md)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from server_apps import ECHO, pb
from servers import run_server, start_server

from protoc_gen_connect_python.runtime import AsyncClient, Code, ConnectError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


async def ping_pong(url: str, rounds: int, timeout: float) -> list[str]:
    """A bidi stream that sends each request only after the previous answer."""
    turn: asyncio.Queue[Any] = asyncio.Queue()

    async def requests() -> AsyncIterator[Any]:
        while (text := await turn.get()) is not None:
            yield pb.EchoRequest(text=text)

    got: list[str] = []
    await turn.put("a")
    async with AsyncClient(url, timeout=timeout) as client:
        async for reply in client.call_bidi_stream(ECHO, requests()):
            got.append(reply.text)
            await turn.put(None if len(got) == rounds else reply.text + "b")
    return got


def test_uvicorn_runs_a_ping_pong_bidi_stream_over_http1() -> None:
    with run_server("uvicorn", "server_apps:asgi_app") as srv:
        assert asyncio.run(ping_pong(srv.url, 3, 10)) == ["a", "ab", "abb"]


def test_gunicorn_answers_a_bidi_stream_only_after_its_requests() -> None:
    with (
        run_server("gunicorn", "server_apps:wsgi_app") as srv,
        pytest.raises(ConnectError) as err,
    ):
        asyncio.run(ping_pong(srv.url, 3, 3))
    # The first answer never came while the request was open.
    assert err.value.code is Code.DEADLINE_EXCEEDED


def test_the_http2_preface_on_uvicorn() -> None:
    with (
        run_server("uvicorn", "server_apps:asgi_app") as srv,
        socket.create_connection(("127.0.0.1", srv.port), timeout=10) as conn,
    ):
        conn.sendall(PREFACE + EMPTY_SETTINGS)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    # The request line reached the app as a request for "*" (no such route);
    # uvicorn refused the rest and closed the connection.
    assert b"HTTP/1.1 404 Not Found\r\n" in answer, answer
    assert b"HTTP/1.1 400 Bad Request\r\n" in answer, answer
    assert b"Invalid HTTP request received." in answer, answer


def test_grpc_clients_never_reach_an_app_on_uvicorn() -> None:
    srv = start_server("uvicorn", "server_apps:asgi_app")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            ping = channel.unary_unary(
                "/testing.v1.PingService/Ping",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=lambda b: b,
            )
            with pytest.raises(grpc.RpcError) as err:
                ping(pb.PingRequest(text="x"), timeout=10)
    finally:
        srv.stop()  # its log is complete once it has exited
    log = srv.output()
    srv.log.unlink()
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "http1.x server" in (err.value.details() or "")
    # uvicorn took the HTTP/2 preface for HTTP/1.1 (a `PRI *` request, then
    # garbage): the app, which would log its refusal of gRPC, never saw the call.
    assert "grpc requests are refused" not in log
