"""ConnectError: the one exception type that crosses the wire."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.headers import Headers

M = TypeVar("M", bound=Message)


class ErrorDetail:
    """One error detail: a protobuf message carried as ``google.protobuf.Any``."""

    __slots__ = ("_any",)

    def __init__(self, value: Message | any_pb2.Any) -> None:
        if isinstance(value, any_pb2.Any):
            self._any = value
        else:
            self._any = any_pb2.Any()
            self._any.Pack(value, type_url_prefix="type.googleapis.com/")

    @classmethod
    def from_wire(cls, type_name: str, value: bytes) -> ErrorDetail:
        """A detail from a type name (with or without URL prefix) and its bytes."""
        if "/" not in type_name:
            type_name = "type.googleapis.com/" + type_name
        return cls(any_pb2.Any(type_url=type_name, value=value))

    @property
    def type_url(self) -> str:
        """The full type URL, e.g. ``type.googleapis.com/google.rpc.RetryInfo``."""
        return self._any.type_url

    @property
    def type_name(self) -> str:
        """The fully qualified message name without the URL prefix."""
        return self._any.type_url.rpartition("/")[2]

    @property
    def value(self) -> bytes:
        """The serialized message."""
        return self._any.value

    def as_any(self) -> any_pb2.Any:
        """The detail as a ``google.protobuf.Any``."""
        return self._any

    def unpack(self, message_type: type[M]) -> M | None:
        """Decode into ``message_type``; None when the detail holds another type."""
        if self.type_name != message_type.DESCRIPTOR.full_name:
            return None
        msg = message_type()
        msg.ParseFromString(self._any.value)
        return msg

    def message(self) -> Message | None:
        """Decode with the default symbol database; None when the type is unknown."""
        try:
            cls = symbol_database.Default().GetSymbol(self.type_name)
        except KeyError:
            return None
        msg: Message = cls()
        msg.ParseFromString(self._any.value)
        return msg

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErrorDetail) and (
            self.type_url,
            self.value,
        ) == (other.type_url, other.value)

    def __hash__(self) -> int:
        return hash((self.type_url, self.value))

    def __repr__(self) -> str:
        return f"ErrorDetail({self.type_name!r}, {len(self.value)} bytes)"


class ConnectError(Exception):
    """An RPC failure with a code, a message, details and metadata.

    Raise it from a handler to send that code and message to the client; clients
    raise it for every failed call. ``metadata`` holds the headers and trailers the
    error arrived with (client side) or should be sent with (server side).

    Client side, the two are also kept apart: ``response_headers`` holds the
    response headers and ``response_trailers`` the trailers (for Connect unary
    calls the ``trailer-`` headers without their prefix; for a gRPC
    trailers-only response the status headers, as trailers). Both are empty
    when the call failed before a response arrived.
    """

    response_headers: Headers
    response_trailers: Headers

    def __init__(
        self,
        code: Code,
        message: str = "",
        *,
        details: Iterable[Message | any_pb2.Any | ErrorDetail] = (),
        metadata: Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: list[ErrorDetail] = [
            d if isinstance(d, ErrorDetail) else ErrorDetail(d) for d in details
        ]
        self.metadata = metadata if metadata is not None else Headers()
        self.response_headers = Headers()
        self.response_trailers = Headers()

    def __str__(self) -> str:
        if self.message:
            return f"{self.code.wire_name}: {self.message}"
        return self.code.wire_name

    def __repr__(self) -> str:
        return f"ConnectError({self.code.name}, {self.message!r})"
