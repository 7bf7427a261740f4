"""Shared by the plain-HTTP tests: generate the example's code, serve it, find tools.

``generate_example`` runs protoc (grpcio-tools) with this repo's plugin into a
directory; ``serve`` starts ``example_app`` on a free loopback port with any of
the servers of ``servers.py`` and yields its base URL; ``static_server`` serves
a directory over HTTP (the browser test's page); ``doc_commands`` reads the
checked commands of docs/http.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from protoc_env import protoc
from servers import WSGI_SERVERS, free_port, run_server, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TESTS = ROOT / "tests"
BIN = Path(sys.executable).parent
PLUGIN = BIN / "protoc-gen-connect-python"
GREET = "/greet.v1.GreetService/Greet"
GREET_STREAM = "/greet.v1.GreetService/GreetStream"


def tool(name: str, *candidates: Path) -> str:
    """The path of a command-line tool; fails the test when it is not installed."""
    for c in candidates:
        if c.exists():
            return str(c)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed (scripts/setup.sh installs it)", pytrace=False
        )
    return found


def generate_example(out: Path) -> Path:
    """Generate greet.v1's messages and Connect code into ``out``; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    protoc(
        f"-I{EXAMPLES / 'proto'}",
        f"--plugin=protoc-gen-connect-python={PLUGIN}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--connect-python_out={out}",
        "greet/v1/greet.proto",
    )
    return out


@contextmanager
def running(
    cmd: list[str], port: int, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group until the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        wait_for_port(port, proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def serve(
    gen_dir: Path,
    tmp: Path,
    *,
    server: str = "uvicorn",
    cors_origins: str = "*",
    app: str | None = None,
) -> Iterator[str]:
    """Serve ``example_app`` with ``servers.run_server``; yields its base URL.

    ASGI servers get ``example_app:app``, WSGI servers ``example_app:wsgi_app``,
    unless ``app`` names another ``module:attribute`` that serves the example's
    service. hypercorn also speaks HTTP/2 without TLS (prior knowledge), which
    gRPC clients such as ``buf curl`` need.
    """
    if app is None:
        wsgi = server in WSGI_SERVERS
        app = "example_app:wsgi_app" if wsgi else "example_app:app"
    with run_server(
        server,
        app,
        pythonpath=[gen_dir, EXAMPLES],
        env={"CONNECT_CORS_ORIGINS": cors_origins},
    ) as srv:
        yield srv.url


@contextmanager
def static_server(directory: Path, tmp: Path) -> Iterator[str]:
    """Serve ``directory`` with Python's http.server; yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port)]
    cmd += ["--bind", "127.0.0.1", "--directory", str(directory)]
    with running(cmd, port, tmp / f"static-{port}.log"):
        yield f"http://127.0.0.1:{port}"


DOC = ROOT / "docs" / "http.md"
DOC_ADDRESS = "http://localhost:8080"
_CHECK = re.compile(r"<!-- check: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.DOTALL)


def checked_blocks(doc: Path, *languages: str) -> dict[str, str]:
    """The code blocks of ``doc`` in one of ``languages`` that a
    ``<!-- check: ID -->`` line marks as tested, by ID."""
    return {m[1]: m[3] for m in _CHECK.finditer(doc.read_text()) if m[2] in languages}


def doc_commands() -> dict[str, str]:
    """The shell commands of docs/http.md, by the id of their ``check`` marker."""
    return checked_blocks(DOC, "bash", "sh")


def run_doc_command(
    name: str, base_url: str, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    """Run a documented command as written, against ``base_url`` instead of the
    documented address, from the repository root with the venv's tools on PATH."""
    command = doc_commands()[name]
    assert DOC_ADDRESS in command, command
    command = command.replace(DOC_ADDRESS, base_url)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run(
        [bash, "-c", "set -o pipefail; " + command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=timeout,
    )


def json_documents(text: str) -> list[object]:
    """Every JSON value in ``text``, one after another (buf curl's stream output)."""
    decoder = json.JSONDecoder()
    out: list[object] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return out
        value, pos = decoder.raw_decode(text, pos)
        out.append(value)


def envelopes(data: bytes) -> list[tuple[int, bytes]]:
    """(flags, payload) of each 5-byte-prefixed frame in ``data``."""
    out: list[tuple[int, bytes]] = []
    while data:
        assert len(data) >= 5, data
        size = int.from_bytes(data[1:5], "big")
        out.append((data[0], data[5 : 5 + size]))
        assert len(data) >= 5 + size, data
        data = data[5 + size :]
    return out
