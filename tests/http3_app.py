"""``server_apps.asgi_app`` telling which HTTP version carried each request.

Every response gets an ``x-http-version`` header with the ASGI scope's
``http_version``, so a client test can tell HTTP/3 from a fallback to TCP.
Loaded by name (``http3_app:app``) inside the server process.
"""

from __future__ import annotations

from typing import Any

import server_apps

Message = dict[str, Any]

_inner: Any = server_apps.asgi_app


async def app(scope: Message, receive: Any, send: Any) -> None:
    """Serve ``asgi_app``, adding ``x-http-version`` to each response head."""

    async def send_with_version(message: Message) -> None:
        if message["type"] == "http.response.start":
            version = str(scope.get("http_version", "")).encode()
            headers = [*message.get("headers", ()), (b"x-http-version", version)]
            message = {**message, "headers": headers}
        await send(message)

    await _inner(scope, receive, send_with_version)
