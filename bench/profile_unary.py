"""In-process cost of one unary call through an ASGI or WSGI app, without a server.

Drives the app object directly with prebuilt scope/receive/send (ASGI) or
environ/start_response (WSGI) so only the RPC layer is timed: no sockets, no
HTTP parser. Prints JSON: microseconds per call for each app flavour and, with
``--profile``, cProfile's top functions by own time for the ASGI path.

Runs in the venv of ``--impl`` (``bare`` runs in the project's venv).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import io
import json
import pstats
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from common import SERVICE, SMALL
from setup_env import echo_request

BODY = echo_request(SMALL)
PATH = f"/{SERVICE}/Echo"
Event = MutableMapping[str, Any]


def asgi_call(app: Any) -> Callable[[], Awaitable[None]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/proto"),
            (b"content-length", str(len(BODY)).encode()),
            (b"connect-protocol-version", b"1"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    request = {"type": "http.request", "body": BODY, "more_body": False}
    disconnect = asyncio.Event()

    async def receive() -> Event:
        if request is not None and not sent:
            sent.append(1)
            return request
        await disconnect.wait()
        return {"type": "http.disconnect"}

    sent: list[int] = []

    async def send(event: Event) -> None:
        pass

    async def one() -> None:
        sent.clear()
        await app(dict(scope), receive, send)

    return one


def wsgi_call(app: Any) -> Callable[[], None]:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": PATH,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/proto",
        "CONTENT_LENGTH": str(len(BODY)),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_CONNECT_PROTOCOL_VERSION": "1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def one() -> None:
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(BODY)
        out = app(env, start_response)
        b"".join(out)
        close = getattr(out, "close", None)
        if close is not None:
            close()

    return one


async def time_asgi(one: Callable[[], Awaitable[None]], n: int) -> float:
    for _ in range(min(n, 2000)):
        await one()
    t0 = time.perf_counter()
    for _ in range(n):
        await one()
    return (time.perf_counter() - t0) / n * 1e6


def time_wsgi(one: Callable[[], None], n: int) -> float:
    for _ in range(min(n, 2000)):
        one()
    t0 = time.perf_counter()
    for _ in range(n):
        one()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impl", choices=("ours", "official", "bare"), required=True)
    p.add_argument("-n", type=int, default=20000)
    p.add_argument("--profile", action="store_true")
    p.add_argument(
        "--calls-only",
        choices=("asgi", "wsgi"),
        help="make -n calls through this interface, untimed (for instruction counts)",
    )
    args = p.parse_args()
    mod = importlib.import_module(args.impl)
    if args.calls_only == "asgi":
        aone = asgi_call(mod.app)

        async def calls() -> None:
            for _ in range(args.n):
                await aone()

        asyncio.run(calls())
        return
    if args.calls_only == "wsgi":
        wone = wsgi_call(mod.wsgi_app)
        for _ in range(args.n):
            wone()
        return
    aone = asgi_call(mod.app)
    wone = wsgi_call(mod.wsgi_app)
    loop = asyncio.new_event_loop()
    out: dict[str, Any] = {
        "asgi_us": min(
            loop.run_until_complete(time_asgi(aone, args.n)) for _ in range(3)
        ),
        "wsgi_us": min(time_wsgi(wone, args.n) for _ in range(3)),
    }
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        loop.run_until_complete(time_asgi(aone, args.n))
        prof.disable()
        stats = pstats.Stats(prof)
        rows = []
        for (path, line, func), (_cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
            where = path.split("protoc_gen_connect_python/")[-1].split(
                "site-packages/"
            )[-1]
            rows.append((tt, ct, nc, f"{func} ({where}:{line})"))
        rows.sort(reverse=True)
        total = sum(r[0] for r in rows)
        out["top"] = [
            {
                "own_pct": tt / total * 100,
                "cum_pct": ct / total * 100,
                "calls_per_rpc": nc / (args.n + min(args.n, 2000)),
                "func": f,
            }
            for tt, ct, nc, f in rows[:25]
        ]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
