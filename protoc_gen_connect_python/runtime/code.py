"""The sixteen Connect/gRPC status codes and their HTTP mappings."""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """A Connect error code; the integer value is the gRPC status number.

    It prints as its Connect name: ``str(Code.INVALID_ARGUMENT)`` and
    ``f"{code}"`` give ``invalid_argument``; ``int(code)`` and a numeric format
    (``f"{code:d}"``) give the gRPC number, ``3``.
    """

    CANCELED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    def __str__(self) -> str:
        return _WIRE_NAMES[self]

    def __format__(self, spec: str) -> str:
        # An explicit spec ("d", "03"...) formats the number, as for any int.
        return format(int(self), spec) if spec else _WIRE_NAMES[self]

    @property
    def wire_name(self) -> str:
        """The snake_case name used in Connect JSON error bodies."""
        return _WIRE_NAMES[self]

    @property
    def http_status(self) -> int:
        """The HTTP status a Connect unary error with this code is sent with."""
        return _HTTP_STATUS[self]

    @classmethod
    def from_wire_name(cls, name: str) -> Code | None:
        """The code for a Connect JSON name, or None when the name is unknown."""
        return _BY_WIRE_NAME.get(name)

    @classmethod
    def from_http_status(cls, status: int) -> Code:
        """The code a client infers from an HTTP status without a Connect error body."""
        return _FROM_HTTP.get(status, Code.UNKNOWN)


_WIRE_NAMES = {c: c.name.lower() for c in Code}
_WIRE_NAMES[Code.CANCELED] = "canceled"
_BY_WIRE_NAME = {v: k for k, v in _WIRE_NAMES.items()}

_HTTP_STATUS = {
    Code.CANCELED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

# https://connectrpc.com/docs/protocol#http-to-error-code
_FROM_HTTP = {
    400: Code.INTERNAL,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.UNIMPLEMENTED,
    429: Code.UNAVAILABLE,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.UNAVAILABLE,
}
