"""CORS for Connect, gRPC-Web and plain HTTP callers in browsers.

Browsers only let a page on one origin call an API on another when the API
answers with the right ``Access-Control-*`` headers. Connect requests with a
``Connect-Protocol-Version`` header or a non-form content type, and every
gRPC-Web request, are not "simple" requests, so the browser first sends an
``OPTIONS`` preflight and only then the real call.

``CORSPolicy`` holds the rules and decides, without any I/O, what to answer;
``CORSMiddleware`` (ASGI) and ``WSGICORSMiddleware`` (WSGI) are thin shells
around it::

    app = CORSMiddleware(ASGIApp(Greeter()), allow_origins=["https://example.com"])
    wsgi_app = WSGICORSMiddleware(WSGIApp(GreeterSync()), allow_origins="*")

The defaults allow the request headers Connect and gRPC-Web clients send and
expose the response headers they read; pass ``allow_headers`` and
``expose_headers`` to add your own (for example custom metadata).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "DEFAULT_ALLOW_HEADERS",
    "DEFAULT_ALLOW_METHODS",
    "DEFAULT_EXPOSE_HEADERS",
    "CORSMiddleware",
    "CORSPolicy",
    "PreflightResponse",
    "WSGICORSMiddleware",
]

DEFAULT_ALLOW_METHODS: tuple[str, ...] = ("GET", "POST")
"""POST for every RPC, GET for Connect calls to side-effect-free methods."""

DEFAULT_ALLOW_HEADERS: tuple[str, ...] = (
    "Content-Type",
    "Connect-Protocol-Version",
    "Connect-Timeout-Ms",
    "Connect-Accept-Encoding",
    "Connect-Content-Encoding",
    "Grpc-Timeout",
    "X-Grpc-Web",
    "X-User-Agent",
)
"""Request headers Connect and gRPC-Web clients send from browsers."""

DEFAULT_EXPOSE_HEADERS: tuple[str, ...] = (
    "Grpc-Status",
    "Grpc-Message",
    "Grpc-Status-Details-Bin",
    "Content-Encoding",
    "Connect-Content-Encoding",
)
"""Response headers browser clients must be allowed to read.

gRPC-Web sends the status in headers when a call fails before any message
("trailers-only"); Connect clients read the compression headers.
"""


@dataclass(frozen=True)
class PreflightResponse:
    """What to answer to an ``OPTIONS`` preflight: a status, headers, a body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    @property
    def reason(self) -> str:
        """The HTTP reason phrase of ``status``."""
        return _REASONS.get(self.status, "")


_REASONS = {204: "No Content", 403: "Forbidden"}


def _dedupe(names: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        name = name.strip()
        key = name.lower()
        if name and key not in seen:
            seen.add(key)
            out.append(name)
    return tuple(out)


class CORSPolicy:
    """The CORS rules, and the sans-IO decisions both middlewares make from them.

    ``allow_origins`` is ``"*"`` (any origin) or a list of exact origins such
    as ``"https://app.example.com"`` (scheme, host and port, no path).
    ``allow_origin`` may add a predicate for origins a list cannot express.
    ``allow_headers`` and ``expose_headers`` extend the defaults; pass
    ``allow_headers=["*"]`` to echo whatever headers the browser asks for.
    ``max_age`` is how many seconds a browser may cache a preflight answer
    (browsers cap it: Chromium at 7200). ``allow_credentials`` lets pages send
    cookies; it then echoes the origin even when ``allow_origins`` is ``"*"``.
    """

    __slots__ = (
        "_allow_headers_lower",
        "_allow_headers_value",
        "_allow_methods_value",
        "_expose_headers_value",
        "_max_age_value",
        "_methods_upper",
        "_origins",
        "allow_any_header",
        "allow_any_origin",
        "allow_credentials",
        "allow_headers",
        "allow_methods",
        "allow_origin",
        "allow_origins",
        "expose_headers",
        "max_age",
    )

    def __init__(
        self,
        allow_origins: str | Iterable[str] = (),
        *,
        allow_origin: Callable[[str], bool] | None = None,
        allow_methods: Iterable[str] = DEFAULT_ALLOW_METHODS,
        allow_headers: Iterable[str] = (),
        expose_headers: Iterable[str] = (),
        max_age: int | None = 7200,
        allow_credentials: bool = False,
    ) -> None:
        if isinstance(allow_origins, str):
            allow_origins = [allow_origins]
        origins = _dedupe(allow_origins)
        self.allow_any_origin = "*" in origins
        self.allow_origins = origins
        self._origins = frozenset(o for o in origins if o != "*")
        self.allow_origin = allow_origin
        self.allow_methods = _dedupe(m.upper() for m in allow_methods)
        self._methods_upper = frozenset(self.allow_methods)
        extra_headers = _dedupe(allow_headers)
        self.allow_any_header = "*" in extra_headers
        self.allow_headers = _dedupe(
            [*DEFAULT_ALLOW_HEADERS, *(h for h in extra_headers if h != "*")]
        )
        self._allow_headers_lower = frozenset(h.lower() for h in self.allow_headers)
        self.expose_headers = _dedupe([*DEFAULT_EXPOSE_HEADERS, *expose_headers])
        if max_age is not None and max_age < 0:
            raise ValueError("max_age must not be negative")
        self.max_age = max_age
        self.allow_credentials = allow_credentials
        self._allow_methods_value = ", ".join(self.allow_methods)
        self._allow_headers_value = ", ".join(self.allow_headers)
        self._expose_headers_value = ", ".join(self.expose_headers)
        self._max_age_value = None if max_age is None else str(max_age)

    def origin_allowed(self, origin: str) -> bool:
        """Whether a page on ``origin`` may call us."""
        if self.allow_any_origin or origin in self._origins:
            return True
        return self.allow_origin is not None and self.allow_origin(origin)

    @property
    def varies_by_origin(self) -> bool:
        """Whether answers differ by ``Origin``, so caches must key on it."""
        return not self.allow_any_origin or self.allow_credentials

    def _allow_origin_value(self, origin: str) -> str:
        if self.allow_any_origin and not self.allow_credentials:
            return "*"
        return origin

    @staticmethod
    def is_preflight(
        method: str, origin: str | None, request_method: str | None
    ) -> bool:
        """Whether a request is a CORS preflight rather than a call.

        A preflight is an ``OPTIONS`` request with both ``Origin`` and
        ``Access-Control-Request-Method``; any other ``OPTIONS`` goes to the app.
        """
        return method == "OPTIONS" and origin is not None and request_method is not None

    def preflight(
        self, origin: str, request_method: str, request_headers: str | None
    ) -> PreflightResponse:
        """The answer to a preflight: 204 with the grants, or 403 saying why not."""
        vary = [
            (
                "Vary",
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            )
        ]
        if not self.origin_allowed(origin):
            return _forbidden(vary, f"CORS: origin {origin!r} is not allowed")
        if request_method.upper() not in self._methods_upper:
            return _forbidden(vary, f"CORS: method {request_method!r} is not allowed")
        asked = [h.strip() for h in (request_headers or "").split(",")]
        asked = [h for h in asked if h]
        if self.allow_any_header:
            granted = ", ".join(asked)
        else:
            denied = [h for h in asked if h.lower() not in self._allow_headers_lower]
            if denied:
                return _forbidden(
                    vary, f"CORS: request headers not allowed: {', '.join(denied)}"
                )
            granted = self._allow_headers_value
        headers = [
            ("Access-Control-Allow-Origin", self._allow_origin_value(origin)),
            ("Access-Control-Allow-Methods", self._allow_methods_value),
        ]
        if granted:
            headers.append(("Access-Control-Allow-Headers", granted))
        if self._max_age_value is not None:
            headers.append(("Access-Control-Max-Age", self._max_age_value))
        if self.allow_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        headers.extend(vary)
        return PreflightResponse(204, headers)

    def response_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """Headers to add to the app's answer to an actual (non-preflight) request.

        Nothing but ``Vary`` for a disallowed origin: the browser then hides the
        response from the page, which is what refusing means in CORS. Requests
        without ``Origin`` (same-origin pages, curl, servers) get only ``Vary``.
        """
        headers: list[tuple[str, str]] = []
        if origin is not None and self.origin_allowed(origin):
            headers.append(
                ("Access-Control-Allow-Origin", self._allow_origin_value(origin))
            )
            if self.allow_credentials:
                headers.append(("Access-Control-Allow-Credentials", "true"))
            if self._expose_headers_value:
                headers.append(
                    ("Access-Control-Expose-Headers", self._expose_headers_value)
                )
        if self.varies_by_origin:
            headers.append(("Vary", "Origin"))
        return headers


def _forbidden(vary: list[tuple[str, str]], message: str) -> PreflightResponse:
    body = message.encode("utf-8")
    return PreflightResponse(
        403,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *vary,
        ],
        body,
    )


# --- ASGI -------------------------------------------------------------------

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
# Any ASGI 3 app, whatever its own annotations for scope, receive and send.
ASGIApplication = Callable[[Any, Any, Any], Awaitable[None]]


def _asgi_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v.decode("latin-1")
    return None


class CORSMiddleware:
    """ASGI middleware that answers preflights and adds CORS headers to responses.

    Takes the same keyword arguments as ``CORSPolicy``, or a ready ``policy``.
    Lifespan and websocket events pass through untouched.
    """

    def __init__(
        self,
        app: ASGIApplication,
        allow_origins: str | Iterable[str] = (),
        *,
        policy: CORSPolicy | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.policy = (
            policy if policy is not None else CORSPolicy(allow_origins, **options)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("headers") or ()
        origin = _asgi_header(raw, b"origin")
        if scope.get("method") == "OPTIONS":
            request_method = _asgi_header(raw, b"access-control-request-method")
            if self.policy.is_preflight("OPTIONS", origin, request_method):
                assert origin is not None and request_method is not None
                answer = self.policy.preflight(
                    origin,
                    request_method,
                    _asgi_header(raw, b"access-control-request-headers"),
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": answer.status,
                        "headers": [
                            (k.lower().encode("latin-1"), v.encode("latin-1"))
                            for k, v in answer.headers
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": answer.body})
                return
        extra = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in self.policy.response_headers(origin)
        ]
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)


# --- WSGI -------------------------------------------------------------------


class StartResponse(Protocol):
    """The ``start_response`` callable of PEP 3333."""

    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = ...,
        /,
    ) -> Callable[[bytes], object]: ...


WSGIApplication = Callable[[Any, Any], Iterable[bytes]]


class WSGICORSMiddleware:
    """WSGI middleware with the same behaviour as ``CORSMiddleware``."""

    def __init__(
        self,
        app: WSGIApplication,
        allow_origins: str | Iterable[str] = (),
        *,
        policy: CORSPolicy | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.policy = (
            policy if policy is not None else CORSPolicy(allow_origins, **options)
        )

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        origin: str | None = environ.get("HTTP_ORIGIN")
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            request_method: str | None = environ.get(
                "HTTP_ACCESS_CONTROL_REQUEST_METHOD"
            )
            if self.policy.is_preflight("OPTIONS", origin, request_method):
                assert origin is not None and request_method is not None
                answer = self.policy.preflight(
                    origin,
                    request_method,
                    environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"),
                )
                start_response(f"{answer.status} {answer.reason}", list(answer.headers))
                return [answer.body] if answer.body else []
        extra = self.policy.response_headers(origin)
        if not extra:
            return self.app(environ, start_response)

        def start_with_cors(
            status: str,
            headers: list[tuple[str, str]],
            exc_info: Any = None,
            /,
        ) -> Callable[[bytes], object]:
            return start_response(status, [*headers, *extra], exc_info)

        return self.app(environ, start_with_cors)
