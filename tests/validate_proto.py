"""Generates ``tests/proto/users/v1/users.proto`` for the validation tests.

The proto imports ``buf/validate/validate.proto``. No copy of it is kept here:
protovalidate carries that file's descriptor, so it is written, with its
``google/protobuf`` imports, into a descriptor set that protoc reads as
``--descriptor_set_in``. From it protoc makes ``buf/validate/validate_pb2.py``
(the ``Violations`` type clients read error details with), the test proto's
``users_pb2.py`` and ``users_connect.py`` (with this repo's plugin), and a
descriptor set with every import for connect-node. All of it goes into a
temporary directory.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from example_env import PLUGIN
from google.protobuf import (
    descriptor_pb2,
    duration_pb2,
    field_mask_pb2,
    timestamp_pb2,
)

PROTO_ROOT = Path(__file__).parent / "proto"
PROTO = "users/v1/users.proto"
VALIDATE_PROTO = "buf/validate/validate.proto"


@dataclass(frozen=True)
class Generated:
    """Where the generated code is, and its modules once imported."""

    root: Path
    descriptor: Path
    users_pb2: ModuleType
    users_connect: ModuleType
    validate_pb2: ModuleType


def _validate_descriptor_set() -> bytes:
    # protovalidate's own copy of buf/validate/validate.proto, as a descriptor.
    from protovalidate._gen.buf.validate import validate_pb

    fds = descriptor_pb2.FileDescriptorSet()
    for dep in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        fds.file.add().ParseFromString(dep.DESCRIPTOR.serialized_pb)
    fds.file.add().ParseFromString(validate_pb.desc().proto.to_binary())
    return fds.SerializeToString()


def generate(out: Path) -> Generated:
    """Run protoc into ``out`` and import the results; fails loudly."""
    deps = out / "validate-deps.binpb"
    deps.write_bytes(_validate_descriptor_set())
    descriptor = out / "users.binpb"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--descriptor_set_in={deps}",
        f"--plugin=protoc-gen-connect-python={PLUGIN}",
        f"--python_out={out}",
        f"--connect-python_out={out}",
        "--include_imports",
        f"--descriptor_set_out={descriptor}",
        PROTO,
        VALIDATE_PROTO,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed:\n{done.stdout}{done.stderr}")
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return Generated(
        root=out,
        descriptor=descriptor,
        users_pb2=importlib.import_module("users.v1.users_pb2"),
        users_connect=importlib.import_module("users.v1.users_connect"),
        validate_pb2=importlib.import_module("buf.validate.validate_pb2"),
    )
