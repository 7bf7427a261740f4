"""The async and sync clients against a real peer over loopback (Connect protocol).

The peer (``client_peer.py``) runs under uvicorn (HTTP/1.1) and hypercorn (HTTP/2
prior knowledge, and TLS with ALPN and client certificates).
"""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from client_env import PeerEnv, peer_env
from servers import free_port

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    ConnectError,
    SyncClient,
    SyncStream,
)
from protoc_gen_connect_python.runtime.client.http2 import STREAM_WINDOW
from protoc_gen_connect_python.runtime.client.interceptors import (
    ClientCall,
    ClientInterceptor,
)
from protoc_gen_connect_python.runtime.compression import COMPRESSIONS

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerEnv]:
    tmp = tmp_path_factory.mktemp("client")
    with peer_env(tmp, h1="uvicorn", h2="hypercorn") as env:
        yield env


HTTP = ["h1", "h2"]


def client_args(env: PeerEnv, http: str) -> dict[str, Any]:
    if http == "h2":
        return {"http_version": "2"}
    if http == "tls":
        return env.tls_options()
    return {}


def aclient(env: PeerEnv, http: str = "h1", **kw: Any) -> AsyncClient:
    return AsyncClient(env.urls[http], **client_args(env, http), **kw)


def sclient(env: PeerEnv, http: str = "h1", **kw: Any) -> SyncClient:
    return SyncClient(env.urls[http], **client_args(env, http), **kw)


def detail_index(env: PeerEnv, err: ConnectError) -> int:
    detail = err.details[0].unpack(env.pb.Res)
    assert detail is not None
    index: int = detail.index
    return index


# -- unary -------------------------------------------------------------------


@pytest.mark.parametrize("http", HTTP)
@pytest.mark.parametrize("codec", ["proto", "json"])
async def test_unary_async(env: PeerEnv, http: str, codec: str) -> None:
    async with aclient(env, http, codec=codec) as c:
        res = await c.call_unary_detailed(
            env.specs.post,
            env.pb.Req(text="hi"),
            headers={"x-echo-a": "1", "x-trail-b": "2"},
        )
        assert res.message.text == "hi"
        assert res.headers["x-echo-a"] == "1"
        assert res.headers["x-seen-method"] == "POST"
        assert res.headers["x-seen-user-agent"].startswith("protoc-gen-connect-python/")
        assert res.trailers["x-trail-b"] == "2"
        assert "trailer-x-trail-b" not in res.headers


@pytest.mark.parametrize("http", HTTP)
@pytest.mark.parametrize("codec", ["proto", "json"])
def test_unary_sync(env: PeerEnv, http: str, codec: str) -> None:
    with sclient(env, http, codec=codec, headers={"x-echo-default": "d"}) as c:
        res = c.call_unary_detailed(
            env.specs.post, env.pb.Req(text="hi"), headers=[("x-trail-b", "2")]
        )
        assert res.message.text == "hi"
        assert res.headers["x-echo-default"] == "d"
        assert res.trailers["x-trail-b"] == "2"
        assert c.call_unary(env.specs.post, env.pb.Req(text="again")).text == "again"


@pytest.mark.parametrize("algo", sorted(COMPRESSIONS))
async def test_unary_compression(env: PeerEnv, algo: str) -> None:
    async with aclient(
        env, send_compression=algo, accept_compression=[algo], compress_min_bytes=10
    ) as c:
        res = await c.call_unary_detailed(
            env.specs.post,
            env.pb.Req(text="x" * 100, size=5000),
            headers={"x-compress": "1"},
        )
        assert res.message.text == "x" * 100
        assert len(res.message.padding) == 5000
        assert res.headers["x-seen-content-encoding"] == algo
        assert res.headers["content-encoding"] == algo


async def test_small_messages_are_not_compressed(env: PeerEnv) -> None:
    async with aclient(env, send_compression="gzip") as c:
        res = await c.call_unary_detailed(env.specs.post, env.pb.Req(text="tiny"))
        assert "x-seen-content-encoding" not in res.headers


async def test_unary_get(env: PeerEnv) -> None:
    async with aclient(env, use_get=True, codec="json") as c:
        res = await c.call_unary_detailed(env.specs.unary, env.pb.Req(text="get me"))
        assert res.message.text == "get me"
        assert res.headers["x-seen-method"] == "GET"
        assert "encoding=json" in res.headers["x-seen-query"]
        # Methods with side effects are never sent with GET.
        res = await c.call_unary_detailed(env.specs.post, env.pb.Req(text="post"))
        assert res.headers["x-seen-method"] == "POST"
        # Too long for a URL: falls back to POST.
        res = await c.call_unary_detailed(env.specs.unary, env.pb.Req(text="y" * 9000))
        assert res.headers["x-seen-method"] == "POST"
        assert res.message.text == "y" * 9000


def test_unary_get_sync_compressed(env: PeerEnv) -> None:
    with sclient(env, use_get=True, send_compression="gzip", compress_min_bytes=1) as c:
        res = c.call_unary_detailed(env.specs.unary, env.pb.Req(text="z" * 500))
        assert res.headers["x-seen-method"] == "GET"
        assert "compression=gzip" in res.headers["x-seen-query"]
        assert res.message.text == "z" * 500


# -- errors ------------------------------------------------------------------


@pytest.mark.parametrize("http", HTTP)
async def test_unary_error_with_details(env: PeerEnv, http: str) -> None:
    async with aclient(env, http) as c:
        with pytest.raises(ConnectError) as info:
            await c.call_unary(
                env.specs.post,
                env.pb.Req(error_code="failed_precondition", error_message="nope"),
                headers={"x-echo-e": "h", "x-trail-t": "t"},
            )
    err = info.value
    assert err.code is Code.FAILED_PRECONDITION
    assert err.message == "nope"
    assert detail_index(env, err) == 7
    assert err.metadata["x-echo-e"] == "h"
    assert err.metadata["x-trail-t"] == "t"


@pytest.mark.parametrize("http", HTTP)
def test_unary_error_keeps_headers_and_trailers_apart(env: PeerEnv, http: str) -> None:
    with sclient(env, http) as c, pytest.raises(ConnectError) as info:
        c.call_unary(
            env.specs.post,
            env.pb.Req(error_code="failed_precondition"),
            headers={"x-echo-e": "h", "x-trail-t": "t"},
        )
    err = info.value
    assert err.response_headers["x-echo-e"] == "h"
    assert "x-trail-t" not in err.response_headers
    assert "trailer-x-trail-t" not in err.response_headers
    assert err.response_trailers["x-trail-t"] == "t"
    assert "x-echo-e" not in err.response_trailers
    # The merged view is still there.
    assert (err.metadata["x-echo-e"], err.metadata["x-trail-t"]) == ("h", "t")


async def test_stream_error_keeps_headers_and_trailers_apart(env: PeerEnv) -> None:
    async with aclient(env, "h2") as c:
        with pytest.raises(ConnectError) as info:
            await c.call_client_stream(
                env.specs.client_stream,
                [env.pb.Req(error_code="aborted")],
                headers={"x-echo-e": "h", "x-trail-t": "t"},
            )
    err = info.value
    assert err.code is Code.ABORTED
    assert err.response_headers["x-echo-e"] == "h"
    assert err.response_trailers["x-trail-t"] == "t"
    assert "x-echo-e" not in err.response_trailers


def test_unary_error_sync(env: PeerEnv) -> None:
    with sclient(env) as c, pytest.raises(ConnectError) as info:
        c.call_unary(env.specs.post, env.pb.Req(error_code="not_found"))
    assert info.value.code is Code.NOT_FOUND


# What the client makes of each of the peer's misbehaviours (client_peer.py).
MISBEHAVIOURS = [
    ("html502", Code.UNAVAILABLE),
    ("text200", Code.UNKNOWN),
    ("other-codec", Code.INTERNAL),
    ("bad-encoding", Code.INTERNAL),
]


@pytest.mark.parametrize(("misbehave", "code"), MISBEHAVIOURS)
async def test_unary_misbehaving_peer(env: PeerEnv, misbehave: str, code: Code) -> None:
    async with aclient(env) as c:
        with pytest.raises(ConnectError) as info:
            await c.call_unary(
                env.specs.post, env.pb.Req(), headers={"x-misbehave": misbehave}
            )
    assert info.value.code is code


async def test_unknown_route_is_unimplemented(env: PeerEnv) -> None:
    async with aclient(env) as c:
        with pytest.raises(ConnectError) as info:
            await c.call_unary(env.specs.missing, env.pb.Req())
    assert info.value.code is Code.UNIMPLEMENTED


async def test_connection_refused_is_unavailable(env: PeerEnv) -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}") as c:
        with pytest.raises(ConnectError) as info:
            await c.call_unary(env.specs.post, env.pb.Req())
    assert info.value.code is Code.UNAVAILABLE


@pytest.mark.parametrize("http", HTTP)
async def test_read_limit(env: PeerEnv, http: str) -> None:
    async with aclient(env, http, read_max_bytes=1000) as c:
        with pytest.raises(ConnectError) as info:
            await c.call_unary(env.specs.post, env.pb.Req(size=100_000))
        assert info.value.code is Code.RESOURCE_EXHAUSTED
        stream = c.call_server_stream(env.specs.server_stream, env.pb.Req(size=5000))
        with pytest.raises(ConnectError) as info:
            async for _ in stream:
                pass
        assert info.value.code is Code.RESOURCE_EXHAUSTED
        # The limit also holds after decompression.
        with pytest.raises(ConnectError) as info:
            await c.call_unary(
                env.specs.post, env.pb.Req(size=100_000), headers={"x-compress": "1"}
            )
        assert info.value.code is Code.RESOURCE_EXHAUSTED
        assert (await c.call_unary(env.specs.post, env.pb.Req(size=10))).padding


def test_send_limit_sync(env: PeerEnv) -> None:
    with sclient(env, send_max_bytes=100) as c, pytest.raises(ConnectError) as info:
        c.call_unary(env.specs.post, env.pb.Req(text="x" * 200))
    assert info.value.code is Code.RESOURCE_EXHAUSTED


# -- deadlines and cancellation ----------------------------------------------


@pytest.mark.parametrize("http", HTTP)
async def test_unary_deadline(env: PeerEnv, http: str) -> None:
    async with aclient(env, http) as c:
        start = time.monotonic()
        with pytest.raises(ConnectError) as info:
            await c.call_unary(
                env.specs.post,
                env.pb.Req(delay_ms=5000, test_id=f"dl-{http}"),
                timeout=0.3,
            )
        assert info.value.code is Code.DEADLINE_EXCEEDED
        assert time.monotonic() - start < 2
        env.wait_disconnected(f"dl-{http}", http)
        res = await c.call_unary_detailed(env.specs.post, env.pb.Req(), timeout=10)
        assert 9000 < int(res.headers["x-seen-connect-timeout-ms"]) <= 10000


def test_unary_deadline_sync(env: PeerEnv) -> None:
    with sclient(env, timeout=0.3) as c:
        with pytest.raises(ConnectError) as info:
            c.call_unary(env.specs.post, env.pb.Req(delay_ms=5000, test_id="dl-sync"))
        assert info.value.code is Code.DEADLINE_EXCEEDED
        env.wait_disconnected("dl-sync", "h1")


@pytest.mark.parametrize("http", HTTP)
async def test_task_cancellation_cancels_request(env: PeerEnv, http: str) -> None:
    async with aclient(env, http) as c:
        task = asyncio.ensure_future(
            c.call_unary(
                env.specs.post, env.pb.Req(delay_ms=5000, test_id=f"cx-{http}")
            )
        )
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        env.wait_disconnected(f"cx-{http}", http)


@pytest.mark.parametrize("http", HTTP)
async def test_stream_close_cancels_request(env: PeerEnv, http: str) -> None:
    async with aclient(env, http) as c:
        test_id = f"sc-{http}"
        req = env.pb.Req(count=100, delay_ms=200, test_id=test_id)
        async with c.call_server_stream(env.specs.server_stream, req) as stream:
            first = await stream.__anext__()
            assert first.index == 0
        env.wait_disconnected(test_id, http)
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()


@pytest.mark.parametrize("http", HTTP)
def test_stream_close_cancels_request_sync(env: PeerEnv, http: str) -> None:
    with sclient(env, http) as c:
        test_id = f"scs-{http}"
        req = env.pb.Req(count=100, delay_ms=200, test_id=test_id)
        with c.call_server_stream(env.specs.server_stream, req) as stream:
            assert next(stream).index == 0
        env.wait_disconnected(test_id, http)


def closed_by_a_timer(env: PeerEnv, c: SyncClient, test_id: str) -> SyncStream[Any]:
    """A slow server stream past its first message, closed from another
    thread 0.2 s from now."""
    req = env.pb.Req(count=100, delay_ms=2000, test_id=test_id)
    stream = c.call_server_stream(env.specs.server_stream, req)
    assert next(stream).index == 0
    threading.Timer(0.2, stream.close).start()
    return stream


def test_stream_close_from_another_thread(env: PeerEnv) -> None:
    with sclient(env) as c:
        stream = closed_by_a_timer(env, c, "thread")
        start = time.monotonic()
        with pytest.raises(ConnectError):
            next(stream)
        assert time.monotonic() - start < 1.5
        env.wait_disconnected("thread", "h1")


def test_client_close_cancels_unary_in_flight(env: PeerEnv) -> None:
    c = sclient(env)
    threading.Timer(0.3, c.close).start()
    with pytest.raises(ConnectError) as info:
        c.call_unary(env.specs.post, env.pb.Req(delay_ms=5000, test_id="uclose"))
    assert info.value.code is Code.CANCELED
    env.wait_disconnected("uclose", "h1")


def test_stream_close_from_another_thread_is_canceled(env: PeerEnv) -> None:
    with sclient(env) as c:
        stream = closed_by_a_timer(env, c, "thread-cx")
        with pytest.raises(ConnectError) as info:
            next(stream)
        assert info.value.code is Code.CANCELED
        with pytest.raises(ConnectError) as info:
            next(stream)
        assert info.value.code is Code.CANCELED
        env.wait_disconnected("thread-cx", "h1")


async def test_stream_deadline(env: PeerEnv) -> None:
    async with aclient(env, "h2") as c:
        req = env.pb.Req(count=100, delay_ms=100)
        got = 0
        with pytest.raises(ConnectError) as info:
            async for _ in c.call_server_stream(
                env.specs.server_stream, req, timeout=0.5
            ):
                got += 1
        assert info.value.code is Code.DEADLINE_EXCEEDED
        assert 1 <= got < 10


def test_stream_deadline_sync(env: PeerEnv) -> None:
    with sclient(env, "h2") as c:
        req = env.pb.Req(count=100, delay_ms=100)
        with pytest.raises(ConnectError) as info:
            for _ in c.call_server_stream(env.specs.server_stream, req, timeout=0.5):
                pass
        assert info.value.code is Code.DEADLINE_EXCEEDED


# -- streams -----------------------------------------------------------------


@pytest.mark.parametrize("http", HTTP)
@pytest.mark.parametrize("codec", ["proto", "json"])
async def test_server_stream(env: PeerEnv, http: str, codec: str) -> None:
    async with aclient(env, http, codec=codec) as c:
        stream = c.call_server_stream(
            env.specs.server_stream,
            env.pb.Req(text="s", count=3),
            headers={"x-echo-h": "v", "x-trail-t": "w"},
        )
        got = [m.index async for m in stream]
        assert got == [0, 1, 2]
        assert stream.headers["x-echo-h"] == "v"
        assert stream.trailers["x-trail-t"] == "w"


@pytest.mark.parametrize("http", HTTP)
def test_server_stream_sync(env: PeerEnv, http: str) -> None:
    with sclient(env, http, codec="json") as c:
        stream = c.call_server_stream(
            env.specs.server_stream, env.pb.Req(count=4), headers={"x-trail-t": "w"}
        )
        with stream:
            assert [m.index for m in stream] == [0, 1, 2, 3]
        assert stream.trailers["x-trail-t"] == "w"


@pytest.mark.parametrize("algo", sorted(COMPRESSIONS))
def test_stream_compression_sync(env: PeerEnv, algo: str) -> None:
    with sclient(
        env,
        "h2",
        send_compression=algo,
        accept_compression=[algo],
        compress_min_bytes=1,
    ) as c:
        reqs = [env.pb.Req(text=str(i) * 50) for i in range(3)]
        res = c.call_client_stream(
            env.specs.client_stream, reqs, headers={"x-compress": "1"}
        )
        assert res.index == 3
        stream = c.call_server_stream(
            env.specs.server_stream,
            env.pb.Req(count=2, size=3000),
            headers={"x-compress": "1"},
        )
        with stream:
            assert [len(m.padding) for m in stream] == [3000, 3000]
        assert stream.headers["connect-content-encoding"] == algo


async def test_stream_error_after_messages(env: PeerEnv) -> None:
    async with aclient(env, "h2") as c:
        reqs = [
            env.pb.Req(text="a"),
            env.pb.Req(error_code="aborted", error_message="x"),
        ]
        stream = c.call_bidi_stream(env.specs.bidi, reqs, headers={"x-trail-t": "1"})
        got = []
        with pytest.raises(ConnectError) as info:
            async for m in stream:
                got.append(m.text)
        assert got == ["a"]
        assert info.value.code is Code.ABORTED
        assert detail_index(env, info.value) == 7
        assert info.value.metadata["x-trail-t"] == "1"


@pytest.mark.parametrize(
    ("misbehave", "code"), [("no-end", Code.INTERNAL), *MISBEHAVIOURS]
)
def test_stream_misbehaving_peer(env: PeerEnv, misbehave: str, code: Code) -> None:
    with sclient(env) as c:
        stream = c.call_server_stream(
            env.specs.server_stream,
            env.pb.Req(count=1),
            headers={"x-misbehave": misbehave},
        )
        with pytest.raises(ConnectError) as info:
            list(stream)
    assert info.value.code is code


@pytest.mark.parametrize("http", HTTP)
async def test_client_stream(env: PeerEnv, http: str) -> None:
    closed = []

    async def gen() -> AsyncIterator[Any]:
        try:
            for t in "abc":
                yield env.pb.Req(text=t)
        finally:
            closed.append(True)

    async with aclient(env, http) as c:
        res = await c.call_client_stream(env.specs.client_stream, gen())
        assert (res.text, res.index) == ("a,b,c", 3)
        res = await c.call_client_stream(
            env.specs.client_stream, [env.pb.Req(text="l")]
        )
        assert res.text == "l"
        res = await c.call_client_stream(env.specs.client_stream, [])
        assert res.index == 0
    assert closed == [True]


@pytest.mark.parametrize("http", HTTP)
async def test_client_stream_detailed(env: PeerEnv, http: str) -> None:
    async with aclient(env, http) as c:
        res = await c.call_client_stream_detailed(
            env.specs.client_stream,
            [env.pb.Req(text="a"), env.pb.Req(text="b")],
            headers={"x-echo-h": "v", "x-trail-t": "w"},
        )
    assert (res.message.text, res.message.index) == ("a,b", 2)
    assert res.headers["x-echo-h"] == "v"
    assert res.trailers["x-trail-t"] == "w"


def test_client_stream_detailed_sync(env: PeerEnv) -> None:
    with sclient(env, "h2") as c:
        res = c.call_client_stream_detailed(
            env.specs.client_stream,
            iter([env.pb.Req(text="z")]),
            headers={"x-echo-h": "v", "x-trail-t": "w"},
        )
    assert res.message.text == "z"
    assert (res.headers["x-echo-h"], res.trailers["x-trail-t"]) == ("v", "w")


def test_client_stream_sync(env: PeerEnv) -> None:
    with sclient(env, "h2") as c:
        res = c.call_client_stream(
            env.specs.client_stream, (env.pb.Req(text=t) for t in "xyz")
        )
        assert (res.text, res.index) == ("x,y,z", 3)


async def test_bidi_full_duplex(env: PeerEnv) -> None:
    """Each request is sent only after the previous response arrived."""
    async with aclient(env, "h2") as c:
        closed = await env.full_duplex(c)
    assert closed == [True]


async def test_bidi_close_closes_request_generator(env: PeerEnv) -> None:
    closed = asyncio.Event()

    async def requests() -> AsyncIterator[Any]:
        try:
            yield env.pb.Req(text="first", test_id="bidi-close")
            await asyncio.sleep(60)
            yield env.pb.Req(text="never")
        finally:
            closed.set()

    async with aclient(env, "h2") as c:
        async with c.call_bidi_stream(env.specs.bidi, requests()) as stream:
            assert (await stream.__anext__()).text == "first"
        await asyncio.wait_for(closed.wait(), 5)
    env.wait_disconnected("bidi-close", "h2")


async def test_request_iterator_error_is_raised(env: PeerEnv) -> None:
    async def requests() -> AsyncIterator[Any]:
        yield env.pb.Req(text="a")
        raise ValueError("broken iterator")

    async with aclient(env, "h2") as c:
        with pytest.raises(ValueError, match="broken iterator"):
            await c.call_client_stream(env.specs.client_stream, requests())


def test_bidi_sync_half_duplex(env: PeerEnv) -> None:
    with sclient(env, "h2") as c:
        reqs = [env.pb.Req(text=t, count=2) for t in "ab"]
        with c.call_bidi_stream(env.specs.bidi, reqs) as stream:
            assert [(m.text, m.index) for m in stream] == [
                ("a", 0),
                ("a", 1),
                ("b", 0),
                ("b", 1),
            ]


async def test_long_stream_memory_stays_flat(env: PeerEnv) -> None:
    # 50 MB go through; what the client holds at any moment (measured with
    # tracemalloc) stays within what the stream's flow-control window lets
    # the server send ahead, whatever the length of the stream.
    async with aclient(env, "h2") as c:
        req = env.pb.Req(count=5000, size=10_000)
        n = 0
        tracemalloc.start()
        try:
            async for m in c.call_server_stream(env.specs.server_stream, req):
                n += len(m.padding)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert n == 5000 * 10_000
    assert peak < STREAM_WINDOW * 3 // 2, peak


# -- TLS ---------------------------------------------------------------------


async def test_tls_with_client_certificate(env: PeerEnv) -> None:
    async with aclient(env, "tls") as c:
        res = await c.call_unary(env.specs.post, env.pb.Req(text="secure"))
        assert res.text == "secure"
        got = [
            m.index
            async for m in c.call_server_stream(
                env.specs.server_stream, env.pb.Req(count=2)
            )
        ]
        assert got == [0, 1]


def test_tls_sync_pem_bytes(env: PeerEnv) -> None:
    certs = env.certs
    with SyncClient(
        env.urls["tls"],
        tls_ca_cert=certs["ca"].read_bytes(),
        tls_cert=certs["client_cert"].read_bytes(),
        tls_key=certs["client_key"].read_bytes(),
    ) as c:
        assert c.call_unary(env.specs.post, env.pb.Req(text="s")).text == "s"


async def test_tls_without_client_certificate_fails(env: PeerEnv) -> None:
    async with AsyncClient(env.urls["tls"], tls_ca_cert=env.certs["ca"]) as c:
        with pytest.raises(ConnectError) as info:
            await c.call_unary(env.specs.post, env.pb.Req())
    assert info.value.code is Code.UNAVAILABLE


async def test_tls_untrusted_server_fails(env: PeerEnv) -> None:
    async with AsyncClient(env.urls["tls"]) as c:
        with pytest.raises(ConnectError) as info:
            await c.call_unary(env.specs.post, env.pb.Req())
    assert info.value.code is Code.UNAVAILABLE


# -- interceptors ------------------------------------------------------------


class Recorder(ClientInterceptor):
    def __init__(self) -> None:
        self.log: list[str] = []

    def on_start(self, call: ClientCall) -> None:
        call.request_headers["x-echo-auth"] = "token"
        self.log.append("start " + call.method.name)

    def on_end(self, call: ClientCall, error: ConnectError | None) -> None:
        code = error.code.wire_name if error else "ok"
        self.log.append(
            f"end {call.method.name} {code} {call.response_headers.get('x-echo-auth')}"
        )


class Retry(ClientInterceptor):
    async def intercept_unary(
        self, call_next: Any, request: Any, call: ClientCall
    ) -> Any:
        try:
            return await call_next(request, call)
        except ConnectError:
            return await call_next(type(request)(text="retried"), call)

    def intercept_unary_sync(
        self, call_next: Any, request: Any, call: ClientCall
    ) -> Any:
        try:
            return call_next(request, call)
        except ConnectError:
            return call_next(type(request)(text="retried"), call)


async def test_interceptors_async(env: PeerEnv) -> None:
    rec = Recorder()
    async with aclient(env, interceptors=[rec, Retry()]) as c:
        res = await c.call_unary(env.specs.post, env.pb.Req(error_code="unavailable"))
        assert res.text == "retried"
        async for _ in c.call_server_stream(
            env.specs.server_stream, env.pb.Req(count=1)
        ):
            pass
    assert rec.log == [
        "start Post",
        "end Post ok token",
        "start ServerStream",
        "end ServerStream ok token",
    ]


def test_interceptors_sync(env: PeerEnv) -> None:
    rec = Recorder()
    with sclient(env, interceptors=[rec, Retry()]) as c:
        assert (
            c.call_unary(env.specs.post, env.pb.Req(error_code="internal")).text
            == "retried"
        )
        with pytest.raises(ConnectError):
            list(
                c.call_server_stream(
                    env.specs.server_stream, env.pb.Req(error_code="internal")
                )
            )
    assert rec.log[-1] == "end ServerStream internal token"


def test_request_iterator_error_is_raised_sync(env: PeerEnv) -> None:
    def requests() -> Iterator[Any]:
        yield env.pb.Req(text="a")
        raise ValueError("broken sync iterator")

    with sclient(env, "h2") as c, pytest.raises(ValueError, match="broken sync"):
        c.call_client_stream(env.specs.client_stream, requests())
