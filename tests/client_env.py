"""Shared by the client tests: the test proto, method specs, peers and certificates.

``compile_proto`` builds ``clienttest.v1`` with grpcio-tools; ``serve_peer``
runs ``client_peer:app`` under uvicorn (HTTP/1.1) or hypercorn (HTTP/2 without
TLS, or TLS with ALPN); ``make_certs`` creates a CA, a server and a client
certificate with the openssl command. ``call_all_kinds_async`` and
``call_all_kinds_sync`` make every kind of call to ``server_apps``' service,
wherever it is served, and check the answers.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    ConnectError,
    SyncClient,
)
from protoc_gen_connect_python.runtime.method import Idempotency, MethodSpec, StreamType

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SERVICE = "clienttest.v1.TestService"


def compile_proto(out: Path) -> Any:
    """Generate the test messages into ``out``, import them and return the module."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{TESTS / 'client_proto'}",
        f"--python_out={out}",
        "clienttest/v1/client_test.proto",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"protoc failed:\n{done.stderr}", pytrace=False)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module("clienttest.v1.client_test_pb2")


class Specs:
    """The test service's method specs."""

    def __init__(self, pb: Any) -> None:
        def spec(
            name: str, kind: StreamType, idem: Idempotency
        ) -> MethodSpec[Any, Any]:
            return MethodSpec(SERVICE, name, name.lower(), kind, pb.Req, pb.Res, idem)

        self.unary = spec("Unary", StreamType.UNARY, Idempotency.NO_SIDE_EFFECTS)
        self.post = spec("Post", StreamType.UNARY, Idempotency.UNKNOWN)
        self.client_stream = spec(
            "ClientStream", StreamType.CLIENT_STREAM, Idempotency.UNKNOWN
        )
        self.server_stream = spec(
            "ServerStream", StreamType.SERVER_STREAM, Idempotency.UNKNOWN
        )
        self.bidi = spec("Bidi", StreamType.BIDI_STREAM, Idempotency.UNKNOWN)
        self.missing = spec("Missing", StreamType.UNARY, Idempotency.UNKNOWN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve_peer(
    gen_dir: Path,
    log_dir: Path,
    server: str,
    tls: dict[str, Path] | None = None,
) -> Iterator[str]:
    """Run the peer; yields its base URL (``https`` when ``tls`` is given).

    ``tls`` holds ``cert``, ``key`` and ``ca`` paths; clients must then present
    a certificate signed by ``ca``.
    """
    port = free_port()
    bind = f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m"]
    if server == "uvicorn":
        cmd += ["uvicorn", "client_peer:app", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--log-level", "warning"]
    elif server == "hypercorn":
        cmd += ["hypercorn", "client_peer:app", "-b", bind]
        if tls is not None:
            cmd += ["--certfile", str(tls["cert"]), "--keyfile", str(tls["key"])]
            cmd += ["--ca-certs", str(tls["ca"]), "--verify-mode", "CERT_REQUIRED"]
    else:
        raise ValueError(server)
    path = os.pathsep.join([str(gen_dir), str(TESTS), str(ROOT)])
    env = {**os.environ, "PYTHONPATH": path}
    log = log_dir / f"{server}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{server} exited:\n{log.read_text()}", pytrace=False)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{server} did not start:\n{log.read_text()}")
                time.sleep(0.05)
        scheme = "https" if tls is not None else "http"
        host = "localhost" if tls is not None else "127.0.0.1"
        yield f"{scheme}://{host}:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def make_certs(d: Path) -> dict[str, Path]:
    """A CA, and server (localhost, 127.0.0.1) and client certificates it signed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
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
