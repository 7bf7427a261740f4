"""Codecs: how messages become bytes. Protobuf binary and JSON built in."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from typing import Protocol, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError

M = TypeVar("M", bound=Message)


class Codec(Protocol):
    """Marshals messages; ``name`` is the suffix in content types (``proto``)."""

    name: str

    def encode(self, message: Message) -> bytes:
        """Serialize ``message``."""
        ...

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """Parse ``data``; raises ConnectError(invalid_argument) on bad input."""
        ...


Payload = bytes | memoryview
"""Message bytes as the stream decoders hand them over: a view where they lie
whole in what was read, so they need not be copied out first."""


def _parse_proto(data: Payload, message_type: type[M]) -> M:
    try:
        # upb parses any buffer in place; the message keeps its own copy.
        msg = message_type.FromString(data)  # type: ignore[arg-type]
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ConnectError(
            Code.INVALID_ARGUMENT, f"unmarshal into {message_type.__name__}: {e}"
        ) from None
    return msg


class ProtoCodec:
    """Protobuf binary encoding."""

    name = "proto"

    def encode(self, message: Message) -> bytes:
        """Serialize ``message`` to the binary wire format."""
        return message.SerializeToString()

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """Parse binary ``data`` into a new ``message_type``."""
        return _parse_proto(data, message_type)


class JSONCodec:
    """The canonical protobuf JSON mapping; unknown fields are ignored on input."""

    name = "json"

    def encode(self, message: Message) -> bytes:
        """Serialize ``message`` as compact JSON."""
        d = json_format.MessageToDict(message, preserving_proto_field_name=False)
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """Parse JSON ``data`` into a new ``message_type``."""
        msg = message_type()
        try:
            text = data.decode("utf-8") if data else "{}"
            json_format.Parse(text, msg, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as e:
            raise ConnectError(
                Code.INVALID_ARGUMENT, f"unmarshal into {message_type.__name__}: {e}"
            ) from None
        return msg


_SERIALIZE: Callable[[Message], bytes] = operator.methodcaller("SerializeToString")


def encoder(codec: Codec) -> Callable[[Message], bytes]:
    """``codec.encode``; for the built-in proto codec, one C call per message."""
    return _SERIALIZE if type(codec) is ProtoCodec else codec.encode


def decoder(codec: Codec) -> Callable[[Payload, type[Message]], Message]:
    """``codec.decode`` taking a ``Payload``: views go to the built-in proto
    codec as they are, to any other codec as bytes."""
    if type(codec) is ProtoCodec:
        return _parse_proto
    decode = codec.decode

    def decode_bytes(data: Payload, message_type: type[Message]) -> Message:
        return decode(data if type(data) is bytes else bytes(data), message_type)

    return decode_bytes


PROTO = ProtoCodec()
JSON = JSONCodec()

CODECS: dict[str, Codec] = {"proto": PROTO, "json": JSON}
"""Codecs known by default, by name. ``json; charset=utf-8`` maps to ``json``."""


def codec_for(name: str, codecs: dict[str, Codec] | None = None) -> Codec | None:
    """The codec for a content-type suffix (``proto``, ``json``, ``json; charset=utf-8``)."""
    name = name.strip().lower()
    if ";" in name:
        base, _, params = name.partition(";")
        name = base.strip()
        if name == "json" and params.strip().replace(" ", "") not in (
            "charset=utf-8",
            "",
        ):
            return None
    return (codecs if codecs is not None else CODECS).get(name)
