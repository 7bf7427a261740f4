"""Shared pieces of the benchmark suite: paths, payloads, framing, process metrics.

Only the standard library is imported here, so every script (in either venv)
can use it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PROTO_DIR = BENCH / "proto"
PROTO_FILE = "connectbench/v1/bench.proto"
GEN = BENCH / "gen"
GEN_OURS = GEN / "ours"
GEN_OFFICIAL = GEN / "official"
APPS = BENCH / "apps"
OURS_VENV = ROOT / ".venv"
OFFICIAL_VENV = BENCH / ".venv-official"
OFFICIAL_SPEC = "connectrpc>=0.13,<0.14"
OFFICIAL_PLUGIN_SPEC = "protoc-gen-connectrpc>=0.13,<0.14"

SERVICE = "connectbench.v1.BenchService"
SMALL = 16
LARGE = 16 * 1024
STREAM_COUNT = 1000
UPLOAD_COUNT = 64

SERVER_CORE = "0"
CLIENT_CORE = "1"


def venv_python(venv: Path) -> Path:
    """The interpreter of a virtual environment."""
    return venv / "bin" / "python"


def envelope(payload: bytes, flags: int = 0) -> bytes:
    """One Connect/gRPC frame: flags byte, big-endian length, payload."""
    return struct.pack(">BI", flags, len(payload)) + payload


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Block until something accepts connections on the port, or fail."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def process_tree(pid: int) -> list[int]:
    """The pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree, in seconds (utime+stime)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def rss_bytes(pid: int) -> int:
    """Resident set size of a process tree, in bytes."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


@dataclass
class Server:
    """A running server process and where it listens."""

    proc: subprocess.Popen[bytes]
    port: int
    name: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def stop(self) -> None:
        """Terminate the server (its whole process group) and wait for it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                self.proc.wait()


def gen_path(impl: str) -> Path:
    """Where the generated code of an implementation lives."""
    return GEN_OFFICIAL if impl == "official" else GEN_OURS


def impl_python(impl: str) -> Path:
    """The interpreter an implementation runs under."""
    return venv_python(OFFICIAL_VENV if impl == "official" else OURS_VENV)


def impl_env(impl: str) -> dict[str, str]:
    """Environment for a process of an implementation: its gen dir and apps."""
    env = dict(os.environ)
    paths = [str(gen_path(impl)), str(APPS), str(BENCH)]
    if impl != "official":
        paths.append(str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONSTARTUP", None)
    return env


@contextlib.contextmanager
def serving(
    name: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    start_timeout: float = 30,
) -> Iterator[Server]:
    """Run a server pinned to the server core for the duration of the block."""
    log = open(GEN / f"server-{name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *argv],
        env=env,
        cwd=APPS,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(proc, port, name)
    try:
        wait_port(port, proc, start_timeout)
        yield server
    finally:
        server.stop()
        log.close()


def eprint(*args: object) -> None:
    """Progress output, on stderr."""
    print(*args, file=sys.stderr, flush=True)
