"""Instructions per unary call, counted by callgrind: a figure that does not move.

Loopback timings on a shared machine drift by 10-20 % from run to run;
callgrind counts the instructions a process executes, which is the same for the
same code and inputs whatever else the machine is doing. Two counts per
implementation, unary 16 B (``application/proto``):

- in-process: the app object called directly (``profile_unary.py
  --calls-only``), ASGI and WSGI; per call = (count for 3000 calls - count for
  1000 calls) / 2000, so start-up and imports cancel out;
- served: the ASGI app under uvicorn with httptools, pinned to the server core;
  after 1000 warm-up requests from h2load the counters are zeroed
  (``callgrind_control -z``), 4000 more requests are sent and the counters
  dumped: everything the server process did for them, parser and event loop
  included.

Instructions are not time (cache misses are not counted, and a server's own
code evicts ours), but their ratios show what each layer asks of the CPU.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    CLIENT_CORE,
    GEN,
    OFFICIAL_VENV,
    OURS_VENV,
    SERVICE,
    eprint,
    free_port,
    impl_env,
    impl_python,
    serving,
)

IMPLS = ("ours", "official", "bare")
WARM = 1000
SERVED = 4000
_COLLECTED = re.compile(r"Collected : (\d+)")
_TOTALS = re.compile(r"^(?:summary|totals): (\d+)", re.M)


def _callgrind(argv: list[str], env: dict[str, str]) -> int:
    """Instructions executed by ``argv`` (the whole process) under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run(
            [
                "taskset",
                "-c",
                CLIENT_CORE,
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                *argv,
            ],
            capture_output=True,
            text=True,
            env=env,
        )
    m = _COLLECTED.search(p.stderr)
    if p.returncode != 0 or m is None:
        raise RuntimeError(f"callgrind failed: {p.stderr[-800:]}")
    return int(m.group(1))


def in_process(impl: str, interface: str) -> float:
    """Instructions per unary call through the app object alone."""
    venv = "official" if impl == "official" else "ours"
    env = impl_env(venv) | {"PYTHONHASHSEED": "0"}
    argv = [str(impl_python(venv)), str(BENCH / "profile_unary.py"), "--impl", impl]
    argv += ["--calls-only", interface]
    few = _callgrind([*argv, "-n", "1000"], env)
    many = _callgrind([*argv, "-n", "3000"], env)
    return (many - few) / 2000


def _h2load(url: str, n: int) -> None:
    body = GEN / "bodies" / "proto16.bin"
    argv = ["taskset", "-c", CLIENT_CORE, "h2load", "--h1", "-t", "1", "-m", "1"]
    argv += ["-c", "16", "-n", str(n), "-d", str(body)]
    argv += ["-H", "content-type: application/proto"]
    argv += ["-H", "connect-protocol-version: 1", f"{url}/{SERVICE}/Echo"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
    if f"{n} succeeded" not in out:
        raise RuntimeError(f"h2load under callgrind:\n{out}")


def served(impl: str) -> float:
    """Instructions per unary request of the whole uvicorn (httptools) process."""
    venv = OFFICIAL_VENV if impl == "official" else OURS_VENV
    module = "bare" if impl == "bare" else impl
    env = impl_env("official" if impl == "official" else "ours")
    env["PYTHONHASHSEED"] = "0"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        argv += [str(venv / "bin" / "uvicorn"), f"{module}:app", "--port", str(port)]
        argv += ["--http", "httptools", "--log-level", "warning", "--no-access-log"]
        with serving(f"callgrind-{impl}", argv, env, port, start_timeout=300) as s:
            _h2load(s.url, WARM)
            pid = str(s.proc.pid)
            subprocess.run(
                ["callgrind_control", "-z", pid], check=True, capture_output=True
            )
            _h2load(s.url, SERVED)
            subprocess.run(
                ["callgrind_control", "-d", pid], check=True, capture_output=True
            )
            dumps = sorted(Path(tmp).glob("callgrind.out.*"))
            if not dumps:
                raise RuntimeError("callgrind wrote no dump")
            m = _TOTALS.search(dumps[-1].read_text(errors="replace"))
        if m is None:
            raise RuntimeError("no totals in the callgrind dump")
    return int(m.group(1)) / SERVED


def suite() -> dict[str, Any]:
    """Every count for every implementation; a failure is reported, not fatal."""
    out: dict[str, Any] = {}
    for impl in IMPLS:
        row: dict[str, float] = {}
        for key in ("asgi", "wsgi", "served"):
            eprint(f"[instructions] {impl} {key}")
            try:
                row[key] = served(impl) if key == "served" else in_process(impl, key)
            except Exception as e:
                eprint(f"  ! {impl} {key}: {e}")
        out[impl] = row
    return out


def table(res: dict[str, Any]) -> list[str]:
    """Markdown rows: counts, and ours against the official and the bare app."""
    out = [
        "| impl | in-process ASGI | in-process WSGI | uvicorn-httptools, whole process |",
        "|---|---:|---:|---:|",
    ]
    for impl in IMPLS:
        r = res.get(impl, {})
        cells = [
            f"{r[k]:,.0f}" if k in r else "n/a" for k in ("asgi", "wsgi", "served")
        ]
        out.append(f"| {impl} | {' | '.join(cells)} |")
    ours, off, bare = (res.get(i, {}) for i in IMPLS)
    for label, other in (("ours / official", off), ("ours / bare", bare)):
        cells = [
            f"{ours[k] / other[k]:.2f}x" if k in ours and k in other else "n/a"
            for k in ("asgi", "wsgi", "served")
        ]
        out.append(f"| {label} | {' | '.join(cells)} |")
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(suite(), indent=1))
