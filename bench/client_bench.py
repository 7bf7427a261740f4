"""Client-side worker: drives one client implementation against a fixed server.

Runs inside the venv of the implementation (``--impl ours`` in the project's
.venv, ``--impl official`` in bench/.venv-official) with that implementation's
generated code on PYTHONPATH. Prints one JSON object: calls, wall and CPU
seconds of this process (all threads, the HTTP client's native ones included),
and payload bytes moved.

Scenarios: ``unary16``, ``unary16k`` (calls), ``download`` (server stream of
1000 x 16 KiB), ``upload`` (client stream of 1000 x 16 KiB), ``pingpong``
(bidi, one 16 B message per round trip, HTTP/2, async only), ``download_h2``
(the server stream over HTTP/2, async only).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from common import LARGE, SMALL, STREAM_COUNT

pb: Any = importlib.import_module("connectbench.v1.bench_pb2")
gen: Any = importlib.import_module("connectbench.v1.bench_connect")

PINGS_PER_STREAM = 1000


def make_async_client(impl: str, url: str, h2: bool) -> Any:
    if impl == "official":
        import pyqwest

        version = pyqwest.HTTPVersion.HTTP2 if h2 else None
        http = pyqwest.Client(pyqwest.HTTPTransport(http_version=version))
        return gen.BenchServiceClient(url, send_compression=None, http_client=http)
    return gen.BenchServiceClient(url, http_version="2" if h2 else None)


def make_sync_client(impl: str, url: str) -> Any:
    if impl == "official":
        return gen.BenchServiceClientSync(url, send_compression=None)
    return gen.BenchServiceClientSync(url)


def unary_request(scenario: str) -> Any:
    size = LARGE if scenario == "unary16k" else SMALL
    return pb.EchoRequest(payload=pb.Payload(data=b"x" * size))


def upload_requests() -> Iterator[Any]:
    msg = pb.EchoRequest(payload=pb.Payload(data=b"x" * LARGE))
    for _ in range(STREAM_COUNT):
        yield msg


async def aupload_requests() -> AsyncIterator[Any]:
    msg = pb.EchoRequest(payload=pb.Payload(data=b"x" * LARGE))
    for _ in range(STREAM_COUNT):
        yield msg


class Meter:
    """Counts calls and bytes from the moment it is armed until the deadline."""

    def __init__(self, warmup: float, duration: float) -> None:
        now = time.monotonic()
        self.start = now + warmup
        self.end = self.start + duration
        self.calls = 0
        self.bytes = 0
        self.armed = False
        self.cpu0 = 0.0
        self.t0 = 0.0
        self.cpu1 = 0.0
        self.t1 = 0.0
        self.lock = threading.Lock()

    def tick(self, nbytes: int) -> bool:
        """Record one finished call; False once the measurement is over."""
        now = time.monotonic()
        with self.lock:
            if not self.armed:
                if now >= self.start:
                    self.armed = True
                    self.t0 = now
                    self.cpu0 = _cpu()
                return True
            if now >= self.end:
                if not self.t1:
                    self.t1 = now
                    self.cpu1 = _cpu()
                return False
            self.calls += 1
            self.bytes += nbytes
            return True

    def result(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "bytes": self.bytes,
            "wall": self.t1 - self.t0,
            "cpu": self.cpu1 - self.cpu0,
        }


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


async def run_async(args: argparse.Namespace, meter: Meter) -> None:
    h2 = args.scenario in ("pingpong", "download_h2")
    client = make_async_client(args.impl, args.url, h2)
    async with client:
        op: Callable[[], Any]
        if args.scenario.startswith("unary"):
            req = unary_request(args.scenario)

            async def op() -> int:
                resp = await client.echo(req)
                return len(resp.payload.data)

        elif args.scenario in ("download", "download_h2"):
            sreq = pb.StreamRequest(count=STREAM_COUNT, size=LARGE)

            async def op() -> int:
                n = 0
                async for msg in client.download(sreq):
                    n += len(msg.payload.data)
                return n

        elif args.scenario == "upload":

            async def op() -> int:
                resp = await client.upload(aupload_requests())
                return int(resp.bytes)

        else:
            ping = pb.EchoRequest(payload=pb.Payload(data=b"x" * SMALL))

            async def op() -> int:
                queue: asyncio.Queue[Any] = asyncio.Queue()

                async def pings() -> AsyncIterator[Any]:
                    for _ in range(PINGS_PER_STREAM):
                        yield ping
                        await queue.get()

                n = 0
                async for msg in client.ping_pong(pings()):
                    n += len(msg.payload.data)
                    queue.put_nowait(None)
                return n

        async def worker() -> None:
            while meter.tick(await op()):
                pass

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))


def run_sync(args: argparse.Namespace, meter: Meter) -> None:
    with make_sync_client(args.impl, args.url) as client:
        op: Callable[[], int]
        if args.scenario.startswith("unary"):
            req = unary_request(args.scenario)

            def op() -> int:
                return len(client.echo(req).payload.data)

        elif args.scenario in ("download", "download_h2"):
            sreq = pb.StreamRequest(count=STREAM_COUNT, size=LARGE)

            def op() -> int:
                n = 0
                stream = client.download(sreq)
                for msg in stream:
                    n += len(msg.payload.data)
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
                return n

        elif args.scenario == "upload":

            def op() -> int:
                return int(client.upload(upload_requests()).bytes)

        else:
            raise SystemExit("pingpong runs with --mode async only")

        def worker() -> None:
            while meter.tick(op()):
                pass

        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impl", choices=("ours", "official"), required=True)
    p.add_argument("--url", required=True)
    p.add_argument(
        "--scenario",
        choices=(
            "unary16",
            "unary16k",
            "download",
            "download_h2",
            "upload",
            "pingpong",
        ),
        required=True,
    )
    p.add_argument("--mode", choices=("sync", "async"), default="async")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    args = p.parse_args()
    meter = Meter(args.warmup, args.duration)
    if args.mode == "async":
        try:
            import uvloop
        except ImportError:
            asyncio.run(run_async(args, meter))
        else:
            uvloop.run(run_async(args, meter))
    else:
        run_sync(args, meter)
    print(json.dumps(meter.result()))


if __name__ == "__main__":
    main()
