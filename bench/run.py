"""Runs the whole benchmark suite and writes docs/benchmarks.md.

    .venv/bin/python bench/run.py            # full: 3 rounds, 5 s per measurement
    .venv/bin/python bench/run.py --quick    # 1 round, 2 s, fewer servers' streams

Installs what it needs first (bench/setup_env.py). Parts can be chosen with
``--only server,client,memory,instructions,profile``. Raw results go to bench/results/.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import instructions
from common import (
    BENCH,
    CLIENT_CORE,
    GEN,
    OFFICIAL_VENV,
    OURS_VENV,
    ROOT,
    SERVER_CORE,
    SERVICE,
    Server,
    eprint,
    free_port,
    impl_env,
    impl_python,
    serving,
    venv_python,
)
from setup_env import setup

PINGS_PER_STREAM = 1000  # as in client_bench.py

RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"

Row = dict[str, Any]


# --- servers -----------------------------------------------------------------


@dataclass(frozen=True)
class ServerKind:
    name: str
    interface: str  # asgi or wsgi
    argv: Callable[[Path, str, int], list[str]]
    # h2load's HTTP/1.1 parser rejects hypercorn's status line (no reason
    # phrase), so hypercorn is measured over h2c instead.
    h1: bool = True


def _bin(venv: Path, tool: str) -> str:
    return str(venv / "bin" / tool)


def _uvicorn(venv: Path, app: str, port: int, http: str) -> list[str]:
    # h11 is what a plain `pip install uvicorn` gets; httptools comes with
    # `uvicorn[standard]`, the usual production install.
    return [
        _bin(venv, "uvicorn"),
        app,
        "--port",
        str(port),
        "--http",
        http,
        "--log-level",
        "warning",
        "--no-access-log",
    ]


SERVERS = [
    ServerKind(
        "uvicorn",
        "asgi",
        lambda v, app, p: _uvicorn(v, app, p, "h11"),
    ),
    ServerKind(
        "uvicorn-httptools",
        "asgi",
        lambda v, app, p: _uvicorn(v, app, p, "httptools"),
    ),
    ServerKind(
        "granian",
        "asgi",
        lambda v, app, p: [
            _bin(v, "granian"),
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(p),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-ws",
            app,
        ],
    ),
    ServerKind(
        "hypercorn",
        "asgi",
        lambda v, app, p: [
            _bin(v, "hypercorn"),
            app,
            "-b",
            f"127.0.0.1:{p}",
            "-w",
            "1",
            "--log-level",
            "warning",
        ],
        h1=False,
    ),
    ServerKind(
        "pyvoy",
        "asgi",
        lambda v, app, p: [
            _bin(v, "pyvoy"),
            app,
            "--address",
            "127.0.0.1",
            "--port",
            str(p),
            "--log-level",
            "warning",
        ],
    ),
    ServerKind(
        "gunicorn",
        "wsgi",
        lambda v, app, p: [
            _bin(v, "gunicorn"),
            app,
            "-b",
            f"127.0.0.1:{p}",
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "8",
            "--log-level",
            "warning",
        ],
    ),
    ServerKind(
        "granian-wsgi",
        "wsgi",
        lambda v, app, p: [
            _bin(v, "granian"),
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(p),
            "--workers",
            "1",
            "--log-level",
            "warning",
            app,
        ],
    ),
]
IMPLS = ("ours", "official", "bare")


def start(kind: ServerKind, impl: str) -> Any:
    """Context manager running ``impl``'s app under ``kind``, pinned to the server core."""
    venv = OFFICIAL_VENV if impl == "official" else OURS_VENV
    module = "bare" if impl == "bare" else impl
    attr = "app" if kind.interface == "asgi" else "wsgi_app"
    port = free_port()
    env = impl_env("official" if impl == "official" else "ours")
    return serving(
        f"{kind.name}-{impl}", kind.argv(venv, f"{module}:{attr}", port), env, port
    )


# --- load generator ------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    body: str
    content_type: str
    connections: int
    requests: int = 0  # fixed count instead of a duration (long streams)


SERVER_SCENARIOS = [
    Scenario("unary 16 B", "Echo", "proto16", "application/proto", 16),
    Scenario("unary 16 KiB", "Echo", "proto16k", "application/proto", 16),
    Scenario("unary JSON 16 B", "Echo", "json16", "application/json", 16),
    Scenario(
        "server stream 1000x16 KiB",
        "Download",
        "download",
        "application/connect+proto",
        2,
        requests=32,
    ),
    Scenario(
        "client stream 64x16 KiB", "Upload", "upload", "application/connect+proto", 4
    ),
]
GRPC_SCENARIO = Scenario("unary 16 B", "Echo", "grpc16", "application/grpc", 16)


def h2load(
    url: str,
    sc: Scenario,
    duration: float,
    *,
    h1: bool = True,
    extra: tuple[str, ...] = (),
    requests: int = 0,
) -> Row:
    """One h2load run on the client core; throughput, latency percentiles, bytes."""
    log = GEN / "h2load-requests.log"
    log.unlink(missing_ok=True)
    argv = ["taskset", "-c", CLIENT_CORE, "h2load", "-t", "1", "-m", "1"]
    if h1:
        argv.append("--h1")
    argv += ["-c", str(sc.connections), "-d", str(GEN / "bodies" / f"{sc.body}.bin")]
    argv += ["-H", f"content-type: {sc.content_type}", "--log-file", str(log)]
    if sc.content_type.startswith("application/grpc"):
        argv += ["-H", "te: trailers"]
    else:
        argv += ["-H", "connect-protocol-version: 1"]
    for h in extra:
        argv += ["-H", h]
    n = requests or sc.requests
    argv += ["-n", str(n)] if n else ["-D", str(max(1, round(duration)))]
    argv.append(f"{url}/{SERVICE}/{sc.method}")
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    wall = time.monotonic() - t0
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out
    )
    traffic = re.search(r"traffic: \S+ \((\d+)\) total", out)
    if not m or not done:
        raise RuntimeError(f"h2load failed:\n{out}")
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    lat = []
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1].startswith("2"):
                lat.append(int(parts[2]))
    lat.sort()
    return {
        "rps": float(m.group(3)),
        "done": int(done.group(1)),
        "ok": int(done.group(2)),
        "secs": secs or wall,
        "bytes": int(traffic.group(1)) if traffic else 0,
        "p50_ms": lat[len(lat) // 2] / 1000 if lat else 0.0,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000 if lat else 0.0,
    }


def measure(
    server: Server, sc: Scenario, duration: float, *, requests: int = 0, h1: bool = True
) -> Row:
    """Warm up, then one measured run with the server's CPU time around it."""
    warm = 2 if sc.requests else 0
    h2load(server.url, sc, min(1.0, duration / 2), requests=warm, h1=h1)
    cpu0 = server.cpu()
    row = h2load(server.url, sc, duration, requests=requests, h1=h1)
    cpu = server.cpu() - cpu0
    row["cpu_us"] = cpu / max(row["ok"], 1) * 1e6
    row["cpu_util"] = cpu / row["secs"]
    row["mbps"] = row["bytes"] / row["secs"] / 1e6
    if sc.method == "Upload":
        size = (GEN / "bodies" / "upload.bin").stat().st_size
        row["mbps"] = row["ok"] * size / row["secs"] / 1e6
    if row["ok"] < row["done"] or row["ok"] == 0:
        eprint(f"  ! {server.name} {sc.name}: {row['ok']} of {row['done']} succeeded")
    return row


def server_suite(rounds: int, duration: float, quick: bool) -> list[Row]:
    """Every scenario on every server, the implementations measured back to back.

    The three apps run side by side under each server kind (all pinned to the
    server core; the two not being measured sit idle), and each scenario is
    measured round by round, one implementation right after the other with the
    order rotating: a machine whose speed drifts over minutes (a shared
    virtual machine does) then moves all three alike.
    """
    rows: list[Row] = []
    for kind in SERVERS:
        label = kind.name if kind.h1 else f"{kind.name} (h2c)"
        with contextlib.ExitStack() as stack:
            servers: dict[str, Server] = {}
            for impl in IMPLS:
                try:
                    servers[impl] = stack.enter_context(start(kind, impl))
                except Exception as e:  # a server that fails is reported, not fatal
                    eprint(f"  ! {kind.name} {impl}: {e}")
            for sc in SERVER_SCENARIOS:
                n = 2 if quick and sc.requests else 0
                for r in range(rounds):
                    order = IMPLS[r % 3 :] + IMPLS[: r % 3]
                    for impl in order:
                        if impl not in servers:
                            continue
                        eprint(
                            f"[server] {kind.name} {sc.name} round {r + 1}/{rounds} {impl}"
                        )
                        try:
                            row = measure(
                                servers[impl], sc, duration, requests=n, h1=kind.h1
                            )
                        except Exception as e:
                            eprint(f"  ! {kind.name} {impl} {sc.name}: {e}")
                            continue
                        rows.append(
                            {"server": label, "impl": impl, "scenario": sc.name} | row
                        )
    port = free_port()
    argv = [str(venv_python(OURS_VENV)), "grpc_server.py", str(port)]
    try:
        with serving("grpcio", argv, impl_env("ours"), port) as server:
            for r in range(rounds):
                eprint(f"[server] grpcio round {r + 1}/{rounds}")
                row = measure(server, GRPC_SCENARIO, duration, h1=False)
                rows.append(
                    {
                        "server": "grpcio (gRPC, h2)",
                        "impl": "grpcio",
                        "scenario": "unary 16 B",
                    }
                    | row
                )
    except Exception as e:
        eprint(f"  ! grpcio: {e}")
    return rows


# --- clients -------------------------------------------------------------------

CLIENT_CASES = [
    # scenario, mode, concurrency
    ("unary16", "sync", 1),
    ("unary16", "async", 1),
    ("unary16", "sync", 16),
    ("unary16", "async", 16),
    ("unary16k", "async", 1),
    ("download", "sync", 1),
    ("download", "async", 1),
    ("download_h2", "async", 1),
    ("upload", "sync", 1),
    ("upload", "async", 1),
    ("pingpong", "async", 1),
]


def fixed_server() -> Any:
    """The one server every client talks to: the bare app on granian (h1 and h2c)."""
    kind = next(k for k in SERVERS if k.name == "granian")
    return start(kind, "bare")


def client_suite(rounds: int, duration: float) -> list[Row]:
    rows: list[Row] = []
    with fixed_server() as server:
        for r in range(rounds):
            for scenario, mode, conc in CLIENT_CASES:
                impls = ("ours", "official") if r % 2 == 0 else ("official", "ours")
                for impl in impls:
                    eprint(
                        f"[client] round {r + 1}/{rounds} {impl} {scenario} {mode} x{conc}"
                    )
                    argv = [
                        "taskset",
                        "-c",
                        CLIENT_CORE,
                        str(impl_python(impl)),
                        str(BENCH / "client_bench.py"),
                        "--impl",
                        impl,
                        "--url",
                        server.url,
                        "--scenario",
                        scenario,
                        "--mode",
                        mode,
                        "--concurrency",
                        str(conc),
                        "--duration",
                        str(duration),
                    ]
                    p = subprocess.run(
                        argv,
                        capture_output=True,
                        text=True,
                        env=impl_env(impl),
                        timeout=300,
                    )
                    if p.returncode != 0:
                        eprint(f"  ! {impl} {scenario}: {p.stderr.strip()[-500:]}")
                        continue
                    res = json.loads(p.stdout)
                    if scenario == "pingpong":  # count round trips, not streams
                        res["calls"] *= PINGS_PER_STREAM
                    calls = max(res["calls"], 1)
                    rows.append(
                        {
                            "impl": impl,
                            "case": f"{scenario} {mode} x{conc}",
                            "calls_s": res["calls"] / res["wall"],
                            "cpu_us": res["cpu"] / calls * 1e6,
                            "mbps": res["bytes"] / res["wall"] / 1e6,
                        }
                    )
    return rows


# --- memory --------------------------------------------------------------------


def _sample_peak(server: Server, proc: subprocess.Popen[bytes]) -> int:
    peak = server.rss()
    while proc.poll() is None:
        peak = max(peak, server.rss())
        time.sleep(0.02)
    return max(peak, server.rss())


def _upload_body(count: int) -> Iterator[bytes]:
    from common import envelope
    from setup_env import echo_request

    one = envelope(echo_request(16 * 1024))
    for _ in range(count):
        yield one


def memory_suite(gib: float) -> list[Row]:
    """RSS growth over a 1 GiB server stream and a 1 GiB client stream."""
    from common import envelope
    from setup_env import stream_request

    count = int(gib * (1 << 30)) // (16 * 1024)
    rows: list[Row] = []
    kinds = [k for k in SERVERS if k.name in ("uvicorn", "gunicorn")]
    for kind in kinds:
        for impl in ("ours", "official"):
            eprint(f"[memory] server {kind.name} {impl}")
            with start(kind, impl) as server:
                url = f"{server.url}/{SERVICE}"
                hdr = ["-H", "content-type: application/connect+proto"]
                down = GEN / "bodies" / "download-gib.bin"
                down.write_bytes(envelope(stream_request(count, 16 * 1024)))
                warm = GEN / "bodies" / "download.bin"
                subprocess.run(
                    [
                        "curl",
                        "-sS",
                        "-o",
                        "/dev/null",
                        *hdr,
                        "--data-binary",
                        f"@{warm}",
                        f"{url}/Download",
                    ],
                    check=True,
                )
                base = server.rss()
                proc = subprocess.Popen(
                    [
                        "curl",
                        "-sS",
                        "-o",
                        "/dev/null",
                        *hdr,
                        "--data-binary",
                        f"@{down}",
                        f"{url}/Download",
                    ]
                )
                peak = _sample_peak(server, proc)
                rows.append(
                    {
                        "side": f"server ({kind.name})",
                        "impl": impl,
                        "stream": "server stream 1 GiB",
                        "base_mib": base / 2**20,
                        "growth_mib": (peak - base) / 2**20,
                    }
                )
                base = server.rss()
                proc = subprocess.Popen(
                    [
                        "curl",
                        "-sS",
                        "-o",
                        "/dev/null",
                        *hdr,
                        "-H",
                        "transfer-encoding: chunked",
                        "-X",
                        "POST",
                        "-T",
                        "-",
                        f"{url}/Upload",
                    ],
                    stdin=subprocess.PIPE,
                )
                assert proc.stdin is not None
                peak = base
                for i, chunk in enumerate(_upload_body(count)):
                    proc.stdin.write(chunk)
                    if i % 256 == 0:
                        peak = max(peak, server.rss())
                proc.stdin.close()
                peak = max(peak, _sample_peak(server, proc))
                rows.append(
                    {
                        "side": f"server ({kind.name})",
                        "impl": impl,
                        "stream": "client stream 1 GiB",
                        "base_mib": base / 2**20,
                        "growth_mib": (peak - base) / 2**20,
                    }
                )
    with fixed_server() as server:
        for impl in ("ours", "official"):
            eprint(f"[memory] client {impl}")
            p = subprocess.run(
                [
                    "taskset",
                    "-c",
                    CLIENT_CORE,
                    str(impl_python(impl)),
                    str(BENCH / "memory.py"),
                    "--impl",
                    impl,
                    "--url",
                    server.url,
                    "--count",
                    str(count),
                ],
                capture_output=True,
                text=True,
                env=impl_env(impl),
                timeout=900,
            )
            if p.returncode != 0:
                eprint(f"  ! {impl}: {p.stderr.strip()[-500:]}")
                continue
            res = json.loads(p.stdout)
            for d, label in (
                ("download", "server stream 1 GiB"),
                ("upload", "client stream 1 GiB"),
            ):
                rows.append(
                    {
                        "side": "client (async)",
                        "impl": impl,
                        "stream": label,
                        "base_mib": res[f"{d}_base_mib"],
                        "growth_mib": res[f"{d}_growth_mib"],
                    }
                )
    return rows


# --- profile -------------------------------------------------------------------


def profile_suite(duration: float) -> dict[str, Any]:
    """py-spy on our app under uvicorn while h2load sends unary 16 B requests."""
    kind = next(k for k in SERVERS if k.name == "uvicorn")
    raw = RESULTS / "profile-unary.txt"
    with start(kind, "ours") as server:
        h2load(server.url, SERVER_SCENARIOS[0], 1.0)
        spy = subprocess.Popen(
            [
                "taskset",
                "-c",
                CLIENT_CORE,
                str(OURS_VENV / "bin" / "py-spy"),
                "record",
                "--pid",
                str(server.proc.pid),
                "--subprocesses",
                "--format",
                "raw",
                "--rate",
                "500",
                "--nonblocking",
                "--output",
                str(raw),
                "--duration",
                str(int(duration) + 2),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        h2load(server.url, SERVER_SCENARIOS[0], duration)
        spy.wait()
    out = summarize_profile(raw)
    out["inproc"] = {}
    for impl in IMPLS:
        venv_impl = "official" if impl == "official" else "ours"
        argv = ["taskset", "-c", CLIENT_CORE, str(impl_python(venv_impl))]
        argv += [str(BENCH / "profile_unary.py"), "--impl", impl]
        if impl == "ours":
            argv.append("--profile")
        p = subprocess.run(
            argv, capture_output=True, text=True, env=impl_env(venv_impl)
        )
        if p.returncode == 0:
            out["inproc"][impl] = json.loads(p.stdout)
        else:
            eprint(f"  ! profile_unary {impl}: {p.stderr.strip()[-500:]}")
    return out


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_s: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = [_short(f) for f in stack.split(";")]
        if not frames:
            continue
        total += count
        self_s[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    return {
        "total": total,
        "self": [(f, c / total * 100) for f, c in self_s.most_common(15)],
        "inclusive": [
            (f, c / total * 100)
            for f, c in incl.most_common(200)
            if "protoc_gen_connect_python" in f or "ours.py" in f
        ][:20],
    }


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)", runtime paths kept relative
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame.strip())
    if not m:
        return frame.strip()
    func, path = m.groups()
    if "protoc_gen_connect_python" in path:
        path = (
            "protoc_gen_connect_python" + path.split("protoc_gen_connect_python", 1)[1]
        )
    else:
        path = path.rsplit("site-packages/", 1)[-1].rsplit("/lib/python3", 1)[-1]
    return f"{func} ({path})"


# --- report --------------------------------------------------------------------


def median_rows(rows: list[Row], keys: tuple[str, ...]) -> list[Row]:
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, grp in groups.items():
        merged: Row = dict(zip(keys, key, strict=True))
        for field, value in grp[0].items():
            if field not in keys and isinstance(value, (int, float)):
                merged[field] = statistics.median(g[field] for g in grp)
        merged["n"] = len(grp)
        out.append(merged)
    return out


def versions() -> str:
    names = [
        "protobuf",
        "pyqwest",
        "uvicorn",
        "granian",
        "hypercorn",
        "pyvoy",
        "gunicorn",
        "grpcio",
        "uvloop",
    ]
    ours = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)
    off = subprocess.run(
        [
            str(venv_python(OFFICIAL_VENV)),
            "-c",
            "import importlib.metadata as m; print(m.version('connectrpc'), m.version('protoc-gen-connectrpc'))",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    h2 = subprocess.run(
        ["h2load", "--version"], capture_output=True, text=True
    ).stdout.split("\n")[0]
    return (
        f"this runtime at commit {head}; connectrpc {off[0] if off else '?'} "
        f"(plugin protoc-gen-connectrpc {off[1] if len(off) > 1 else '?'}, `protobuf=google`); "
        f"Python {platform.python_version()}; {ours}; {h2}"
    )


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}"


def fmt(v: float, digits: int = 0) -> str:
    return f"{v:,.{digits}f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def server_tables(rows: list[Row]) -> list[str]:
    med = median_rows(rows, ("server", "impl", "scenario"))
    by = {(r["server"], r["impl"], r["scenario"]): r for r in med}
    out = []
    for sc in SERVER_SCENARIOS:
        stream = sc.method != "Echo"
        out.append(f"\n#### {sc.name}\n")
        if stream:
            out.append(
                "| server | impl | streams/s | MB/s | server CPU ms/stream | p50 ms | ours/official CPU | ours/bare CPU |"
            )
            out.append("|---|---|---:|---:|---:|---:|---:|---:|")
        else:
            out.append(
                "| server | impl | req/s | p50 ms | p99 ms | server CPU µs/req | ours/official CPU | ours/bare CPU |"
            )
            out.append("|---|---|---:|---:|---:|---:|---:|---:|")
        servers = [k.name if k.h1 else f"{k.name} (h2c)" for k in SERVERS]
        if sc.name == "unary 16 B":
            servers.append("grpcio (gRPC, h2)")
        for srv in servers:
            for impl in (*IMPLS, "grpcio"):
                r = by.get((srv, impl, sc.name))
                if r is None:
                    continue
                off = by.get((srv, "official", sc.name))
                bare = by.get((srv, "bare", sc.name))
                ours = impl == "ours"
                rel = ratio(r["cpu_us"], off["cpu_us"]) if ours and off else ""
                rel_bare = ratio(r["cpu_us"], bare["cpu_us"]) if ours and bare else ""
                if stream:
                    out.append(
                        f"| {srv} | {impl} | {fmt(r['rps'], 1)} | {fmt(r['mbps'])} | "
                        f"{fmt(r['cpu_us'] / 1000, 1)} | {fmt(r['p50_ms'], 1)} | {rel} | {rel_bare} |"
                    )
                else:
                    out.append(
                        f"| {srv} | {impl} | {fmt(r['rps'])} | {fmt(r['p50_ms'], 2)} | "
                        f"{fmt(r['p99_ms'], 2)} | {fmt(r['cpu_us'])} | {rel} | {rel_bare} |"
                    )
    return out


def targets_table(rows: list[Row]) -> list[str]:
    """The server-side targets per server, with the floor the bare app sets."""
    med = median_rows(rows, ("server", "impl", "scenario"))
    by = {(r["server"], r["impl"], r["scenario"]): r for r in med}
    unary, stream = SERVER_SCENARIOS[0].name, SERVER_SCENARIOS[3].name
    out = [
        "| server | unary 16 B CPU ours/official (target <= 0.67x) | bare/official (floor) "
        "| ours/bare (target <= 1.3x) | stream MB/s ours/official (target >= 1.5x) "
        "| bare/official MB/s (ceiling) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in SERVERS:
        srv = k.name if k.h1 else f"{k.name} (h2c)"
        u = {i: by.get((srv, i, unary)) for i in IMPLS}
        st = {i: by.get((srv, i, stream)) for i in IMPLS}
        if not all(u.values()) or not all(st.values()):
            continue
        cpu = {i: r["cpu_us"] for i, r in u.items() if r}
        mb = {i: r["mbps"] for i, r in st.items() if r}
        out.append(
            f"| {srv} | {ratio(cpu['ours'], cpu['official'])} "
            f"| {ratio(cpu['bare'], cpu['official'])} | {ratio(cpu['ours'], cpu['bare'])} "
            f"| {ratio(mb['ours'], mb['official'])} | {ratio(mb['bare'], mb['official'])} |"
        )
    return out


def client_table(rows: list[Row]) -> list[str]:
    med = median_rows(rows, ("impl", "case"))
    by = {(r["impl"], r["case"]): r for r in med}
    out = [
        "| case | ours calls/s | official calls/s | ours CPU µs/call | official CPU µs/call | ours MB/s | official MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, mode, conc in CLIENT_CASES:
        case = f"{scenario} {mode} x{conc}"
        a, b = by.get(("ours", case)), by.get(("official", case))
        if not a and not b:
            continue

        def g(r: Row | None, k: str, d: int = 0) -> str:
            return fmt(r[k], d) if r else "-"

        out.append(
            f"| {case} | {g(a, 'calls_s')} | {g(b, 'calls_s')} | {g(a, 'cpu_us')} | "
            f"{g(b, 'cpu_us')} | {g(a, 'mbps')} | {g(b, 'mbps')} |"
        )
    return out


def memory_table(rows: list[Row]) -> list[str]:
    out = [
        "| side | impl | stream | RSS before MiB | RSS growth MiB |",
        "|---|---|---|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['side']} | {r['impl']} | {r['stream']} | {fmt(r['base_mib'], 1)} | "
            f"{fmt(r['growth_mib'], 1)} |"
        )
    return out


def profile_table(prof: dict[str, Any]) -> list[str]:
    inproc = prof.get("inproc", {})
    out = [
        "Unary 16 B through the app object alone (no server, no sockets; "
        "`bench/profile_unary.py`, best of 3 x 20000 calls):\n",
        "| impl | ASGI µs/call | WSGI µs/call |",
        "|---|---:|---:|",
    ]
    for impl in IMPLS:
        r = inproc.get(impl)
        if r:
            out.append(f"| {impl} | {r['asgi_us']:.1f} | {r['wsgi_us']:.1f} |")
    top = inproc.get("ours", {}).get("top", [])
    if top:
        out += ["", "cProfile of our ASGI path (own and cumulative share):\n"]
        out += ["| own % | cum % | calls/RPC | function |", "|---:|---:|---:|---|"]
        out += [
            f"| {t['own_pct']:.1f} | {t['cum_pct']:.1f} | {t['calls_per_rpc']:.0f} "
            f"| `{t['func']}` |"
            for t in top[:20]
        ]
    out += [
        "",
        "py-spy of the server process under uvicorn + h2load "
        "(our `_send_reply` includes uvicorn's own `send`): "
        f"{prof['total']} samples.\n",
        "Self time (top 15):\n",
        "| % | function |",
        "|---:|---|",
    ]
    out += [f"| {p:.1f} | `{f}` |" for f, p in prof["self"]]
    out += [
        "",
        "Inclusive time in the runtime and the handler (top 20):\n",
        "| % | function |",
        "|---:|---|",
    ]
    out += [f"| {p:.1f} | `{f}` |" for f, p in prof["inclusive"]]
    return out


GENERATED_START = "<!-- results:start -->"
GENERATED_END = "<!-- results:end -->"


def write_doc(results: dict[str, Any], args: argparse.Namespace) -> None:
    lines = [
        GENERATED_START,
        "",
        f"Run: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, "
        f"`bench/run.py{' --quick' if args.quick else ''}` "
        f"({args.rounds} round(s) of {args.duration:g} s, medians).",
        f"Machine: {machine()}; server on core {SERVER_CORE}, load generator / client on core {CLIENT_CORE}.",
        f"Versions: {versions()}.",
        "",
    ]
    if "server" in results:
        lines += [
            "### Targets (server side)",
            "",
            *targets_table(results["server"]),
            "",
            "### Server side (h2load, HTTP/1.1 unless noted)",
            *server_tables(results["server"]),
            "",
        ]
    if "client" in results:
        lines += [
            "### Client side (against the bare app on granian)",
            "",
            *client_table(results["client"]),
            "",
        ]
    if "memory" in results:
        lines += [
            "### Memory (1 GiB streams)",
            "",
            *memory_table(results["memory"]),
            "",
        ]
    if "instructions" in results:
        lines += [
            "### Instructions per unary 16 B call (callgrind)",
            "",
            *instructions.table(results["instructions"]),
            "",
        ]
    if "profile" in results:
        lines += [
            "### Profile data (py-spy, our app on uvicorn, unary 16 B)",
            "",
            *profile_table(results["profile"]),
            "",
        ]
    lines.append(GENERATED_END)
    block = "\n".join(lines)
    text = DOC.read_text() if DOC.exists() else ""
    if GENERATED_START in text and GENERATED_END in text:
        head, rest = text.split(GENERATED_START, 1)
        tail = rest.split(GENERATED_END, 1)[1]
        text = head + block + tail
    else:
        text = text + "\n## Results\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="1 round of 2 s, short streams")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float)
    p.add_argument("--only", default="server,client,memory,instructions,profile")
    p.add_argument("--from-json", help="only rewrite the doc from a results file")
    p.add_argument(
        "--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md"
    )
    args = p.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    parts = set(args.only.split(","))
    if args.from_json:
        write_doc(json.loads(Path(args.from_json).read_text()), args)
        return
    setup()
    RESULTS.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    if "server" in parts:
        results["server"] = server_suite(args.rounds, args.duration, args.quick)
    if "client" in parts:
        results["client"] = client_suite(args.rounds, args.duration)
    if "memory" in parts:
        results["memory"] = memory_suite(0.25 if args.quick else 1.0)
    if "instructions" in parts:
        results["instructions"] = instructions.suite()
    if "profile" in parts:
        results["profile"] = profile_suite(max(args.duration, 5.0))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"results-{stamp}.json").write_text(json.dumps(results, indent=1))
    if not args.no_doc:
        write_doc(results, args)
    eprint(f"[done] {DOC.relative_to(ROOT)} and bench/results/results-{stamp}.json")


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    main()
