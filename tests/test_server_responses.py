"""What the apps send back, in-process on both shells: responses of the wrong
type, the accepted-encodings headers with ``compressions=()``, the limit
named in a refusal of an oversized unary request, and (WSGI) a head that is
set, and an early reply's request drained, by the time the app returns."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from server_apps import Pinger, PingerSync, PingServiceBase, PingServiceSyncBase, pb
from server_harness import Result, call_asgi, call_wsgi, envelope, split_envelopes

from protoc_gen_connect_python.runtime import ASGIApp, Headers, RequestContext, WSGIApp
from protoc_gen_connect_python.runtime.protocol.connect import parse_end_stream
from protoc_gen_connect_python.runtime.protocol.grpc import parse_trailers_block

P = "/testing.v1.PingService/"
PROTO = ("content-type", "application/proto")
STREAM = ("content-type", "application/connect+proto")
WEB = ("content-type", "application/grpc-web+proto")
WRONG = "the server produced a response of the wrong type"

Call = Callable[..., Result]


class Mixed(PingServiceBase):
    """Each method answers with a message of another method's type."""

    async def ping(self, request: Any, ctx: RequestContext) -> Any:
        return pb.CountUpResponse(number=1)

    async def count_up(self, request: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        yield pb.CountUpResponse(number=1)  # right
        yield pb.PingResponse(text="wrong")
        yield pb.CountUpResponse(number=3)  # never sent

    async def sum(self, requests: AsyncIterator[Any], ctx: RequestContext) -> Any:
        async for _ in requests:
            pass
        return pb.PingResponse(text="wrong")

    async def echo(
        self, requests: AsyncIterator[Any], ctx: RequestContext
    ) -> AsyncIterator[Any]:
        async for r in requests:
            yield {"text": r.text}  # not a message at all


class MixedSync(PingServiceSyncBase):
    """The sync twin of ``Mixed``."""

    def ping(self, request: Any, ctx: RequestContext) -> Any:
        return pb.CountUpResponse(number=1)

    def count_up(self, request: Any, ctx: RequestContext) -> Iterator[Any]:
        yield pb.CountUpResponse(number=1)
        yield pb.PingResponse(text="wrong")
        yield pb.CountUpResponse(number=3)

    def sum(self, requests: Iterator[Any], ctx: RequestContext) -> Any:
        for _ in requests:
            pass
        return pb.PingResponse(text="wrong")

    def echo(self, requests: Iterator[Any], ctx: RequestContext) -> Iterator[Any]:
        for r in requests:
            yield {"text": r.text}


def app_call(shell: str, *, mixed: bool = False, **options: Any) -> Call:
    """``call(method, path, headers, body)`` on a new app of the chosen shell."""
    if shell == "asgi":
        app = ASGIApp(Mixed() if mixed else Pinger(), **options)
        return lambda *a, **kw: call_asgi(app, *a, **kw)
    wapp = WSGIApp(MixedSync() if mixed else PingerSync(), **options)
    return lambda *a, **kw: call_wsgi(wapp, *a, **kw)


@pytest.fixture(params=["asgi", "wsgi"])
def shell(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _stream_end(r: Result) -> tuple[list[bytes], dict[str, Any]]:
    frames = split_envelopes(r.body)
    assert frames and frames[-1][0] == 2
    return [p for _, p in frames[:-1]], json.loads(frames[-1][1])


def _web_status(r: Result) -> tuple[list[bytes], dict[str, str]]:
    frames = split_envelopes(r.body)
    assert frames and frames[-1][0] == 0x80
    trailers = parse_trailers_block(frames[-1][1])
    return [p for _, p in frames[:-1]], dict(trailers.items())


# -- responses of the wrong type ------------------------------------------------


def _logged(caplog: pytest.LogCaptureFixture, procedure: str, got: str) -> None:
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert procedure in text and got in text


def test_unary_of_the_wrong_type(shell: str, caplog: pytest.LogCaptureFixture) -> None:
    call = app_call(shell, mixed=True)
    req = pb.PingRequest(text="x").SerializeToString()
    with caplog.at_level(logging.ERROR, "protoc_gen_connect_python.server"):
        r = call("POST", P + "Ping", [PROTO], req)
    assert r.status == 500
    assert json.loads(r.body) == {"code": "internal", "message": WRONG}
    _logged(caplog, "PingService/Ping", "CountUpResponse")


def test_unary_of_the_wrong_type_over_grpc_web(shell: str) -> None:
    call = app_call(shell, mixed=True)
    req = envelope(pb.PingRequest(text="x").SerializeToString())
    r = call("POST", P + "Ping", [WEB], req)
    msgs, status = _web_status(r)
    assert msgs == []
    assert status["grpc-status"] == "13"  # internal
    assert status["grpc-message"] == WRONG


def _outcome(r: Result, content_type: tuple[str, str]) -> tuple[list[bytes], str]:
    """The messages of a stream and how it ended, as "code: message"."""
    if content_type == WEB:
        msgs, status = _web_status(r)
        return msgs, f"{status['grpc-status']}: {status['grpc-message']}"
    msgs, end = _stream_end(r)
    return msgs, f"{end['error']['code']}: {end['error']['message']}"


# method, request content type, request, numbers sent before the wrong
# message (CountUp), the wrong type's name
STREAM_CASES = [
    ("CountUp", STREAM, pb.CountUpRequest(number=3), [1], "PingResponse"),
    ("Sum", STREAM, pb.SumRequest(number=2), [], "PingResponse"),
    ("Echo", WEB, pb.EchoRequest(text="a"), [], "dict"),
]


@pytest.mark.parametrize(
    ("method", "ctype", "request_", "before", "got"),
    STREAM_CASES,
    ids=[c[0] for c in STREAM_CASES],
)
def test_stream_stops_at_the_wrong_type(
    shell: str,
    caplog: pytest.LogCaptureFixture,
    method: str,
    ctype: tuple[str, str],
    request_: Any,
    before: list[int],
    got: str,
) -> None:
    call = app_call(shell, mixed=True)
    with caplog.at_level(logging.ERROR, "protoc_gen_connect_python.server"):
        r = call("POST", P + method, [ctype], envelope(request_.SerializeToString()))
    assert r.status == 200
    msgs, outcome = _outcome(r, ctype)
    # What came before the wrong message went out; nothing after it.
    assert [pb.CountUpResponse.FromString(m).number for m in msgs] == before
    code = "13" if ctype == WEB else "internal"
    assert outcome == f"{code}: {WRONG}"
    _logged(caplog, "PingService/" + method, got)


# -- compressions=() ------------------------------------------------------------

ACCEPT_HEADERS = ("accept-encoding", "connect-accept-encoding", "grpc-accept-encoding")


def _accepts(r: Result) -> dict[str, str]:
    return {k: r.headers[k] for k in ACCEPT_HEADERS if k in r.headers}


@pytest.mark.parametrize(("compressions", "offered"), [((), None), (("gzip",), "gzip")])
def test_accepted_encodings_header(
    shell: str, compressions: tuple[str, ...], offered: str | None
) -> None:
    call = app_call(shell, compressions=compressions)
    req = pb.PingRequest(text="x").SerializeToString()
    fail = pb.FailRequest(code=5, message="no").SerializeToString()
    count = envelope(pb.CountUpRequest(number=1).SerializeToString())
    cases = [
        (call("POST", P + "Ping", [PROTO], req), "accept-encoding"),
        (call("POST", P + "Fail", [PROTO], fail), "accept-encoding"),
        (call("POST", P + "CountUp", [STREAM], count), "connect-accept-encoding"),
        (call("POST", P + "CountUp", [WEB], count), "grpc-accept-encoding"),
        (call("POST", P + "Ping", [WEB], envelope(req)), "grpc-accept-encoding"),
    ]
    for r, name in cases:
        assert r.status in (200, 404), r.body
        # No empty header: an identity-only server names no encodings.
        assert _accepts(r) == ({} if offered is None else {name: offered})


# -- the limit an oversized unary request is refused with -----------------------


def test_grpc_web_unary_limit_names_the_configured_limit(shell: str) -> None:
    call = app_call(shell, read_max_bytes=1000)
    # A message of exactly the limit is accepted: the body holds 5 more bytes.
    fits = pb.PingRequest(payload=b"a" * 997).SerializeToString()
    assert len(fits) == 1000
    r = call("POST", P + "Ping", [WEB], envelope(fits))
    msgs, status = _web_status(r)
    assert status["grpc-status"] == "0" and len(msgs) == 1
    over = pb.PingRequest(payload=b"a" * 998).SerializeToString()
    r = call("POST", P + "Ping", [WEB], envelope(over))
    msgs, status = _web_status(r)
    assert msgs == []
    assert status["grpc-status"] == "8"  # resource_exhausted
    assert status["grpc-message"] == (
        "request message is larger than configured max 1000 bytes"
    )


def test_connect_unary_limit_names_the_configured_limit(shell: str) -> None:
    call = app_call(shell, read_max_bytes=1000)
    over = pb.PingRequest(payload=b"a" * 998).SerializeToString()
    assert len(over) == 1001
    for chunked in (False, True):
        kw = {"chunked": True} if chunked and shell == "wsgi" else {}
        r = call("POST", P + "Ping", [PROTO], over, **kw)
        assert r.status == 429
        assert json.loads(r.body) == {
            "code": "resource_exhausted",
            "message": "request message is larger than configured max 1000 bytes",
        }


def test_parse_end_stream_reads_the_wrong_type_error(shell: str) -> None:
    # The end-of-stream message a client reads carries the code and our words.
    call = app_call(shell, mixed=True)
    req = envelope(pb.SumRequest(number=2).SerializeToString())
    r = call("POST", P + "Sum", [STREAM], req)
    err, _ = parse_end_stream(split_envelopes(r.body)[-1][1])
    assert err is not None and err.code.name == "INTERNAL"


# -- the head of a WSGI stream is set when the app returns ---------------------


class _GranianLike:
    """A WSGI server's side as granian plays it: the head is read when the app
    returns, and ``start_response`` returns no ``write`` callable."""

    def __init__(self) -> None:
        self.head: tuple[str, dict[str, str]] | None = None
        self.read_at_return = -1
        """How much of the request body the app had read when it returned."""

    def start_response(self, status: str, headers: list[tuple[str, str]]) -> None:
        self.head = (status, dict(headers))

    def run(
        self,
        app: WSGIApp,
        path: str,
        ctype: str,
        body: bytes,
        protocol: str = "HTTP/1.1",
    ) -> bytes:
        stream = io.BytesIO(body)
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "CONTENT_TYPE": ctype,
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_PROTOCOL": protocol,
            "wsgi.input": stream,
        }
        response = app(environ, self.start_response)
        self.read_at_return = stream.tell()
        assert self.head is not None  # set before the first iteration
        out = b"".join(response)
        getattr(response, "close", lambda: None)()
        return out


@pytest.mark.parametrize(
    ("method", "request_", "ctype"),
    [
        ("CountUp", pb.CountUpRequest(number=2), STREAM[1]),
        ("CountUp", pb.CountUpRequest(number=0, fail_code=10), STREAM[1]),
        ("Sum", pb.SumRequest(number=2), WEB[1]),
        ("Echo", pb.EchoRequest(text="a"), STREAM[1]),
    ],
    ids=["server", "server-error-first", "client-grpc-web", "bidi"],
)
def test_wsgi_stream_head_is_set_when_the_app_returns(
    method: str, request_: Any, ctype: str
) -> None:
    server = _GranianLike()
    app = WSGIApp(PingerSync())
    out = server.run(app, P + method, ctype, envelope(request_.SerializeToString()))
    assert server.head is not None
    status, headers = server.head
    assert status == "200 OK"
    assert headers["content-type"] == ctype
    assert split_envelopes(out)  # and the body followed


@pytest.mark.parametrize(
    ("method", "protocol"),
    [("Sum", "HTTP/1.1"), ("Sum", "HTTP/2"), ("Ping", "HTTP/2")],
)
def test_wsgi_early_reply_drains_before_the_app_returns(
    method: str, protocol: str
) -> None:
    # Over the limit at once: the rest of the declared body is read before
    # the app returns, so before granian sends the head.
    server = _GranianLike()
    app = WSGIApp(PingerSync(), read_max_bytes=100)
    body = envelope(b"\x08" * 200) + envelope(b"") * 10
    ctype = STREAM[1] if method == "Sum" else WEB[1]
    out = server.run(app, P + method, ctype, body, protocol)
    assert server.read_at_return == len(body)
    msgs, outcome = _outcome(Result(200, Headers(), out), (STREAM[0], ctype))
    assert msgs == []
    assert outcome.startswith("resource_exhausted: " if method == "Sum" else "8: ")


def test_wsgi_unary_over_its_declared_limit_is_answered_first_on_http1() -> None:
    # HTTP/1.1: the client may wait for the answer before it sends the body
    # (Expect: 100-continue), so nothing is read before the app returns; the
    # body is drained after the answer, as the server iterates.
    server = _GranianLike()
    app = WSGIApp(PingerSync(), read_max_bytes=100)
    body = envelope(b"\x08" * 200)
    out = server.run(app, P + "Ping", WEB[1], body)
    assert server.read_at_return == 0
    assert server.head is not None and server.head[0] == "200 OK"
    _, outcome = _outcome(Result(200, Headers(), out), (STREAM[0], WEB[1]))
    assert outcome.startswith("8: request message is larger than configured max 100")
