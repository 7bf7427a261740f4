"""Transports that call an ASGI or WSGI app directly, in the same process.

For tests of handlers without a server and without sockets: a generated client
built with ``transport=ASGITransport(app)`` (async) or
``transport=WSGITransport(app)`` (sync) sends every call straight to ``app``,
through the same protocol code as on the wire. The URL's host is only put in
the request; any ``http://`` URL does.

Both offer the trailers extensions, as an HTTP/2 server does, so Connect,
gRPC and gRPC-Web all work. The async transport runs the app in a task and
feeds it the request as the app reads it, so bidi streams are full duplex; the
sync one runs the app in the calling thread, so a sync call is bounded by the
handler's own checks of its deadline, not by the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from protoc_gen_connect_python.runtime.client.interface import HTTPRequest
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers

ASGIApp = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _no_answer() -> ConnectError:
    # The app's own exception stays out of the message, as a server keeps it.
    return ConnectError(Code.UNAVAILABLE, "the app ended without a complete response")


def _target(request: HTTPRequest) -> tuple[str, str, str, int, str]:
    """Scheme, path, host, port and query of the request's URL."""
    url = urlsplit(request.url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, url.path or "/", url.hostname or "localhost", port, url.query


def _headers(pairs: Iterable[tuple[bytes | str, bytes | str]]) -> Headers:
    h = Headers()
    for k, v in pairs:
        name = k.decode("latin-1") if isinstance(k, bytes) else k
        h.add(name.lower(), v.decode("latin-1") if isinstance(v, bytes) else v)
    return h


# -- ASGI ----------------------------------------------------------------------


class _ASGIResponse:
    """What the app sends, handed to the client as it comes."""

    def __init__(self) -> None:
        self.status = 0
        self.headers = Headers()
        self._trailers = Headers()
        self._wants_trailers = False
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.app_done = False

    @property
    def trailers(self) -> Headers:
        return self._trailers

    async def on_send(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "http.response.start":
            self.status = event["status"]
            self.headers = _headers(event.get("headers", ()))
            self._wants_trailers = bool(event.get("trailers"))
            self.started.set()
        elif kind == "http.response.body" and not self.ended.is_set():
            if body := event.get("body", b""):
                self._chunks.put_nowait(bytes(body))
            if not event.get("more_body", False) and not self._wants_trailers:
                self._end()
        elif kind == "http.response.trailers" and not self.ended.is_set():
            for k, v in _headers(event.get("headers", ())).items():
                self._trailers.add(k, v)
            if not event.get("more_trailers", False):
                self._end()

    def _end(self) -> None:
        self.ended.set()
        self._chunks.put_nowait(None)

    async def read(self) -> bytes:
        if self.ended.is_set() and self._chunks.empty():
            return b""
        chunk = await self._chunks.get()
        if chunk is None:
            if self.app_done and not self.ended.is_set():
                raise _no_answer()
            return b""
        return chunk

    async def aclose(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


class ASGITransport:
    """An :class:`~.transport.AsyncTransport` that calls an ASGI app in-process."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def send(
        self, request: HTTPRequest, body: AsyncIterator[bytes] | None
    ) -> _ASGIResponse:
        """Run the app on ``request``; return once it has sent the response head."""
        scheme, path, host, port, query = _target(request)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "2",
            "method": request.method,
            "scheme": scheme,
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in request.headers
            ],
            "client": ("127.0.0.1", 0),
            "server": (host, port),
            "extensions": {"http.response.trailers": {}},
        }
        response = _ASGIResponse()
        whole = request.body
        chunks = body

        async def receive() -> dict[str, Any]:
            nonlocal whole, chunks
            if whole is not None:
                data, whole = whole, None
                return {"type": "http.request", "body": data, "more_body": False}
            if chunks is not None:
                data = await anext(chunks, b"")
                if data:
                    return {"type": "http.request", "body": data, "more_body": True}
                chunks = None
                return {"type": "http.request", "body": b"", "more_body": False}
            await response.ended.wait()
            return {"type": "http.disconnect"}

        async def run() -> None:
            try:
                await self._app(scope, receive, response.on_send)
            except Exception:
                pass  # the reader learns of it below, as from a server
            finally:
                # Whatever way the app ended, a reader waiting for more wakes up.
                response.app_done = True
                response.started.set()
                response._chunks.put_nowait(None)

        response.task = asyncio.get_running_loop().create_task(run())
        await response.started.wait()
        if not response.status:
            await response.aclose()
            raise _no_answer()
        return response

    async def aclose(self) -> None:
        """Nothing to close: there are no connections."""


# -- WSGI ----------------------------------------------------------------------


class _Input:
    """``wsgi.input`` over the request's bytes or chunks, read as the app asks."""

    def __init__(self, whole: bytes | None, chunks: Iterator[bytes] | None) -> None:
        self._buf = whole or b""
        self._chunks = chunks

    def _fill(self, n: int) -> None:
        while self._chunks is not None and (n < 0 or len(self._buf) < n):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._chunks = None
            else:
                self._buf += chunk

    def read(self, n: int | None = -1) -> bytes:
        n = -1 if n is None else n
        self._fill(n)
        if n < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def readline(self, limit: int = -1) -> bytes:
        self._fill(-1)
        end = self._buf.find(b"\n") + 1 or len(self._buf)
        if limit >= 0:
            end = min(end, limit)
        data, self._buf = self._buf[:end], self._buf[end:]
        return data


class _WSGIResponse:
    def __init__(self) -> None:
        self.status = 0
        self.headers = Headers()
        self._trailers = Headers()
        self._result: Iterable[bytes] = ()
        self._it: Iterator[bytes] = iter(())
        self._first: list[bytes] = []
        self._ended = False

    @property
    def trailers(self) -> Headers:
        return self._trailers

    def start(self, status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        self.status = int(status.split(" ", 1)[0])
        self.headers = _headers(headers)

    def send_trailers(self, trailers: list[tuple[str, str]]) -> None:
        for k, v in _headers(trailers).items():
            self._trailers.add(k, v)
        self._ended = True

    def begin(self, result: Iterable[bytes]) -> None:
        self._result = result
        self._it = iter(result)
        # A streaming app may call start_response from its iterator.
        while not self.status:
            chunk = self._next()
            if chunk is None:
                raise _no_answer()
            if chunk:
                self._first.append(chunk)

    def _next(self) -> bytes | None:
        try:
            return next(self._it, None)
        except Exception as e:
            raise _no_answer() from e

    def read(self) -> bytes:
        if self._first:
            return self._first.pop(0)
        while not self._ended:
            chunk = self._next()
            if chunk is None:
                self._ended = True
            elif chunk:
                return chunk
        return b""

    def close(self) -> None:
        self._ended = True
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


class WSGITransport:
    """A :class:`~.transport.SyncTransport` that calls a WSGI app in-process."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app

    def send(self, request: HTTPRequest, body: Iterator[bytes] | None) -> _WSGIResponse:
        """Run the app on ``request`` up to its response head."""
        scheme, path, host, port, query = _target(request)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path),
            "QUERY_STRING": query,
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/2",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.input": _Input(request.body, body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }
        for k, v in request.headers:
            key = k.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = v
            else:
                name = "HTTP_" + key
                environ[name] = f"{environ[name]},{v}" if name in environ else v
        if request.body is not None:
            environ["CONTENT_LENGTH"] = str(len(request.body))
        response = _WSGIResponse()
        environ["wsgi.ext.http.send_trailers"] = response.send_trailers
        try:
            result = self._app(environ, response.start)
        except Exception as e:
            raise _no_answer() from e
        try:
            response.begin(result)
        except BaseException:
            response.close()
            raise
        return response

    def close(self) -> None:
        """Nothing to close: there are no connections."""


__all__ = ["ASGITransport", "WSGITransport"]
