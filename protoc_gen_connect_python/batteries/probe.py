"""A plain HTTP health route, for probes that speak neither gRPC nor Connect.

Kubernetes' ``grpc`` probe needs HTTP/2, which uvicorn and gunicorn do not
serve, and its ``httpGet`` probe judges by the HTTP status alone: a Connect
``Check`` answers 200 whether the service is serving or not. ``HealthProbe``
(ASGI) and ``WSGIHealthProbe`` (WSGI) wrap an app and answer one path from a
``Health`` store; every other request goes to the app::

    app = HealthProbe(ASGIApp(Greeter(), HealthService(health)), health)

``GET /healthz`` reports the server (""), ``GET /healthz?service=NAME`` one
service: 200 and ``SERVING``, 503 and the status when it is not serving, 404
for a service the store does not know. HEAD answers the same without a body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Protocol
from urllib.parse import parse_qs

from protoc_gen_connect_python.batteries.health import Health, ServingStatus

__all__ = ["HealthProbe", "WSGIHealthProbe", "probe_reply"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApplication = Callable[[Any, Any, Any], Awaitable[None]]
WSGIApplication = Callable[[Any, Any], Iterable[bytes]]


class StartResponse(Protocol):
    """PEP 3333's ``start_response``, as far as the probe calls it."""

    def __call__(self, status: str, headers: list[tuple[str, str]]) -> Any: ...


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def probe_reply(
    health: Health, method: str, query: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of the probe route for one request.

    ``query`` is the raw query string; its ``service`` parameter names the
    service ("" or absent: the server as a whole).
    """
    headers = [
        ("content-type", "text/plain; charset=utf-8"),
        ("cache-control", "no-store"),
    ]
    if method not in ("GET", "HEAD"):
        headers.append(("allow", "GET, HEAD"))
        status, body = 405, b"use GET or HEAD\n"
    else:
        try:
            # A probe sends one parameter; a long list is refused, not parsed.
            params = parse_qs(query, max_num_fields=8)
        except ValueError:
            params = None
        if params is None:
            status, body = 400, b"malformed query string\n"
        else:
            serving = health.status(params.get("service", [""])[0])
            if serving is None:
                serving = ServingStatus.SERVICE_UNKNOWN
                status = 404
            else:
                status = 200 if serving == ServingStatus.SERVING else 503
            body = f"{ServingStatus.Name(serving)}\n".encode()
    headers.append(("content-length", str(len(body))))
    return status, headers, b"" if method == "HEAD" else body


class HealthProbe:
    """ASGI middleware: answers ``path`` from ``health``, passes the rest to ``app``."""

    def __init__(
        self, app: ASGIApplication, health: Health, *, path: str = "/healthz"
    ) -> None:
        self.app = app
        self.health = health
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path == self.path:
                query = scope.get("query_string", b"").decode("latin-1")
                status, headers, body = probe_reply(self.health, scope["method"], query)
                raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
                await send(
                    {"type": "http.response.start", "status": status, "headers": raw}
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class WSGIHealthProbe:
    """WSGI middleware: answers ``path`` from ``health``, passes the rest to ``app``."""

    def __init__(
        self, app: WSGIApplication, health: Health, *, path: str = "/healthz"
    ) -> None:
        self.app = app
        self.health = health
        self.path = path

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != self.path:
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        status, headers, body = probe_reply(
            self.health, method, environ.get("QUERY_STRING", "")
        )
        start_response(f"{status} {_REASONS[status]}", headers)
        return [body] if body else []
