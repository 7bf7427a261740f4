"""Method and service specs: what generated code declares once per RPC."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError

I = TypeVar("I", bound=Message)  # noqa: E741
O = TypeVar("O", bound=Message)  # noqa: E741


class StreamType(enum.Enum):
    """The four kinds of RPC."""

    UNARY = "unary"
    CLIENT_STREAM = "client_stream"
    SERVER_STREAM = "server_stream"
    BIDI_STREAM = "bidi_stream"

    @property
    def client_streams(self) -> bool:
        """Whether the client sends a stream of messages."""
        return self in (StreamType.CLIENT_STREAM, StreamType.BIDI_STREAM)

    @property
    def server_streams(self) -> bool:
        """Whether the server sends a stream of messages."""
        return self in (StreamType.SERVER_STREAM, StreamType.BIDI_STREAM)


class Idempotency(enum.Enum):
    """The ``idempotency_level`` method option."""

    UNKNOWN = 0
    NO_SIDE_EFFECTS = 1
    IDEMPOTENT = 2


@dataclass(frozen=True, eq=False)
class MethodSpec(Generic[I, O]):
    """Everything the runtime needs to know about one RPC.

    Generated modules define one per method, at import time; clients, handler
    base classes and servers only ever refer to these constants.
    """

    service: str
    """Fully qualified service name, e.g. ``greet.v1.GreetService``."""
    name: str
    """The method's name in the proto file, e.g. ``SayHello``."""
    python_name: str
    """The attribute that implements it on handler and client classes."""
    stream_type: StreamType
    input: type[I]
    output: type[O]
    idempotency: Idempotency = Idempotency.UNKNOWN
    procedure: str = field(init=False)
    """The URL path: ``/<service>/<name>``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "procedure", f"/{self.service}/{self.name}")

    def __repr__(self) -> str:
        return f"MethodSpec({self.procedure!r}, {self.stream_type.name})"


@dataclass(frozen=True, eq=False)
class ServiceSpec:
    """A service's name and its methods: the route table servers are built from."""

    name: str
    methods: tuple[MethodSpec[Any, Any], ...]

    def __repr__(self) -> str:
        return f"ServiceSpec({self.name!r}, {len(self.methods)} methods)"


def unimplemented(method: MethodSpec[I, O]) -> ConnectError:
    """The error a handler base class raises for a method nobody implemented."""
    return ConnectError(
        Code.UNIMPLEMENTED, f"{method.service}.{method.name} is not implemented"
    )
