"""Settings shared by ``ASGIApp`` and ``WSGIApp``: a leaf module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from protoc_gen_connect_python.runtime.codec import Codec
from protoc_gen_connect_python.runtime.compression import Compression

__all__ = ["MiB", "ServerOptions", "ServerOptionsKwargs"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerOptions:
    """Settings shared by ``ASGIApp`` and ``WSGIApp``; pass them as keywords."""

    read_max_bytes: int = 4 * MiB
    """Largest request message accepted, compressed and again decompressed
    (0 = no limit). Checked before the bytes are buffered."""
    send_max_bytes: int = 0
    """Largest response message sent, after compression (0 = no limit). A
    handler's own output is trusted by default, as in gRPC."""
    compress_min_bytes: int = 1024
    """Responses smaller than this are sent uncompressed; compressing them costs
    more than it saves."""
    compressions: tuple[str | Compression, ...] | None = None
    """Accepted and offered algorithms, by name or object, in order of
    preference; None means every one available (gzip, and br and zstd when
    their packages are installed). An empty tuple means identity only."""
    codecs: tuple[Codec, ...] = ()
    """Codecs in addition to the built-in ``proto`` and ``json`` (a codec with
    one of those names replaces the built-in one)."""
    require_connect_protocol_header: bool = False
    """Reject Connect requests without ``Connect-Protocol-Version`` (or, for GET,
    the ``connect=v1`` query parameter), which proves the caller is a Connect
    client and not a plain HTTP form post."""
    expose_internal_errors: bool = False
    """Send the text of exceptions that are not ConnectError to clients. Off by
    default: such text may leak internals. They are logged either way."""
    prime_allocator: bool = True
    """Let the C allocator keep large blocks for reuse from the start (see
    ``runtime.allocator.prime_allocator``); it is a setting of the whole
    process."""
    shutdown_grace: float = 10.0
    """Seconds streams may run on once shutdown began (SIGTERM, lifespan
    shutdown); those still open then end with ``unavailable``. Keep it below
    the server's own limit (gunicorn's ``--graceful-timeout``, hypercorn's
    ``--graceful-timeout``, uvicorn's ``--timeout-graceful-shutdown``)."""


class ServerOptionsKwargs(TypedDict, total=False):
    """``ServerOptions`` fields as keyword arguments of the app constructors."""

    read_max_bytes: int
    send_max_bytes: int
    compress_min_bytes: int
    compressions: tuple[str | Compression, ...] | None
    codecs: tuple[Codec, ...]
    require_connect_protocol_header: bool
    expose_internal_errors: bool
    prime_allocator: bool
    shutdown_grace: float
