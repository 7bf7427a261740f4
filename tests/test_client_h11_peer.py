"""The HTTP/1.1 client engine against h11 as the server, driven by hypothesis.

Responses written by an ``h11`` server connection (informational responses,
every framing it picks: Content-Length, chunked with trailers, until close;
HEAD, 204 and 304 without a body) are cut at random places and fed to
``http1.ResponseParser``, which must give back the same head, body and
trailers. The other way, the request heads and chunked bodies the engine
writes are read by ``h11``, which must see the same request. Garbage of any
shape may only raise ``ProtocolError``.
"""

from __future__ import annotations

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protoc_gen_connect_python.runtime.client.http1 import (
    LAST_CHUNK,
    Limits,
    ProtocolError,
    ResponseHead,
    ResponseParser,
    encode_chunk,
    request_head,
)

names = st.from_regex(r"x-[a-z0-9-]{1,12}", fullmatch=True)
values = st.from_regex(r"([!-~]([ -~]{0,30}[!-~])?)?", fullmatch=True)
fields = st.lists(st.tuples(names, values), max_size=6)
pieces = st.lists(st.binary(min_size=1, max_size=3000), max_size=6)
cuts = st.lists(st.integers(0, 20_000), max_size=30)


def cut(wire: bytes, points: list[int]) -> list[bytes]:
    at = sorted({p for p in points if 0 < p < len(wire)})
    return [wire[a:b] for a, b in zip([0, *at], [*at, len(wire)], strict=True)]


def h11_server(method: str, http10: bool) -> h11.Connection:
    """An h11 server that has read a request and may answer it."""
    server = h11.Connection(h11.SERVER)
    version = b"1.0" if http10 else b"1.1"
    server.receive_data(
        b"%s / HTTP/%s\r\nhost: peer\r\n\r\n" % (method.encode(), version)
    )
    assert isinstance(server.next_event(), h11.Request)
    assert isinstance(server.next_event(), h11.EndOfMessage)
    return server


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "GET", "HEAD"]),
    http10=st.booleans(),
    informational=st.lists(st.sampled_from([100, 102, 103]), max_size=2),
    status=st.sampled_from([200, 201, 204, 304, 404, 500, 503]),
    framing=st.sampled_from(["length", "chunked", "auto"]),
    headers=fields,
    body=pieces,
    trailers=fields,
    points=cuts,
)
def test_responses_written_by_h11(
    method: str,
    http10: bool,
    informational: list[int],
    status: int,
    framing: str,
    headers: list[tuple[str, str]],
    body: list[bytes],
    trailers: list[tuple[str, str]],
    points: list[int],
) -> None:
    server = h11_server(method, http10)
    no_body = method == "HEAD" or status in (204, 304)
    if no_body:
        body = []
    data = b"".join(body)
    head_fields = list(headers)
    if framing == "length":
        head_fields.append(("content-length", str(len(data))))
    elif framing == "chunked" and not http10 and not no_body:
        head_fields.append(("transfer-encoding", "chunked"))
    wire = b"".join(
        server.send(h11.InformationalResponse(status_code=s, headers=[("x-info", "1")]))
        or b""
        for s in informational
    )
    wire += server.send(h11.Response(status_code=status, headers=head_fields)) or b""
    for piece in body:
        wire += server.send(h11.Data(data=piece)) or b""
    chunked = b"transfer-encoding: chunked" in wire.lower() and not no_body
    end = h11.EndOfMessage(headers=trailers if chunked else [])
    wire += server.send(end) or b""
    closes = server.our_state is h11.MUST_CLOSE

    p = ResponseParser(method)
    head: ResponseHead | None = None
    got = b""
    for piece in cut(wire, points):
        p.feed(piece)
        head = head or p.head()
        if head is not None:
            got += p.body()
    if closes:
        p.feed_eof()
        head = head or p.head()
        got += p.body()
    assert head is not None and head.status == status
    assert [(k, v) for k, v in head.headers if k.startswith("x-")] == [
        (k.lower(), v) for k, v in headers
    ]
    assert got == data
    assert p.complete
    assert p.trailers == ([(k.lower(), v) for k, v in trailers] if chunked else [])
    if closes:
        assert not p.reusable


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["POST", "PUT", "GET"]),
    target=st.from_regex(
        r"/[a-zA-Z0-9._~/-]{0,30}(\?[a-z0-9=&%]{0,20})?", fullmatch=True
    ),
    headers=fields,
    body=pieces,
    chunked=st.booleans(),
    points=cuts,
)
def test_requests_read_by_h11(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: list[bytes],
    chunked: bool,
    points: list[int],
) -> None:
    data = b"".join(body)
    if chunked:
        wire = request_head(method, target, "peer:80", headers, None)
        wire += b"".join(encode_chunk(piece) for piece in body) + LAST_CHUNK
    else:
        wire = request_head(method, target, "peer:80", headers, len(data)) + data
    server = h11.Connection(h11.SERVER)
    events: list[object] = []
    for piece in cut(wire, points):
        server.receive_data(piece)
        while (e := server.next_event()) is not h11.NEED_DATA:
            events.append(e)
            if isinstance(e, h11.EndOfMessage):
                break
    request = events[0]
    assert isinstance(request, h11.Request)
    assert (request.method, request.target) == (method.encode(), target.encode())
    got = [(k.decode(), v.decode()) for k, v in request.headers]
    assert got[0] == ("host", "peer:80")
    assert [(k, v) for k, v in got if k.startswith("x-")] == headers
    assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == data
    assert isinstance(events[-1], h11.EndOfMessage)


@settings(max_examples=200, deadline=None)
@given(
    start=st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\n" * 2]),
    garbage=st.binary(max_size=2000),
    points=cuts,
    eof=st.booleans(),
)
def test_garbage_only_raises_protocol_error(
    start: bytes, garbage: bytes, points: list[int], eof: bool
) -> None:
    limits = Limits(max_head_bytes=512, max_chunk_line=64)
    p = ResponseParser("POST", limits)
    taken = 0
    try:
        for piece in cut(start + garbage, points):
            p.feed(piece)
            if p.head() is not None:
                taken += len(p.body())
            # Nothing is held beyond the limits and the read just fed.
            assert p.buffered <= 512 + 64 + len(piece) + taken + 2
        if eof:
            p.feed_eof()
            if p.head() is not None:
                p.body()
    except ProtocolError as e:
        assert str(e)
