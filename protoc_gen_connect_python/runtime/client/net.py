"""What the pure-Python transports share: URL targets, TLS settings, errors.

``http1_transport.py`` and ``http2_transport.py`` both parse request URLs into
a :class:`Target` (pool key, host, port, authority), build their TLS context
from the client's options on first use with :class:`LazySSLContext`, and turn
failures of the network into :class:`ConnectError` with :func:`map_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import tempfile
import threading

from protoc_gen_connect_python.runtime.client.config import ClientConfig
from protoc_gen_connect_python.runtime.client.timers import HostSlots, idle_error
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError

__all__ = [
    "AsyncSlots",
    "Key",
    "LazySSLContext",
    "Target",
    "TargetCache",
    "canceled",
    "expire",
    "map_error",
    "set_keepalive",
    "shutdown_now",
    "ssl_context",
]

Key = tuple[str, str, int]
"""A pool key: (scheme, host, port)."""


class Target:
    """Where a URL goes: pool key, host to connect to, authority, TLS or not."""

    __slots__ = ("host", "host_header", "key", "port", "scheme", "tls")

    def __init__(self, scheme: str, authority: str) -> None:
        if scheme not in ("http", "https"):
            raise ConnectError(Code.INTERNAL, f"unsupported URL scheme {scheme!r}")
        self.scheme = scheme
        self.tls = scheme == "https"
        host, port = authority, 443 if self.tls else 80
        if authority.startswith("["):  # IPv6 literal
            end = authority.find("]")
            if end == -1:
                raise ConnectError(Code.INTERNAL, f"invalid host {authority!r}")
            host = authority[1:end]
            rest = authority[end + 1 :]
            if rest.startswith(":") and rest[1:]:
                port = _port(rest[1:], authority)
        elif ":" in authority:
            host, _, p = authority.rpartition(":")
            if p:
                port = _port(p, authority)
        if not host:
            raise ConnectError(Code.INTERNAL, f"no host in {authority!r}")
        self.host = host
        self.port = port
        self.host_header = authority
        self.key: Key = (scheme, host, port)


def _port(text: str, authority: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConnectError(Code.INTERNAL, f"invalid port in {authority!r}")
    return int(text)


class TargetCache:
    """Parses absolute request URLs, remembering the target of each authority."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Target] = {}

    def parse(self, url: str) -> tuple[Target, str]:
        """The target of ``url`` and its request target (path and query)."""
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ConnectError(Code.INTERNAL, f"not an absolute URL: {url!r}")
        slash = rest.find("/")
        if slash == -1:
            authority, path = rest, "/"
        else:
            authority, path = rest[:slash], rest[slash:]
        q = authority.find("?")
        if q != -1:
            authority, path = authority[:q], "/" + authority[q:]
        if "@" in authority:
            raise ConnectError(Code.INTERNAL, "credentials in URLs are not supported")
        key = (scheme, authority)
        target = self._cache.get(key)
        if target is None:
            if len(self._cache) > 256:
                self._cache.clear()
            target = self._cache[key] = Target(scheme, authority)
        return target, path


def _load_pem_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl loads certificate chains from files only: write them to a private
    # temporary directory for the time of the call.
    with tempfile.TemporaryDirectory(prefix="connect-tls-") as d:
        cert_path = os.path.join(d, "cert.pem")
        key_path = os.path.join(d, "key.pem")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)


def ssl_context(config: ClientConfig | None, alpn: str) -> ssl.SSLContext:
    """The TLS settings of a client (its CA or the system's, its certificate).

    ``alpn`` is the one protocol offered: ``"http/1.1"`` or ``"h2"``.
    """
    ca = config.tls_ca_cert if config is not None else None
    if ca is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_verify_locations(cadata=ca.decode("ascii"))
        except (ssl.SSLError, ValueError) as e:
            raise ValueError(f"tls_ca_cert: {e}") from e
    else:
        ctx = ssl.create_default_context()
    if (
        config is not None
        and config.tls_cert is not None
        and config.tls_key is not None
    ):
        try:
            _load_pem_chain(ctx, config.tls_cert, config.tls_key)
        except ssl.SSLError as e:
            raise ValueError(f"tls_cert/tls_key: {e}") from e
    ctx.set_alpn_protocols([alpn])
    return ctx


class LazySSLContext:
    """A client's TLS context offering one ALPN protocol, built on first use.

    Plain-text clients never pay for loading certificates. Thread-safe: the
    context is built once even when threads ask for it together; a build that
    fails raises its error and is tried again at the next call.
    """

    __slots__ = ("_alpn", "_config", "_ctx", "_lock")

    def __init__(self, config: ClientConfig | None, alpn: str) -> None:
        self._config = config
        self._alpn = alpn
        self._ctx: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def get(self) -> ssl.SSLContext:
        """The context, built by :func:`ssl_context` at the first call."""
        ctx = self._ctx
        if ctx is None:
            with self._lock:
                if self._ctx is None:
                    self._ctx = ssl_context(self._config, self._alpn)
                ctx = self._ctx
        return ctx


def map_error(
    e: BaseException, protocol_error: type[Exception] | None = None
) -> ConnectError:
    """The RPC error for a failure of the network or of HTTP (as for pyqwest).

    ``protocol_error`` is the exception type of the HTTP parser in use: a peer
    breaking the protocol makes the call ``unavailable``.
    """
    if isinstance(e, ConnectError):
        return e
    if isinstance(e, TimeoutError):
        code = Code.DEADLINE_EXCEEDED
    elif isinstance(e, (OSError, EOFError)) or (
        protocol_error is not None and isinstance(e, protocol_error)
    ):
        code = Code.UNAVAILABLE
    else:
        code = Code.UNKNOWN
    return ConnectError(code, f"{type(e).__name__}: {e}")


class AsyncSlots:
    """``max_connections_per_host`` for the asyncio transports.

    Counts connections per key (:class:`~.timers.HostSlots`) and holds the
    calls waiting for room; the call's deadline (a cancellation) ends a wait.
    """

    __slots__ = ("_slots", "_waiting")

    def __init__(self, cap: int | None) -> None:
        self._slots: HostSlots[Key] = HostSlots(cap)
        self._waiting: dict[Key, list[asyncio.Future[None]]] = {}

    def try_open(self, key: Key) -> bool:
        """Count a new connection to ``key``, unless it is at the cap."""
        return self._slots.try_open(key)

    async def wait(self, key: Key, loop: asyncio.AbstractEventLoop) -> None:
        """Until a connection to ``key`` closes or has room for another call."""
        f = loop.create_future()
        self._waiting.setdefault(key, []).append(f)
        try:
            await f
        finally:
            waiting = self._waiting.get(key)
            if waiting is not None and f in waiting:
                waiting.remove(f)

    def closed(self, key: Key) -> None:
        """A counted connection to ``key`` is gone: its slot is free."""
        self._slots.closed(key)
        self.wake(key)

    def wake_all(self) -> None:
        """Let every waiting call look again (the transport is closing)."""
        for key in list(self._waiting):
            self.wake(key)

    def wake(self, key: Key) -> None:
        """Let the calls waiting for ``key`` look again."""
        waiting = self._waiting.pop(key, None)
        if waiting:
            for f in waiting:
                if not f.done():
                    f.set_result(None)


def expire(waiter: asyncio.Future[None], seconds: float) -> None:
    """Fail ``waiter`` (a call waiting on the peer) after ``seconds`` of silence.

    Scheduled by the asyncio transports with ``loop.call_later`` for
    ``read_idle_timeout``, and cancelled when news comes first.
    """
    if not waiter.done():
        waiter.set_exception(idle_error(seconds))


def canceled() -> ConnectError:
    """The error of a call that this side gave up on."""
    return ConnectError(Code.CANCELED, "request canceled by the client")


TCP_KEEPALIVE_IDLE = 30
"""Seconds of silence on a connection before the kernel sends TCP keepalive probes."""
TCP_KEEPALIVE_INTERVAL = 10
"""Seconds between TCP keepalive probes."""
TCP_KEEPALIVE_PROBES = 3
"""Unanswered probes after which the kernel resets the connection."""


def set_keepalive(sock: object) -> None:
    """Turn TCP keepalive on for ``sock`` (and Nagle off).

    A peer whose host vanished (powered off, cut off) answers no probe: the
    kernel resets the connection about a minute later and the calls on it fail
    with ``unavailable``. Servers never see these probes as requests, unlike
    HTTP/2 PINGs. Options a platform lacks are skipped.
    """
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is None:
        return
    with contextlib.suppress(OSError):
        setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", TCP_KEEPALIVE_IDLE),
            ("TCP_KEEPINTVL", TCP_KEEPALIVE_INTERVAL),
            ("TCP_KEEPCNT", TCP_KEEPALIVE_PROBES),
        ):
            opt = getattr(socket, name, None)
            if opt is not None:
                setsockopt(socket.IPPROTO_TCP, opt, value)


def shutdown_now(transport: asyncio.BaseTransport) -> None:
    """Shut the socket of ``transport`` down at once, before it is closed.

    ``abort()`` closes the socket on the loop's next iteration; shutting it down
    now lets the server learn at once, even if the caller blocks the loop.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = sock.fileno()
        if fd >= 0:
            with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as dup:
                dup.shutdown(socket.SHUT_RDWR)
