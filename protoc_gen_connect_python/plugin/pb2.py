"""The ``protoc-gen-connect-python-pb2`` entry point: protobuf's own Python output.

buf runs protoc's built-in generators (``protoc_builtin: python``) through a
``protoc`` program, and grpcio-tools ships protoc as a Python module, not a
program. This plugin closes the gap: it takes buf's (or protoc's)
``CodeGeneratorRequest``, hands the descriptors to grpcio-tools' protoc with
``--descriptor_set_in`` and returns the ``*_pb2.py`` and ``*_pb2.pyi`` files it
writes, unchanged. It needs the ``grpcio-tools`` package, nothing else.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from protoc_gen_connect_python.plugin.main import new_response, serve

NAME = "protoc-gen-connect-python-pb2"
# protoc compiles a large file set in about a second; this only bounds a hang.
PROTOC_TIMEOUT = 300.0


def _protoc_command() -> list[str] | None:
    """How to run grpcio-tools' protoc, or None when it is not installed."""
    try:
        import grpc_tools.protoc  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "grpc_tools.protoc"]


def _default_json_name(name: str) -> str:
    """protoc's JSON name of a field: underscores dropped, the next letter upper."""
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def _drop_default_json_names(
    fields: Iterable[descriptor_pb2.FieldDescriptorProto],
    messages: Iterable[descriptor_pb2.DescriptorProto],
) -> None:
    # buf fills in every json_name; protoc keeps only those the .proto sets.
    # Dropping the default ones makes the embedded descriptors, and so the
    # *_pb2.py files, the same as protoc's own --python_out writes.
    for f in fields:
        if f.json_name == _default_json_name(f.name):
            f.ClearField("json_name")
    for message in messages:
        _drop_default_json_names(
            (*message.field, *message.extension), message.nested_type
        )


def generate(
    request: plugin_pb2.CodeGeneratorRequest,
) -> plugin_pb2.CodeGeneratorResponse:
    """``--python_out`` and ``--pyi_out`` for the requested files, via grpcio-tools."""
    response = new_response()
    if request.parameter:
        response.error = f"{NAME}: takes no parameters (got {request.parameter!r})"
        return response
    command = _protoc_command()
    if command is None:
        response.error = (
            f"{NAME}: the grpcio-tools package is not installed in this "
            f"Python ({sys.executable}); pip install grpcio-tools"
        )
        return response
    with tempfile.TemporaryDirectory(prefix="connect-pb2-") as tmp:
        work = Path(tmp)
        descriptors = work / "descriptors.binpb"
        files = descriptor_pb2.FileDescriptorSet(file=request.proto_file)
        for file in files.file:
            _drop_default_json_names(file.extension, file.message_type)
        descriptors.write_bytes(files.SerializeToString())
        out = work / "out"
        out.mkdir()
        try:
            done = subprocess.run(
                [
                    *command,
                    f"--descriptor_set_in={descriptors}",
                    f"--python_out={out}",
                    f"--pyi_out={out}",
                    *request.file_to_generate,
                ],
                capture_output=True,
                text=True,
                timeout=PROTOC_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            response.error = f"{NAME}: grpcio-tools' protoc did not finish in time"
            return response
        if done.returncode != 0:
            said = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
            response.error = f"{NAME}: grpcio-tools' protoc failed: {said}"
            return response
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            response.file.add(
                name=path.relative_to(out).as_posix(), content=path.read_text()
            )
    return response


def run(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Read a request from ``stdin``, write the response to ``stdout``."""
    return serve(NAME, generate, stdin, stdout)


def main() -> int:
    """Console-script entry point."""
    return run(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    raise SystemExit(main())
