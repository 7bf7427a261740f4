"""Shared by the client tests: the test proto, method specs, peers and certificates.

``compile_proto`` builds ``clienttest.v1`` with grpcio-tools; ``serve_peer``
runs ``client_peer:app`` under uvicorn (HTTP/1.1) or hypercorn (HTTP/2 without
TLS, or TLS with ALPN); ``make_certs`` creates a CA, a server and a client
certificate with the openssl command; ``peer_env`` does all three for a test
module. ``UNARY_SPEC``, ``SERVER_STREAM_SPEC`` and ``BIDI_SPEC`` are methods
over ``StringValue`` for the tests that need no generated code.
``call_all_kinds_async`` and ``call_all_kinds_sync`` make every kind of call to
``server_apps``' service, wherever it is served, and check the answers.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from protoc_env import protoc
from servers import run_server

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    ConnectError,
    SyncClient,
)
from protoc_gen_connect_python.runtime.method import Idempotency, MethodSpec, StreamType

TESTS = Path(__file__).resolve().parent
SERVICE = "clienttest.v1.TestService"


def _spec(
    service: str,
    name: str,
    kind: StreamType,
    types: tuple[Any, Any],
    idem: Idempotency = Idempotency.UNKNOWN,
) -> MethodSpec[Any, Any]:
    return MethodSpec(service, name, name.lower(), kind, *types, idem)


_STRINGS = (StringValue, StringValue)
UNARY_SPEC = _spec(
    "t.v1.S", "Get", StreamType.UNARY, _STRINGS, Idempotency.NO_SIDE_EFFECTS
)
SERVER_STREAM_SPEC = _spec("t.v1.S", "Watch", StreamType.SERVER_STREAM, _STRINGS)
BIDI_SPEC = _spec("t.v1.S", "Chat", StreamType.BIDI_STREAM, _STRINGS)


def compile_proto(out: Path) -> Any:
    """Generate the test messages into ``out``, import them and return the module."""
    out.mkdir(parents=True, exist_ok=True)
    protoc(
        f"-I{TESTS / 'client_proto'}",
        f"--python_out={out}",
        "clienttest/v1/client_test.proto",
    )
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module("clienttest.v1.client_test_pb2")


class Specs:
    """The test service's method specs."""

    def __init__(self, pb: Any) -> None:
        types = (pb.Req, pb.Res)
        self.unary = _spec(
            SERVICE, "Unary", StreamType.UNARY, types, Idempotency.NO_SIDE_EFFECTS
        )
        self.post = _spec(SERVICE, "Post", StreamType.UNARY, types)
        self.client_stream = _spec(
            SERVICE, "ClientStream", StreamType.CLIENT_STREAM, types
        )
        self.server_stream = _spec(
            SERVICE, "ServerStream", StreamType.SERVER_STREAM, types
        )
        self.bidi = _spec(SERVICE, "Bidi", StreamType.BIDI_STREAM, types)
        self.missing = _spec(SERVICE, "Missing", StreamType.UNARY, types)


@contextmanager
def serve_peer(
    gen_dir: Path, server: str, tls: dict[str, Path] | None = None
) -> Iterator[str]:
    """Run the peer on ``servers.run_server``; yields its base URL (``https``
    when ``tls`` is given, for hypercorn only).

    ``tls`` holds ``cert``, ``key`` and ``ca`` paths; clients must then present
    a certificate signed by ``ca``.
    """
    with run_server(server, "client_peer:app", pythonpath=[gen_dir], tls=tls) as srv:
        yield srv.url


class PeerEnv:
    """The peer as a test module sees it: the compiled messages, their specs,
    the peer's base URLs by name and the certificates."""

    def __init__(self, pb: Any, urls: dict[str, str], certs: dict[str, Path]) -> None:
        self.pb = pb
        self.specs = Specs(pb)
        self.urls = urls
        self.certs = certs

    def tls_options(self) -> dict[str, Any]:
        """Client options that trust the peer and present the client certificate."""
        return {
            "tls_ca_cert": self.certs["ca"],
            "tls_cert": self.certs["client_cert"],
            "tls_key": self.certs["client_key"],
        }

    async def full_duplex(self, c: AsyncClient) -> list[bool]:
        """A bidi call that sends each request only once the previous answer
        arrived; returns a list that holds True once the request generator
        was closed."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        closed = []

        async def requests() -> AsyncIterator[Any]:
            try:
                while (item := await queue.get()) is not None:
                    yield item
            finally:
                closed.append(True)

        stream = c.call_bidi_stream(self.specs.bidi, requests())
        for word in ("one", "two", "three"):
            await queue.put(self.pb.Req(text=word))
            assert (await stream.__anext__()).text == word
        await queue.put(None)
        assert [m async for m in stream] == []
        return closed

    def events(self, test_id: str, url: str) -> list[str]:
        """What the peer at ``urls[url]`` recorded for the call ``test_id``."""
        address = f"{self.urls[url]}/_events/{test_id}"
        with urllib.request.urlopen(address, timeout=5) as r:
            out: list[str] = json.loads(r.read())
            return out

    def wait_disconnected(self, test_id: str, url: str) -> None:
        """Wait until that peer saw the client go away from ``test_id``."""
        deadline = time.monotonic() + 5
        while "disconnected" not in self.events(test_id, url):
            assert time.monotonic() < deadline, "the peer never saw the disconnect"
            time.sleep(0.05)


@contextmanager
def peer_env(tmp: Path, **servers: str) -> Iterator[PeerEnv]:
    """Compile the proto, make certificates and serve the peer until the block
    ends: on each of ``servers`` (URL name: server name) without TLS, and on
    hypercorn with TLS and client certificates as URL ``"tls"``."""
    pb = compile_proto(tmp / "gen")
    certs = make_certs(tmp / "certs")
    with ExitStack() as stack:
        urls = {
            name: stack.enter_context(serve_peer(tmp / "gen", server))
            for name, server in servers.items()
        }
        urls["tls"] = stack.enter_context(
            serve_peer(tmp / "gen", "hypercorn", tls=certs)
        )
        yield PeerEnv(pb, urls, certs)


def make_certs(d: Path) -> dict[str, Path]:
    """A CA, and server (localhost, 127.0.0.1) and client certificates it signed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is not installed", pytrace=False)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    for name, ext in (
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip
    return {
        "ca": d / "ca.pem",
        "cert": d / "server.pem",
        "key": d / "server.key",
        "client_cert": d / "client.pem",
        "client_key": d / "client.key",
    }


def _check_version(headers: Any, http_version: str | None) -> None:
    # Set by http3_app: the HTTP version the server saw.
    if http_version is not None:
        assert headers["x-http-version"] == http_version


async def call_all_kinds_async(
    c: AsyncClient, apps: Any, http_version: str | None = None
) -> None:
    """Every kind of call to ``apps`` (``server_apps``), with headers,
    trailers and an error; ``http_version`` is checked where given."""
    pb = apps.pb
    res = await c.call_unary_detailed(apps.PING, pb.PingRequest(text="hi", number=3))
    _check_version(res.headers, http_version)
    assert (res.message.text, res.message.number) == ("hi", 3)
    assert res.headers["x-ping"] == "pong"
    assert res.trailers["x-ping-trailer"] == "done"
    with pytest.raises(ConnectError) as info:
        await c.call_unary(apps.FAIL, pb.FailRequest(code=5, message="gone"))
    assert info.value.code is Code.NOT_FOUND
    assert info.value.message == "gone"
    assert info.value.metadata["x-error-meta"] == "yes"
    stream = c.call_server_stream(apps.COUNT_UP, pb.CountUpRequest(number=3))
    assert [m.number async for m in stream] == [1, 2, 3]
    _check_version(stream.headers, http_version)
    assert stream.trailers["x-sent"] == "3"

    async def numbers() -> AsyncIterator[Any]:
        for n in (1, 2, 3):
            yield pb.SumRequest(number=n)

    total = await c.call_client_stream(apps.SUM, numbers())
    assert (total.sum, total.count) == (6, 3)
    echo = c.call_bidi_stream(apps.ECHO, [pb.EchoRequest(text=t) for t in "ab"])
    assert [m.text async for m in echo] == ["a", "b"]


def call_all_kinds_sync(
    c: SyncClient, apps: Any, http_version: str | None = None
) -> None:
    """:func:`call_all_kinds_async` for the sync client, with a stream that
    fails after its messages and an unimplemented method."""
    pb = apps.pb
    res = c.call_unary_detailed(apps.PING, pb.PingRequest(text="sync"))
    _check_version(res.headers, http_version)
    assert res.message.text == "sync"
    with pytest.raises(ConnectError) as info:
        c.call_unary(apps.UNIMPLEMENTED, pb.PingRequest())
    assert info.value.code is Code.UNIMPLEMENTED
    with c.call_server_stream(
        apps.COUNT_UP, pb.CountUpRequest(number=2, fail_code=10)
    ) as stream:
        got = []
        with pytest.raises(ConnectError) as info:
            for m in stream:
                got.append(m.number)
    assert got == [1, 2]
    assert info.value.code is Code.ABORTED
    total = c.call_client_stream(apps.SUM, (pb.SumRequest(number=n) for n in (4, 5)))
    assert total.sum == 9
    echo = c.call_bidi_stream(apps.ECHO, [pb.EchoRequest(text="x")])
    assert [m.text for m in echo] == ["x"]
