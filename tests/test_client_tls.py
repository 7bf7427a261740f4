"""Which TLS stack each client transport uses, and what each accepts (docs/client.md, "TLS").

A self-signed certificate that is its own CA, used as the server's certificate:
Python's ``ssl`` (the pure-Python transports) accepts it, rustls (pyqwest)
refuses a CA certificate as the end entity. A leaf issued by a CA works on all.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from client_env import make_certs
from server_apps import PING, pb
from servers import run_server

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    ConnectError,
    SyncClient,
)

# (http_version, client kind) -> accepts a CA certificate as the server's own.
ROWS: dict[tuple[Any, str], bool] = {
    (None, "async"): False,  # pyqwest
    (None, "sync"): False,  # pyqwest
    ("1.1", "async"): True,  # ssl
    ("1.1", "sync"): True,  # ssl
    ("2", "async"): True,  # ssl, the pure-Python HTTP/2 transport
    ("2", "sync"): False,  # pyqwest
}


def self_signed_ca(d: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is needed"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "own.key",
         "-out", "own.pem", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, cwd=d, timeout=60,
    )  # fmt: skip
    return d / "own.pem", d / "own.key"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("certs")
    found = make_certs(d)
    found["own"], found["own_key"] = self_signed_ca(d)
    return found


@pytest.fixture(scope="module", params=["issued", "own-ca"])
def server(
    request: pytest.FixtureRequest, certs: dict[str, Path]
) -> Iterator[tuple[str, str, Path]]:
    if request.param == "issued":
        tls, trust = (
            {"cert": certs["cert"], "key": certs["key"], "ca": certs["ca"]},
            certs["ca"],
        )
    else:
        tls, trust = (
            {"cert": certs["own"], "key": certs["own_key"], "ca": certs["ca"]},
            certs["own"],
        )
    with run_server("hypercorn", "server_apps:asgi_app", tls=tls) as srv:
        yield request.param, srv.url, trust


def call(
    url: str, kind: str, version: Any, trust: Path, certs: dict[str, Path]
) -> None:
    options: dict[str, Any] = {
        "http_version": version,
        "tls_ca_cert": trust,
        "tls_cert": certs["client_cert"],
        "tls_key": certs["client_key"],
        "timeout": 10,
    }
    if kind == "sync":
        with SyncClient(url, **options) as client:
            client.call_unary(PING, pb.PingRequest(text="t"))
        return

    async def go() -> None:
        async with AsyncClient(url, **options) as client:
            await client.call_unary(PING, pb.PingRequest(text="t"))

    asyncio.run(go())


@pytest.mark.parametrize(
    ("version", "kind"), list(ROWS), ids=[f"{v}-{k}" for v, k in ROWS]
)
def test_what_each_transport_accepts(
    server: tuple[str, str, Path], certs: dict[str, Path], version: Any, kind: str
) -> None:
    cert_kind, url, trust = server
    if cert_kind == "issued" or ROWS[version, kind]:
        call(url, kind, version, trust, certs)
        return
    with pytest.raises(ConnectError) as err:
        call(url, kind, version, trust, certs)
    assert err.value.code is Code.UNAVAILABLE
