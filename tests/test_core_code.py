"""The code table: names, numbers and HTTP mappings."""

from __future__ import annotations

from protoc_gen_connect_python.runtime import Code


def test_sixteen_codes_with_grpc_numbers() -> None:
    assert [c.value for c in Code] == list(range(1, 17))
    assert Code.CANCELED.wire_name == "canceled"
    assert Code.DEADLINE_EXCEEDED.wire_name == "deadline_exceeded"


def test_wire_names_round_trip() -> None:
    for c in Code:
        assert Code.from_wire_name(c.wire_name) is c
    assert Code.from_wire_name("cancelled") is None
    assert Code.from_wire_name("") is None


def test_http_status_of_each_code() -> None:
    expected = {
        Code.CANCELED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
        Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
        Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429,
        Code.FAILED_PRECONDITION: 400, Code.ABORTED: 409, Code.OUT_OF_RANGE: 400,
        Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500, Code.UNAVAILABLE: 503,
        Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
    }  # fmt: skip
    assert {c: c.http_status for c in Code} == expected


def test_code_from_http_status() -> None:
    assert Code.from_http_status(400) is Code.INTERNAL
    assert Code.from_http_status(401) is Code.UNAUTHENTICATED
    assert Code.from_http_status(404) is Code.UNIMPLEMENTED
    assert Code.from_http_status(429) is Code.UNAVAILABLE
    assert Code.from_http_status(503) is Code.UNAVAILABLE
    assert Code.from_http_status(418) is Code.UNKNOWN


def test_a_code_prints_as_its_name() -> None:
    code = Code.INVALID_ARGUMENT
    assert str(code) == "invalid_argument"
    assert f"{code}" == "invalid_argument"
    assert format(Code.CANCELED) == "canceled"
    assert repr(code) == "<Code.INVALID_ARGUMENT: 3>"
    # Still an int: numbers and numeric formats give the gRPC status number.
    assert code == 3
    assert int(code) == 3
    assert f"{code:d}" == "3"
    assert f"{code:02}" == "03"
    assert str(int(code)) == "3"
