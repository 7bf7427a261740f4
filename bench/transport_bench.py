"""Client transports side by side: raw pyqwest, our client on pyqwest, on the HTTP/1.1 transport.

    .venv/bin/python bench/transport_bench.py                 # 3 rounds x 3 s
    .venv/bin/python bench/transport_bench.py --rounds 1 --duration 2 --official

One fixed server (the bare app on granian, pinned to core 0, as in run.py) and
one worker process per measurement, pinned to core 1. Variants:

- ``raw-pyqwest``: ``pyqwest.Client.execute`` (full buffered response, one
  await) with a hand-made Connect request: the floor pyqwest allows.
- ``ours-pyqwest``: our generated client over ``PyqwestAsyncTransport`` /
  ``PyqwestSyncTransport`` (the default before the HTTP/1.1 transport).
- ``ours-http1``: our generated client over ``AsyncHTTP1Transport`` /
  ``SyncHTTP1Transport``.
- ``official`` (with ``--official``): connectrpc, through client_bench.py.

Scenarios: unary 16 B and 16 KiB (sequential), and a server stream of
1000 x 16 KiB (MB/s). Prints medians across rounds: calls/s, client CPU µs per
call (user+system of the worker, all threads), MB/s for the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from common import BENCH, CLIENT_CORE, LARGE, SMALL, STREAM_COUNT, impl_env, impl_python

VARIANTS = ("raw-pyqwest", "ours-pyqwest", "ours-http1")
SCENARIOS = ("unary16", "unary16k", "download")
PATH = "/connectbench.v1.BenchService/"


def _client(variant: str, url: str, mode: str) -> Any:
    gen: Any = importlib.import_module("connectbench.v1.bench_connect")
    from protoc_gen_connect_python.runtime.client import http1_transport, transport
    from protoc_gen_connect_python.runtime.client.config import build_config

    config = build_config(url)
    if mode == "async":
        t: Any = (
            transport.PyqwestAsyncTransport(config)
            if variant == "ours-pyqwest"
            else http1_transport.AsyncHTTP1Transport(config)
        )
        return gen.BenchServiceClient(url, transport=t)
    t = (
        transport.PyqwestSyncTransport(config)
        if variant == "ours-pyqwest"
        else http1_transport.SyncHTTP1Transport(config)
    )
    return gen.BenchServiceClientSync(url, transport=t)


def _run(coro: Any) -> None:
    # As client_bench.py: uvloop when it is installed.
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def worker(args: argparse.Namespace) -> None:
    from client_bench import Meter

    pb: Any = importlib.import_module("connectbench.v1.bench_pb2")
    meter = Meter(args.warmup, args.duration)
    size = LARGE if args.scenario == "unary16k" else SMALL
    req = pb.EchoRequest(payload=pb.Payload(data=b"x" * size))
    sreq = pb.StreamRequest(count=STREAM_COUNT, size=LARGE)
    headers = [("content-type", "application/proto"), ("connect-protocol-version", "1")]
    if args.variant == "raw-pyqwest":
        import pyqwest

        if args.scenario == "download":
            raise SystemExit("raw-pyqwest: unary only")
        body = req.SerializeToString()
        url = args.url + PATH + "Echo"
        if args.mode == "async":
            client = pyqwest.Client(
                pyqwest.HTTPTransport(http_version=pyqwest.HTTPVersion.HTTP1)
            )

            async def arun() -> None:
                while meter.tick(
                    len((await client.execute("POST", url, headers, body)).content)
                ):
                    pass

            _run(arun())
        else:
            sclient = pyqwest.SyncClient(
                pyqwest.SyncHTTPTransport(http_version=pyqwest.HTTPVersion.HTTP1)
            )
            while meter.tick(len(sclient.execute("POST", url, headers, body).content)):
                pass
        print(json.dumps(meter.result()))
        return
    c = _client(args.variant, args.url, args.mode)
    if args.mode == "async":

        async def arun2() -> None:
            async with c:
                op: Callable[[], Any]
                if args.scenario == "download":

                    async def op() -> int:
                        n = 0
                        async for m in c.download(sreq):
                            n += len(m.payload.data)
                        return n

                else:

                    async def op() -> int:
                        return len((await c.echo(req)).payload.data)

                while meter.tick(await op()):
                    pass

        _run(arun2())
    else:
        with c:
            if args.scenario == "download":

                def sop() -> int:
                    return sum(len(m.payload.data) for m in c.download(sreq))

            else:

                def sop() -> int:
                    return len(c.echo(req).payload.data)

            while meter.tick(sop()):
                pass
    print(json.dumps(meter.result()))


def run_one(url: str, variant: str, scenario: str, mode: str, duration: float) -> Any:
    if variant == "official":
        impl = "official"
        argv = [
            str(impl_python(impl)),
            str(BENCH / "client_bench.py"),
            "--impl",
            "official",
        ]
    else:
        impl = "ours"
        argv = [
            sys.executable,
            __file__,
            "--worker",
            "--variant",
            variant,
        ]
    argv += [
        "--url",
        url,
        "--scenario",
        scenario,
        "--mode",
        mode,
        "--duration",
        str(duration),
    ]
    p = subprocess.run(
        ["taskset", "-c", CLIENT_CORE, *argv],
        capture_output=True,
        text=True,
        env=impl_env(impl),
        timeout=300,
    )
    if p.returncode != 0:
        print(f"  ! {variant} {scenario} {mode}: {p.stderr[-400:]}", file=sys.stderr)
        return None
    return json.loads(p.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--variant", default="ours-http1")
    p.add_argument("--url", default="")
    p.add_argument("--scenario", default="unary16")
    p.add_argument("--mode", default="async")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--official", action="store_true")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    from run import fixed_server

    variants = [*VARIANTS, *(["official"] if args.official else [])]
    results: dict[tuple[str, str, str], list[Any]] = {}
    with fixed_server() as server:
        for r in range(args.rounds):
            for scenario in args.scenarios.split(","):
                for mode in ("async", "sync"):
                    order = (
                        variants[r % len(variants) :] + variants[: r % len(variants)]
                    )
                    for v in order:
                        if v == "raw-pyqwest" and scenario == "download":
                            continue
                        res = run_one(server.url, v, scenario, mode, args.duration)
                        if res:
                            results.setdefault((scenario, mode, v), []).append(res)
                            print(
                                f"[{r + 1}] {scenario:9} {mode:5} {v:13}"
                                f" {res['calls'] / res['wall']:9.1f} calls/s",
                                file=sys.stderr,
                            )
    print("| scenario | mode | variant | calls/s | CPU µs/call | MB/s |")
    print("|---|---|---|---:|---:|---:|")
    for (scenario, mode, v), runs in results.items():
        cps = statistics.median(x["calls"] / x["wall"] for x in runs)
        cpu = statistics.median(x["cpu"] / max(x["calls"], 1) * 1e6 for x in runs)
        mbs = statistics.median(x["bytes"] / x["wall"] / 1e6 for x in runs)
        print(f"| {scenario} | {mode} | {v} | {cps:,.0f} | {cpu:,.0f} | {mbs:,.0f} |")


if __name__ == "__main__":
    main()
