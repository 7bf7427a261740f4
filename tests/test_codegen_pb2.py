"""``protoc-gen-connect-python-pb2``: protobuf's Python output as a plugin, for buf."""

from __future__ import annotations

import io
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from protoc_env import protoc

from protoc_gen_connect_python.plugin import pb2

PROTO = """\
syntax = "proto3";
package shop.v1;
import "google/protobuf/timestamp.proto";
message Order {
  message Line { string sku_code = 1; int32 item_count = 2; }
  repeated Line order_lines = 1;
  google.protobuf.Timestamp placed_at = 2;
  string note = 3 [json_name = "remark"];
  oneof pay { string card_token = 4; string iban = 5; }
}
service ShopService { rpc Place(Order) returns (Order); }
"""


def fill_json_names(messages: list[descriptor_pb2.DescriptorProto]) -> None:
    """Set every field's json_name, as buf's requests do."""
    for m in messages:
        for f in m.field:
            if not f.HasField("json_name"):
                parts = f.name.split("_")
                f.json_name = parts[0] + "".join(p.title() for p in parts[1:])
        fill_json_names(list(m.nested_type))


def request_for(tmp_path: Path) -> plugin_pb2.CodeGeneratorRequest:
    (tmp_path / "shop" / "v1").mkdir(parents=True)
    (tmp_path / "shop" / "v1" / "shop.proto").write_text(PROTO)
    out = tmp_path / "set.binpb"
    protoc(f"-I{tmp_path}", "--include_imports", f"-o{out}", "shop/v1/shop.proto")
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    for f in files.file:
        fill_json_names(list(f.message_type))
    return plugin_pb2.CodeGeneratorRequest(
        file_to_generate=["shop/v1/shop.proto"], proto_file=files.file
    )


def test_writes_what_protoc_python_out_writes(tmp_path: Path) -> None:
    response = pb2.generate(request_for(tmp_path))
    assert not response.error
    got = {f.name: f.content for f in response.file}
    assert set(got) == {"shop/v1/shop_pb2.py", "shop/v1/shop_pb2.pyi"}
    direct = tmp_path / "direct"
    direct.mkdir()
    protoc(
        f"-I{tmp_path}", f"--python_out={direct}", f"--pyi_out={direct}",
        "shop/v1/shop.proto",
    )  # fmt: skip
    for name, content in got.items():
        assert content == (direct / name).read_text(), name
    # The json_name the .proto sets is kept.
    assert "remark" in got["shop/v1/shop_pb2.py"]


def test_parameters_are_refused(tmp_path: Path) -> None:
    request = request_for(tmp_path)
    request.parameter = "pyi=false"
    response = pb2.generate(request)
    assert response.error == (
        "protoc-gen-connect-python-pb2: takes no parameters (got 'pyi=false')"
    )
    assert not response.file


def test_protoc_errors_come_back_in_the_error_field(tmp_path: Path) -> None:
    request = request_for(tmp_path)
    # A file to generate that the descriptors do not hold.
    request.file_to_generate.append("shop/v1/missing.proto")
    response = pb2.generate(request)
    assert response.error.startswith(
        "protoc-gen-connect-python-pb2: grpcio-tools' protoc failed: "
    )
    assert "missing.proto" in response.error
    assert not response.file


def test_unreadable_input_fails_the_process() -> None:
    out = io.BytesIO()
    assert pb2.run(io.BytesIO(b"\xff\xff\xff"), out) == 1
    assert out.getvalue() == b""
