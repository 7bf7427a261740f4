"""The descriptor pool the batteries' messages live in, apart from the default one.

grpcio-health-checking and grpcio-reflection register the same message names
(``grpc.health.v1.HealthCheckRequest``, ...) in protobuf's default pool, and
the default pool refuses a second definition of a name. Ours go into a pool of
their own, so either package can be imported first, or alone, and both work.
The wire format does not care which pool a message class came from.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import Message

POOL = descriptor_pool.DescriptorPool()
"""Holds grpc/health/v1/health.proto and both grpc/reflection/*/reflection.proto."""


def add_file(serialized: bytes) -> tuple[FileDescriptor, dict[str, type[Message]]]:
    """Add a serialized ``FileDescriptorProto`` to ``POOL``.

    Returns the file and its top-level message classes by name (nested
    messages and enums are attributes of those classes).
    """
    proto = descriptor_pb2.FileDescriptorProto.FromString(serialized)
    POOL.Add(proto)
    file = POOL.FindFileByName(proto.name)
    classes = {
        name: _message_class(d) for name, d in file.message_types_by_name.items()
    }
    return file, classes


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)
