"""The clients over HTTP/3 (``http_version="3"``): pyqwest's QUIC against pyvoy.

pyvoy serves ``http3_app:app`` with TLS on one port number for TCP (HTTP/1.1
and HTTP/2) and UDP (HTTP/3). Every response names the HTTP version the server
saw, so a call that quietly went over TCP fails the tests.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from client_env import call_all_kinds_async, call_all_kinds_sync, make_certs

from protoc_gen_connect_python.runtime import AsyncClient, SyncClient
from protoc_gen_connect_python.runtime.client.config import build_config

pytestmark = pytest.mark.anyio

# gRPC is refused over HTTP/3: see test_grpc_over_http3_is_refused.
PROTOCOLS = ["connect", "grpc-web"]


def _tcp_and_udp_port() -> int:
    """A loopback port free for TCP and UDP both, when probed."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


class H3:
    def __init__(self, url: str, certs: dict[str, Path], pb: Any, apps: Any) -> None:
        self.url = url
        self.certs = certs
        self.pb = pb
        self.apps = apps


@pytest.fixture(scope="module")
def h3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H3]:
    import pyvoy  # a dev dependency: its absence fails, not skips
    import server_apps

    certs = make_certs(tmp_path_factory.mktemp("h3certs"))
    # The server runs on a loop of its own: the tests' loops come and go.
    loop = asyncio.new_event_loop()
    server = pyvoy.PyvoyServer(
        "http3_app:app",
        address="127.0.0.1",
        port=_tcp_and_udp_port(),
        tls_cert=certs["cert"],
        tls_key=certs["key"],
        tls_enable_http3=True,
        stdout=None,
        stderr=None,
        log_level="error",
    )
    loop.run_until_complete(server.start())
    try:
        # pyvoy opens the QUIC listener on the TCP listener's port number; the
        # client has one URL for both.
        assert server.listener_port_quic == server.listener_port
        url = f"https://localhost:{server.listener_port}"
        yield H3(url, certs, server_apps.pb, server_apps)
    finally:
        loop.run_until_complete(server.stop())
        loop.close()


def test_grpc_over_http3_is_refused() -> None:
    # pyqwest's HTTP/3 client drops response trailers, and gRPC's status is
    # one: refused when the client is built rather than failing every call.
    with pytest.raises(ValueError, match="trailers"):
        SyncClient("https://h", protocol="grpc", http_version="3")
    with pytest.raises(ValueError, match="trailers"):
        AsyncClient("https://h", protocol="grpc", http_version="3")


def test_config_http3_needs_https() -> None:
    with pytest.raises(ValueError, match="https"):
        build_config("http://h", http_version="3")
    assert build_config("https://h", http_version="3").http_version == "3"
    # gRPC keeps HTTP/3 when asked for it, and means HTTP/2 otherwise.
    grpc3 = build_config("https://h", protocol="grpc", http_version="3")
    assert grpc3.http_version == "3"
    assert build_config("https://h", protocol="grpc").http_version == "2"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_async_over_http3(h3: H3, protocol: str) -> None:
    async with AsyncClient(
        h3.url,
        protocol=protocol,  # type: ignore[arg-type]
        http_version="3",
        tls_ca_cert=h3.certs["ca"],
        send_compression="gzip",
        compress_min_bytes=1,
    ) as c:
        await call_all_kinds_async(c, h3.apps, http_version="3")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sync_over_http3(h3: H3, protocol: str) -> None:
    with SyncClient(
        h3.url,
        protocol=protocol,  # type: ignore[arg-type]
        http_version="3",
        tls_ca_cert=h3.certs["ca"].read_bytes(),
        codec="json",
    ) as c:
        call_all_kinds_sync(c, h3.apps, http_version="3")


async def test_connect_get_over_http3(h3: H3) -> None:
    pb, apps = h3.pb, h3.apps
    async with AsyncClient(
        h3.url, http_version="3", tls_ca_cert=h3.certs["ca"], use_get=True
    ) as c:
        res = await c.call_unary_detailed(apps.PING, pb.PingRequest(text="get"))
        assert res.headers["x-http-version"] == "3"
        assert res.message.text == "get"


async def test_without_http3_the_same_url_is_http2(h3: H3) -> None:
    # The header is the server's word, not a constant: ALPN over TCP says 2.
    pb, apps = h3.pb, h3.apps
    async with AsyncClient(h3.url, tls_ca_cert=h3.certs["ca"]) as c:
        res = await c.call_unary_detailed(apps.PING, pb.PingRequest(text="tcp"))
        assert res.headers["x-http-version"] == "2"
