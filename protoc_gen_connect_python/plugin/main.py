"""The ``protoc-gen-connect-python`` entry point.

protoc (or buf) runs the plugin with a serialized ``CodeGeneratorRequest`` on
stdin and reads a ``CodeGeneratorResponse`` from stdout. Problems with the
request's content are reported in the response's ``error`` field, as protoc
expects; only unreadable input makes the process fail.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import BinaryIO

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from google.protobuf.message import DecodeError

from protoc_gen_connect_python.plugin import model
from protoc_gen_connect_python.plugin.options import OptionsError, parse
from protoc_gen_connect_python.plugin.render import Renderer

# Editions the generator has been checked against (descriptor.proto's Edition enum).
MINIMUM_EDITION = descriptor_pb2.EDITION_PROTO2
MAXIMUM_EDITION = descriptor_pb2.EDITION_2023


def new_response() -> plugin_pb2.CodeGeneratorResponse:
    """An empty response that declares the features this package's plugins support."""
    return plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
        | plugin_pb2.CodeGeneratorResponse.FEATURE_SUPPORTS_EDITIONS,
        minimum_edition=MINIMUM_EDITION,
        maximum_edition=MAXIMUM_EDITION,
    )


def generate(
    request: plugin_pb2.CodeGeneratorRequest,
) -> plugin_pb2.CodeGeneratorResponse:
    """Build the response for a request: one module per requested file with services."""
    response = new_response()
    try:
        options = parse(request.parameter)
    except OptionsError as e:
        response.error = f"protoc-gen-connect-python: {e}"
        return response
    try:
        renderer = Renderer(options.templates)
        types = model.TypeIndex(request.proto_file)
        by_name = {f.name: f for f in request.proto_file}
        for name in request.file_to_generate:
            proto = by_name[name]
            if not proto.service:
                continue
            file = model.build_file(proto, types, options)
            response.file.add(name=file.output, content=renderer.render(file))
    except Exception as e:
        # protoc shows the error field to the user as is: keep it to one line.
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        response.error = f"protoc-gen-connect-python: {type(e).__name__}: {message}"
        response.ClearField("file")
    return response


def serve(
    name: str,
    make: Callable[[plugin_pb2.CodeGeneratorRequest], plugin_pb2.CodeGeneratorResponse],
    stdin: BinaryIO,
    stdout: BinaryIO,
) -> int:
    """Read a request from ``stdin``, write ``make``'s response to ``stdout``."""
    data = stdin.read()
    request = plugin_pb2.CodeGeneratorRequest()
    try:
        request.ParseFromString(data)
    except DecodeError:
        request.Clear()
    known = {f.name for f in request.proto_file}
    if not request.file_to_generate or not known.issuperset(request.file_to_generate):
        print(
            f"{name}: stdin is not a CodeGeneratorRequest; "
            "run this plugin through protoc or buf",
            file=sys.stderr,
        )
        return 1
    stdout.write(make(request).SerializeToString())
    stdout.flush()
    return 0


def run(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Read a request from ``stdin``, write the response to ``stdout``."""
    return serve("protoc-gen-connect-python", generate, stdin, stdout)


def main() -> int:
    """Console-script entry point: protoc's plugin protocol on stdin/stdout."""
    return run(sys.stdin.buffer, sys.stdout.buffer)
