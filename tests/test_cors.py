"""The CORS policy and its ASGI and WSGI middlewares."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from example_env import GREET, GREET_STREAM, generate_example, serve

from protoc_gen_connect_python.runtime.cors import (
    DEFAULT_ALLOW_HEADERS,
    DEFAULT_EXPOSE_HEADERS,
    CORSMiddleware,
    CORSPolicy,
    StartResponse,
    WSGICORSMiddleware,
)

PAGE = "http://127.0.0.1:5173"
OTHER = "https://evil.example"


def headers_of(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        out.setdefault(k.lower(), []).append(v)
    return out


# --- the sans-IO policy ------------------------------------------------------


def test_preflight_grants_connect_and_grpc_web_headers() -> None:
    policy = CORSPolicy([PAGE])
    answer = policy.preflight(
        PAGE, "POST", "content-type, connect-protocol-version,connect-timeout-ms"
    )
    assert answer.status == 204
    assert answer.reason == "No Content"
    h = headers_of(answer.headers)
    assert h["access-control-allow-origin"] == [PAGE]
    assert h["access-control-allow-methods"] == ["GET, POST"]
    allowed = {
        x.strip().lower() for x in h["access-control-allow-headers"][0].split(",")
    }
    for name in (
        "content-type",
        "connect-protocol-version",
        "connect-timeout-ms",
        "connect-accept-encoding",
        "connect-content-encoding",
        "grpc-timeout",
        "x-grpc-web",
        "x-user-agent",
    ):
        assert name in allowed
    assert h["access-control-max-age"] == ["7200"]
    assert "Origin" in h["vary"][0]
    assert "access-control-allow-credentials" not in h


def test_preflight_for_grpc_web() -> None:
    answer = CORSPolicy("*").preflight(
        PAGE, "POST", "content-type,x-grpc-web,x-user-agent,grpc-timeout"
    )
    assert answer.status == 204
    assert headers_of(answer.headers)["access-control-allow-origin"] == ["*"]


@pytest.mark.parametrize(
    ("origin", "method", "asked", "reason"),
    [
        (OTHER, "POST", "content-type", "origin"),
        (PAGE, "DELETE", "content-type", "method"),
        (PAGE, "POST", "content-type, x-secret", "x-secret"),
    ],
)
def test_preflight_refusals(origin: str, method: str, asked: str, reason: str) -> None:
    answer = CORSPolicy([PAGE]).preflight(origin, method, asked)
    assert answer.status == 403
    assert reason in answer.body.decode()
    h = headers_of(answer.headers)
    assert "access-control-allow-origin" not in h
    assert h["content-length"] == [str(len(answer.body))]


def test_user_additions_and_any_header() -> None:
    policy = CORSPolicy(
        [PAGE],
        allow_headers=["X-Tenant", "content-type"],
        expose_headers=["Greet-Version"],
        allow_methods=["post", "get", "put"],
        max_age=None,
    )
    assert policy.allow_headers == (*DEFAULT_ALLOW_HEADERS, "X-Tenant")
    assert policy.expose_headers == (*DEFAULT_EXPOSE_HEADERS, "Greet-Version")
    answer = policy.preflight(PAGE, "put", "x-tenant")
    assert answer.status == 204
    h = headers_of(answer.headers)
    assert h["access-control-allow-methods"] == ["POST, GET, PUT"]
    assert "access-control-max-age" not in h

    echo = CORSPolicy([PAGE], allow_headers=["*"]).preflight(PAGE, "POST", "a, b")
    assert headers_of(echo.headers)["access-control-allow-headers"] == ["a, b"]
    no_headers = CORSPolicy([PAGE], allow_headers=["*"]).preflight(PAGE, "GET", None)
    assert "access-control-allow-headers" not in headers_of(no_headers.headers)


def test_response_headers() -> None:
    policy = CORSPolicy([PAGE])
    h = headers_of(policy.response_headers(PAGE))
    assert h["access-control-allow-origin"] == [PAGE]
    exposed = h["access-control-expose-headers"][0]
    for name in DEFAULT_EXPOSE_HEADERS:
        assert name in exposed
    assert h["vary"] == ["Origin"]
    # Refused or absent origins get no grant, but caches still key on Origin.
    assert policy.response_headers(OTHER) == [("Vary", "Origin")]
    assert policy.response_headers(None) == [("Vary", "Origin")]


def test_wildcard_and_credentials() -> None:
    anyone = CORSPolicy("*")
    assert not anyone.varies_by_origin
    h = headers_of(anyone.response_headers(OTHER))
    assert h["access-control-allow-origin"] == ["*"]
    assert "vary" not in h
    assert anyone.response_headers(None) == []

    creds = CORSPolicy("*", allow_credentials=True)
    h = headers_of(creds.response_headers(OTHER))
    assert h["access-control-allow-origin"] == [OTHER]
    assert h["access-control-allow-credentials"] == ["true"]
    assert h["vary"] == ["Origin"]
    pre = headers_of(creds.preflight(OTHER, "POST", None).headers)
    assert pre["access-control-allow-origin"] == [OTHER]
    assert pre["access-control-allow-credentials"] == ["true"]


def test_origin_predicate_and_validation() -> None:
    policy = CORSPolicy(
        ["https://a.example"], allow_origin=lambda o: o.endswith(".corp.example")
    )
    assert policy.origin_allowed("https://a.example")
    assert policy.origin_allowed("https://x.corp.example")
    assert not policy.origin_allowed("https://corp.example.evil")
    assert not CORSPolicy().origin_allowed(PAGE)
    with pytest.raises(ValueError):
        CORSPolicy("*", max_age=-1)


def test_is_preflight() -> None:
    assert CORSPolicy.is_preflight("OPTIONS", PAGE, "POST")
    assert not CORSPolicy.is_preflight("OPTIONS", None, "POST")
    assert not CORSPolicy.is_preflight("OPTIONS", PAGE, None)
    assert not CORSPolicy.is_preflight("POST", PAGE, "POST")


# --- ASGI --------------------------------------------------------------------


class Recorder:
    """An ASGI app that answers 200 with a header, remembering that it ran."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Any],
        send: Callable[[dict[str, Any]], Any],
    ) -> None:
        self.calls += 1
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"vary", b"x")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})


def run_asgi(
    app: Any, method: str, headers: list[tuple[str, str]], scope_type: str = "http"
) -> tuple[int | None, dict[str, list[str]], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": scope_type,
        "method": method,
        "path": "/greet.v1.GreetService/Greet",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(app(scope, receive, send))
    if not sent:
        return None, {}, b""
    start = sent[0]
    h = headers_of((k.decode(), v.decode()) for k, v in start["headers"])
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], h, body


def test_asgi_preflight_does_not_reach_the_app() -> None:
    inner = Recorder()
    app = CORSMiddleware(inner, allow_origins=[PAGE])
    status, h, body = run_asgi(
        app,
        "OPTIONS",
        [
            ("Origin", PAGE),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type,connect-protocol-version"),
        ],
    )
    assert (status, body, inner.calls) == (204, b"", 0)
    assert h["access-control-allow-origin"] == [PAGE]

    status, h, body = run_asgi(
        app, "OPTIONS", [("Origin", OTHER), ("Access-Control-Request-Method", "POST")]
    )
    assert status == 403
    assert b"not allowed" in body
    assert inner.calls == 0


def test_asgi_adds_headers_to_calls() -> None:
    inner = Recorder()
    app = CORSMiddleware(
        inner, policy=CORSPolicy([PAGE], expose_headers=["Greet-Version"])
    )
    status, h, body = run_asgi(app, "POST", [("Origin", PAGE)])
    assert (status, body) == (200, b"{}")
    assert h["access-control-allow-origin"] == [PAGE]
    assert "Greet-Version" in h["access-control-expose-headers"][0]
    assert h["vary"] == ["x", "Origin"]
    # An OPTIONS that is not a preflight is the app's business.
    status, h, _ = run_asgi(app, "OPTIONS", [("Origin", PAGE)])
    assert status == 200
    assert inner.calls == 2


def test_asgi_passes_other_scopes_and_originless_wildcard_calls() -> None:
    inner = Recorder()
    app = CORSMiddleware(inner, allow_origins="*")
    assert run_asgi(app, "GET", [], scope_type="lifespan")[0] is None
    status, h, _ = run_asgi(app, "GET", [])
    assert status == 200
    assert "access-control-allow-origin" not in h
    assert inner.calls == 2


# --- WSGI --------------------------------------------------------------------


def wsgi_inner(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]


def run_wsgi(
    app: Any, method: str, environ_headers: dict[str, str]
) -> tuple[str, dict[str, list[str]], bytes]:
    got: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        got.append((status, headers))
        return lambda _: None

    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/x", **environ_headers}
    body = b"".join(app(environ, start_response))
    return got[0][0], headers_of(got[0][1]), body


def test_wsgi_preflight_and_calls() -> None:
    app = WSGICORSMiddleware(wsgi_inner, allow_origins=[PAGE], max_age=600)
    status, h, body = run_wsgi(
        app,
        "OPTIONS",
        {
            "HTTP_ORIGIN": PAGE,
            "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "GET",
            "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "connect-protocol-version",
        },
    )
    assert (status, body) == ("204 No Content", b"")
    assert h["access-control-max-age"] == ["600"]

    status, _, body = run_wsgi(
        app,
        "OPTIONS",
        {"HTTP_ORIGIN": PAGE, "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "PATCH"},
    )
    assert status == "403 Forbidden"
    assert b"PATCH" in body

    status, h, body = run_wsgi(app, "POST", {"HTTP_ORIGIN": PAGE})
    assert (status, body) == ("200 OK", b"{}")
    assert h["access-control-allow-origin"] == [PAGE]
    assert h["vary"] == ["Origin"]

    anyone = WSGICORSMiddleware(wsgi_inner, allow_origins="*")
    status, h, _ = run_wsgi(anyone, "POST", {})
    assert status == "200 OK"
    assert "access-control-allow-origin" not in h


# --- in front of the real apps, on real servers ----------------------------------


@pytest.fixture(scope="module", params=["uvicorn", "gunicorn"])
def example_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The example (``example_app``: ASGIApp or WSGIApp in the CORS middleware)."""
    gen = generate_example(tmp_path_factory.mktemp("gen"))
    with serve(
        gen, tmp_path_factory.mktemp("cors"), server=request.param, cors_origins=PAGE
    ) as url:
        yield url


def fetch(
    base_url: str, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_real_preflight(example_url: str) -> None:
    status, h, _ = fetch(
        example_url,
        "OPTIONS",
        GREET,
        {
            "Origin": PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,connect-protocol-version",
        },
    )
    assert status == 204
    assert h["access-control-allow-origin"] == PAGE
    assert "Connect-Protocol-Version" in h["access-control-allow-headers"]
    status, _, _ = fetch(
        example_url,
        "OPTIONS",
        GREET,
        {"Origin": OTHER, "Access-Control-Request-Method": "POST"},
    )
    assert status == 403


def test_real_unary_and_stream_carry_grants(example_url: str) -> None:
    base = {"Origin": PAGE, "Connect-Protocol-Version": "1"}
    status, h, body = fetch(
        example_url,
        "POST",
        GREET,
        {**base, "Content-Type": "application/json"},
        b'{"name":"cors"}',
    )
    assert status == 200, body
    assert h["access-control-allow-origin"] == PAGE
    assert "Greet-Version" in h["access-control-expose-headers"]
    assert "Origin" in h["vary"]
    frame = b'{"name":"cors","count":2}'
    status, h, body = fetch(
        example_url,
        "POST",
        GREET_STREAM,
        {**base, "Content-Type": "application/connect+json"},
        b"\0" + len(frame).to_bytes(4, "big") + frame,
    )
    assert status == 200
    assert h["access-control-allow-origin"] == PAGE
    assert body.count(b"Hello, cors #") == 2
    # Errors, too: a page must be able to read why its call failed.
    status, h, body = fetch(
        example_url,
        "POST",
        GREET,
        {**base, "Content-Type": "application/json"},
        b'{"name":""}',
    )
    assert status == 400
    assert h["access-control-allow-origin"] == PAGE
