"""Codecs: how messages become bytes. Protobuf binary and JSON built in."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
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
    except (DecodeError, RuntimeError, ValueError):
        # The library's text names its internals, not the client's mistake.
        raise _unmarshal_error(message_type, "invalid protobuf binary data") from None
    return msg


def _unmarshal_error(message_type: type[Message], what: str) -> ConnectError:
    """invalid_argument in our words: ``unmarshal into <Type>: <what>``."""
    return ConnectError(
        Code.INVALID_ARGUMENT, f"unmarshal into {message_type.__name__}: {what}"
    )


class ProtoCodec:
    """Protobuf binary encoding."""

    name = "proto"

    def encode(self, message: Message) -> bytes:
        """Serialize ``message`` to the binary wire format."""
        return message.SerializeToString()

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """Parse binary ``data`` into a new ``message_type``.

        Bad input raises invalid_argument: ``unmarshal into <Type>: invalid
        protobuf binary data``.
        """
        return _parse_proto(data, message_type)


class JSONCodec:
    """The canonical protobuf JSON mapping; unknown fields are ignored on input."""

    name = "json"

    def encode(self, message: Message) -> bytes:
        """Serialize ``message`` as compact JSON."""
        d = json_format.MessageToDict(message, preserving_proto_field_name=False)
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """Parse JSON ``data`` into a new ``message_type``.

        Bad input raises invalid_argument with ``unmarshal into <Type>: ``
        and one of: ``invalid JSON at line L column C``, ``JSON is not valid
        UTF-8``, ``a JSON object repeats a key``, ``JSON nested too deeply``,
        ``expected a JSON object, got <kind>``, ``invalid value for field
        '<name>' (<type>)`` or ``invalid JSON for this message``.
        """
        obj = _load_json(data, message_type) if data else {}
        msg = message_type()
        try:
            json_format.ParseDict(cast(Any, obj), msg, ignore_unknown_fields=True)
        except Exception:  # ParseError, TypeError, ...: their text is not ours
            raise _unmarshal_error(
                message_type, _bad_field(obj, message_type)
            ) from None
        return msg


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


class _DuplicateKey(Exception):
    """A JSON object names a key twice (the mapping forbids it)."""


def _load_json(data: bytes, message_type: type[Message]) -> object:
    """The request's JSON value; invalid_argument in our words otherwise."""
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise _unmarshal_error(
            message_type, f"invalid JSON at line {e.lineno} column {e.colno}"
        ) from None
    except UnicodeDecodeError:
        raise _unmarshal_error(message_type, "JSON is not valid UTF-8") from None
    except _DuplicateKey:
        raise _unmarshal_error(message_type, "a JSON object repeats a key") from None
    except RecursionError:
        raise _unmarshal_error(message_type, "JSON nested too deeply") from None
    # Well-known types have JSON forms of their own (strings, lists, ...).
    if not isinstance(obj, dict) and not _is_well_known(message_type):
        raise _unmarshal_error(
            message_type, f"expected a JSON object, got {_json_kind(obj)}"
        )
    return obj


def _is_well_known(message_type: type[Message]) -> bool:
    return message_type.DESCRIPTOR.full_name.startswith("google.protobuf.")


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _bad_field(obj: object, message_type: type[Message]) -> str:
    """What was wrong, found by parsing each field alone (only on failure)."""
    if not isinstance(obj, dict) or _is_well_known(message_type):
        return "invalid JSON for this message"
    fields = message_type.DESCRIPTOR.fields
    by_name = {f.json_name: f for f in fields}
    by_name.update((f.name, f) for f in fields)
    for key, value in obj.items():
        try:
            json_format.ParseDict({key: value}, message_type(), True)
        except Exception:
            field = by_name.get(key)
            if field is None:  # pragma: no cover - unknown keys are ignored
                break
            return f"invalid value for field {field.name!r} ({_field_kind(field)})"
    return "invalid JSON for this message"


def _field_kind(field: Any) -> str:
    if field.message_type is not None:
        if field.message_type.GetOptions().map_entry:
            return "a map"
        kind = f"message {field.message_type.full_name}"
    elif field.enum_type is not None:
        kind = f"enum {field.enum_type.full_name}"
    else:
        kind = _SCALAR_NAMES.get(field.type, "scalar")
    return f"a list of {kind}" if _is_repeated(field) else kind


def _is_repeated(field: Any) -> bool:
    # ``is_repeated`` on newer protobuf, ``label`` on older.
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


_SCALAR_NAMES = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
}


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
