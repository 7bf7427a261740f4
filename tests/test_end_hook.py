"""The server interceptors' ``on_end`` hook: once per routed call, however it ends.

Each case runs through ``ASGIApp`` and ``WSGIApp`` in-process (the shared core
calls the hook; the shells report each call's outcome to it) and checks what
the hook saw: the procedure, the protocol, and the code (None for success).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import server_apps
from server_harness import Result, call_asgi, call_wsgi, envelope

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    AsyncServerInterceptor,
    Code,
    ConnectError,
    RequestContext,
    SyncServerInterceptor,
    WSGIApp,
)

pb = server_apps.pb
P = f"/{server_apps.SERVICE}/"
PROTO = [("content-type", "application/proto")]
STREAM = [("content-type", "application/connect+proto")]

Seen = list[tuple[str, str, str, Code | None]]


def _record(
    seen: Seen, tag: str, ctx: RequestContext, error: ConnectError | None
) -> None:
    seen.append(
        (tag, ctx.method.name, ctx.protocol, None if error is None else error.code)
    )


class Recorder(AsyncServerInterceptor):
    def __init__(self, seen: Seen, tag: str = "end") -> None:
        self.seen, self.tag = seen, tag

    async def on_request(self, ctx: RequestContext) -> None:
        self.seen.append(("request", ctx.method.name, ctx.protocol, None))

    def on_end(self, ctx: RequestContext, error: ConnectError | None) -> None:
        _record(self.seen, self.tag, ctx, error)


class RecorderSync(SyncServerInterceptor):
    def __init__(self, seen: Seen, tag: str = "end") -> None:
        self.seen, self.tag = seen, tag

    def on_request(self, ctx: RequestContext) -> None:
        self.seen.append(("request", ctx.method.name, ctx.protocol, None))

    def on_end(self, ctx: RequestContext, error: ConnectError | None) -> None:
        _record(self.seen, self.tag, ctx, error)


class Refuse(AsyncServerInterceptor):
    async def on_request(self, ctx: RequestContext) -> None:
        if "x-deny" in ctx.request_headers:
            raise ConnectError(Code.PERMISSION_DENIED, "no")


class RefuseSync(SyncServerInterceptor):
    def on_request(self, ctx: RequestContext) -> None:
        if "x-deny" in ctx.request_headers:
            raise ConnectError(Code.PERMISSION_DENIED, "no")


Call = Callable[..., Result]


def apps(seen: Seen, **options: Any) -> list[tuple[str, Any, Call]]:
    """The async and sync apps, the refusing interceptor first, then the recorder."""
    return [
        (
            "asgi",
            ASGIApp(
                server_apps.Pinger(),
                interceptors=[Refuse(), Recorder(seen)],
                **options,
            ),
            call_asgi,
        ),
        (
            "wsgi",
            WSGIApp(
                server_apps.PingerSync(),
                interceptors=[RefuseSync(), RecorderSync(seen)],
                **options,
            ),
            call_wsgi,
        ),
    ]


def ends(seen: Seen) -> list[tuple[str, str, Code | None]]:
    return [(m, p, c) for tag, m, p, c in seen if tag == "end"]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_each_way_a_call_ends(kind: str) -> None:
    seen: Seen = []
    [(_, app, call)] = [a for a in apps(seen, read_max_bytes=64) if a[0] == kind]
    ok = call(
        app, "POST", P + "Ping", PROTO, pb.PingRequest(text="a").SerializeToString()
    )
    assert ok.status == 200
    fail = pb.FailRequest(code=int(Code.NOT_FOUND)).SerializeToString()
    assert call(app, "POST", P + "Fail", PROTO, fail).status == 404
    # Refused before the handler: by an interceptor, by size, by the head.
    assert call(app, "POST", P + "Ping", [*PROTO, ("x-deny", "1")], b"").status == 403
    big = pb.PingRequest(payload=b"x" * 100).SerializeToString()
    assert call(app, "POST", P + "Ping", PROTO, big).status == 429
    bad_timeout = [*PROTO, ("connect-timeout-ms", "soon")]
    assert call(app, "POST", P + "Ping", bad_timeout, b"").status == 400
    # Refused at the HTTP level: no protocol matched.
    assert (
        call(app, "POST", P + "Ping", [("content-type", "text/plain")], b"").status
        == 415
    )
    grpcish = [("content-type", "application/grpc+nonsense")]
    assert call(app, "POST", P + "Ping", grpcish, b"").status == 415
    assert call(app, "GET", P + "Fail").status == 405
    # Not routed: unseen.
    assert call(app, "POST", P + "Nothing", PROTO, b"").status == 404
    # Streams: to the end, and failing after two messages.
    count = envelope(pb.CountUpRequest(number=2).SerializeToString())
    assert call(app, "POST", P + "CountUp", STREAM, count).status == 200
    failing = envelope(
        pb.CountUpRequest(number=2, fail_code=int(Code.ABORTED)).SerializeToString()
    )
    assert call(app, "POST", P + "CountUp", STREAM, failing).status == 200
    assert ends(seen) == [
        ("Ping", "connect", None),
        ("Fail", "connect", Code.NOT_FOUND),
        ("Ping", "connect", Code.PERMISSION_DENIED),
        ("Ping", "connect", Code.RESOURCE_EXHAUSTED),
        ("Ping", "connect", Code.INVALID_ARGUMENT),
        ("Ping", "connect", Code.UNKNOWN),
        ("Ping", "grpc", Code.UNKNOWN),
        ("Fail", "connect", Code.UNKNOWN),
        ("CountUp", "connect", None),
        ("CountUp", "connect", Code.ABORTED),
    ]
    # on_request ran for the calls that got past the head and the refusal.
    requested = [m for tag, m, _, _ in seen if tag == "request"]
    assert requested == ["Ping", "Fail", "Ping", "CountUp", "CountUp"]


def test_grpc_without_trailers_is_seen() -> None:
    seen: Seen = []
    app = ASGIApp(server_apps.Pinger(), interceptors=[Recorder(seen)])
    hs = [("content-type", "application/grpc"), ("te", "trailers")]
    body = envelope(pb.PingRequest().SerializeToString())
    call_asgi(app, "POST", P + "Ping", hs, body)
    assert ends(seen) == [("Ping", "grpc", Code.UNIMPLEMENTED)]


def test_client_gone_ends_with_canceled() -> None:
    seen: Seen = []
    app = ASGIApp(server_apps.Pinger(), interceptors=[Recorder(seen)])
    # 1000 messages 10 ms apart; the client leaves after 50 ms.
    req = pb.CountUpRequest(number=1000, sleep_ms=10).SerializeToString()
    call_asgi(app, "POST", P + "CountUp", STREAM, envelope(req), disconnect_after=0.05)
    assert ends(seen) == [("CountUp", "connect", Code.CANCELED)]


def test_innermost_first_and_failures_logged(caplog: pytest.LogCaptureFixture) -> None:
    seen: Seen = []

    class Broken(SyncServerInterceptor):
        def on_end(self, ctx: RequestContext, error: ConnectError | None) -> None:
            raise RuntimeError("hook bug")

    app = WSGIApp(
        server_apps.PingerSync(),
        interceptors=[
            RecorderSync(seen, "outer"),
            Broken(),
            RecorderSync(seen, "inner"),
        ],
    )
    with caplog.at_level(logging.ERROR, "protoc_gen_connect_python.server"):
        r = call_wsgi(app, "POST", P + "Ping", PROTO, b"")
    assert r.status == 200  # the hook's failure changes nothing for the client
    assert [t for t, *_ in seen if t != "request"] == ["inner", "outer"]
    assert "on_end failed" in caplog.text
