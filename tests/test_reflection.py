"""Server reflection (``protoc_gen_connect_python.batteries``), v1 and v1alpha.

- ``Catalog`` answers every kind of request, for services whose files import
  others and for extensions declared in files no service imports (a private
  descriptor pool built with protoc, so nothing leaks into the default one);
- ``buf curl`` lists the example's services and methods and calls it without
  ``--schema``, over gRPC (hypercorn), Connect and gRPC-Web (pyvoy, WSGI);
- grpcio-reflection's descriptor database resolves a service and a message
  through v1alpha; grpcio calls v1 directly; our own client calls both over
  Connect.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from example_env import generate_example
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from protoc_env import protoc
from servers import Server, run_server

from protoc_gen_connect_python.batteries import Catalog, reflection, reflection_sync
from protoc_gen_connect_python.batteries import reflection_v1_pb2 as v1
from protoc_gen_connect_python.batteries import reflection_v1alpha_pb2 as v1alpha
from protoc_gen_connect_python.batteries.reflection import (
    REFLECTION_V1_INFO,
    REFLECTION_V1ALPHA_INFO,
)
from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    MethodSpec,
    ServiceSpec,
    StreamType,
    WSGIApp,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BUF = Path(sys.executable).parent / "buf"
WAIT = 30.0
SERVED = [
    "greet.v1.GreetService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
]

# --- the catalog, on a private pool ------------------------------------------

SHOP = """
syntax = "proto2";
package shop.v1;
import "google/protobuf/timestamp.proto";
message Order {
  optional string id = 1;
  optional google.protobuf.Timestamp placed = 2;
  message Line { optional string sku = 1; }
  repeated Line lines = 3;
  enum State { OPEN = 0; PAID = 1; }
  optional State state = 4;
  extensions 100 to 199;
}
service Shop {
  rpc Place(Order) returns (Order);
}
"""
# Extends Order, but no service's file imports it.
NOTES = """
syntax = "proto2";
package shop.v1;
import "shop/v1/shop.proto";
extend Order { optional string note = 100; optional int32 priority = 101; }
"""


@pytest.fixture(scope="module")
def shop(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ServiceSpec, DescriptorPool]:
    src = tmp_path_factory.mktemp("shop")
    (src / "shop" / "v1").mkdir(parents=True)
    (src / "shop" / "v1" / "shop.proto").write_text(SHOP)
    (src / "shop" / "v1" / "notes.proto").write_text(NOTES)
    out = src / "set.bin"
    protoc(f"-I{src}", "--include_imports", f"--descriptor_set_out={out}",
           "shop/v1/shop.proto", "shop/v1/notes.proto")  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(file)
    order = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.v1.Order"))
    place = MethodSpec(
        service="shop.v1.Shop",
        name="Place",
        python_name="place",
        stream_type=StreamType.UNARY,
        input=order,
        output=order,
    )
    return ServiceSpec(name="shop.v1.Shop", methods=(place,)), pool


def ask(
    catalog: Catalog, sent: set[str], **request: Any
) -> v1.ServerReflectionResponse:
    reply = catalog.answer(v1.ServerReflectionRequest(host="h", **request), sent)
    assert reply.valid_host == "h"
    assert reply.original_request == v1.ServerReflectionRequest(host="h", **request)
    return reply


def names(reply: v1.ServerReflectionResponse) -> list[str]:
    files = reply.file_descriptor_response.file_descriptor_proto
    return [descriptor_pb2.FileDescriptorProto.FromString(f).name for f in files]


def error(reply: v1.ServerReflectionResponse) -> tuple[int, str]:
    assert reply.WhichOneof("message_response") == "error_response"
    return reply.error_response.error_code, reply.error_response.error_message


def test_catalog_lists_and_describes_served_files(
    shop: tuple[ServiceSpec, DescriptorPool],
) -> None:
    spec, _ = shop
    app_reflection = reflection_sync()
    WSGIApp(*app_reflection)  # the batteries' own services, via served_with
    catalog = app_reflection[0].catalog
    assert app_reflection[1].catalog is catalog
    catalog.add((spec, spec))
    assert catalog.services == [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "shop.v1.Shop",
    ]
    assert catalog.files == [
        "grpc/reflection/v1/reflection.proto",
        "grpc/reflection/v1alpha/reflection.proto",
        "shop/v1/shop.proto",
        "google/protobuf/timestamp.proto",
    ]
    sent: set[str] = set()
    listed = ask(catalog, sent, list_services="*").list_services_response.service
    assert [s.name for s in listed] == catalog.services
    # The file and its import; then the import is not sent again.
    reply = ask(catalog, sent, file_containing_symbol="shop.v1.Shop")
    assert names(reply) == ["shop/v1/shop.proto", "google/protobuf/timestamp.proto"]
    for symbol in ("shop.v1.Shop.Place", "shop.v1.Order.Line", "shop.v1.Order.lines",
                   "shop.v1.Order.State", "shop.v1.Order.PAID"):  # fmt: skip
        reply = ask(catalog, sent, file_containing_symbol=symbol)
        assert names(reply) == ["shop/v1/shop.proto"], symbol
    reply = ask(catalog, set(), file_by_filename="google/protobuf/timestamp.proto")
    assert names(reply) == ["google/protobuf/timestamp.proto"]
    # A fresh stream gets the imports again.
    reply = ask(catalog, set(), file_by_filename="shop/v1/shop.proto")
    assert names(reply) == ["shop/v1/shop.proto", "google/protobuf/timestamp.proto"]


def test_catalog_finds_extensions_in_files_no_service_imports(
    shop: tuple[ServiceSpec, DescriptorPool],
) -> None:
    spec, _ = shop
    catalog = Catalog()
    catalog.add((spec,))
    sent: set[str] = set()
    reply = ask(catalog, sent, all_extension_numbers_of_type="shop.v1.Order")
    numbers = reply.all_extension_numbers_response
    assert (numbers.base_type_name, list(numbers.extension_number)) == (
        "shop.v1.Order",
        [100, 101],
    )
    ext = v1.ExtensionRequest(containing_type="shop.v1.Order", extension_number=101)
    reply = ask(catalog, sent, file_containing_extension=ext)
    assert names(reply) == [
        "shop/v1/notes.proto",
        "shop/v1/shop.proto",
        "google/protobuf/timestamp.proto",
    ]
    assert "shop/v1/notes.proto" in catalog.files


def test_catalog_errors(shop: tuple[ServiceSpec, DescriptorPool]) -> None:
    spec, _ = shop
    catalog = Catalog()
    catalog.add((spec,))
    sent: set[str] = set()
    not_found = Code.NOT_FOUND.value
    assert error(ask(catalog, sent, file_by_filename="nope.proto")) == (
        not_found,
        "the server does not describe file 'nope.proto'",
    )
    # In the pool, but not served: reflection shows only what the app serves.
    assert error(ask(catalog, sent, file_containing_symbol="google.protobuf.Any"))[
        0
    ] == (not_found)
    assert error(ask(catalog, sent, file_containing_symbol="shop.v1.Nope"))[0] == (
        not_found
    )
    ext = v1.ExtensionRequest(containing_type="shop.v1.Order", extension_number=150)
    assert error(ask(catalog, sent, file_containing_extension=ext))[0] == not_found
    assert error(ask(catalog, sent, all_extension_numbers_of_type="shop.v1.X")) == (
        not_found,
        "unknown message type 'shop.v1.X'",
    )
    assert error(ask(catalog, sent)) == (
        Code.INVALID_ARGUMENT.value,
        "the request asks for nothing",
    )
    assert sent == set()


def test_unfindable_service_is_listed_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ghost = MethodSpec(
        service="ghost.v1.Ghost",
        name="Boo",
        python_name="boo",
        stream_type=StreamType.UNARY,
        input=v1.ServiceResponse,
        output=v1.ServiceResponse,
    )
    catalog = Catalog()
    spec = ServiceSpec(name="ghost.v1.Ghost", methods=(ghost,))
    catalog.add((spec,))
    catalog.add((spec,))
    assert catalog.services == ["ghost.v1.Ghost"]
    assert catalog.files == []
    assert [r.getMessage() for r in caplog.records] == [
        "reflection cannot describe ghost.v1.Ghost: its descriptor is not in the "
        "pool of its messages (import its _pb2 module)"
    ]


# --- the example app, over the wire --------------------------------------------


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_example(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def hypercorn(gen: Path) -> Iterator[Server]:
    """examples/server.py's ASGI app on hypercorn (HTTP/1.1 and h2c)."""
    with run_server("hypercorn", "server:app", pythonpath=[gen, EXAMPLES]) as srv:
        yield srv


@pytest.fixture(scope="module")
def pyvoy_wsgi(gen: Path) -> Iterator[Server]:
    """examples/server.py's WSGI app on pyvoy (h2c)."""
    app = "server:wsgi_app"
    with run_server("pyvoy-wsgi", app, pythonpath=[gen, EXAMPLES]) as srv:
        yield srv


def buf_curl(*args: str) -> str:
    assert BUF.exists(), f"{BUF} is missing: run scripts/setup.sh"
    done = subprocess.run(
        [str(BUF), "curl", *args], capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


GRPC = ("--protocol", "grpc", "--http2-prior-knowledge")


@pytest.mark.parametrize("reflect", ["grpc-v1", "grpc-v1alpha"])
def test_buf_curl_lists_services_over_grpc(hypercorn: Server, reflect: str) -> None:
    out = buf_curl(
        *GRPC, "--reflect-protocol", reflect, "--list-services", hypercorn.url
    )
    assert out.split() == SERVED


def test_buf_curl_lists_methods(hypercorn: Server) -> None:
    out = buf_curl(*GRPC, "--list-methods", hypercorn.url)
    assert out.split() == [
        "greet.v1.GreetService/Greet",
        "greet.v1.GreetService/GreetStream",
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/List",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]


def test_buf_curl_calls_without_schema(hypercorn: Server, pyvoy_wsgi: Server) -> None:
    greet = "/greet.v1.GreetService/Greet"
    out = buf_curl(*GRPC, "-d", '{"name":"Ada"}', hypercorn.url + greet)
    assert '"greeting": "Hello, Ada!"' in out
    # Connect on a WSGI app. Reflection is a bidi stream, which buf curl
    # sends over HTTP/2 only, whatever the protocol.
    h2c = "--http2-prior-knowledge"
    out = buf_curl(h2c, "-d", '{"name":"Bo"}', pyvoy_wsgi.url + greet)
    assert '"greeting": "Hello, Bo!"' in out
    out = buf_curl(h2c, "--protocol", "grpcweb", "--list-services", pyvoy_wsgi.url)
    assert out.split() == SERVED


@pytest.fixture(params=["hypercorn", "pyvoy-wsgi"])
def channel(request: pytest.FixtureRequest, gen: Path) -> Iterator[grpc.Channel]:
    app = "server:wsgi_app" if request.param == "pyvoy-wsgi" else "server:app"
    with (
        run_server(request.param, app, pythonpath=[gen, EXAMPLES]) as srv,
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch,
    ):
        yield ch


def test_grpcio_descriptor_database_resolves_service_and_message(
    channel: grpc.Channel,
) -> None:
    db = ProtoReflectionDescriptorDatabase(channel)
    assert db.get_services() == SERVED
    pool = DescriptorPool(db)
    service = pool.FindServiceByName("greet.v1.GreetService")
    assert [m.name for m in service.methods] == ["Greet", "GreetStream"]
    assert service.methods_by_name["GreetStream"].output_type.full_name == (
        "greet.v1.GreetResponse"
    )
    message = pool.FindMessageTypeByName("greet.v1.GreetResponse")
    time_type = message.fields_by_name["time"].message_type
    assert time_type is not None
    assert time_type.full_name == "google.protobuf.Timestamp"
    health = pool.FindMethodByName("grpc.health.v1.Health.Watch")
    assert health.output_type.name == "HealthCheckResponse"


def test_grpcio_calls_v1_directly(channel: grpc.Channel) -> None:
    info = channel.stream_stream(
        REFLECTION_V1_INFO.procedure,
        request_serializer=v1.ServerReflectionRequest.SerializeToString,
        response_deserializer=v1.ServerReflectionResponse.FromString,
    )
    requests = [
        v1.ServerReflectionRequest(list_services=""),
        v1.ServerReflectionRequest(file_containing_symbol="greet.v1.GreetService"),
        v1.ServerReflectionRequest(file_containing_symbol="greet.v1.Nope"),
    ]
    listed, files, missing = list(info(iter(requests), timeout=WAIT))
    assert [s.name for s in listed.list_services_response.service] == SERVED
    assert names(files) == ["greet/v1/greet.proto", "google/protobuf/timestamp.proto"]
    assert error(missing)[0] == Code.NOT_FOUND.value


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_our_client_calls_both_versions_over_connect(
    hypercorn: Server, version: str
) -> None:
    module: Any = v1 if version == "v1" else v1alpha
    spec = REFLECTION_V1_INFO if version == "v1" else REFLECTION_V1ALPHA_INFO

    async def call() -> list[Any]:
        async with AsyncClient(hypercorn.url, http_version="2") as client:
            requests = [
                module.ServerReflectionRequest(file_by_filename="greet/v1/greet.proto"),
                module.ServerReflectionRequest(file_by_filename="greet/v1/greet.proto"),
            ]
            stream = client.call_bidi_stream(spec, requests, timeout=WAIT)
            return [r async for r in stream]

    first, second = asyncio.run(call())
    assert isinstance(first, module.ServerReflectionResponse)
    assert names(v1.ServerReflectionResponse.FromString(first.SerializeToString())) == [
        "greet/v1/greet.proto",
        "google/protobuf/timestamp.proto",
    ]
    # Within one stream, the import is sent once.
    assert names(
        v1.ServerReflectionResponse.FromString(second.SerializeToString())
    ) == ["greet/v1/greet.proto"]


def test_async_and_sync_reflection_pairs_share_a_catalog() -> None:
    for pair in (reflection(), reflection_sync()):
        assert pair[0].catalog is pair[1].catalog
        assert pair[0].service_spec.name == "grpc.reflection.v1.ServerReflection"
        assert pair[1].service_spec.name == "grpc.reflection.v1alpha.ServerReflection"


# --- any request a peer can send ----------------------------------------------------

_text = st.text(max_size=40) | st.sampled_from(
    ["", ".", "..", "shop.v1.Shop", "shop.v1.Shop.Place", "shop.v1.Order.",
     "shop/v1/shop.proto", "google/protobuf/timestamp.proto", "grpc.health.v1.Health"]
)  # fmt: skip
_requests = st.one_of(
    st.builds(v1.ServerReflectionRequest, host=_text),
    st.builds(v1.ServerReflectionRequest, file_by_filename=_text),
    st.builds(v1.ServerReflectionRequest, file_containing_symbol=_text),
    st.builds(v1.ServerReflectionRequest, all_extension_numbers_of_type=_text),
    st.builds(v1.ServerReflectionRequest, list_services=_text),
    st.builds(
        v1.ServerReflectionRequest,
        file_containing_extension=st.builds(
            v1.ExtensionRequest,
            containing_type=_text,
            extension_number=st.integers(-(2**31), 2**31 - 1),
        ),
    ),
)


@given(requests=st.lists(_requests, max_size=6))
@settings(max_examples=200, deadline=None)
def test_catalog_answers_any_request(
    shop: tuple[ServiceSpec, DescriptorPool], requests: list[Any]
) -> None:
    spec, _ = shop
    catalog = Catalog()
    catalog.add((spec,))
    sent: set[str] = set()
    for request in requests:
        before = set(sent)
        reply = catalog.answer(request, sent)
        assert reply.original_request == request
        kind = reply.WhichOneof("message_response")
        if kind == "error_response":
            assert reply.error_response.error_code in (
                Code.NOT_FOUND.value,
                Code.INVALID_ARGUMENT.value,
            )
        elif kind == "file_descriptor_response":
            # Files the catalog describes; imports once a stream.
            first, *imports = names(reply)
            assert {first, *imports} <= set(catalog.files)
            assert not set(imports) & before
        else:
            assert kind in ("list_services_response", "all_extension_numbers_response")
    assert sent <= set(catalog.files)


def test_generated_names_keep_clear_of_the_served_with_hook() -> None:
    from protoc_gen_connect_python.plugin.model import runtime_attributes

    assert "served_with" in runtime_attributes()
