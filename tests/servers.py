"""Run an ASGI or WSGI app in a real server process on a free loopback port.

API (also used by the interop tests)::

    from servers import run_server, SERVERS

    with run_server("uvicorn", "server_apps:asgi_app", pythonpath=[...]) as srv:
        srv.url        # "http://127.0.0.1:<port>"
        srv.http2      # True when the server speaks HTTP/2 over cleartext (h2c)

``server`` is one of ``SERVERS``: ``uvicorn`` (ASGI, HTTP/1.1), ``hypercorn``
(ASGI, HTTP/1.1 and h2c prior knowledge, trailers), ``pyvoy`` (ASGI via Envoy,
HTTP/1.1 and h2c), ``granian`` (ASGI), ``gunicorn`` (WSGI, threaded worker) and
``granian-wsgi`` / ``pyvoy-wsgi`` (WSGI). ``app`` is ``module:attribute``;
``pythonpath`` entries are prepended to the child's ``PYTHONPATH`` (this
``tests`` directory and the repository root always are). ``tls`` (hypercorn
only) holds ``cert``, ``key`` and ``ca`` paths: the server then speaks HTTPS
with ALPN, requires client certificates signed by ``ca``, and ``srv.url`` is
``https://localhost:<port>``. The server's output goes to a temporary log
file, printed when it fails to start. ``start_server`` is the same without the
context manager (call ``stop()`` yourself).

``free_port`` finds a free loopback port and ``wait_for_port`` waits for a
process to listen on one; other tests start their own processes with them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

ASGI_SERVERS = ("uvicorn", "hypercorn", "pyvoy", "granian")
WSGI_SERVERS = ("gunicorn", "granian-wsgi", "pyvoy-wsgi")
SERVERS = ASGI_SERVERS + WSGI_SERVERS
H2C_SERVERS = frozenset({"hypercorn", "pyvoy", "pyvoy-wsgi", "granian", "granian-wsgi"})


@dataclass
class Server:
    """A running server process."""

    name: str
    app: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    http2: bool = field(default=False)
    tls: bool = field(default=False)

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        if self.tls:
            # The name the test certificates are issued for.
            return f"https://localhost:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the server has logged so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the process (and wait for it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    """Return once ``port`` accepts connections; RuntimeError with the log of
    ``proc`` when it exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            output = log.read_text(errors="replace")
            raise RuntimeError(f"{proc.args!r} exited early:\n{output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                output = log.read_text(errors="replace")
                raise RuntimeError(
                    f"{proc.args!r} did not listen on {port} within {timeout}s:"
                    f"\n{output}"
                ) from None
            time.sleep(0.05)


def _command(
    server: str, app: str, port: int, tls: Mapping[str, Path] | None
) -> list[str]:
    py = sys.executable
    p = str(port)
    if tls is not None and server != "hypercorn":
        raise ValueError(f"TLS is set up for hypercorn only, not {server!r}")
    if server == "uvicorn":
        return [py, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", p,
                "--log-level", "warning", "--lifespan", "on"]  # fmt: skip
    if server == "hypercorn":
        cmd = [py, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{p}"]
        if tls is not None:
            cmd += ["--certfile", str(tls["cert"]), "--keyfile", str(tls["key"])]
            cmd += ["--ca-certs", str(tls["ca"]), "--verify-mode", "CERT_REQUIRED"]
        return cmd
    if server == "gunicorn":
        return [py, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{p}",
                "--workers", "1", "--threads", "8", "--log-level", "warning"]  # fmt: skip
    if server in ("granian", "granian-wsgi"):
        iface = "wsgi" if server == "granian-wsgi" else "asgi"
        return [py, "-m", "granian", "--interface", iface, "--host", "127.0.0.1",
                "--port", p, "--log-level", "warning", app]  # fmt: skip
    if server in ("pyvoy", "pyvoy-wsgi"):
        iface = "wsgi" if server == "pyvoy-wsgi" else "asgi"
        return [str(Path(py).parent / "pyvoy"), "--interface", iface,
                "--address", "127.0.0.1", "--port", p, "--log-level", "warning", app]  # fmt: skip
    raise ValueError(f"unknown server {server!r}; choose from {SERVERS}")


def start_server(
    server: str,
    app: str,
    *,
    pythonpath: Sequence[str | Path] = (),
    env: dict[str, str] | None = None,
    tls: Mapping[str, Path] | None = None,
    timeout: float = 30.0,
    args: Sequence[str] = (),
) -> Server:
    """Start ``app`` on ``server`` and wait until its port accepts connections.

    ``args`` go after the usual command line (``--threads 200``, ``--workers 4``).
    """
    port = free_port()
    child_env = dict(os.environ)
    if env:
        child_env.update(env)
    paths = [str(p) for p in pythonpath] + [str(TESTS), str(ROOT)]
    if child_env.get("PYTHONPATH"):
        paths.append(child_env["PYTHONPATH"])
    child_env["PYTHONPATH"] = os.pathsep.join(paths)
    fd, log_name = tempfile.mkstemp(prefix=f"pgcp-{server}-", suffix=".log")
    log = Path(log_name)
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(
            [*_command(server, app, port, tls), *args],
            cwd=str(TESTS),
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    srv = Server(
        server, app, port, proc, log, http2=server in H2C_SERVERS, tls=tls is not None
    )
    try:
        wait_for_port(port, proc, log, timeout)
    except RuntimeError:
        srv.stop()
        raise
    return srv


@contextmanager
def run_server(
    server: str,
    app: str,
    *,
    pythonpath: Sequence[str | Path] = (),
    env: dict[str, str] | None = None,
    tls: Mapping[str, Path] | None = None,
    timeout: float = 30.0,
    args: Sequence[str] = (),
) -> Iterator[Server]:
    """``start_server`` as a context manager that stops the server on exit."""
    srv = start_server(
        server, app, pythonpath=pythonpath, env=env, tls=tls, timeout=timeout, args=args
    )
    try:
        yield srv
    finally:
        srv.stop()
        srv.log.unlink(missing_ok=True)
