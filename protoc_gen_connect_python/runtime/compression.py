"""Compression algorithms: identity and gzip built in; br and zstd when installed.

Decompression is always bounded: a result larger than the caller's limit raises
``resource_exhausted`` before more than that many bytes are produced.
"""

from __future__ import annotations

import threading
import zlib
from typing import Any, Protocol

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError


class Compression(Protocol):
    """A named compression algorithm, as sent in ``*-encoding`` headers."""

    name: str

    def compress(self, data: bytes) -> bytes:
        """Compress ``data``."""
        ...

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Decompress ``data``; raise resource_exhausted past ``max_size`` bytes.

        Data that is not valid raises invalid_argument in our words, not the
        library's (``decompress <name>: invalid compressed data`` or
        ``truncated data``).
        """
        ...


def _too_large(max_size: int) -> ConnectError:
    return ConnectError(
        Code.RESOURCE_EXHAUSTED,
        f"message is larger than configured max {max_size} bytes after decompression",
    )


def _corrupt(name: str, what: str = "invalid compressed data") -> ConnectError:
    """invalid_argument in our words (``decompress <name>: <what>``); the
    library's own text names its internals, not the peer's mistake."""
    return ConnectError(Code.INVALID_ARGUMENT, f"decompress {name}: {what}")


class Gzip:
    """gzip (RFC 1952)."""

    name = "gzip"

    def __init__(self, level: int = 6) -> None:
        self.level = level

    def compress(self, data: bytes) -> bytes:
        """Compress ``data`` into one gzip member."""
        c = zlib.compressobj(self.level, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Decompress one gzip member, bounded by ``max_size``."""
        if not data:
            # Peers leave an empty message empty under any encoding.
            return b""
        d = zlib.decompressobj(31)
        try:
            out = (
                d.decompress(data, max_size + 1) if max_size > 0 else d.decompress(data)
            )
            if max_size > 0 and len(out) > max_size:
                raise _too_large(max_size)
            if not d.eof:
                raise _corrupt(self.name, "truncated data")
        except zlib.error:
            raise _corrupt(self.name) from None
        return out


class Brotli:
    """Brotli (RFC 7932); needs the ``brotli`` package."""

    name = "br"

    def __init__(self, quality: int = 4) -> None:
        import brotli

        self._mod = brotli
        self.quality = quality

    def compress(self, data: bytes) -> bytes:
        """Compress ``data``."""
        out: bytes = self._mod.compress(data, quality=self.quality)
        return out

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Decompress, bounded by ``max_size``."""
        if not data:
            return b""
        d = self._mod.Decompressor()
        try:
            if max_size <= 0:
                out: bytes = d.process(data)
            else:
                out = d.process(data, output_buffer_limit=max_size + 1)
                if len(out) > max_size or (
                    not d.is_finished() and not d.can_accept_more_data()
                ):
                    raise _too_large(max_size)
            if not d.is_finished():
                raise _corrupt(self.name, "truncated data")
        except self._mod.error:
            raise _corrupt(self.name) from None
        return out


class Zstd:
    """Zstandard (RFC 8878); needs the ``zstandard`` package."""

    name = "zstd"

    def __init__(self, level: int = 3) -> None:
        import zstandard

        self._mod = zstandard
        self._level = level
        # zstandard's compressor and decompressor objects must not be used by
        # two threads at once (sync clients and WSGI servers run many): one
        # pair per thread.
        self._local = threading.local()

    def _pair(self) -> tuple[Any, Any]:
        local = self._local
        try:
            pair: tuple[Any, Any] = local.pair
        except AttributeError:
            pair = local.pair = (
                self._mod.ZstdCompressor(level=self._level),
                self._mod.ZstdDecompressor(),
            )
        return pair

    def compress(self, data: bytes) -> bytes:
        """Compress ``data`` into one frame."""
        out: bytes = self._pair()[0].compress(data)
        return out

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Decompress every frame in ``data``, bounded by ``max_size``."""
        if not data:
            return b""
        d = self._pair()[1]
        try:
            with d.stream_reader(data, read_across_frames=True) as r:
                out: bytes = r.read(max_size + 1) if max_size > 0 else r.readall()
            if max_size > 0 and len(out) > max_size:
                raise _too_large(max_size)
            # The reader accepts a truncated frame silently; the output is now
            # known to be bounded, so a second pass can check for the end.
            dobj = d.decompressobj()
            dobj.decompress(data)
            if not dobj.eof:
                raise _corrupt(self.name, "truncated data")
        except self._mod.ZstdError:
            raise _corrupt(self.name) from None
        return out


def _available() -> dict[str, Compression]:
    found: dict[str, Compression] = {"gzip": Gzip()}
    for cls in (Brotli, Zstd):
        try:
            c: Compression = cls()
        except ImportError:
            continue
        found[c.name] = c
    return found


COMPRESSIONS: dict[str, Compression] = _available()
"""Algorithms available in this process, by name, in order of preference."""

IDENTITY = "identity"


def negotiate(accept: str | None, available: dict[str, Compression]) -> str | None:
    """The first algorithm in an ``*-accept-encoding`` value we support, else None."""
    if not accept:
        return None
    for part in accept.split(","):
        name = part.split(";", 1)[0].strip()
        if name in available:
            return name
    return None
