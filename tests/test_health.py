"""Health checking (``protoc_gen_connect_python.batteries``): the store, the
services and the probe route, against real peers.

- the ``Health`` store and both ``Watch`` handlers, driven directly;
- grpcio-health-checking's stub (Check and Watch) against the example app
  (``examples/server.py`` through ``health_app.py``, which adds a route to
  change statuses inside the server) on hypercorn, pyvoy and pyvoy's WSGI;
- our clients over Connect, gRPC and gRPC-Web against the example on ASGI
  and WSGI servers, and against a grpcio health server;
- the plain ``/healthz`` route on HTTP/1.1-only servers (uvicorn, gunicorn);
- grpcio's health and reflection modules imported beside ours, in either
  order, and our schemas matching theirs field for field.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from example_env import generate_example
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2 as grpc_health_pb2
from grpc_health.v1 import health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import WSGI_SERVERS, Server, free_port, run_server

from protoc_gen_connect_python.batteries import (
    Health,
    HealthClient,
    HealthClientSync,
    HealthService,
    HealthServiceSync,
    ServingStatus,
    WSGIHealthProbe,
)
from protoc_gen_connect_python.batteries import health_pb2 as ours
from protoc_gen_connect_python.batteries.health import HEALTH_WATCH
from protoc_gen_connect_python.runtime import (
    Code,
    ConnectError,
    Headers,
    RequestContext,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GREET = "greet.v1.GreetService"
WAIT = 20.0  # seconds any single step may take before the test fails
CONTROL = "/test-control/health"  # health_app.py's control route


# --- the store and the handlers, driven directly ------------------------------


def test_store_reports_set_removed_and_shut_down_statuses() -> None:
    health = Health()
    assert health.status("") is ServingStatus.SERVING
    assert health.status(GREET) is None
    health.set(GREET, ServingStatus.NOT_SERVING)
    assert health.statuses() == {
        "": ServingStatus.SERVING,
        GREET: ServingStatus.NOT_SERVING,
    }
    health.shutdown()
    health.set(GREET, ServingStatus.SERVING)  # recorded, not reported
    assert health.statuses() == {
        "": ServingStatus.NOT_SERVING,
        GREET: ServingStatus.NOT_SERVING,
    }
    health.resume()
    assert health.status(GREET) is ServingStatus.SERVING
    health.remove(GREET)
    assert health.status(GREET) is None
    with pytest.raises(ValueError, match="remove"):
        health.set(GREET, ServingStatus.SERVICE_UNKNOWN)


def test_served_services_start_serving_unless_set_before() -> None:
    from protoc_gen_connect_python.runtime import WSGIApp

    health = Health(ServingStatus.NOT_SERVING)
    health.set("grpc.health.v1.Health", ServingStatus.NOT_SERVING)
    WSGIApp(HealthServiceSync(health))
    assert health.statuses() == {
        "": ServingStatus.NOT_SERVING,
        "grpc.health.v1.Health": ServingStatus.NOT_SERVING,
    }
    health.remove("grpc.health.v1.Health")
    WSGIApp(HealthServiceSync(health))
    assert health.status("grpc.health.v1.Health") is ServingStatus.SERVING


def _ctx(deadline: float | None = None) -> RequestContext:
    return RequestContext(HEALTH_WATCH, "connect", Headers(), deadline=deadline)


def test_async_watch_sends_the_status_then_each_change_once() -> None:
    health = Health()
    service = HealthService(health)

    async def run() -> list[ServingStatus]:
        stream = service.watch(ours.HealthCheckRequest(service=GREET), _ctx())
        seen = [(await asyncio.wait_for(anext(stream), WAIT)).status]
        # From another thread, as an application would; the second set
        # repeats the status and must not produce a message.
        for status in (ServingStatus.SERVING, ServingStatus.SERVING):
            thread = threading.Thread(target=health.set, args=(GREET, status))
            thread.start()
            thread.join(WAIT)
        seen.append((await asyncio.wait_for(anext(stream), WAIT)).status)
        health.set(GREET, ServingStatus.NOT_SERVING)
        seen.append((await asyncio.wait_for(anext(stream), WAIT)).status)
        health.shutdown()
        health.remove(GREET)
        seen.append((await asyncio.wait_for(anext(stream), WAIT)).status)
        return seen

    assert asyncio.run(run()) == [
        ServingStatus.SERVICE_UNKNOWN,
        ServingStatus.SERVING,
        ServingStatus.NOT_SERVING,
        ServingStatus.SERVICE_UNKNOWN,
    ]


def test_sync_watch_follows_changes_made_by_another_thread() -> None:
    health = Health()
    stream = HealthServiceSync(health).watch(ours.HealthCheckRequest(), _ctx())
    assert next(stream).status == ServingStatus.SERVING
    timer = threading.Timer(0.01, health.shutdown)
    timer.start()
    assert next(stream).status == ServingStatus.NOT_SERVING
    timer.join(WAIT)


@pytest.mark.parametrize("bound", ["watch_seconds", "deadline"])
def test_sync_watch_ends_by_its_bound(bound: str) -> None:
    health = Health()
    if bound == "watch_seconds":
        service, ctx = HealthServiceSync(health, watch_seconds=0.05), _ctx()
    else:
        service, ctx = HealthServiceSync(health), _ctx(time.monotonic() + 0.05)
    replies = list(service.watch(ours.HealthCheckRequest(), ctx))
    assert [r.status for r in replies] == [ServingStatus.SERVING]
    with pytest.raises(ValueError):
        HealthServiceSync(health, watch_seconds=0)


# --- the example app on real servers -----------------------------------------------


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_example(tmp_path_factory.mktemp("gen"))


@contextmanager
def example(server: str, gen: Path) -> Iterator[Server]:
    """The example (with its control route) on ``server``."""
    app = "health_app:" + ("wsgi_app" if server in WSGI_SERVERS else "app")
    with run_server(server, app, pythonpath=[gen, EXAMPLES]) as srv:
        yield srv


def control(url: str, command: str) -> None:
    """Change the example's health store inside the server process."""
    req = urllib.request.Request(url + CONTROL, data=command.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=WAIT) as res:
        assert res.status == 204


@pytest.fixture(scope="module", params=["hypercorn", "pyvoy", "pyvoy-wsgi"])
def h2c_server(request: pytest.FixtureRequest, gen: Path) -> Iterator[Server]:
    """The example on a server that speaks gRPC over cleartext HTTP/2."""
    with example(request.param, gen) as srv:
        yield srv


@pytest.fixture
def grpcio_stub(h2c_server: Server) -> Iterator[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{h2c_server.port}") as channel:
        yield health_pb2_grpc.HealthStub(channel)
    control(h2c_server.url, "resume")
    control(h2c_server.url, f"{GREET}=SERVING")
    control(h2c_server.url, "other.v1.Service=remove")


def test_grpcio_check_against_our_app(grpcio_stub: Any, h2c_server: Server) -> None:
    serving = grpc_health_pb2.HealthCheckResponse.SERVING
    for name in ("", GREET, "grpc.reflection.v1.ServerReflection"):
        req = grpc_health_pb2.HealthCheckRequest(service=name)
        assert grpcio_stub.Check(req, timeout=WAIT).status == serving
    with pytest.raises(grpc.RpcError) as info:
        req = grpc_health_pb2.HealthCheckRequest(service="other.v1.Service")
        grpcio_stub.Check(req, timeout=WAIT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    control(h2c_server.url, "shutdown")
    req = grpc_health_pb2.HealthCheckRequest(service=GREET)
    reply = grpcio_stub.Check(req, timeout=WAIT)
    assert reply.status == grpc_health_pb2.HealthCheckResponse.NOT_SERVING


def test_grpcio_watch_against_our_app(grpcio_stub: Any, h2c_server: Server) -> None:
    status = grpc_health_pb2.HealthCheckResponse
    greet = grpcio_stub.Watch(
        grpc_health_pb2.HealthCheckRequest(service=GREET), timeout=WAIT
    )
    other = grpcio_stub.Watch(
        grpc_health_pb2.HealthCheckRequest(service="other.v1.Service"), timeout=WAIT
    )
    assert next(greet).status == status.SERVING
    assert next(other).status == status.SERVICE_UNKNOWN
    control(h2c_server.url, f"{GREET}=NOT_SERVING")
    assert next(greet).status == status.NOT_SERVING
    control(h2c_server.url, "other.v1.Service=SERVING")
    assert next(other).status == status.SERVING
    control(h2c_server.url, "shutdown")
    assert next(other).status == status.NOT_SERVING
    greet.cancel()
    other.cancel()


CLIENT_CASES = [
    ("hypercorn", "connect", "1.1"),
    ("hypercorn", "grpc", "2"),
    ("hypercorn", "grpc-web", "1.1"),
    ("gunicorn", "connect", "1.1"),
    ("gunicorn", "grpc-web", "1.1"),
    ("pyvoy-wsgi", "grpc", "2"),
]


@pytest.fixture(scope="module")
def any_server(gen: Path) -> Iterator[dict[str, Server]]:
    """The example on each server CLIENT_CASES needs, started once."""
    with ExitStack() as stack:
        names = dict.fromkeys(s for s, _, _ in CLIENT_CASES)
        yield {n: stack.enter_context(example(n, gen)) for n in names}


@pytest.mark.parametrize(("server", "protocol", "version"), CLIENT_CASES)
def test_our_clients_against_our_app(
    any_server: dict[str, Server], server: str, protocol: Any, version: Any
) -> None:
    url = any_server[server].url
    with HealthClientSync(url, protocol=protocol, http_version=version) as client:
        reply = client.check(ours.HealthCheckRequest(service=GREET), timeout=WAIT)
        assert reply.status == ServingStatus.SERVING
        with pytest.raises(ConnectError) as info:
            client.check(ours.HealthCheckRequest(service="nope.v1.S"), timeout=WAIT)
        assert info.value.code is Code.NOT_FOUND
        listed = client.list(ours.HealthListRequest(), timeout=WAIT).statuses
        assert {n: s.status for n, s in listed.items()} == {
            "": ServingStatus.SERVING,
            GREET: ServingStatus.SERVING,
            "grpc.health.v1.Health": ServingStatus.SERVING,
            "grpc.reflection.v1.ServerReflection": ServingStatus.SERVING,
            "grpc.reflection.v1alpha.ServerReflection": ServingStatus.SERVING,
        }

    async def watch() -> list[ServingStatus]:
        async with HealthClient(url, protocol=protocol, http_version=version) as c:
            seen = []
            stream = c.watch(ours.HealthCheckRequest(service=GREET), timeout=WAIT)
            async with stream:
                seen.append((await anext(stream)).status)
                # The control call comes from another thread: the loop must
                # keep reading the stream meanwhile.
                await asyncio.to_thread(control, url, f"{GREET}=NOT_SERVING")
                seen.append((await anext(stream)).status)
            return seen

    try:
        assert asyncio.run(watch()) == [
            ServingStatus.SERVING,
            ServingStatus.NOT_SERVING,
        ]
    finally:
        control(url, f"{GREET}=SERVING")


# --- the plain HTTP probe ----------------------------------------------------------


def probe(url: str, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as res:
            return res.status, res.read().decode(), dict(res.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_http_probe_on_http1_servers(gen: Path, server: str) -> None:
    with example(server, gen) as srv:
        base = srv.url + "/healthz"
        assert probe(base)[:2] == (200, "SERVING\n")
        assert probe(f"{base}?service={GREET}")[:2] == (200, "SERVING\n")
        assert probe(f"{base}?service=nope.v1.S")[:2] == (404, "SERVICE_UNKNOWN\n")
        control(srv.url, f"{GREET}=NOT_SERVING")
        assert probe(f"{base}?service={GREET}")[:2] == (503, "NOT_SERVING\n")
        assert probe(base)[:2] == (200, "SERVING\n")
        control(srv.url, "shutdown")
        assert probe(base)[:2] == (503, "NOT_SERVING\n")
        status, body, headers = probe(base, "HEAD")
        assert (status, body, headers["content-length"]) == (503, "", "12")
        status, _, headers = probe(base, "POST")
        assert (status, headers["allow"]) == (405, "GET, HEAD")


# --- our clients against grpcio's health server -----------------------------------


@pytest.fixture(scope="module")
def grpcio_server() -> Iterator[tuple[str, Any]]:
    servicer = grpc_health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    servicer.set("", grpc_health_pb2.HealthCheckResponse.SERVING)
    try:
        yield f"http://127.0.0.1:{port}", servicer
    finally:
        server.stop(None).wait(WAIT)


def test_our_sync_client_against_grpcio(grpcio_server: tuple[str, Any]) -> None:
    url, servicer = grpcio_server
    servicer.set(GREET, grpc_health_pb2.HealthCheckResponse.NOT_SERVING)
    with HealthClientSync(url, protocol="grpc", http_version="2") as client:
        assert client.check(ours.HealthCheckRequest(), timeout=WAIT).status == (
            ServingStatus.SERVING
        )
        req = ours.HealthCheckRequest(service=GREET)
        assert client.check(req, timeout=WAIT).status == ServingStatus.NOT_SERVING
        with pytest.raises(ConnectError) as info:
            client.check(ours.HealthCheckRequest(service="nope"), timeout=WAIT)
        assert info.value.code is Code.NOT_FOUND


def test_our_async_client_watches_grpcio(grpcio_server: tuple[str, Any]) -> None:
    url, servicer = grpcio_server
    servicer.set(GREET, grpc_health_pb2.HealthCheckResponse.SERVING)

    async def watch() -> list[ServingStatus]:
        async with HealthClient(url, protocol="grpc", http_version="2") as client:
            stream = client.watch(ours.HealthCheckRequest(service=GREET), timeout=WAIT)
            async with stream:
                seen = [(await anext(stream)).status]
                servicer.set(GREET, grpc_health_pb2.HealthCheckResponse.NOT_SERVING)
                seen.append((await anext(stream)).status)
                return seen

    assert asyncio.run(watch()) == [ServingStatus.SERVING, ServingStatus.NOT_SERVING]


# --- living beside grpcio's modules --------------------------------------------------

BOTH_ORDERS = {
    "grpcio first": ["grpc_health.v1.health_pb2", "grpc_reflection.v1alpha.reflection_pb2",
                     "protoc_gen_connect_python.batteries"],
    "ours first": ["protoc_gen_connect_python.batteries",
                   "grpc_health.v1.health_pb2", "grpc_reflection.v1alpha.reflection_pb2"],
}  # fmt: skip

CHECK_BOTH = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2 as theirs, health
from protoc_gen_connect_python.batteries import health_pb2 as ours, Health, HealthService
from protoc_gen_connect_python.batteries._pool import POOL
from protoc_gen_connect_python.runtime import ASGIApp
# Each side's messages work and keep to their own pool.
data = theirs.HealthCheckResponse(status=theirs.HealthCheckResponse.SERVING).SerializeToString()
assert ours.HealthCheckResponse.FromString(data).status == ours.HealthCheckResponse.SERVING
assert theirs.DESCRIPTOR.pool is descriptor_pool.Default()
assert ours.DESCRIPTOR.pool is POOL
default = descriptor_pool.Default()
assert default.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest").file.name == theirs.DESCRIPTOR.name
health.HealthServicer()
ASGIApp(HealthService(Health()))
print("ok")
"""


@pytest.mark.parametrize("order", BOTH_ORDERS)
def test_grpcio_modules_and_ours_import_in_either_order(order: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK_BOTH, *BOTH_ORDERS[order]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def _shape(file: FileDescriptor) -> Any:
    """What the wire depends on: packages, names, numbers, types, streaming."""
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)

    def fields(m: descriptor_pb2.DescriptorProto) -> Any:
        return (
            m.name,
            [(f.name, f.number, f.type, f.label, f.type_name) for f in m.field],
            [(e.name, [(v.name, v.number) for v in e.value]) for e in m.enum_type],
            [fields(n) for n in m.nested_type],
        )

    services = [
        (s.name, [(x.name, x.input_type, x.output_type, x.client_streaming,
                   x.server_streaming) for x in s.method])
        for s in proto.service
    ]  # fmt: skip
    return proto.package, [fields(m) for m in proto.message_type], services


def test_our_schemas_match_grpcio_field_for_field() -> None:
    from grpc_reflection.v1alpha import reflection_pb2 as theirs_reflection

    from protoc_gen_connect_python.batteries import reflection_v1alpha_pb2

    assert _shape(ours.DESCRIPTOR) == _shape(grpc_health_pb2.DESCRIPTOR)
    assert _shape(reflection_v1alpha_pb2.DESCRIPTOR) == _shape(
        theirs_reflection.DESCRIPTOR
    )


def test_generated_message_modules_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_batteries.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (
        done.stderr + "\nrun: .venv/bin/python scripts/gen_batteries.py"
    )


# --- the probe route with any request a peer can send -------------------------


@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS", "get", ""]),
    query=st.text(max_size=60)
    | st.lists(st.sampled_from(["service=", GREET, "&", "=", "%", "x"])).map("".join),
)
@settings(max_examples=300, deadline=None)
def test_probe_answers_any_request(method: str, query: str) -> None:
    health = Health()
    health.set(GREET, ServingStatus.NOT_SERVING)

    def inner(environ: Any, start_response: Any) -> list[bytes]:
        raise AssertionError("the probe path must not reach the app")

    started: list[tuple[str, list[tuple[str, str]]]] = []
    environ = {"PATH_INFO": "/healthz", "REQUEST_METHOD": method, "QUERY_STRING": query}
    body = b"".join(
        WSGIHealthProbe(inner, health)(environ, lambda s, h: started.append((s, h)))
    )
    ((status, headers),) = started
    code = int(status.split()[0])
    assert code in (200, 400, 404, 405, 503)
    if method == "HEAD" and code != 405:
        assert body == b""  # the length is that of the GET body
    else:
        assert dict(headers)["content-length"] == str(len(body))
    if code == 405:
        assert method not in ("GET", "HEAD")
    elif method == "GET":
        assert body.decode().strip() in (
            "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN", "malformed query string"
        )  # fmt: skip
