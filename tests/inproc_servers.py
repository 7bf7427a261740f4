"""Real servers in a thread of the test process, for tests that need to see
what the app did (spans, metrics) in their own memory.

``serve_asgi(app)`` runs uvicorn and ``serve_wsgi(app)`` hypercorn's WSGI mode,
each on a loopback socket bound to port 0 before the server starts (so it
accepts from the first connection on), and yields the base URL. Leaving the
block stops the server and waits for its thread, within bounds.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hypercorn.asyncio
import hypercorn.config
import uvicorn

STOP_SECONDS = 10.0


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def _url(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _join(thread: threading.Thread, what: str) -> None:
    thread.join(STOP_SECONDS)
    if thread.is_alive():
        raise RuntimeError(f"{what} did not stop within {STOP_SECONDS} s")


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn (HTTP/1.1) until the block ends."""
    sock = _listening()
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
    )
    thread.start()
    try:
        yield _url(sock)
    finally:
        server.should_exit = True
        _join(thread, "uvicorn")
        sock.close()


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Serve a WSGI app with hypercorn (HTTP/1.1 and h2c) until the block ends."""
    sock = _listening()
    config = hypercorn.config.Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.loglevel = "WARNING"
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(
            hypercorn.asyncio.serve(
                app, config, shutdown_trigger=stop.wait, mode="wsgi"
            )
        )
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield _url(sock)
    finally:
        loop.call_soon_threadsafe(stop.set)
        _join(thread, "hypercorn")
        sock.close()
