"""The ASGI and WSGI apps driven in-process: every rule, both shells, no sockets."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

import pytest
import server_apps
from server_apps import pb
from server_harness import (
    Result,
    call_asgi,
    call_asgi_async,
    call_wsgi,
    envelope,
    split_envelopes,
)

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    AsyncServerInterceptor,
    Code,
    ConnectError,
    RequestContext,
    WSGIApp,
)
from protoc_gen_connect_python.runtime.compression import COMPRESSIONS
from protoc_gen_connect_python.runtime.protocol.connect import parse_end_stream
from protoc_gen_connect_python.runtime.shutdown import DRAIN

P = "/testing.v1.PingService/"
PROTO = ("content-type", "application/proto")
JSON = ("content-type", "application/json")
STREAM = ("content-type", "application/connect+proto")

Call = Callable[..., Result]


@pytest.fixture(params=["asgi", "wsgi"])
def shell(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def call(shell: str) -> Call:
    """``call(method, path, headers, body, strict=False, **kw)`` on the right app."""

    def run(*args: Any, strict: bool = False, **kwargs: Any) -> Result:
        if shell == "asgi":
            app = server_apps.asgi_strict if strict else server_apps.asgi_app
            return call_asgi(app, *args, **kwargs)
        wapp = server_apps.wsgi_strict if strict else server_apps.wsgi_app
        return call_wsgi(wapp, *args, **kwargs)

    return run


def call_with(shell: str, **options: Any) -> Call:
    """Like ``call``, on a new app of ``server_apps``' service with ``options``."""
    if shell == "asgi":
        app = ASGIApp(server_apps.Pinger(), **options)
        return lambda *args, **kwargs: call_asgi(app, *args, **kwargs)
    wapp = WSGIApp(server_apps.PingerSync(), **options)
    return lambda *args, **kwargs: call_wsgi(wapp, *args, **kwargs)


def ping(text: str = "hi", **kw: Any) -> bytes:
    return bytes(pb.PingRequest(text=text, **kw).SerializeToString())


def error_of(r: Result) -> dict[str, Any]:
    assert r.headers["content-type"] == "application/json"
    obj: dict[str, Any] = json.loads(r.body)
    return obj


def end_of(r: Result) -> tuple[list[bytes], ConnectError | None, Any]:
    frames = split_envelopes(r.body)
    assert frames[-1][0] == 2, frames
    err, trailers = parse_end_stream(frames[-1][1])
    return [p for f, p in frames[:-1]], err, trailers


# -- unary ----------------------------------------------------------------------


def test_unary_proto(call: Call) -> None:
    r = call("POST", P + "Ping", [PROTO], ping("hello", number=7))
    assert r.status == 200
    assert r.headers["content-type"] == "application/proto"
    assert pb.PingResponse.FromString(r.body) == pb.PingResponse(text="hello", number=7)
    assert r.headers["x-ping"] == "pong"
    assert r.headers["trailer-x-ping-trailer"] == "done"
    assert r.headers["x-intercepted"] == "unary"
    assert r.headers["content-length"] == str(len(r.body))
    assert "gzip" in r.headers["accept-encoding"]


def test_unary_json_with_charset(call: Call) -> None:
    r = call(
        "POST",
        P + "Ping",
        [("content-type", "application/json; charset=utf-8")],
        b'{"text": "j", "number": "5"}',
    )
    assert r.status == 200, r.body
    assert json.loads(r.body) == {"text": "j", "number": "5"}


def test_request_headers_and_peer(call: Call) -> None:
    r = call("POST", P + "Ping", [PROTO, ("x-echo", "from header")], ping())
    assert pb.PingResponse.FromString(r.body).text == "from header"
    r = call("POST", P + "Ping", [PROTO], ping("peer"))
    assert pb.PingResponse.FromString(r.body).text == "127.0.0.1:5555"


def test_get(call: Call) -> None:
    msg = base64.urlsafe_b64encode(ping("got")).decode().rstrip("=")
    r = call(
        "GET", P + "Ping", query=f"encoding=proto&base64=1&connect=v1&message={msg}"
    )
    assert r.status == 200
    assert pb.PingResponse.FromString(r.body).text == "got"
    r = call("GET", P + "Ping", query='encoding=json&message={"text":"js"}')
    assert json.loads(r.body)["text"] == "js"


def test_get_compressed(call: Call) -> None:
    data = base64.urlsafe_b64encode(gzip.compress(ping("gz"))).decode()
    r = call(
        "GET",
        P + "Ping",
        query=f"encoding=proto&base64=1&compression=gzip&message={data}",
    )
    assert pb.PingResponse.FromString(r.body).text == "gz"


def test_get_errors(call: Call) -> None:
    r = call("GET", P + "Ping", query="message=x")
    assert r.status == 400 and error_of(r)["code"] == "invalid_argument"
    r = call("GET", P + "Ping", query="encoding=yaml&message=x")
    assert r.status == 415
    r = call("GET", P + "Ping", query="encoding=json&message={}", strict=True)
    assert r.status == 400 and "connect" in error_of(r)["message"]


def test_http_level_rejections(call: Call) -> None:
    r = call("POST", "/testing.v1.PingService/Nope", [PROTO], b"")
    assert (r.status, r.body) == (404, b"")
    r = call("POST", "/", [PROTO], b"")
    assert r.status == 404
    r = call("GET", P + "Fail", query="encoding=json&message={}")
    assert (r.status, r.headers["allow"]) == (405, "POST")
    r = call("PUT", P + "Ping", [PROTO], ping())
    assert (r.status, r.headers["allow"]) == (405, "GET, POST")
    for ct in ("text/plain", "application/xml", "application/connect+proto"):
        r = call("POST", P + "Ping", [("content-type", ct)], ping())
        assert r.status == 415, ct
        assert "application/proto" in r.headers["accept-post"]
        assert "application/connect+json" in r.headers["accept-post"]
    r = call("POST", P + "CountUp", [PROTO], ping())
    assert r.status == 415
    r = call(
        "POST", P + "Ping", [("content-type", "application/json; charset=latin-1")]
    )
    assert r.status == 415


def test_connect_error_with_details(call: Call) -> None:
    body = pb.FailRequest(code=Code.NOT_FOUND, message="no such thing")
    r = call("POST", P + "Fail", [PROTO], body.SerializeToString())
    assert r.status == 404
    err = error_of(r)
    assert err["code"] == "not_found" and err["message"] == "no such thing"
    assert err["details"][0]["type"] == "google.protobuf.StringValue"
    assert r.headers["x-error-meta"] == "yes"
    body = pb.FailRequest(code=Code.RESOURCE_EXHAUSTED)
    r = call("POST", P + "Fail", [PROTO], body.SerializeToString())
    assert r.status == 429 and error_of(r)["code"] == "resource_exhausted"


def test_exception_is_hidden_and_logged(
    call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    body = pb.FailRequest(code=0, message="password").SerializeToString()
    with caplog.at_level(logging.ERROR, "protoc_gen_connect_python.server"):
        r = call("POST", P + "Fail", [PROTO], body)
    assert r.status == 500
    assert error_of(r) == {"code": "unknown", "message": "internal error"}
    assert "password" in caplog.text and "Traceback" in caplog.text
    r = call(
        "POST",
        P + "Fail",
        [PROTO, ("connect-protocol-version", "1")],
        body,
        strict=True,
    )
    assert "secret: password" in error_of(r)["message"]


def test_unimplemented_default(call: Call) -> None:
    r = call("POST", P + "Unimplemented", [PROTO], ping())
    assert r.status == 501
    assert error_of(r)["code"] == "unimplemented"


def test_bad_message(call: Call) -> None:
    r = call("POST", P + "Ping", [PROTO], b"\xff\xff\xff")
    assert r.status == 400 and error_of(r)["code"] == "invalid_argument"
    r = call("POST", P + "Ping", [JSON], b"{not json")
    assert r.status == 400 and error_of(r)["code"] == "invalid_argument"


def test_protocol_version(call: Call) -> None:
    r = call("POST", P + "Ping", [PROTO], ping(), strict=True)
    assert r.status == 400 and "Connect-Protocol-Version" in error_of(r)["message"]
    r = call(
        "POST",
        P + "Ping",
        [PROTO, ("connect-protocol-version", "1")],
        ping(),
        strict=True,
    )
    assert r.status == 200
    r = call("POST", P + "Ping", [PROTO, ("connect-protocol-version", "2")], ping())
    assert r.status == 400


@pytest.mark.parametrize("name", sorted(COMPRESSIONS))
def test_unary_compression(call: Call, name: str) -> None:
    comp = COMPRESSIONS[name]
    big = ping("x" * 5000)
    r = call(
        "POST",
        P + "Ping",
        [PROTO, ("content-encoding", name), ("accept-encoding", f"{name}, gzip")],
        comp.compress(big),
    )
    assert r.status == 200, r.body
    assert r.headers["content-encoding"] == name
    out = pb.PingResponse.FromString(comp.decompress(r.body, 0))
    assert out.text == "x" * 5000
    # Small responses are not worth compressing.
    r = call("POST", P + "Ping", [PROTO, ("accept-encoding", name)], ping("small"))
    assert "content-encoding" not in r.headers
    assert pb.PingResponse.FromString(r.body).text == "small"


def test_unknown_request_encoding(call: Call) -> None:
    r = call("POST", P + "Ping", [PROTO, ("content-encoding", "lzma")], ping())
    assert r.status == 501 and error_of(r)["code"] == "unimplemented"
    assert "gzip" in r.headers["accept-encoding"]
    r = call("POST", P + "Ping", [PROTO, ("content-encoding", "identity")], ping())
    assert r.status == 200


def test_read_limit(call: Call) -> None:
    hdrs = [PROTO, ("connect-protocol-version", "1")]
    r = call("POST", P + "Ping", hdrs, ping(payload=b"a" * 2000), strict=True)
    assert r.status == 429 and error_of(r)["code"] == "resource_exhausted"
    # Small on the wire, too large once decompressed.
    bomb = gzip.compress(ping(payload=b"\0" * 100_000))
    assert len(bomb) < 1000
    r = call(
        "POST", P + "Ping", [*hdrs, ("content-encoding", "gzip")], bomb, strict=True
    )
    assert r.status == 429 and error_of(r)["code"] == "resource_exhausted"


def test_read_limit_without_content_length(shell: str) -> None:
    body = ping(payload=b"a" * 2000)
    hdrs = [PROTO, ("connect-protocol-version", "1")]
    if shell == "asgi":
        r = call_asgi(
            server_apps.asgi_strict, "POST", P + "Ping", hdrs, [body[:700], body[700:]]
        )
    else:
        r = call_wsgi(
            server_apps.wsgi_strict, "POST", P + "Ping", hdrs, body, chunked=True
        )
    assert r.status == 429


def test_send_limit(call: Call) -> None:
    hdrs = [PROTO, ("connect-protocol-version", "1")]
    r = call("POST", P + "Ping", hdrs, ping(payload=b"a" * 900), strict=True)
    assert r.status == 200
    req = pb.CountUpRequest(number=1).SerializeToString()
    r = call(
        "POST",
        P + "CountUp",
        [STREAM, ("connect-protocol-version", "1")],
        envelope(req),
        strict=True,
    )
    assert r.status == 200


def test_send_limit_exceeded(shell: str) -> None:
    call = call_with(shell, send_max_bytes=100)
    r = call("POST", P + "Ping", [PROTO], ping(payload=b"a" * 500))
    assert r.status == 429 and error_of(r)["code"] == "resource_exhausted"


def test_invalid_timeout(call: Call) -> None:
    for bad in ("-1", "1.5", "abc", "12345678901", ""):
        r = call("POST", P + "Ping", [PROTO, ("connect-timeout-ms", bad)], ping())
        assert r.status == 400, bad
        assert error_of(r)["code"] == "invalid_argument"


def test_timeout_remaining(call: Call) -> None:
    r = call(
        "POST", P + "Ping", [PROTO, ("connect-timeout-ms", "5000")], ping("timeout")
    )
    remaining = float(pb.PingResponse.FromString(r.body).text)
    assert 4.0 < remaining <= 5.0
    r = call("POST", P + "Ping", [PROTO], ping("timeout"))
    assert pb.PingResponse.FromString(r.body).text == "none"


def test_deadline_exceeded(call: Call) -> None:
    r = call(
        "POST", P + "Ping", [PROTO, ("connect-timeout-ms", "50")], ping(sleep_ms=400)
    )
    assert r.status == 504 and error_of(r)["code"] == "deadline_exceeded"


def test_deadline_cancels_async_handler() -> None:
    # The handler never returns by itself: the reply comes only if the
    # deadline cancelled it, and the handler saw the cancellation.
    seen: list[str] = []

    class Stuck(server_apps.Pinger):
        async def ping(self, request: Any, ctx: RequestContext) -> Any:
            try:
                await asyncio.Event().wait()
            finally:
                seen.append("finally")

    async def run() -> Result:
        headers = [PROTO, ("connect-timeout-ms", "50")]
        call = call_asgi_async(ASGIApp(Stuck()), "POST", P + "Ping", headers, ping())
        return await asyncio.wait_for(call, 30)

    r = asyncio.run(run())
    assert r.status == 504 and error_of(r)["code"] == "deadline_exceeded"
    assert seen == ["finally"]


# -- streaming ------------------------------------------------------------------


def count_up(n: int, **kw: Any) -> bytes:
    return envelope(pb.CountUpRequest(number=n, **kw).SerializeToString())


def test_server_stream(call: Call) -> None:
    r = call("POST", P + "CountUp", [STREAM], count_up(3))
    assert r.status == 200
    assert r.headers["content-type"] == "application/connect+proto"
    assert r.headers["x-count"] == "3" and r.headers["x-intercepted"] == "server_stream"
    msgs, err, trailers = end_of(r)
    assert [pb.CountUpResponse.FromString(m).number for m in msgs] == [1, 2, 3]
    assert err is None
    assert trailers["x-count-trailer"] == "done" and trailers["x-sent"] == "3"


def test_server_stream_json(call: Call) -> None:
    r = call(
        "POST",
        P + "CountUp",
        [("content-type", "application/connect+json")],
        envelope(b'{"number": 2}'),
    )
    msgs, err, _ = end_of(r)
    assert err is None
    assert [json.loads(m) for m in msgs] == [{"number": "1"}, {"number": "2"}]


def test_server_stream_error_after_messages(call: Call) -> None:
    r = call("POST", P + "CountUp", [STREAM], count_up(2, fail_code=Code.ABORTED))
    assert r.status == 200
    msgs, err, trailers = end_of(r)
    assert len(msgs) == 2
    assert (
        err is not None and err.code == Code.ABORTED and err.message == "count failed"
    )
    assert trailers["x-count-trailer"] == "done"


def test_stream_errors_before_messages(call: Call) -> None:
    r = call("POST", P + "CountUp", [STREAM, ("connect-timeout-ms", "x")], count_up(1))
    assert r.status == 200
    _, err, _ = end_of(r)
    assert err is not None and err.code == Code.INVALID_ARGUMENT
    r = call("POST", P + "CountUp", [STREAM], count_up(1) + count_up(1))
    _, err, _ = end_of(r)
    assert err is not None and err.code == Code.UNIMPLEMENTED
    r = call("POST", P + "CountUp", [STREAM], b"")
    _, err, _ = end_of(r)
    assert err is not None and err.code == Code.UNIMPLEMENTED
    r = call("POST", P + "CountUp", [STREAM], count_up(1)[:-1])
    _, err, _ = end_of(r)
    assert err is not None and err.code == Code.INVALID_ARGUMENT
    r = call(
        "POST",
        P + "CountUp",
        [STREAM, ("connect-content-encoding", "lzma")],
        count_up(1),
    )
    _, err, _ = end_of(r)
    assert err is not None and err.code == Code.UNIMPLEMENTED
    assert "gzip" in r.headers["connect-accept-encoding"]


def test_client_stream(call: Call) -> None:
    body = b"".join(
        envelope(pb.SumRequest(number=i).SerializeToString()) for i in range(1, 5)
    )
    r = call("POST", P + "Sum", [STREAM], [body[:7], body[7:13], body[13:]])
    msgs, err, trailers = end_of(r)
    assert err is None
    assert pb.SumResponse.FromString(msgs[0]) == pb.SumResponse(sum=10, count=4)
    assert trailers["x-sent"] == "1"
    r = call("POST", P + "Sum", [STREAM], b"")
    msgs, err, _ = end_of(r)
    assert pb.SumResponse.FromString(msgs[0]).count == 0


def test_bidi(call: Call) -> None:
    texts = ["a", "bb", "ccc"]
    body = [envelope(pb.EchoRequest(text=t).SerializeToString()) for t in texts]
    r = call("POST", P + "Echo", [STREAM], body)
    msgs, err, _ = end_of(r)
    assert err is None
    assert [pb.EchoResponse.FromString(m).text for m in msgs] == texts


def test_stream_compression(call: Call) -> None:
    payload = pb.SumRequest(number=5).SerializeToString()
    body = envelope(gzip.compress(payload), flags=1) + envelope(payload)
    r = call("POST", P + "Sum", [STREAM, ("connect-content-encoding", "gzip")], body)
    msgs, err, _ = end_of(r)
    assert err is None and pb.SumResponse.FromString(msgs[0]).sum == 10
    # Compressed flag without an encoding is a protocol error.
    r = call("POST", P + "Sum", [STREAM], envelope(gzip.compress(payload), flags=1))
    _, err, _ = end_of(r)
    assert err is not None and err.code == Code.INTERNAL
    big = [envelope(pb.EchoRequest(text="y" * 3000).SerializeToString())]
    r = call("POST", P + "Echo", [STREAM, ("connect-accept-encoding", "gzip")], big)
    assert r.headers["connect-content-encoding"] == "gzip"
    frames = split_envelopes(r.body)
    assert frames[0][0] == 1
    assert pb.EchoResponse.FromString(gzip.decompress(frames[0][1])).text == "y" * 3000


def test_stream_read_limit(call: Call) -> None:
    hdrs = [STREAM, ("connect-protocol-version", "1")]
    big = envelope(pb.EchoRequest(text="z" * 2000).SerializeToString())
    r = call("POST", P + "Echo", hdrs, big, strict=True)
    _, err, _ = end_of(r)
    assert err is not None and err.code == Code.RESOURCE_EXHAUSTED


def test_stream_send_limit(shell: str) -> None:
    body = [
        envelope(pb.EchoRequest(text=t).SerializeToString()) for t in ("ok", "w" * 900)
    ]
    r = call_with(shell, send_max_bytes=100)("POST", P + "Echo", [STREAM], body)
    msgs, err, _ = end_of(r)
    assert len(msgs) == 1 and err is not None and err.code == Code.RESOURCE_EXHAUSTED


def test_stream_deadline(call: Call) -> None:
    r = call(
        "POST",
        P + "CountUp",
        [STREAM, ("connect-timeout-ms", "150")],
        count_up(50, sleep_ms=20),
    )
    assert r.status == 200
    msgs, err, _ = end_of(r)
    assert 1 <= len(msgs) < 50
    assert err is not None and err.code == Code.DEADLINE_EXCEEDED


# -- interceptors ---------------------------------------------------------------


def test_interceptor_rejects_before_reading_body(call: Call) -> None:
    # The declared length is over the read limit; the hook still answers first.
    hdrs = [PROTO, ("x-deny", "1"), ("content-length", str(10**9))]
    r = call("POST", P + "Ping", hdrs, b"")
    assert r.status == 403
    assert error_of(r) == {"code": "permission_denied", "message": "denied Ping"}
    r = call("POST", P + "Echo", [STREAM, ("x-deny", "1")], b"garbage")
    _, err, _ = end_of(r)
    assert err is not None and err.code == Code.PERMISSION_DENIED


# -- mounting, lifespan, construction --------------------------------------------


def test_mounted_under_prefix(call: Call) -> None:
    r = call("POST", P + "Ping", [PROTO], ping(), root_path="/api/v1")
    assert r.status == 200


def test_asgi_root_path_not_in_path() -> None:
    # Older servers leave root_path out of path; that routes too.
    async def run() -> Result:
        return await call_asgi_async(
            server_apps.asgi_app,
            "POST",
            P + "Ping",
            [PROTO],
            ping(),
            root_path="/api",
            path_has_root=False,
        )

    assert asyncio.run(run()).status == 200


def test_lifespan() -> None:
    async def run() -> list[dict[str, Any]]:
        events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return events.pop(0)

        async def send(m: MutableMapping[str, Any]) -> None:
            sent.append(dict(m))

        await server_apps.asgi_app({"type": "lifespan"}, receive, send)
        return sent

    try:
        assert [m["type"] for m in asyncio.run(run())] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
    finally:
        DRAIN.reset()  # lifespan shutdown drained the process


def test_construction_errors() -> None:
    with pytest.raises(TypeError, match="WSGIApp"):
        ASGIApp(server_apps.PingerSync())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ASGIApp"):
        WSGIApp(server_apps.Pinger())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two services"):
        ASGIApp(server_apps.Pinger(), server_apps.Pinger())
    with pytest.raises(TypeError):
        ASGIApp(server_apps.Pinger(), no_such_option=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown compression"):
        ASGIApp(server_apps.Pinger(), compressions=("lzma",))


def test_identity_only_compression() -> None:
    app = ASGIApp(server_apps.Pinger(), compressions=())
    r = call_asgi(
        app,
        "POST",
        P + "Ping",
        [PROTO, ("content-encoding", "gzip")],
        gzip.compress(ping()),
    )
    assert r.status == 501
    r = call_asgi(
        app, "POST", P + "Ping", [PROTO, ("accept-encoding", "gzip")], ping("x" * 3000)
    )
    assert "content-encoding" not in r.headers


# -- cancellation (ASGI) -----------------------------------------------------------


def test_disconnect_cancels_unary_handler() -> None:
    cancelled: list[bool] = []

    class Stuck(server_apps.Pinger):
        async def ping(self, request: Any, ctx: RequestContext) -> Any:
            try:
                await asyncio.Event().wait()  # returns only if cancelled
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            raise AssertionError  # pragma: no cover

    async def run() -> Result:
        call = call_asgi_async(
            ASGIApp(Stuck()), "POST", P + "Ping", [PROTO], ping(), disconnect_after=0.05
        )
        return await asyncio.wait_for(call, 30)

    r = asyncio.run(run())
    assert cancelled == [True]
    assert r.messages == []  # nothing is sent to a client that left


def test_disconnect_closes_stream_generator() -> None:
    server_apps.CLOSED.clear()
    r = call_asgi(
        server_apps.asgi_app, "POST", P + "CountUp", [STREAM], count_up(1000, sleep_ms=10),
        disconnect_after=0.1,
    )  # fmt: skip
    # Closed early: a generator run to its end would have sent the end of
    # the stream (more_body False) to the client that left.
    assert server_apps.CLOSED == ["count_up"]
    assert r.messages[-1]["type"] == "http.response.body"
    assert r.messages[-1].get("more_body") is True  # no end-of-stream sent


def test_deadline_closes_stream_generator(call: Call) -> None:
    server_apps.CLOSED.clear()
    call(
        "POST",
        P + "CountUp",
        [STREAM, ("connect-timeout-ms", "50")],
        count_up(100, sleep_ms=10),
    )
    assert server_apps.CLOSED == ["count_up"]


def test_interceptor_wraps_async_iterators() -> None:
    seen: list[str] = []

    class Recorder(AsyncServerInterceptor):
        def wrap_stream(self, next: Any) -> Any:
            async def stream(
                requests: AsyncIterator[Any], ctx: RequestContext
            ) -> AsyncIterator[Any]:
                async def recorded() -> AsyncIterator[Any]:
                    async for m in requests:
                        seen.append("in:" + m.text)
                        yield m

                async for m in next(recorded(), ctx):
                    seen.append("out:" + m.text)
                    yield m

            return stream

    app = ASGIApp(server_apps.Pinger(), interceptors=[Recorder()])
    body = [envelope(pb.EchoRequest(text=t).SerializeToString()) for t in ("a", "b")]
    r = call_asgi(app, "POST", P + "Echo", [STREAM], body)
    assert r.status == 200
    assert seen == ["in:a", "out:a", "in:b", "out:b"]


def test_server_cancellation_propagates() -> None:
    # A cancellation that is not ours (server shutdown) is re-raised.
    class Slow(server_apps.Pinger):
        async def ping(self, request: Any, ctx: RequestContext) -> Any:
            await asyncio.sleep(5)
            return pb.PingResponse()

    async def run() -> None:
        task = asyncio.ensure_future(
            call_asgi_async(ASGIApp(Slow()), "POST", P + "Ping", [PROTO], ping())
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
