"""Conformance server adapter: serves ConformanceService for the reference client.

Run by the conformance runner (see ``docs/conformance.md``)::

    connectconformance --mode server --conf tests/conformance/config.yaml -- \
        .venv/bin/python tests/conformance/server.py --mode async --server hypercorn

It reads one size-prefixed ``ServerCompatRequest`` from stdin, starts the app
(``ASGIApp`` for ``--mode async``, ``WSGIApp`` for ``--mode sync``) on the chosen
server, listening on an ephemeral port of 127.0.0.1 with TLS (and client
certificate verification) when asked, writes the ``ServerCompatResponse`` and
serves until SIGTERM arrives (or the runner is gone).

TLS uses the certificate and key the runner sends in the request (it is
self-signed for localhost and 127.0.0.1), and returns that certificate. When a
request asks for TLS without credentials, a self-signed certificate is made
with the ``openssl`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import conformance_gen

GEN_DIR = conformance_gen.ensure_generated()

from conformance_io import read_message, write_message  # noqa: E402
from connectrpc.conformance.v1 import (  # type: ignore[import-not-found]  # noqa: E402
    config_pb2,
    server_compat_pb2,
)

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
ASYNC_SERVERS = ("pyvoy", "hypercorn", "uvicorn", "granian", "gunicorn")
SYNC_SERVERS = ("pyvoy", "gunicorn", "hypercorn", "granian")


@dataclass
class Settings:
    """What the runner asked for, turned into files and flags."""

    mode: str
    http2: bool
    tls: bool
    http3: bool
    cert_file: str | None
    key_file: str | None
    client_ca_file: str | None
    read_max_bytes: int


Stop = Callable[[], Awaitable[None]]

_SOCKETS: list[socket.socket] = []
"""Listening sockets handed to servers by file descriptor: kept open here."""


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    _SOCKETS.append(sock)
    return sock


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(GEN_DIR), str(HERE), str(conformance_gen.REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _ssl_kwargs_hypercorn(s: Settings, config: Any) -> None:
    if s.tls:
        config.certfile = s.cert_file
        config.keyfile = s.key_file
        if s.client_ca_file:
            config.ca_certs = s.client_ca_file
            config.verify_mode = ssl.CERT_REQUIRED


async def start_hypercorn(s: Settings) -> tuple[int, Stop]:
    import conformance_apps
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = _listening_socket()
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.graceful_timeout = 0.5
    config.keep_alive_timeout = 60
    _ssl_kwargs_hypercorn(s, config)
    done = asyncio.Event()
    app: Any = conformance_apps.asgi if s.mode == "async" else conformance_apps.wsgi
    mode = "asgi" if s.mode == "async" else "wsgi"
    task = asyncio.ensure_future(
        serve(app, config, shutdown_trigger=done.wait, mode=mode)  # type: ignore[arg-type]
    )

    async def stop() -> None:
        done.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)

    return port, stop


async def start_uvicorn(s: Settings) -> tuple[int, Stop]:
    if s.mode != "async":
        raise SystemExit("uvicorn serves ASGI apps only: use --mode async")
    import conformance_apps
    import uvicorn

    sock = _listening_socket()
    port = sock.getsockname()[1]
    kwargs: dict[str, Any] = {}
    if s.tls:
        kwargs.update(ssl_certfile=s.cert_file, ssl_keyfile=s.key_file)
        if s.client_ca_file:
            kwargs.update(
                ssl_ca_certs=s.client_ca_file, ssl_cert_reqs=ssl.CERT_REQUIRED
            )
    config = uvicorn.Config(
        conformance_apps.asgi,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_keep_alive=60,
        **kwargs,
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))

    async def stop() -> None:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)

    return port, stop


def _tcp_and_udp_port() -> int:
    """A port of HOST free for TCP and UDP both, when probed."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
        return port
    raise SystemExit("no port free for both TCP and UDP")


async def start_pyvoy(s: Settings) -> tuple[int, Stop]:
    from pyvoy import PyvoyServer, StartupError

    kwargs: dict[str, Any] = {}
    if s.tls:
        kwargs.update(
            tls_cert=Path(s.cert_file or ""),
            tls_key=Path(s.key_file or ""),
            tls_enable_http3=s.http3,
        )
        if s.client_ca_file:
            kwargs.update(
                tls_ca_cert=Path(s.client_ca_file), tls_require_client_certificate=True
            )
    # pyvoy imports the app inside Envoy, with this process's sys.path.
    for p in (str(HERE), str(GEN_DIR)):
        if p not in sys.path:
            sys.path.insert(0, p)
    # The runner knows one host:port. Envoy binds the TCP and the QUIC (UDP)
    # listeners separately, so port 0 would give them two different ports: with
    # HTTP/3 the adapter picks one free for both, and tries again should
    # another process take it before Envoy binds it.
    attempts = 5 if s.http3 else 1
    for attempt in range(attempts):
        server = PyvoyServer(
            "conformance_apps:asgi" if s.mode == "async" else "conformance_apps:wsgi",
            interface="asgi" if s.mode == "async" else "wsgi",
            address=HOST,
            port=_tcp_and_udp_port() if s.http3 else 0,
            stdout=None,
            stderr=None,
            log_level="error",
            **kwargs,
        )
        try:
            await server.start()
        except StartupError:
            if attempt == attempts - 1:
                raise
            continue
        break
    if s.http3 and server.listener_port_quic != server.listener_port:
        raise SystemExit(
            f"pyvoy listens on TCP {server.listener_port}"
            f" but on UDP {server.listener_port_quic}"
        )

    async def stop() -> None:
        await server.stop()

    return server.listener_port, stop


def _subprocess_stop(proc: subprocess.Popen[bytes]) -> Stop:
    async def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 5)
            except subprocess.TimeoutExpired:
                proc.kill()

    return stop


async def start_gunicorn(s: Settings) -> tuple[int, Stop]:
    sock = _listening_socket()
    port = sock.getsockname()[1]
    if s.mode == "async":
        target, worker = "conformance_apps:asgi", ["-k", "asgi"]
    else:
        target, worker = "conformance_apps:wsgi", ["-k", "gthread", "--threads", "64"]
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"fd://{sock.fileno()}",
        "--workers",
        "1",
        *worker,
        "--graceful-timeout",
        "1",
        "--timeout",
        "120",
        "--keep-alive",
        "60",
        "--log-level",
        "warning",
    ]
    if s.http2:
        args += ["--http-protocols", "h2,h1"]
        if not s.tls:
            args += ["--http2-cleartext", "prior-knowledge"]
    if s.tls:
        args += ["--certfile", s.cert_file or "", "--keyfile", s.key_file or ""]
        if s.client_ca_file:
            args += [
                "--ca-certs",
                s.client_ca_file,
                "--cert-reqs",
                str(int(ssl.CERT_REQUIRED)),
            ]
    args.append(target)
    proc = subprocess.Popen(
        args, env=_env(), pass_fds=(sock.fileno(),), stdout=sys.stderr
    )
    sock.close()
    return port, _subprocess_stop(proc)


def _pkcs8(key_file: str) -> str:
    out = key_file + ".pk8"
    subprocess.run(
        ["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", key_file, "-out", out],
        check=True,
        capture_output=True,
    )
    return out


async def start_granian(s: Settings) -> tuple[int, Stop]:
    probe = _listening_socket()
    port = probe.getsockname()[1]
    probe.close()
    args = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi" if s.mode == "async" else "wsgi",
        "--host",
        HOST,
        "--port",
        str(port),
        "--http",
        "auto",
        "--no-ws",
        "--log-level",
        "warning",
        "--blocking-threads",
        "32" if s.mode == "sync" else "1",
    ]
    if s.tls:
        args += [
            "--ssl-certificate",
            s.cert_file or "",
            "--ssl-keyfile",
            _pkcs8(s.key_file or ""),
            "--ssl-protocol-min",
            "tls1.2",
        ]
        if s.client_ca_file:
            args += ["--ssl-ca", s.client_ca_file, "--ssl-client-verify"]
    args.append(
        "conformance_apps:asgi" if s.mode == "async" else "conformance_apps:wsgi"
    )
    proc = subprocess.Popen(args, env=_env(), stdout=sys.stderr)
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"granian exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                break
        except OSError:
            await asyncio.sleep(0.05)
    return port, _subprocess_stop(proc)


STARTERS: dict[str, Callable[[Settings], Awaitable[tuple[int, Stop]]]] = {
    "hypercorn": start_hypercorn,
    "uvicorn": start_uvicorn,
    "pyvoy": start_pyvoy,
    "gunicorn": start_gunicorn,
    "granian": start_granian,
}


def _self_signed(folder: Path) -> tuple[bytes, bytes]:
    cert, key = folder / "self.crt", folder / "self.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert.read_bytes(), key.read_bytes()


def settings_for(req: Any, mode: str, folder: Path) -> tuple[Settings, bytes]:
    """The server settings for a ServerCompatRequest, and the PEM cert to report."""
    cert_pem = b""
    cert_file = key_file = ca_file = None
    if req.use_tls:
        cert_pem, key_pem = req.server_creds.cert, req.server_creds.key
        if not cert_pem or not key_pem:
            cert_pem, key_pem = _self_signed(folder)
        (folder / "server.crt").write_bytes(cert_pem)
        (folder / "server.key").write_bytes(key_pem)
        cert_file, key_file = str(folder / "server.crt"), str(folder / "server.key")
        if req.client_tls_cert:
            (folder / "client-ca.crt").write_bytes(req.client_tls_cert)
            ca_file = str(folder / "client-ca.crt")
    settings = Settings(
        mode=mode,
        http2=req.http_version != config_pb2.HTTP_VERSION_1,
        tls=req.use_tls,
        http3=req.http_version == config_pb2.HTTP_VERSION_3,
        cert_file=cert_file,
        key_file=key_file,
        client_ca_file=ca_file,
        read_max_bytes=req.message_receive_limit,
    )
    return settings, cert_pem


async def serve(args: argparse.Namespace) -> None:
    req = read_message(sys.stdin.buffer, server_compat_pb2.ServerCompatRequest)
    if req is None:
        raise SystemExit("no ServerCompatRequest on stdin")
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finished.set)

    parent = os.getppid()

    async def watch_parent() -> None:
        # The runner closes stdin right after the request, so the end of stdin
        # means nothing; a SIGTERM does. Should the runner die without sending
        # one, this process notices it was orphaned and stops too.
        while os.getppid() == parent:
            await asyncio.sleep(1)
        finished.set()

    with tempfile.TemporaryDirectory(prefix="conformance-server-") as tmp:
        settings, cert_pem = settings_for(req, args.mode, Path(tmp))
        if settings.read_max_bytes:
            os.environ["CONFORMANCE_READ_MAX_BYTES"] = str(settings.read_max_bytes)
        port, stop = await STARTERS[args.server](settings)
        write_message(
            sys.stdout.buffer,
            server_compat_pb2.ServerCompatResponse(
                host=HOST, port=port, pem_cert=cert_pem
            ),
        )
        watcher = asyncio.ensure_future(watch_parent())
        try:
            await finished.wait()
        finally:
            watcher.cancel()
            await stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("async", "sync"), default="async")
    parser.add_argument("--server", choices=sorted(STARTERS), default="hypercorn")
    args = parser.parse_args()
    allowed = ASYNC_SERVERS if args.mode == "async" else SYNC_SERVERS
    if args.server not in allowed:
        parser.error(f"--server {args.server} cannot serve --mode {args.mode}")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
