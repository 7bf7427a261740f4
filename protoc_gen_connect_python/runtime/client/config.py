"""Client options, validated once and shared by the async and sync clients."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

from protoc_gen_connect_python.runtime.client.interceptors import ClientInterceptor
from protoc_gen_connect_python.runtime.client.retry import RetryPolicy
from protoc_gen_connect_python.runtime.codec import CODECS, Codec
from protoc_gen_connect_python.runtime.compression import COMPRESSIONS, Compression
from protoc_gen_connect_python.runtime.headers import Headers, HeadersInput

PEMInput = Union[bytes, str, "os.PathLike[str]"]
"""PEM data as bytes, or the path of a PEM file."""

Protocol = Literal["connect", "grpc", "grpc-web"]
HTTPVersionName = Literal["1.1", "2", "3"]

DEFAULT_READ_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_COMPRESS_MIN_BYTES = 1024
DEFAULT_GET_URL_MAX_BYTES = 8 * 1024
SUPPORTED_PROTOCOLS = ("connect", "grpc", "grpc-web")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 20.0
DEFAULT_POOL_IDLE_TIMEOUT = 90.0
DEFAULT_SETTINGS_TIMEOUT = 10.0


def _seconds(name: str, value: object, *, optional: bool = True) -> None:
    """Refuse a duration that is not a positive number of seconds (or None)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a number of seconds or None" if optional else "a number of seconds"
        raise ValueError(f"{name} must be {kind}: {value!r}")
    if value != value or value <= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive, finite number of seconds")


@dataclass(frozen=True)
class ConnectionOptions:
    """How long a client waits on the network, and how many connections it keeps.

    Every wait on the peer is bounded by one of these or by the call's deadline,
    whichever ends first (see docs/client.md, "Timeouts and keepalive"). Values
    are checked when built: a bad one raises ValueError naming the field.
    """

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    """Seconds to open a connection (TCP and TLS): past it, ``unavailable``."""
    read_idle_timeout: float | None = None
    """Seconds a call may wait on a silent peer before it fails with
    ``unavailable``; None waits until the call's deadline."""
    keepalive_interval: float | None = None
    """HTTP/2: seconds without a byte from the peer, while calls are open,
    before the client sends a PING; None sends none."""
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    """HTTP/2: seconds to wait for the PING's acknowledgement before the
    connection is dropped and its calls fail with ``unavailable``."""
    settings_timeout: float = DEFAULT_SETTINGS_TIMEOUT
    """HTTP/2: seconds for the server to acknowledge the client's SETTINGS
    before the connection fails (``SETTINGS_TIMEOUT``) with ``unavailable``."""
    pool_idle_timeout: float | None = DEFAULT_POOL_IDLE_TIMEOUT
    """Seconds a connection without calls stays open for reuse; None: no limit."""
    max_connections_per_host: int | None = None
    """Connections open at once per (scheme, host, port); calls past it wait
    for one, within their deadline. None: no cap."""

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "keepalive_timeout", "settings_timeout"):
            _seconds(name, getattr(self, name), optional=False)
        for name in ("read_idle_timeout", "keepalive_interval", "pool_idle_timeout"):
            _seconds(name, getattr(self, name))
        cap = self.max_connections_per_host
        if cap is not None and (
            isinstance(cap, bool) or not isinstance(cap, int) or cap < 1
        ):
            raise ValueError(
                f"max_connections_per_host must be a positive int or None: {cap!r}"
            )


DEFAULT_CONNECTION = ConnectionOptions()


@dataclass(frozen=True, eq=False)
class ClientConfig:
    """Every option of a client, resolved: names turned into objects, limits checked.

    Built by the client constructors from their keyword arguments; protocol code
    and transports read it, nobody changes it.
    """

    base_url: str
    protocol: Protocol = "connect"
    codec: Codec = CODECS["proto"]
    send_compression: Compression | None = None
    accept_compression: tuple[Compression, ...] = ()
    compress_min_bytes: int = DEFAULT_COMPRESS_MIN_BYTES
    read_max_bytes: int = DEFAULT_READ_MAX_BYTES
    send_max_bytes: int = 0
    timeout: float | None = None
    headers: Headers = field(default_factory=Headers)
    use_get: bool = False
    get_url_max_bytes: int = DEFAULT_GET_URL_MAX_BYTES
    http_version: HTTPVersionName | None = None
    tls_ca_cert: bytes | None = None
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    interceptors: tuple[ClientInterceptor, ...] = ()
    retry: RetryPolicy | None = None
    propagate_deadline: bool = True
    connection: ConnectionOptions = DEFAULT_CONNECTION

    @property
    def decompressors(self) -> dict[str, Compression]:
        """Algorithms the client decodes responses with, by name."""
        out = {c.name: c for c in self.accept_compression}
        if self.send_compression is not None:
            out.setdefault(self.send_compression.name, self.send_compression)
        return out


def _quacks(value: object, *methods: str) -> bool:
    """Whether ``value`` has a str ``name`` and these methods (codecs, compressions)."""
    return isinstance(getattr(value, "name", None), str) and all(
        callable(getattr(value, m, None)) for m in methods
    )


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


def _headers(value: HeadersInput | None) -> Headers:
    if value is None:
        return Headers()
    try:
        out = Headers(value)
    except (TypeError, ValueError):
        raise ValueError(
            "headers must be a Headers, a mapping or (name, value) pairs of str"
        ) from None
    for k, v in out.multi_items():
        if not isinstance(k, str) or not _TOKEN.fullmatch(k):
            raise ValueError(f"header name {k!r} is not a valid HTTP field name")
        if not isinstance(v, str) or _BAD_VALUE.search(v):
            raise ValueError(f"value of header {k!r} must be a str without CR, LF, NUL")
    return out


def _read_pem(value: PEMInput | None, what: str) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if not isinstance(value, (str, os.PathLike)):
        # An int would be taken for a file descriptor by open().
        raise ValueError(f"{what} must be PEM bytes or a file path: {value!r}")
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read {what} from {os.fspath(value)!r}: {e}") from e


def _compression(value: str | Compression) -> Compression:
    if not isinstance(value, str):
        if not _quacks(value, "compress", "decompress"):
            raise ValueError(
                f"a compression must be a name or a Compression: {value!r}"
            )
        return value
    found = COMPRESSIONS.get(value)
    if found is None:
        raise ValueError(
            f"compression {value!r} is not available "
            f"(have: {', '.join(COMPRESSIONS) or 'none'}); "
            "br needs the brotli package, zstd the zstandard package"
        )
    return found


def build_config(
    base_url: str,
    *,
    protocol: Protocol = "connect",
    codec: str | Codec = "proto",
    send_compression: str | Compression | None = None,
    accept_compression: Sequence[str | Compression] | None = None,
    compress_min_bytes: int = DEFAULT_COMPRESS_MIN_BYTES,
    read_max_bytes: int = DEFAULT_READ_MAX_BYTES,
    send_max_bytes: int = 0,
    timeout: float | None = None,
    headers: HeadersInput | None = None,
    use_get: bool = False,
    get_url_max_bytes: int = DEFAULT_GET_URL_MAX_BYTES,
    http_version: HTTPVersionName | None = None,
    tls_ca_cert: PEMInput | None = None,
    tls_cert: PEMInput | None = None,
    tls_key: PEMInput | None = None,
    interceptors: Sequence[ClientInterceptor] = (),
    retry: RetryPolicy | None = None,
    propagate_deadline: bool = True,
    connection: ConnectionOptions | None = None,
) -> ClientConfig:
    """Check the client constructor's arguments and resolve them into a config.

    Raises ValueError for anything unusable, so mistakes surface when the client
    is built rather than on its first call.
    """
    _check_types(
        base_url=base_url,
        codec=codec,
        timeout=timeout,
        use_get=use_get,
        ints=(
            ("compress_min_bytes", compress_min_bytes),
            ("read_max_bytes", read_max_bytes),
            ("send_max_bytes", send_max_bytes),
            ("get_url_max_bytes", get_url_max_bytes),
        ),
        interceptors=interceptors,
        retry=retry,
        propagate_deadline=propagate_deadline,
        connection=connection,
    )
    if accept_compression is not None and isinstance(accept_compression, (str, bytes)):
        raise ValueError("accept_compression must be a sequence of names")
    if protocol not in SUPPORTED_PROTOCOLS:
        raise ValueError(
            f"unsupported protocol {protocol!r}; supported: {', '.join(SUPPORTED_PROTOCOLS)}"
        )
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://: {base_url!r}")
    if isinstance(codec, str):
        found = CODECS.get(codec)
        if found is None:
            raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
        codec = found
    accept = tuple(
        _compression(c)
        for c in (
            accept_compression if accept_compression is not None else COMPRESSIONS
        )
    )
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be positive")
    for name, value in (
        ("compress_min_bytes", compress_min_bytes),
        ("read_max_bytes", read_max_bytes),
        ("send_max_bytes", send_max_bytes),
        ("get_url_max_bytes", get_url_max_bytes),
    ):
        if value < 0:
            raise ValueError(f"{name} must not be negative")
    if http_version not in (None, "1.1", "2", "3"):
        raise ValueError(
            f'http_version must be None, "1.1", "2" or "3": {http_version!r}'
        )
    if http_version == "3" and not base_url.startswith("https://"):
        # QUIC always runs TLS: there is no cleartext HTTP/3.
        raise ValueError('http_version="3" needs an https:// base_url')
    if protocol == "grpc":
        # gRPC needs HTTP/2 or later (trailers, full duplex): h2c prior
        # knowledge for http://, ALPN h2 for https://, or HTTP/3 when asked.
        if http_version == "1.1":
            raise ValueError(
                'protocol "grpc" needs HTTP/2; use http_version="2", "3" or None'
            )
        if http_version is None:
            http_version = "2"
    cert = _read_pem(tls_cert, "tls_cert")
    key = _read_pem(tls_key, "tls_key")
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key must be given together")
    return ClientConfig(
        base_url=base_url.rstrip("/"),
        protocol=protocol,
        codec=codec,
        send_compression=None
        if send_compression is None
        else _compression(send_compression),
        accept_compression=accept,
        compress_min_bytes=compress_min_bytes,
        read_max_bytes=read_max_bytes,
        send_max_bytes=send_max_bytes,
        timeout=timeout,
        headers=_headers(headers),
        use_get=use_get,
        get_url_max_bytes=get_url_max_bytes,
        http_version=http_version,
        tls_ca_cert=_read_pem(tls_ca_cert, "tls_ca_cert"),
        tls_cert=cert,
        tls_key=key,
        interceptors=tuple(interceptors),
        retry=retry,
        propagate_deadline=propagate_deadline,
        connection=connection or DEFAULT_CONNECTION,
    )


def _check_types(
    *,
    base_url: object,
    codec: object,
    timeout: object,
    use_get: object,
    ints: tuple[tuple[str, object], ...],
    interceptors: object,
    retry: object,
    propagate_deadline: object,
    connection: object,
) -> None:
    """Refuse option values of the wrong type, which would fail only at a call."""
    if not isinstance(base_url, str):
        raise ValueError(f"base_url must be a str: {base_url!r}")
    if not isinstance(codec, str) and not _quacks(codec, "encode", "decode"):
        raise ValueError(f"codec must be a name or a Codec: {codec!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float))
    ):
        raise ValueError(f"timeout must be a number of seconds or None: {timeout!r}")
    if isinstance(timeout, float) and timeout != timeout:
        raise ValueError("timeout must not be NaN")
    for name, flag in (
        ("use_get", use_get),
        ("propagate_deadline", propagate_deadline),
    ):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False: {flag!r}")
    for name, value in ints:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int: {value!r}")
    if isinstance(interceptors, (str, bytes)) or not isinstance(interceptors, Sequence):
        raise ValueError("interceptors must be a sequence of ClientInterceptor")
    for i in interceptors:
        if not isinstance(i, ClientInterceptor):
            raise ValueError(f"interceptors must be ClientInterceptor instances: {i!r}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ValueError(f"retry must be a RetryPolicy or None: {retry!r}")
    if connection is not None and not isinstance(connection, ConnectionOptions):
        raise ValueError(
            f"connection must be a ConnectionOptions or None: {connection!r}"
        )
