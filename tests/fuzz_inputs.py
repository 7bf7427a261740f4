"""Hypothesis strategies for the fuzz targets: inputs that look like the real
thing (valid frames, messages, heads, queries), then cut and mutated.

Each strategy draws ``bytes`` in the layout its target reads (see
``fuzz_targets.Reader``): the target, not the strategy, owns the meaning.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import hpack
from fuzz_targets import ALGORITHMS, CLIENT_PROTOCOLS, PROCEDURES
from hypothesis import strategies as st

from protoc_gen_connect_python.runtime.compression import COMPRESSIONS

small = st.binary(max_size=64)
text = st.text(max_size=24)
byte = st.integers(0, 255)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base``, left alone or truncated, with bytes flipped, cut or inserted."""
    data = bytearray(draw(base))
    # Half the inputs stay whole: most of a parser lies past the first error.
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        op = draw(st.sampled_from(["keep", "truncate", "flip", "insert", "delete"]))
        at = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(small)
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


def framed(*parts: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The concatenation of ``parts``: ints as one byte each, bytes as they are."""

    def join(values: tuple[Any, ...]) -> bytes:
        return b"".join(bytes([v]) if isinstance(v, int) else v for v in values)

    return st.tuples(*parts).map(join)


# -- envelopes, compression, codecs --------------------------------------------------


def _envelope(flags: int, payload: bytes, lie: int | None) -> bytes:
    n = len(payload) if lie is None else lie
    return struct.pack(">BI", flags, n) + payload


envelope_stream = st.lists(
    st.builds(
        _envelope,
        st.sampled_from([0, 1, 2, 0x80, 0xFF]) | byte,
        small,
        st.none() | st.integers(0, 2**32 - 1),
    ),
    max_size=6,
).map(b"".join)

envelope_inputs = framed(byte, byte, mutated(envelope_stream))


@st.composite
def _compressed(draw: st.DrawFn) -> bytes:
    index = draw(st.integers(0, len(ALGORITHMS) - 1))
    plain = draw(
        small
        | st.integers(0, 200_000).map(lambda n: b"\0" * n)  # a bomb, for small limits
        | st.binary(max_size=2000)
    )
    packed = COMPRESSIONS[ALGORITHMS[index]].compress(plain)
    if draw(st.booleans()):
        packed += COMPRESSIONS[ALGORITHMS[index]].compress(draw(small))
    return bytes([index, draw(byte)]) + draw(mutated(st.just(packed)))


decompress_inputs = _compressed()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(text | st.sampled_from(["text", "number", "payload"]), inner)
    ),
    max_leaves=12,
)


@st.composite
def _message_bytes(draw: st.DrawFn) -> bytes:
    from server_apps import pb

    msg = pb.PingRequest(text=draw(text), number=draw(st.integers(-(2**63), 2**63 - 1)))
    kind = draw(st.sampled_from(["proto", "json", "json_any"]))
    if kind == "proto":
        return bytes(msg.SerializeToString())
    if kind == "json":
        return json.dumps({"text": msg.text, "number": str(msg.number)}).encode()
    return json.dumps(draw(json_values)).encode("utf-8", "surrogatepass")


codec_inputs = framed(byte, mutated(_message_bytes()))

# -- headers and queries --------------------------------------------------------------

header_values = st.sampled_from(
    [
        "1000",
        "0",
        "9999999999",
        "10000000000",
        "100m",
        "5S",
        "99999999H",
        "1n",
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/proto",
        "application/grpc",
        "application/grpc+proto",
        "application/grpc-web+json",
        "json; charset=latin-1",
        "AAEC",
        "AAEC==",
        "-_8,AAE",
    ]
) | text.map(lambda t: t.encode("utf-8", "surrogatepass").decode("latin-1"))

headers_inputs = mutated(header_values.map(lambda v: v.encode("latin-1")))


def _query(parts: list[tuple[str, str]], message: bytes, b64: bool) -> bytes:
    value = (
        base64.urlsafe_b64encode(message).decode().rstrip("=")
        if b64
        else "".join(f"%{b:02X}" for b in message)
    )
    pairs = [f"{k}={v}" for k, v in parts] + [f"message={value}"]
    return "&".join(pairs).encode("latin-1", "replace")


get_query_inputs = mutated(
    st.builds(
        _query,
        st.lists(
            st.tuples(
                st.sampled_from(["connect", "encoding", "base64", "compression"])
                | text,
                st.sampled_from(["v1", "proto", "json", "1", "0", "gzip", "%ZZ", ""])
                | text,
            ),
            max_size=5,
        ),
        small,
        st.booleans(),
    )
)

client_message_inputs = framed(
    byte,
    byte,
    mutated(
        json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass"))
        | st.just(b'{"error":{"code":"internal","message":"m","details":[]}}')
        | st.just(b"grpc-status: 3\r\ngrpc-message: bad%20thing\r\n")
        | small
    ),
)

# -- responses as the client protocols read them ----------------------------------------


@st.composite
def _client_response(draw: st.DrawFn) -> bytes:
    """A response in ``client_response_target``'s layout, mostly well formed
    for the protocol drawn: its head, trailers and body."""
    from google.protobuf.wrappers_pb2 import StringValue

    index = draw(st.integers(0, len(CLIENT_PROTOCOLS) - 1))
    name, codec = CLIENT_PROTOCOLS[index]
    messages = [StringValue(value=draw(text)) for _ in range(draw(st.integers(0, 3)))]
    if codec == "json":
        encoded = [json.dumps(m.value).encode() for m in messages]
    else:
        encoded = [bytes(m.SerializeToString()) for m in messages]
    head: list[str] = []
    trailers: list[str] = []
    flags = draw(st.sampled_from([0, 0, 0, 1]))
    if flags:
        head.append(
            f"{'grpc' if name != 'connect' else 'connect-content'}-encoding: gzip"
        )
        encoded = [COMPRESSIONS["gzip"].compress(e) for e in encoded]
    frames = b"".join(_envelope(flags, e, None) for e in encoded)
    if name == "connect":
        head.append(f"content-type: application/connect+{codec}")
        end = draw(
            st.sampled_from([b"{}", b'{"error":{"code":"unavailable","message":"x"}}'])
            | json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass"))
        )
        body = frames + _envelope(2, end, None)
        if draw(st.booleans()):
            # As a unary response instead: the message, or an error body.
            head = [f"content-type: application/{codec}"]
            body = encoded[0] if encoded else end
    else:
        head.append(f"content-type: application/{name}+{codec}")
        status_lines = [
            f"grpc-status: {draw(st.sampled_from(['0', '0', '3', '14', 'x', '', '1¹']))}"
        ]
        if draw(st.booleans()):
            status_lines.append("grpc-message: bad%20news%zz")
        if draw(st.booleans()):
            status_lines.append(
                "grpc-status-details-bin: "
                + draw(st.sampled_from(["GhIKEHR5cGUuZ29vZ2xlYXBpcy5jb20", "%%%", ""]))
            )
        if name == "grpc-web" and draw(st.booleans()):
            block = "\r\n".join(status_lines).encode() + b"\r\n"
            body = frames + _envelope(0x80, block, None)
        else:
            body = frames
            (trailers if draw(st.booleans()) else head).extend(status_lines)
    layout = bytes([index, draw(byte), draw(st.integers(0, 7))])
    return (
        layout
        + "\n".join(head).encode("latin-1", "replace")
        + b"\n\n"
        + "\n".join(trailers).encode("latin-1", "replace")
        + b"\n\n"
        + draw(mutated(st.just(body)))
    )


client_response_inputs = _client_response()

# -- HTTP/1.1 responses ------------------------------------------------------------------


@st.composite
def _http1_response(draw: st.DrawFn) -> bytes:
    status = draw(
        st.sampled_from([200, 200, 200, 100, 101, 204, 304, 400, 503])
        | st.integers(0, 999)
    )
    version = draw(st.sampled_from(["HTTP/1.1"] * 4 + ["HTTP/1.0", "HTTP/2", "h"]))
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close", "both", "bad"]))
    fields = [
        (draw(st.sampled_from(["x-a", "content-type", "connection"])), draw(text))
        for _ in range(draw(st.integers(0, 3)))
    ]
    if framing in ("length", "both"):
        fields.append(("Content-Length", str(len(body))))
    if framing in ("chunked", "both"):
        fields.append(("Transfer-Encoding", "chunked"))
        chunks = [body[i : i + 50] for i in range(0, len(body), 50)]
        ext = draw(st.sampled_from(["", ";name=value", " "]))
        trailer = draw(st.sampled_from(["", "x-t: 1\r\n"]))
        body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext.encode(), c) for c in chunks)
        body += b"0\r\n" + trailer.encode() + b"\r\n"
    if framing == "bad":
        fields.append(
            ("Content-Length", draw(st.sampled_from(["-1", "1, 2", "x", "1" * 30])))
        )
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    head = f"{version} {status} Reason{eol}" + "".join(
        f"{k}: {v}{eol}" for k, v in fields
    )
    interim = "HTTP/1.1 100 Continue\r\n\r\n" if draw(st.booleans()) else ""
    return (interim + head + eol).encode("latin-1", "replace") + body


http1_inputs = framed(byte, st.sampled_from([0, 1]), mutated(_http1_response()))

# -- HTTP/2 frames --------------------------------------------------------------------------


def _frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, kind, flags, sid) + payload


setting_ids = st.sampled_from([1, 3, 4, 5, 6]) | st.integers(0, 9)
setting_values = (
    st.integers(0, 70000)
    | st.sampled_from([16384, 2**24 - 1, 2**31 - 1])
    | st.integers(0, 2**32 - 1)
)


@st.composite
def _http2_frames(draw: st.DrawFn) -> bytes:
    encoder = hpack.Encoder()
    out = []
    if draw(st.integers(0, 9)):
        settings = b"".join(
            struct.pack(">HL", draw(setting_ids), draw(setting_values))
            for _ in range(draw(st.integers(0, 3)))
        )
        out.append(_frame(4, 0, 0, settings))
    if draw(st.integers(0, 4)):
        # Most responses start well: a 200 head, so that DATA has a home.
        out.append(_frame(1, 4, 1, encoder.encode([(":status", "200")])))
    sid = st.sampled_from([1, 1, 1, 0, 3, 2])
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(
            st.sampled_from(
                [
                    "headers",
                    "data",
                    "window",
                    "settings",
                    "ping",
                    "rst",
                    "goaway",
                    "continuation",
                    "raw",
                ]
            )
        )
        if kind == "headers":
            fields = [
                (
                    ":status",
                    draw(
                        st.sampled_from(["200", "100", "204", "abc", "2000", "²⁰⁰"])
                        | text
                    ),
                )
            ]
            fields += [
                (
                    draw(st.sampled_from(["grpc-status", "x-a", ":path"]) | text),
                    draw(text),
                )
                for _ in range(draw(st.integers(0, 3)))
            ]
            block = encoder.encode(fields)
            flags = draw(st.sampled_from([4, 5, 0, 1, 0x24, 0x2D]))
            payload = block
            if flags & 0x20:
                payload = b"\0\0\0\0\x10" + payload
            if flags & 0x8:
                pad = draw(st.integers(0, 20))
                payload = bytes([pad]) + payload + b"\0" * pad
            out.append(_frame(1, flags, draw(sid), payload))
        elif kind == "continuation":
            out.append(_frame(9, draw(st.sampled_from([0, 4])), draw(sid), draw(small)))
        elif kind == "data":
            payload = draw(st.binary(max_size=200))
            flags = draw(st.sampled_from([0, 1, 8, 9]))
            if flags & 8:
                pad = draw(st.integers(0, 30))
                payload = bytes([pad]) + payload + b"\0" * pad
            out.append(_frame(0, flags, draw(sid), payload))
        elif kind == "window":
            n = draw(st.integers(0, 2**31 - 1) | st.integers(0, 70000))
            out.append(_frame(8, 0, draw(sid), struct.pack(">L", n)))
        elif kind == "settings":
            value = draw(st.integers(0, 2**32 - 1) | st.integers(0, 70000))
            setting = draw(st.sampled_from([1, 3, 4, 5, 6, 9]))
            flags = draw(st.sampled_from([0, 0, 1]))
            payload = struct.pack(">HL", setting, value) if not flags else b""
            out.append(_frame(4, flags, 0, payload))
        elif kind == "ping":
            out.append(
                _frame(
                    6,
                    draw(st.sampled_from([0, 1])),
                    0,
                    draw(st.binary(min_size=8, max_size=8)),
                )
            )
        elif kind == "rst":
            out.append(
                _frame(3, 0, draw(sid), struct.pack(">L", draw(st.integers(0, 15))))
            )
        elif kind == "goaway":
            out.append(
                _frame(
                    7,
                    0,
                    0,
                    struct.pack(
                        ">LL", draw(st.integers(0, 5)), draw(st.integers(0, 15))
                    ),
                )
            )
        else:
            out.append(_frame(draw(byte), draw(byte), draw(sid), draw(small)))
    return b"".join(out)


http2_inputs = framed(byte, byte, mutated(_http2_frames()))

# -- requests to the server apps ---------------------------------------------------------------

request_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "content-type",
                "connect-protocol-version",
                "connect-timeout-ms",
                "grpc-timeout",
                "content-encoding",
                "connect-content-encoding",
                "connect-accept-encoding",
                "grpc-encoding",
                "accept-encoding",
                "te",
                "x-echo-bin",
            ]
        ),
        header_values
        | st.sampled_from(
            [
                "application/connect+proto",
                "application/connect+json",
                "application/grpc-web+proto",
                "application/grpc-web-text",
                "gzip",
                "br",
                "zstd",
                "identity",
                "snappy",
                "1",
                "trailers",
            ]
        ),
    ),
    max_size=6,
).map(lambda hs: "\n".join(f"{k}: {v}" for k, v in hs).encode("latin-1", "replace"))


UNARY_TYPES = ["application/proto", "application/json"]
STREAM_TYPES = [
    "application/connect+proto",
    "application/connect+json",
    "application/grpc",
    "application/grpc+json",
    "application/grpc-web+proto",
]


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    """A request in ``server_target``'s layout, mostly one the app routes: a
    POST with a content type for the method's kind and a body to match."""
    from server_apps import pb

    proc = draw(st.integers(0, len(PROCEDURES) - 1))
    wsgi = draw(st.booleans())
    get = (proc == 0 and draw(st.integers(0, 3)) == 0) or draw(st.integers(0, 30)) == 0
    first = bytes([wsgi | get << 1 | proc << 2])
    unary = PROCEDURES[proc] in ("Ping", "Unimplemented")
    ctype = draw(st.sampled_from(UNARY_TYPES if unary else STREAM_TYPES))
    head = [f"content-type: {ctype}".encode()] if draw(st.integers(0, 9)) else []
    head.append(draw(request_headers))
    msgs = [
        bytes(
            pb.PingRequest(
                text=draw(text), number=draw(st.integers(0, 5))
            ).SerializeToString()
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    if "json" in ctype:
        msgs = [
            json.dumps(draw(json_values)).encode("utf-8", "surrogatepass") for _ in msgs
        ]
    if get:
        body = _query(
            [("connect", "v1"), ("encoding", draw(st.sampled_from(["proto", "json"])))],
            msgs[0] if msgs else b"",
            draw(st.booleans()),
        )
    elif unary:
        body = msgs[0] if msgs else b""
        if draw(st.booleans()):
            head.append(b"content-encoding: gzip")
            body = COMPRESSIONS["gzip"].compress(body)
    else:
        ends = (
            [_envelope(2, b"{}", None)]
            if ctype.startswith("application/connect")
            else []
        )
        body = b"".join(
            _envelope(draw(st.sampled_from([0, 0, 0, 1, 2, 0x80, 4])), m, None)
            for m in msgs
        )
        body += b"".join(ends)
    head_block = b"\n".join(h for h in head if h)
    return first + head_block + b"\n\n" + draw(mutated(st.just(body)))


server_inputs = _request()


STRATEGIES: dict[str, st.SearchStrategy[bytes]] = {
    "envelope": envelope_inputs,
    "decompress": decompress_inputs,
    "headers": headers_inputs,
    "codec": codec_inputs,
    "client_messages": client_message_inputs,
    "get_query": get_query_inputs,
    "client_response": client_response_inputs,
    "http1": http1_inputs,
    "http2": http2_inputs,
    "server": server_inputs,
}
"""Each target's strategy, by the target's name (``scripts/fuzz.py`` seeds
atheris' corpus with examples of it)."""
