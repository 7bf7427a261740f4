"""Client-side memory worker: RSS growth of this process over a 1 GiB stream.

Runs in the venv of ``--impl`` like client_bench.py. Streams 65536 x 16 KiB
messages down (server stream) and then up (client stream) with the async
client, sampling this process's RSS every 20 ms; prints JSON with the growth
over the baseline (taken after a small warm-up stream) for each direction.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from client_bench import make_async_client
from common import LARGE

pb: Any = importlib.import_module("connectbench.v1.bench_pb2")
GIB_COUNT = (1 << 30) // LARGE


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """Tracks the peak RSS of this process on a background thread."""

    def __init__(self) -> None:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss())


async def measure(impl: str, url: str, count: int) -> dict[str, float]:
    out: dict[str, float] = {}
    async with make_async_client(impl, url, False) as client:

        async def down(n: int) -> int:
            got = 0
            async for msg in client.download(pb.StreamRequest(count=n, size=LARGE)):
                got += len(msg.payload.data)
            return got

        async def up(n: int) -> int:
            async def gen() -> AsyncIterator[Any]:
                msg = pb.EchoRequest(payload=pb.Payload(data=b"x" * LARGE))
                for _ in range(n):
                    yield msg

            resp = await client.upload(gen())
            return int(resp.bytes)

        for name, op in (("download", down), ("upload", up)):
            await op(256)
            base = rss()
            sampler = Sampler()
            t0 = time.monotonic()
            moved = await op(count)
            wall = time.monotonic() - t0
            peak = sampler.stop()
            out[f"{name}_base_mib"] = base / 2**20
            out[f"{name}_growth_mib"] = (peak - base) / 2**20
            out[f"{name}_mbps"] = moved / wall / 1e6
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impl", choices=("ours", "official"), required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--count", type=int, default=GIB_COUNT)
    args = p.parse_args()
    print(json.dumps(asyncio.run(measure(args.impl, args.url, args.count))))


if __name__ == "__main__":
    main()
