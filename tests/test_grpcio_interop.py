"""gRPC interop with grpcio, the reference implementation, in both directions.

- grpcio's client calls our ASGI app (``interop/py_service.py``) on hypercorn
  and on pyvoy, and our WSGI app on pyvoy (which offers a trailers extension),
  all over cleartext HTTP/2: the four kinds of call, errors with
  details read back through ``grpc_status.rpc_status.from_call``, deadlines,
  and metadata both ways, ``-bin`` values included.
- our async and sync gRPC clients call a ``grpc.server`` in this process
  (``interop/grpcio_service.py``): every scenario of the connect-node interop
  tests (``interop/expectations.py``), plus ``-bin`` metadata both ways.

The code for ``interop.proto`` (messages, our Connect code, grpcio's stubs) is
generated once per module with grpcio-tools' protoc.
"""

from __future__ import annotations

import asyncio
import base64
import queue
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status
from interop_env import (
    Call,
    Generated,
    check_all,
    generated_code,
    generated_module,
    run_python_client,
    serve_py_service,
)

from protoc_gen_connect_python.runtime import Code, ConnectError, Headers
from protoc_gen_connect_python.runtime.headers import encode_binary_header

BIN_VALUE = b"\x00\xff\xfe binary \x01"
BIN_REPLY = b"\x10\x00reply\xff"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    with generated_code(tmp_path_factory, grpc_stubs=True) as out:
        yield out


@pytest.fixture(scope="module")
def pb(gen: Generated) -> Any:
    interop_pb2 = generated_module("interop_pb2")

    return interop_pb2


# --- grpcio client -> our ASGI app ------------------------------------------------


@pytest.fixture(scope="module", params=["hypercorn", "pyvoy", "pyvoy-wsgi"])
def our_server(request: pytest.FixtureRequest, gen: Generated) -> Iterator[str]:
    """py_service's ASGI or WSGI app on a server that speaks h2c; yields host:port."""
    with serve_py_service(gen, request.param) as srv:
        yield f"127.0.0.1:{srv.port}"


@pytest.fixture
def stub(our_server: str, gen: Generated) -> Iterator[Any]:
    interop_pb2_grpc = generated_module("interop_pb2_grpc")

    with grpc.insecure_channel(our_server) as channel:
        yield interop_pb2_grpc.InteropServiceStub(channel)


def metadata_spec(pb: Any, **fields: Any) -> Any:
    """Response headers and trailers to send back, one of each binary."""
    return pb.CallSpec(
        response_headers=[
            pb.Header(name="x-test-header", value="header value"),
            pb.Header(name="x-test-reply-bin", value=b64(BIN_REPLY)),
        ],
        response_trailers=[
            pb.Header(name="x-test-trailer", value="trailer value"),
            pb.Header(name="x-test-trailer-bin", value=b64(BIN_REPLY * 2)),
        ],
        **fields,
    )


REQUEST_METADATA = (("x-test-alpha", "one"), ("x-test-data-bin", BIN_VALUE))


def check_echoed(headers: Any) -> None:
    """The server saw our text and binary request metadata."""
    seen = {h.name: h.value for h in headers}
    assert seen["x-test-alpha"] == "one"
    assert unb64(seen["x-test-data-bin"]) == BIN_VALUE


def check_metadata(initial: Any, trailing: Any) -> None:
    head, tail = dict(initial), dict(trailing)
    assert head["x-test-header"] == "header value"
    assert head["x-test-reply-bin"] == BIN_REPLY
    assert tail["x-test-trailer"] == "trailer value"
    assert tail["x-test-trailer-bin"] == BIN_REPLY * 2


def error_details(err: Any, pb: Any) -> list[Any]:
    status = rpc_status.from_call(err)
    assert status is not None, "no grpc-status-details-bin"
    assert status.code == err.code().value[0] and status.message == err.details()
    out = []
    for d in status.details:
        info = pb.ErrorInfo()
        assert d.Unpack(info)
        out.append(info)
    return out


def test_grpcio_unary(stub: Any, pb: Any) -> None:
    req = pb.EchoRequest(text="hello", spec=metadata_spec(pb))
    res, call = stub.Echo.with_call(req, metadata=REQUEST_METADATA, timeout=10)
    assert (res.text, res.protocol) == ("hello", "grpc")
    check_echoed(res.request_headers)
    check_metadata(call.initial_metadata(), call.trailing_metadata())
    assert call.code() is grpc.StatusCode.OK


def test_grpcio_unary_error_details(stub: Any, pb: Any) -> None:
    spec = metadata_spec(
        pb, error=pb.ErrorSpec(code=5, message="no such thing: ünï", with_detail=True)
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.Echo(pb.EchoRequest(spec=spec), timeout=10)
    err = raised.value
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert err.details() == "no such thing: ünï"
    infos = error_details(err, pb)
    assert [(i.reason, i.code) for i in infos] == [("no such thing: ünï", 5)]
    check_metadata(err.initial_metadata(), err.trailing_metadata())


def test_grpcio_deadline(stub: Any, pb: Any) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        stub.Echo(pb.EchoRequest(spec=pb.CallSpec(delay_ms=3000)), timeout=0.3)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2


def test_grpcio_server_stream(stub: Any, pb: Any) -> None:
    req = pb.CountRequest(n=3, text="s", spec=metadata_spec(pb))
    call = stub.Count(req, metadata=REQUEST_METADATA, timeout=10)
    got = list(call)
    assert [(m.index, m.text) for m in got] == [(0, "s-0"), (1, "s-1"), (2, "s-2")]
    check_echoed(got[0].request_headers)
    check_metadata(call.initial_metadata(), call.trailing_metadata())

    spec = pb.CallSpec(error=pb.ErrorSpec(code=9, message="broke", with_detail=True))
    call = stub.Count(pb.CountRequest(n=2, text="e", spec=spec), timeout=10)
    got = []
    with pytest.raises(grpc.RpcError) as raised:
        for m in call:
            got.append(m.text)
    assert got == ["e-0", "e-1"]
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert [i.reason for i in error_details(raised.value, pb)] == ["broke"]


def test_grpcio_client_stream(stub: Any, pb: Any) -> None:
    reqs = [
        pb.CollectRequest(text="a", spec=metadata_spec(pb)),
        pb.CollectRequest(text="b"),
        pb.CollectRequest(text="c"),
    ]
    res, call = stub.Collect.with_call(
        iter(reqs), metadata=REQUEST_METADATA, timeout=10
    )
    assert (res.text, res.count) == ("abc", 3)
    check_echoed(res.request_headers)
    check_metadata(call.initial_metadata(), call.trailing_metadata())

    spec = pb.CallSpec(error=pb.ErrorSpec(code=8, message="too many"))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Collect(iter([pb.CollectRequest(text="a", spec=spec)]), timeout=10)
    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raised.value.details() == "too many"


def test_grpcio_bidi_full_duplex(stub: Any, pb: Any) -> None:
    """Each request is sent only after the previous reply arrived."""
    outbox: queue.Queue[Any] = queue.Queue()

    def requests() -> Iterator[Any]:
        while (msg := outbox.get(timeout=10)) is not None:
            yield msg

    outbox.put(pb.ChatRequest(text="one", spec=metadata_spec(pb)))
    call = stub.Chat(requests(), metadata=REQUEST_METADATA, timeout=10)
    texts = []
    for res in call:
        texts.append(res.text)
        outbox.put(pb.ChatRequest(text="two") if len(texts) == 1 else None)
    assert texts == ["echo: one", "echo: two"]
    check_metadata(call.initial_metadata(), call.trailing_metadata())

    spec = pb.CallSpec(error=pb.ErrorSpec(code=10, message="aborted", with_detail=True))
    call = stub.Chat(iter([pb.ChatRequest(text="x", spec=spec)]), timeout=10)
    got = []
    with pytest.raises(grpc.RpcError) as raised:
        for res in call:
            got.append(res.text)
    assert got == ["echo: x"]
    assert raised.value.code() is grpc.StatusCode.ABORTED
    assert [i.code for i in error_details(raised.value, pb)] == [10]


# --- our clients -> grpc.server ---------------------------------------------------


@pytest.fixture(scope="module")
def grpcio_servers(gen: Generated) -> Iterator[dict[bool, str]]:
    """One grpc.server without and one with response compression (gzip)."""
    import grpcio_service

    started = {gz: grpcio_service.serve(gzip=gz) for gz in (False, True)}
    try:
        yield {gz: f"http://127.0.0.1:{port}" for gz, (_, port) in started.items()}
    finally:
        for server, _ in started.values():
            server.stop(None)


@pytest.mark.parametrize("gzip", [False, True], ids=["proto", "proto-gzip"])
@pytest.mark.parametrize("flavor", ["async", "sync"])
def test_scenarios_against_grpcio(
    grpcio_servers: dict[bool, str], flavor: str, gzip: bool
) -> None:
    """Every interop scenario, with our client over gRPC and grpcio serving."""
    results = run_python_client(
        flavor, grpcio_servers[gzip], protocol="grpc", http2=True, gzip=gzip
    )
    check_all(results, Call("grpc", True, gzip, client="python", server="grpcio"))


def _bin_request(pb: Any) -> Any:
    return pb.EchoRequest(text="bin", spec=metadata_spec(pb))


BIN_HEADERS = [
    ("x-test-alpha", "one"),
    ("x-test-data-bin", encode_binary_header(BIN_VALUE)),
]


def _check_bin_response(headers: Headers, trailers: Headers) -> None:
    assert headers.get_bin("x-test-reply-bin") == BIN_REPLY
    assert trailers.get_bin("x-test-trailer-bin") == BIN_REPLY * 2
    assert trailers["x-test-trailer"] == "trailer value"
    assert "grpc-status" not in trailers


def test_async_client_bin_metadata_and_errors(
    grpcio_servers: dict[bool, str], pb: Any
) -> None:
    interop_connect = generated_module("interop_connect")

    specs = interop_connect.InteropService.service_spec

    async def main() -> None:
        echo = next(m for m in specs.methods if m.name == "Echo")
        async with interop_connect.InteropServiceClient(
            grpcio_servers[False], protocol="grpc"
        ) as client:
            res = await client.call_unary_detailed(
                echo, _bin_request(pb), headers=BIN_HEADERS, timeout=10
            )
            check_echoed(res.message.request_headers)
            _check_bin_response(res.headers, res.trailers)
            spec = metadata_spec(
                pb, error=pb.ErrorSpec(code=7, message="nope ✗", with_detail=True)
            )
            with pytest.raises(ConnectError) as raised:
                await client.echo(pb.EchoRequest(spec=spec))
            err = raised.value
            assert (err.code, err.message) == (Code.PERMISSION_DENIED, "nope ✗")
            info = err.details[0].unpack(pb.ErrorInfo)
            assert info is not None and (info.reason, info.code) == ("nope ✗", 7)
            assert err.metadata.get_bin("x-test-reply-bin") == BIN_REPLY
            assert err.metadata.get_bin("x-test-trailer-bin") == BIN_REPLY * 2

    asyncio.run(main())


def test_sync_client_bin_metadata_and_deadline(
    grpcio_servers: dict[bool, str], pb: Any
) -> None:
    interop_connect = generated_module("interop_connect")

    with interop_connect.InteropServiceClientSync(
        grpcio_servers[True], protocol="grpc", send_compression="gzip"
    ) as client:
        stream = client.count(
            pb.CountRequest(n=2, text="b", spec=metadata_spec(pb)),
            headers=BIN_HEADERS,
            timeout=10,
        )
        with stream:
            got = list(stream)
        assert [m.text for m in got] == ["b-0", "b-1"]
        check_echoed(got[0].request_headers)
        _check_bin_response(stream.headers, stream.trailers)
        started = time.monotonic()
        with pytest.raises(ConnectError) as raised:
            client.echo(pb.EchoRequest(spec=pb.CallSpec(delay_ms=3000)), timeout=0.3)
        assert raised.value.code is Code.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2
