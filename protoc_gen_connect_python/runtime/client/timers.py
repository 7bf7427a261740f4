"""When a client stops waiting on the network, decided without I/O.

The transports (asyncio and blocking sockets, HTTP/1.1 and HTTP/2) ask the
pieces here which bound applies to a wait, what error a wait that ran out
reports, which pooled connections have expired, whether a host has room for
another connection, and what an HTTP/2 connection's clock asks for (a PING,
giving up on a silent peer, closing when idle). They pass the time in; nothing
here reads a clock, sleeps or touches a socket.

The codes follow gRPC: a connection that cannot be opened in time, or a peer
that went silent, is ``unavailable`` (the call may be retried elsewhere); only
the call's own deadline is ``deadline_exceeded``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from protoc_gen_connect_python.runtime.client.config import ConnectionOptions
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError

__all__ = [
    "ConnectionClock",
    "HostSlots",
    "IdlePool",
    "bound",
    "connect_timeout_error",
    "idle_error",
    "timeout_error",
]

C = TypeVar("C")
K = TypeVar("K", bound=Hashable)


def bound(
    own: float | None, deadline: float | None, now: float
) -> tuple[float | None, bool]:
    """The seconds a wait may last, and whether the call's deadline sets them.

    ``own`` is the wait's own limit (a connect or read-idle timeout), None for
    none; ``deadline`` the call's deadline on the clock of ``now``. A deadline
    already past gives 0 seconds.
    """
    if deadline is None:
        return own, False
    left = max(deadline - now, 0.0)
    if own is None or left <= own:
        return left, True
    return own, False


def deadline_error(what: str) -> ConnectError:
    """The error of a call whose own deadline ran out while it ``what``."""
    return ConnectError(Code.DEADLINE_EXCEEDED, f"deadline exceeded {what}")


def connect_timeout_error(host: str, port: int, seconds: float) -> ConnectError:
    """The error of a connection (TCP and TLS) not opened within its timeout."""
    return ConnectError(
        Code.UNAVAILABLE,
        f"cannot connect to {host}:{port}: no connection within {seconds:g} s"
        " (connect_timeout)",
    )


def idle_error(seconds: float) -> ConnectError:
    """The error of a call that waited on a silent peer for too long."""
    return ConnectError(
        Code.UNAVAILABLE,
        f"the server sent nothing for {seconds:g} s (read_idle_timeout)",
    )


def timeout_error(by_deadline: bool, idle: float | None) -> ConnectError:
    """What a wait bounded by :func:`bound` reports when it runs out."""
    if by_deadline or idle is None:
        return deadline_error("waiting for the server")
    return idle_error(idle)


class IdlePool(Generic[K, C]):
    """Connections without calls, per key, each with the time it became idle.

    ``put`` refuses past ``max_per_key`` (the caller closes the connection);
    ``take`` returns the most recently used one that has not expired. Expired
    ones are handed back by :meth:`take` and :meth:`expired` for the caller to
    close. ``idle_timeout`` None keeps connections until the server closes them.
    """

    __slots__ = ("_idle", "idle_timeout", "max_per_key")

    def __init__(self, idle_timeout: float | None, max_per_key: int) -> None:
        self.idle_timeout = idle_timeout
        self.max_per_key = max_per_key
        self._idle: dict[K, list[tuple[float, C]]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def put(self, key: K, conn: C, now: float) -> bool:
        """Keep ``conn`` for reuse; False when ``key`` already has enough."""
        conns = self._idle.setdefault(key, [])
        if len(conns) >= self.max_per_key:
            return False
        conns.append((now, conn))
        return True

    def take(self, key: K, now: float) -> tuple[C | None, list[C]]:
        """A connection for ``key`` (newest first), and the expired ones dropped."""
        conns = self._idle.get(key)
        if not conns:
            return None, []
        since, conn = conns.pop()
        if not self._stale(since, now):
            if not conns:
                del self._idle[key]
            return conn, []
        # The newest is stale: all older ones are too.
        dropped = [conn, *(c for _, c in conns)]
        del self._idle[key]
        return None, dropped

    def expired(self, now: float) -> list[C]:
        """Remove and return every connection idle for longer than the timeout."""
        if self.idle_timeout is None:
            return []
        out: list[C] = []
        for key in list(self._idle):
            conns = self._idle[key]
            fresh = [(t, c) for t, c in conns if not self._stale(t, now)]
            if len(fresh) != len(conns):
                out.extend(c for t, c in conns if self._stale(t, now))
                if fresh:
                    self._idle[key] = fresh
                else:
                    del self._idle[key]
        return out

    def next_expiry(self) -> float | None:
        """When the oldest idle connection expires; None if none will."""
        if self.idle_timeout is None or not self._idle:
            return None
        return min(c[0][0] for c in self._idle.values()) + self.idle_timeout

    def discard(self, key: K, conn: C) -> None:
        """Forget ``conn`` (it closed while idle)."""
        conns = self._idle.get(key)
        if conns:
            conns[:] = [(t, c) for t, c in conns if c is not conn]
            if not conns:
                del self._idle[key]

    def clear(self) -> list[C]:
        """Remove and return every idle connection."""
        out = [c for conns in self._idle.values() for _, c in conns]
        self._idle.clear()
        return out

    def _stale(self, since: float, now: float) -> bool:
        return self.idle_timeout is not None and now - since >= self.idle_timeout


class HostSlots(Generic[K]):
    """Counts open connections per key against ``max_connections_per_host``."""

    __slots__ = ("_open", "cap")

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self._open: dict[K, int] = {}

    def count(self, key: K) -> int:
        """Connections counted for ``key`` (opening, in use or idle)."""
        return self._open.get(key, 0)

    def try_open(self, key: K) -> bool:
        """Count one more connection for ``key``, unless it is at the cap."""
        n = self._open.get(key, 0)
        if self.cap is not None and n >= self.cap:
            return False
        self._open[key] = n + 1
        return True

    def closed(self, key: K) -> None:
        """One connection of ``key`` is gone."""
        n = self._open.get(key, 0) - 1
        if n > 0:
            self._open[key] = n
        else:
            self._open.pop(key, None)


class ConnectionClock:
    """The timers of one HTTP/2 connection: SETTINGS ack, keepalive, idle expiry.

    The shell reports what happens (bytes received, the SETTINGS ack, a PING
    acknowledged, streams open or none) and calls :meth:`check` when the time
    it last returned comes. :meth:`check` answers with one action and the next
    time to call it:

    * ``"settings"``: the server never acknowledged SETTINGS; fail the
      connection (GOAWAY ``SETTINGS_TIMEOUT``);
    * ``"ping"``: calls are open and the server has been silent for
      ``keepalive_interval``; send a PING, call :meth:`ping_sent`, check again;
    * ``"dead"``: the PING went unanswered for ``keepalive_timeout``; drop the
      connection, its calls fail with ``unavailable``;
    * ``"expire"``: no call for ``pool_idle_timeout``; close the connection;
    * ``None``: nothing to do yet.
    """

    __slots__ = (
        "_idle_since",
        "_last_read",
        "_opened",
        "_opts",
        "_ping_at",
        "settings_acked",
    )

    def __init__(self, options: ConnectionOptions, now: float) -> None:
        self._opts = options
        self._opened = now
        self._last_read = now
        self._ping_at: float | None = None
        self._idle_since: float | None = now
        self.settings_acked = False

    def received(self, now: float) -> None:
        """Bytes came from the server."""
        self._last_read = now

    def ping_sent(self, now: float) -> None:
        """The PING asked for by :meth:`check` went out."""
        self._ping_at = now

    def ping_acked(self) -> None:
        """The server acknowledged the PING."""
        self._ping_at = None

    def streams(self, count: int, now: float) -> bool:
        """The connection has ``count`` open streams; True if it just became
        busy or idle (the next check time changed)."""
        if count:
            if self._idle_since is None:
                return False
            self._idle_since = None
            return True
        if self._idle_since is not None:
            return False
        self._idle_since = now
        return True

    def check(self, now: float) -> tuple[str | None, float | None]:
        """The action due at ``now`` and when to check next (None: never)."""
        o = self._opts
        times: list[float] = []
        if not self.settings_acked:
            due = self._opened + o.settings_timeout
            if now >= due:
                return "settings", None
            times.append(due)
        if self._ping_at is not None:
            due = self._ping_at + o.keepalive_timeout
            if now >= due:
                return "dead", None
            times.append(due)
        elif o.keepalive_interval is not None and self._idle_since is None:
            due = self._last_read + o.keepalive_interval
            if now >= due:
                return "ping", None
            times.append(due)
        if self._idle_since is not None and o.pool_idle_timeout is not None:
            due = self._idle_since + o.pool_idle_timeout
            if now >= due:
                return "expire", None
            times.append(due)
        return None, min(times) if times else None
