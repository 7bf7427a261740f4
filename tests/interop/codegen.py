"""Generate the code for ``interop.proto`` at test time.

Messages (``interop.v1.interop_pb2``), this repo's Connect code
(``interop_connect``), a FileDescriptorSet for the node side and, when asked,
grpcio's stubs (``interop_pb2_grpc``), all with protoc from grpcio-tools.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

INTEROP = Path(__file__).resolve().parent
ROOT = INTEROP.parent.parent
PROTO_DIR = INTEROP / "proto"
PROTO_FILE = "interop/v1/interop.proto"


@dataclass(frozen=True)
class Generated:
    """Where the Python code and the FileDescriptorSet for interop.proto went."""

    python: Path
    descriptor: Path


def generate(out: Path, *, grpc_stubs: bool = False) -> Generated:
    """Run protoc into ``out``; raises RuntimeError with its output on failure."""
    plugin = out / "protoc-gen-connect-python"
    plugin.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m protoc_gen_connect_python "$@"\n'
    )
    plugin.chmod(0o755)
    descriptor = out / "interop.binpb"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--plugin=protoc-gen-connect-python={plugin}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--connect-python_out={out}",
        "--include_imports",
        f"--descriptor_set_out={descriptor}",
    ]
    if grpc_stubs:
        cmd.append(f"--grpc_python_out={out}")
    cmd.append(PROTO_FILE)
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed:\n{done.stdout}{done.stderr}")
    return Generated(python=out, descriptor=descriptor)


def forget_modules() -> None:
    """Drop the generated and service modules from ``sys.modules``."""
    for name in list(sys.modules):
        if name in ("interop", "py_service", "py_scenarios", "grpcio_service") or (
            name.startswith("interop.")
        ):
            del sys.modules[name]
