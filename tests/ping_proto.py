"""Compiles ``tests/proto/testing/v1/ping.proto`` for the server tests, once.

``load()`` generates ``testing/v1/ping_pb2.py`` with grpc_tools' protoc into a
temporary directory named after the proto's hash (so test processes and the
server processes they start share one copy), puts it on ``sys.path`` and
returns the module.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

PROTO_ROOT = Path(__file__).parent / "proto"
PROTO = PROTO_ROOT / "testing" / "v1" / "ping.proto"


def generated_dir() -> Path:
    """Where the generated module lives; created on first use."""
    digest = hashlib.sha256(PROTO.read_bytes()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"pgcp-ping-proto-{digest}"
    if not (out / "testing" / "v1" / "ping_pb2.py").exists():
        work = Path(tempfile.mkdtemp(prefix="pgcp-ping-proto-"))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={work}",
                str(PROTO),
            ],
            check=True,
        )
        for d in (work / "testing", work / "testing" / "v1"):
            (d / "__init__.py").touch()
        try:
            os.rename(work, out)
        except OSError:
            # Another process won the race; its copy is identical.
            shutil.rmtree(work, ignore_errors=True)
    return out


def load() -> ModuleType:
    """The ``testing.v1.ping_pb2`` module."""
    path = str(generated_dir())
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("testing.v1.ping_pb2")
