"""The example's apps (``examples/server.py``) with a control route for tests.

``POST /test-control/health`` with a body of ``SERVICE=STATUS`` (a status name
of ``ServingStatus``), ``SERVICE=remove``, ``shutdown`` or ``resume`` changes
the example's ``health`` store inside the server process, so a test can flip
statuses at run time and watch the change arrive over the wire. Everything else
goes to the example app unchanged.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from protoc_gen_connect_python.batteries import Health, ServingStatus

# examples/server.py, by name at run time: "server" means other modules to mypy.
_example: Any = importlib.import_module("server")
health: Health = _example.health

CONTROL = "/test-control/health"


def apply(command: str) -> None:
    """Carry out one control command on ``health``."""
    if command == "shutdown":
        health.shutdown()
    elif command == "resume":
        health.resume()
    else:
        service, _, status = command.partition("=")
        if status == "remove":
            health.remove(service)
        else:
            health.set(service, getattr(ServingStatus, status))


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == CONTROL:
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        apply(body.decode())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await _example.app(scope, receive, send)


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == CONTROL:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        apply(environ["wsgi.input"].read(size).decode())
        start_response("204 No Content", [])
        return []
    result: Iterable[bytes] = _example.wsgi_app(environ, start_response)
    return result
