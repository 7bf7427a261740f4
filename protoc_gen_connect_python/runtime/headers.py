"""Multi-valued, case-insensitive headers, binary (-bin) values and timeouts."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TypeVar, Union, overload

_T = TypeVar("_T")

HeadersInput = Union["Headers", Mapping[str, str], Iterable[tuple[str, str]]]
"""Anything a user may pass as headers: a Headers, a mapping or (name, value) pairs."""


class Headers(MutableMapping[str, str]):
    """HTTP headers or trailers: case-insensitive names, several values per name.

    Mapping access reads and replaces the first value; ``add`` appends,
    ``getall`` reads every value and ``multi_items`` yields every pair.
    Names are stored in lower case, as HTTP/2 requires.
    """

    __slots__ = ("_d",)

    def __init__(self, init: HeadersInput | None = None) -> None:
        self._d: dict[str, list[str]] = {}
        if init is not None:
            self.extend(init)

    def extend(self, other: HeadersInput) -> None:
        """Append every value from ``other``."""
        if isinstance(other, Headers):
            pairs: Iterable[tuple[str, str]] = other.multi_items()
        elif isinstance(other, Mapping):
            pairs = other.items()
        else:
            pairs = other
        d = self._d
        for k, v in pairs:
            k = k.lower()
            if k in d:
                d[k].append(v)
            else:
                d[k] = [v]

    def __getitem__(self, key: str) -> str:
        return self._d[key.lower()][0]

    def __setitem__(self, key: str, value: str) -> None:
        self._d[key.lower()] = [value]

    def __delitem__(self, key: str) -> None:
        del self._d[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._d

    @overload
    def get(self, key: str, default: None = None) -> str | None: ...
    @overload
    def get(self, key: str, default: str | _T) -> str | _T: ...

    def get(self, key: str, default: object = None) -> object:
        """The first value for ``key``, or ``default`` (one dict lookup: hot path)."""
        v = self._d.get(key.lower())
        return v[0] if v else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __bool__(self) -> bool:
        return bool(self._d)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._d == other._d
        return NotImplemented

    def __repr__(self) -> str:
        return f"Headers({list(self.multi_items())!r})"

    def add(self, key: str, value: str) -> None:
        """Append a value, keeping the existing ones."""
        key = key.lower()
        if key in self._d:
            self._d[key].append(value)
        else:
            self._d[key] = [value]

    def getall(self, key: str) -> list[str]:
        """Every value for ``key``, in order; empty when absent."""
        return list(self._d.get(key.lower(), ()))

    def multi_items(self) -> Iterator[tuple[str, str]]:
        """Every (name, value) pair, names in lower case."""
        for k, vs in self._d.items():
            for v in vs:
                yield k, v

    def copy(self) -> Headers:
        """A shallow copy."""
        h = Headers()
        h._d = {k: list(v) for k, v in self._d.items()}
        return h

    def get_bin(self, key: str) -> bytes | None:
        """The first value of a binary (``-bin``) header, decoded; None when absent."""
        v = self._d.get(key.lower())
        return decode_binary_header(v[0]) if v else None

    def add_bin(self, key: str, value: bytes) -> None:
        """Append a binary value to a ``-bin`` header, base64-encoded."""
        self.add(key, encode_binary_header(value))

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        """Build from ASGI-style byte pairs whose names are already lower case."""
        h = cls()
        d = h._d
        for k, v in raw:
            ks = k.decode("latin-1")
            vs = v.decode("latin-1")
            if ks in d:
                d[ks].append(vs)
            else:
                d[ks] = [vs]
        return h

    @classmethod
    def _from_lower(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        """Build from text pairs whose names are known to be lower case already.

        For parsers that lower-case names themselves (the HTTP/1.1 client):
        nothing is lower-cased twice.
        """
        h = cls()
        d = h._d
        for k, v in pairs:
            if k in d:
                d[k].append(v)
            else:
                d[k] = [v]
        return h

    def to_raw(self) -> list[tuple[bytes, bytes]]:
        """ASGI-style byte pairs."""
        return [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in self.multi_items()
        ]


def encode_binary_header(value: bytes) -> str:
    """Base64 without padding, as gRPC and Connect send binary metadata."""
    return base64.b64encode(value).decode("ascii").rstrip("=")


def decode_binary_header(value: str) -> bytes:
    """Decode a ``-bin`` value; accepts padded and unpadded, standard and URL-safe.

    Several values may be joined with commas by intermediaries; each is decoded.
    """
    out = b""
    for part in value.split(","):
        part = part.strip()
        part += "=" * (-len(part) % 4)
        try:
            if "-" in part or "_" in part:
                out += base64.urlsafe_b64decode(part)
            else:
                out += base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"invalid base64 in binary header: {e}") from None
    return out


def parse_connect_timeout(value: str) -> float:
    """Seconds from a ``Connect-Timeout-Ms`` value: 1 to 10 ASCII digits.

    Raises ValueError for anything else.
    """
    if not (0 < len(value) <= 10) or not value.isascii() or not value.isdigit():
        raise ValueError(f"invalid Connect-Timeout-Ms: {value!r}")
    return int(value) / 1000.0


def format_connect_timeout(seconds: float) -> str:
    """A ``Connect-Timeout-Ms`` value for ``seconds`` (at least 1 ms)."""
    ms = max(1, int(seconds * 1000 + 0.999))
    return str(min(ms, 9_999_999_999))


_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_grpc_timeout(value: str) -> float:
    """Seconds from a ``grpc-timeout`` value: 1 to 8 digits and a unit (HMSmun)."""
    if len(value) < 2 or len(value) > 9:
        raise ValueError(f"invalid grpc-timeout: {value!r}")
    digits, unit = value[:-1], value[-1]
    if unit not in _GRPC_UNITS or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"invalid grpc-timeout: {value!r}")
    return int(digits) * _GRPC_UNITS[unit]


def format_grpc_timeout(seconds: float) -> str:
    """The most precise ``grpc-timeout`` value (at most 8 digits) for ``seconds``."""
    seconds = max(seconds, 0.0)
    for unit, scale in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("S", 1.0), ("M", 60.0)):
        n = int(seconds / scale + 0.5)
        if n < 100_000_000:
            return f"{max(n, 1)}{unit}"
    return f"{min(int(seconds / 3600.0 + 0.5), 99_999_999)}H"
