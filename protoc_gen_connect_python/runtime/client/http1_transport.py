"""HTTP/1.1 transports in pure Python: an asyncio shell and a socket shell.

Both drive the sans-IO code of ``http1.py`` and implement the transport
interface of ``transport.py``. Each keeps a pool of idle keep-alive connections
per (scheme, host, port). A connection goes back to the pool only after a
complete exchange (request fully sent, response fully read, no
``Connection: close``, nothing extra received); a call that ends early in any
way (cancellation, deadline, ``aclose``/``close``, an error) closes its
connection instead.

Why not pyqwest here: pyqwest runs its I/O on native threads, and every await
of it is a cross-thread wake-up of the event loop. This transport reads on the
loop itself, so a small unary call costs one wake-up for the whole response.
``http2_transport.py`` does the same for HTTP/2.

Streamed request bodies use the chunked coding. The async shell sends them from
a task while the response is read (servers that answer early get their answer
read); the sync shell sends the whole body first, then reads (half duplex).

Both shells bound opening a connection by ``connect_timeout`` and a call
waiting on the server by ``read_idle_timeout``, close pooled connections
idle for ``pool_idle_timeout`` and keep at most ``max_connections_per_host``
open (all from ``ClientConfig.connection``); ``timers.py`` decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

from protoc_gen_connect_python.runtime.client.config import (
    DEFAULT_CONNECTION,
    ClientConfig,
)
from protoc_gen_connect_python.runtime.client.http1 import (
    LAST_CHUNK,
    Limits,
    ProtocolError,
    ResponseParser,
    request_end,
    request_head,
    request_start,
    writes,
)
from protoc_gen_connect_python.runtime.client.interface import (
    AsyncResponse,
    HTTPRequest,
    RequestPrefix,
    SyncResponse,
)
from protoc_gen_connect_python.runtime.client.net import (
    AsyncSlots,
    Key,
    LazySSLContext,
    Target,
    TargetCache,
    canceled,
    expire,
    map_error,
    set_keepalive,
    shutdown_now,
)
from protoc_gen_connect_python.runtime.client.timers import (
    HostSlots,
    IdlePool,
    bound,
    connect_timeout_error,
    deadline_error,
    timeout_error,
)
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers

__all__ = ["AsyncHTTP1Transport", "SyncHTTP1Transport"]

MAX_IDLE_PER_HOST = 64
"""Idle connections kept per (scheme, host, port); more are closed."""
READ_PAUSE_BYTES = 256 * 1024
"""Unread response bytes at which the async shell stops reading the socket."""
RECV_BYTES = 64 * 1024
"""Largest read of the sync shell."""
_CHUNK_MAX = 64 * 1024  # streamed pieces are gathered into chunks up to this size


class Targets(TargetCache):
    """Parses request URLs (see :class:`TargetCache`) and encodes heads.

    The encoded start of the head of requests with a :class:`RequestPrefix`
    (request line, ``host`` and the method's constant headers) is kept per
    prefix, so that a call encodes only its own headers and the framing.
    """

    __slots__ = ("_starts",)

    def __init__(self) -> None:
        super().__init__()
        self._starts: dict[RequestPrefix, tuple[Target, bytes]] = {}

    def head(
        self, request: HTTPRequest, content_length: int | None
    ) -> tuple[Target, bytes]:
        """Where ``request`` goes and its head; ``content_length`` as for request_head."""
        pre = request.prefix
        headers = request.headers
        if (
            pre is not None
            and pre.url == request.url
            and pre.method == request.method
            and len(headers) >= pre.count
        ):
            found = self._starts.get(pre)
            if found is None:
                found = self._start(pre, headers)
            if found is not None:
                try:
                    end = request_end(pre.method, headers[pre.count :], content_length)
                except ValueError as e:
                    raise ConnectError(Code.INTERNAL, f"invalid request: {e}") from None
                return found[0], found[1] + end
        target, path = self.parse(request.url)
        return target, _head_bytes(request, target, path, content_length)

    def _start(
        self, pre: RequestPrefix, headers: list[tuple[str, str]]
    ) -> tuple[Target, bytes] | None:
        target, path = self.parse(pre.url)
        try:
            start = request_start(
                pre.method, path, target.host_header, headers[: pre.count]
            )
        except ValueError:
            return None  # request_head reports it
        if len(self._starts) > 256:
            self._starts.clear()
        found = self._starts[pre] = (target, start)
        return found


def _head_bytes(
    request: HTTPRequest, target: Target, path: str, length: int | None
) -> bytes:
    try:
        return request_head(
            request.method, path, target.host_header, request.headers, length
        )
    except ValueError as e:
        raise ConnectError(Code.INTERNAL, f"invalid request: {e}") from None


def _trailers(parser: ResponseParser) -> Headers:
    return Headers._from_lower(parser.trailers)


# -- asyncio ---------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One connection on the event loop; carries one exchange at a time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        key: Key,
        owner: AsyncHTTP1Transport | None = None,
    ) -> None:
        self.loop = loop
        self.key = key
        self.owner = owner  # told when the connection is gone
        self.counted = False  # holds one of the owner's host slots
        self.idle_timeout: float | None = None if owner is None else owner._read_idle
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None  # None while idle
        self.received = False  # any byte of the current response
        self.closed = False
        self.aborted = False  # closed by this side before the end
        self.error: BaseException | None = None  # what made the connection fail
        self.read_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._held = b""

    # protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_keepalive(transport.get_extra_info("socket"))

    def data_received(self, data: bytes) -> None:
        p = self.parser
        if p is None:
            # Nothing is expected on an idle connection.
            self.close()
            return
        self.received = True
        p.feed(data)
        if p.buffered > READ_PAUSE_BYTES and not self.read_paused:
            self.read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def eof_received(self) -> bool:
        if self.parser is not None:
            self.parser.feed_eof()
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self.error is None:
            self.error = exc
        owner, self.owner = self.owner, None
        if owner is not None:
            owner._gone(self)
        if self.parser is not None:
            self.parser.feed_eof()
        self._wake()
        d = self._drain
        if d is not None:
            self._drain = None
            if not d.done():
                d.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        d = self._drain
        if d is not None:
            self._drain = None
            if not d.done():
                d.set_result(None)

    # for the transport

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def wait(self) -> None:
        """Until more bytes arrive or the connection ends."""
        if self.aborted:
            raise canceled()
        if self.closed:
            # The parser has seen the end; it raises or finishes.
            return
        w = self.loop.create_future()
        self._waiter = w
        idle = self.idle_timeout
        timer = None if idle is None else self.loop.call_later(idle, expire, w, idle)
        try:
            await w
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self.aborted:
            raise canceled()

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectError(Code.UNAVAILABLE, "connection closed while sending")
        assert self.transport is not None
        if self._held:
            data = self._held + data
            self._held = b""
        self.transport.write(data)

    def hold(self, data: bytes) -> None:
        """Write ``data`` with the next write, or on the next loop iteration.

        A request head waits for the first body chunk this way when that chunk
        is ready at once: a server that answers and closes as soon as it sees
        the head then has nothing unread, and closes without a reset that could
        destroy its answer.
        """
        self._held = data
        self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._held and not self.closed:
            assert self.transport is not None
            self.transport.write(self._held)
        self._held = b""

    async def drain(self) -> None:
        while self._write_paused and not self.closed:
            d = self.loop.create_future()
            self._drain = d
            await d

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def close(self) -> None:
        """Drop the connection at once (never reused)."""
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                shutdown_now(self.transport)
                self.transport.abort()
        self._wake()

    def abort(self) -> None:
        """Close because this side gave up on the exchange."""
        self.aborted = True
        self.close()


class _AsyncResponse:
    __slots__ = ("_conn", "_done", "_owner", "_parser", "_pump", "headers", "status")

    def __init__(
        self,
        owner: AsyncHTTP1Transport,
        conn: _Connection,
        parser: ResponseParser,
        status: int,
        headers: Headers,
        pump: asyncio.Task[None] | None,
    ) -> None:
        self._owner = owner
        self._conn = conn
        self._parser = parser
        self._pump = pump
        self._done = False
        self.status = status
        self.headers = headers

    async def read(self) -> bytes:
        p = self._parser
        conn = self._conn
        try:
            while True:
                data = p.body()
                if data:
                    if conn.read_paused and p.buffered < READ_PAUSE_BYTES // 2:
                        conn.resume_reading()
                    return data
                if p.complete:
                    self._finish()
                    return b""
                if self._done:
                    raise canceled()
                if conn.read_paused:
                    conn.resume_reading()
                await conn.wait()
        except ProtocolError as e:
            self._fail()
            raise ConnectError(
                Code.UNAVAILABLE, f"{_describe(conn, e)}"
            ) from conn.error
        except BaseException:
            self._fail()
            raise

    @property
    def trailers(self) -> Headers:
        return _trailers(self._parser)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        pump = self._pump
        conn = self._conn
        if pump is not None and not pump.done():
            # Answered before the request ended: the rest is not wanted, and
            # the connection cannot carry another exchange.
            pump.cancel()
            conn.close()
            return
        if self._parser.reusable and not conn.closed:
            self._owner._release(conn)
        else:
            conn.close()

    def _fail(self) -> None:
        if not self._done:
            self._done = True
            self._conn.abort()
            if self._pump is not None:
                self._pump.cancel()

    async def aclose(self) -> None:
        if not self._done:
            if self._parser.complete:
                self._finish()
            else:
                self._fail()


def _describe(conn: _Connection | None, e: BaseException) -> str:
    cause = conn.error if conn is not None else None
    if cause is not None:
        return f"{e} ({type(cause).__name__}: {cause})"
    return str(e)


class _Settings:
    """What both HTTP/1.1 transports take from the client's options."""

    def __init__(self, config: ClientConfig | None, limits: Limits | None) -> None:
        self._limits = limits
        self._ssl = LazySSLContext(config, "http/1.1")
        options = config.connection if config is not None else DEFAULT_CONNECTION
        self._connect_timeout = options.connect_timeout
        self._read_idle = options.read_idle_timeout
        self._pool_idle = options.pool_idle_timeout
        self._cap = options.max_connections_per_host
        self._targets = Targets()
        self._closed = False


class AsyncHTTP1Transport(_Settings):
    """:class:`~.transport.AsyncTransport` speaking HTTP/1.1 on the event loop.

    ``config`` supplies the TLS options (``tls_ca_cert``, ``tls_cert``,
    ``tls_key``) and the timeouts and pool settings of ``config.connection``;
    ``https://`` URLs negotiate ``http/1.1`` by ALPN.
    ``limits`` bound what a response may hold (:class:`~.http1.Limits`).
    """

    def __init__(
        self, config: ClientConfig | None = None, *, limits: Limits | None = None
    ) -> None:
        super().__init__(config, limits)
        self._idle: IdlePool[Key, _Connection] = IdlePool(
            self._pool_idle, MAX_IDLE_PER_HOST
        )
        self._slots = AsyncSlots(self._cap)
        self._sweep: asyncio.TimerHandle | None = None

    async def send(
        self, request: HTTPRequest, body: AsyncIterator[bytes] | None
    ) -> AsyncResponse:
        """Send ``request``; returns once the response head has arrived."""
        if self._closed:
            raise ConnectError(Code.CANCELED, "transport closed")
        data = request.body or b""
        target, head = self._targets.head(
            request, None if body is not None else len(data)
        )
        # A reused connection may have been closed by the server meanwhile; a
        # request that is all bytes is retried once on a fresh connection if
        # nothing at all came back.
        loop = asyncio.get_running_loop()
        while True:
            # No await when the pool has a connection.
            conn = self._pooled(target, loop)
            reused = conn is not None
            if conn is None:
                conn, reused = await self._connect(target, loop)
            parser = ResponseParser(request.method, self._limits)
            conn.parser = parser
            conn.received = False
            pump: asyncio.Task[None] | None = None
            try:
                if body is None:
                    for w in writes(head, data):
                        conn.write(w)
                else:
                    pump = conn.loop.create_task(_pump(conn, body))
                    conn.hold(head)
                while (h := parser.head()) is None:
                    await conn.wait()
            except ProtocolError as e:
                conn.abort()
                if reused and body is None and not conn.received:
                    continue
                if pump is not None:
                    pump.cancel()
                raise ConnectError(Code.UNAVAILABLE, _describe(conn, e)) from None
            except BaseException:
                conn.abort()
                if pump is not None:
                    pump.cancel()
                raise
            return _AsyncResponse(
                self, conn, parser, h.status, Headers._from_lower(h.headers), pump
            )

    def _pooled(
        self, target: Target, loop: asyncio.AbstractEventLoop
    ) -> _Connection | None:
        """An idle connection to ``target`` on this loop, if there is one."""
        while True:
            conn, stale = self._idle.take(target.key, loop.time())
            for old in stale:
                _close_on(old, loop)
            if conn is None:
                return None
            if not conn.closed and conn.loop is loop:
                return conn
            _close_on(conn, loop)

    async def _connect(
        self, target: Target, loop: asyncio.AbstractEventLoop
    ) -> tuple[_Connection, bool]:
        """A new connection to ``target``, once the host has room for one.

        Past ``max_connections_per_host`` the call waits for a connection to
        come back to the pool (then returned, with True) or to close; its
        deadline bounds the wait.
        """
        key = target.key
        while not self._slots.try_open(key):
            await self._slots.wait(key, loop)
            if self._closed:
                raise ConnectError(Code.CANCELED, "transport closed")
            conn = self._pooled(target, loop)
            if conn is not None:
                return conn, True
        seconds = self._connect_timeout
        try:
            if target.tls:
                opening = loop.create_connection(
                    lambda: _Connection(loop, key, self),
                    target.host,
                    target.port,
                    ssl=self._ssl.get(),
                    server_hostname=target.host,
                )
            else:
                opening = loop.create_connection(
                    lambda: _Connection(loop, key, self), target.host, target.port
                )
            _, new = await asyncio.wait_for(opening, seconds)
        except BaseException as e:
            self._slots.closed(key)
            if isinstance(e, asyncio.TimeoutError):
                raise connect_timeout_error(target.host, target.port, seconds) from e
            if isinstance(e, OSError):
                raise ConnectError(
                    Code.UNAVAILABLE,
                    f"cannot connect to {target.host}:{target.port}:"
                    f" {type(e).__name__}: {e}",
                ) from e
            raise
        if new.closed:
            self._slots.closed(key)
            raise ConnectError(
                Code.UNAVAILABLE,
                f"connection to {target.host}:{target.port} closed at once",
            )
        new.counted = True
        return new, False

    def _gone(self, conn: _Connection) -> None:
        """``conn`` closed: free its slot, forget it if it was idle."""
        self._idle.discard(conn.key, conn)
        if conn.counted:
            conn.counted = False
            self._slots.closed(conn.key)

    def _release(self, conn: _Connection) -> None:
        conn.parser = None
        if conn.read_paused:
            conn.resume_reading()
        if self._closed or not self._idle.put(conn.key, conn, conn.loop.time()):
            conn.close()
            return
        self._slots.wake(conn.key)
        if self._sweep is None and self._idle.idle_timeout is not None:
            self._schedule_sweep(conn.loop)

    def _schedule_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        when = self._idle.next_expiry()
        if when is not None:
            self._sweep = loop.call_at(when, self._expire_idle, loop)

    def _expire_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections idle for longer than ``pool_idle_timeout``."""
        self._sweep = None
        for conn in self._idle.expired(loop.time()):
            _close_on(conn, loop)
        self._schedule_sweep(loop)

    async def aclose(self) -> None:
        """Close idle connections; those in use close when their call ends."""
        self._closed = True
        self._slots.wake_all()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in self._idle.clear():
            with contextlib.suppress(RuntimeError):  # its loop may be gone
                conn.close()


def _close_on(conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
    """Close ``conn`` if it lives on ``loop``; others are left to their loop."""
    if conn.loop is loop:
        conn.close()


class _Pending:
    """Pieces of a streamed body waiting to go out as one chunk."""

    __slots__ = ("_conn", "_first", "_parts", "_scheduled", "_size")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._parts: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._first = True

    def add(self, piece: bytes) -> None:
        """Queue ``piece``; send at ``_CHUNK_MAX``, else on the loop's next turn."""
        if self._first or len(piece) >= _CHUNK_MAX:
            # The first piece goes at once, with the held request head.
            self._first = False
            self.flush()
            self._write([piece])
            return
        self._parts.append(piece)
        self._size += len(piece)
        if self._size >= _CHUNK_MAX:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._conn.loop.call_soon(self._due)

    def discard(self) -> None:
        """Forget what is queued (the body failed or was cancelled)."""
        self._parts = []
        self._size = 0

    def _due(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Send what is queued, as one chunk."""
        parts = self._parts
        if not parts:
            return
        self._parts = []
        self._size = 0
        if not self._conn.closed:
            self._write(parts)

    def _write(self, parts: list[bytes]) -> None:
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        for w in writes(b"", data, chunk=True):
            self._conn.write(w)


async def _pump(conn: _Connection, body: AsyncIterator[bytes]) -> None:
    """Send a streamed request body with the chunked coding.

    Pieces that come in without the body suspending share one chunk, up to
    ``_CHUNK_MAX``: servers hand each chunk to the app as an event of its own
    (ASGI ``receive``), so 16 KiB messages sent one per chunk cost the server
    four times the events. A piece is never held past the loop's next turn:
    when the body waits for its next piece, what came before is sent.
    """
    pending = _Pending(conn)
    try:
        async for chunk in body:
            if not chunk:
                continue
            if conn.closed:
                return
            pending.add(chunk)
            await conn.drain()
        pending.flush()
        if not conn.closed:
            conn.write(LAST_CHUNK)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        # The client reports the body's own exception; the reader just stops.
        if conn.error is None:
            conn.error = e
        conn.abort()
    finally:
        pending.discard()
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


# -- blocking sockets ----------------------------------------------------------------


class _SyncConn:
    __slots__ = (
        "_lock",
        "_poll",
        "_reading",
        "busy",
        "by_deadline",
        "closed",
        "idle_timeout",
        "key",
        "owner",
        "sock",
        "timeout",
    )

    def __init__(
        self, sock: socket.socket, key: Key, owner: SyncHTTP1Transport | None = None
    ) -> None:
        self.sock = sock
        self.key = key
        self.owner = owner  # told when the connection closes
        self.idle_timeout = None if owner is None else owner._read_idle
        self.by_deadline = True  # whether the call's deadline bounds the next wait
        self.closed = False
        # The transport's connections in use, while this one is one of them.
        self.busy: set[_SyncConn] | None = None
        self.timeout: float | None = sock.gettimeout()
        self._lock = threading.Lock()
        self._reading = False
        self._poll: select.poll | None = None

    def readable(self) -> bool:
        """Whether the idle socket has something to read (EOF or stray bytes)."""
        if hasattr(select, "poll"):
            p = self._poll
            if p is None:
                # Registered once: the check runs before every reuse.
                p = self._poll = select.poll()
                p.register(self.sock, select.POLLIN)
            return bool(p.poll(0))
        r, _, _ = select.select([self.sock], [], [], 0)
        return bool(r)

    def set_deadline(self, deadline: float | None) -> None:
        """Bound the next socket operation by the deadline and the read-idle timeout.

        A ``TimeoutError`` that follows is reported by :meth:`timeout_error`.
        """
        seconds, self.by_deadline = bound(self.idle_timeout, deadline, time.monotonic())
        if seconds is None:
            if self.timeout is not None:
                self.sock.settimeout(None)
                self.timeout = None
            return
        if seconds <= 0:
            raise TimeoutError("deadline exceeded")
        self.sock.settimeout(seconds)
        self.timeout = seconds

    def timeout_error(self) -> ConnectError:
        """What the last wait bounded by :meth:`set_deadline` reports."""
        return timeout_error(self.by_deadline, self.idle_timeout)

    def recv(self) -> bytes:
        with self._lock:
            if self.closed:
                raise canceled()
            self._reading = True
        try:
            return self.sock.recv(RECV_BYTES)
        finally:
            with self._lock:
                self._reading = False
                if self.closed:
                    self.sock.close()

    def close(self) -> None:
        """Close, from any thread; wakes a read blocked in another thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            reading = self._reading
        if self.busy is not None:
            self.busy.discard(self)
            self.busy = None
        owner, self.owner = self.owner, None
        if owner is not None:
            owner._gone(self)
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also for TLS: it wakes the reader
            # without touching the TLS state that thread is using.
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        if not reading:
            self.sock.close()


class _SyncResponse:
    __slots__ = (
        "_conn",
        "_deadline",
        "_done",
        "_owner",
        "_parser",
        "headers",
        "status",
    )

    def __init__(
        self,
        owner: SyncHTTP1Transport,
        conn: _SyncConn,
        parser: ResponseParser,
        status: int,
        headers: Headers,
        deadline: float | None,
    ) -> None:
        self._owner = owner
        self._conn = conn
        self._parser = parser
        self._deadline = deadline
        self._done = False
        self.status = status
        self.headers = headers

    def read(self) -> bytes:
        p = self._parser
        conn = self._conn
        while True:
            try:
                data = p.body()
            except ProtocolError as e:
                self._fail()
                raise ConnectError(Code.UNAVAILABLE, str(e)) from None
            if data:
                return data
            if p.complete:
                if not self._done:
                    self._done = True
                    if p.reusable and not conn.closed:
                        self._owner._release(conn)
                    else:
                        conn.close()
                return b""
            if self._done or conn.closed:
                raise canceled()
            try:
                conn.set_deadline(self._deadline)
                chunk = conn.recv()
            except ConnectError:
                self._fail()
                raise
            except Exception as e:
                closed = conn.closed
                self._fail()
                if closed:
                    raise canceled() from e
                if isinstance(e, TimeoutError):
                    raise conn.timeout_error() from e
                raise map_error(e, ProtocolError) from e
            if conn.closed:
                self._fail()
                raise canceled()
            if chunk:
                p.feed(chunk)
            else:
                p.feed_eof()

    @property
    def trailers(self) -> Headers:
        return _trailers(self._parser)

    def _fail(self) -> None:
        self._done = True
        self._conn.close()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._conn.close()


class SyncHTTP1Transport(_Settings):
    """:class:`~.transport.SyncTransport` speaking HTTP/1.1 over blocking sockets.

    Thread-safe: threads share the pool of idle connections. ``request.timeout``
    bounds connecting, sending and reading alike. :meth:`close` (from any
    thread) also closes the connections in use, so calls in flight fail with
    ``canceled``. ``limits`` as for :class:`AsyncHTTP1Transport`.
    """

    def __init__(
        self, config: ClientConfig | None = None, *, limits: Limits | None = None
    ) -> None:
        super().__init__(config, limits)
        self._idle: IdlePool[Key, _SyncConn] = IdlePool(
            self._pool_idle, MAX_IDLE_PER_HOST
        )
        self._slots: HostSlots[Key] = HostSlots(self._cap)
        self._busy: set[_SyncConn] = set()
        # Reentrant: a connection closed under the lock reports to _gone.
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)

    def send(self, request: HTTPRequest, body: Iterator[bytes] | None) -> SyncResponse:
        """Send ``request`` and read the response head, within ``request.timeout``."""
        if self._closed:
            raise ConnectError(Code.CANCELED, "transport closed")
        deadline = (
            None if request.timeout is None else time.monotonic() + request.timeout
        )
        data = request.body or b""
        target, head = self._targets.head(
            request, None if body is not None else len(data)
        )
        while True:
            conn, reused = self._acquire(target, deadline)
            parser = ResponseParser(request.method, self._limits)
            received = False
            write_error: OSError | None = None
            try:
                conn.set_deadline(deadline)
                try:
                    if body is None:
                        for w in writes(head, data):
                            conn.sock.sendall(w)
                    else:
                        self._send_chunked(conn, head, body, deadline)
                except (TimeoutError, ConnectError):
                    raise
                except OSError as e:
                    # The server may have answered and closed early: read what
                    # it said before giving up.
                    write_error = e
                while (h := parser.head()) is None:
                    conn.set_deadline(deadline)
                    chunk = conn.recv()
                    if chunk:
                        received = True
                        parser.feed(chunk)
                    else:
                        parser.feed_eof()
            except ProtocolError as e:
                conn.close()
                if self._closed:
                    raise canceled() from None
                if reused and body is None and not received:
                    continue
                if write_error is not None:
                    raise map_error(write_error, ProtocolError) from write_error
                raise ConnectError(Code.UNAVAILABLE, str(e)) from None
            except BaseException as e:
                conn.close()
                if self._closed and isinstance(e, Exception):
                    raise canceled() from e
                if isinstance(e, Exception) and not isinstance(e, ConnectError):
                    if body is not None and not isinstance(e, OSError):
                        raise  # the request iterator's own exception
                    if isinstance(e, TimeoutError):
                        raise conn.timeout_error() from e
                    if reused and body is None and not received:
                        continue
                    raise map_error(e, ProtocolError) from e
                raise
            if write_error is not None:
                # Only the response may be read; the connection is done after it.
                parser.feed_eof()
            return _SyncResponse(
                self, conn, parser, h.status, Headers._from_lower(h.headers), deadline
            )

    def _send_chunked(
        self,
        conn: _SyncConn,
        head: bytes,
        body: Iterator[bytes],
        deadline: float | None,
    ) -> None:
        # The head goes out with the first chunk (see _Connection.hold).
        sock = conn.sock
        held = head
        for chunk in body:
            if not chunk:
                continue
            conn.set_deadline(deadline)
            for w in writes(held, chunk, chunk=True):
                sock.sendall(w)
            held = b""
        conn.set_deadline(deadline)
        sock.sendall(held + LAST_CHUNK)

    def _acquire(
        self, target: Target, deadline: float | None
    ) -> tuple[_SyncConn, bool]:
        """A pooled connection (True) or a new one (False), within ``deadline``.

        Past ``max_connections_per_host`` the caller waits for a connection
        to come back to the pool or to close, until its deadline.
        """
        key = target.key
        with self._lock:
            while True:
                if self._closed:
                    raise ConnectError(Code.CANCELED, "transport closed")
                conn = self._take(key)
                if conn is not None:
                    self._use(conn)
                    return conn, True
                if self._slots.try_open(key):
                    break
                wait, _ = bound(None, deadline, time.monotonic())
                if wait is not None and wait <= 0:
                    raise deadline_error(
                        "waiting for a connection (max_connections_per_host)"
                    )
                self._room.wait(wait)
        try:
            conn = self._open(target, deadline)
        except BaseException:
            with self._lock:
                self._slots.closed(key)
                self._room.notify_all()
            raise
        with self._lock:
            closed = self._closed
            if not closed:
                self._use(conn)
        if closed:
            conn.close()
            raise ConnectError(Code.CANCELED, "transport closed")
        return conn, False

    def _take(self, key: Key) -> _SyncConn | None:
        # Called with the lock held.
        while True:
            conn, stale = self._idle.take(key, time.monotonic())
            for old in stale:
                old.close()
            if conn is None:
                return None
            if not conn.closed and not conn.readable():
                return conn
            conn.close()

    def _open(self, target: Target, deadline: float | None) -> _SyncConn:
        """Connect (TCP, then TLS) within ``connect_timeout`` and the deadline."""
        seconds, by_deadline = bound(self._connect_timeout, deadline, time.monotonic())
        where = f"{target.host}:{target.port}"
        if seconds is not None and seconds <= 0:
            raise deadline_error(f"before connecting to {where}")
        try:
            sock = socket.create_connection((target.host, target.port), seconds)
        except TimeoutError as e:
            if by_deadline:
                raise deadline_error(f"connecting to {where}") from e
            raise connect_timeout_error(target.host, target.port, seconds or 0) from e
        except OSError as e:
            raise ConnectError(
                Code.UNAVAILABLE,
                f"cannot connect to {where}: {type(e).__name__}: {e}",
            ) from e
        try:
            set_keepalive(sock)
            if target.tls:
                # The handshake shares the connect timeout set on the socket.
                sock = self._ssl.get().wrap_socket(sock, server_hostname=target.host)
        except BaseException as e:
            sock.close()
            if isinstance(e, TimeoutError):
                if by_deadline:
                    raise deadline_error("in the TLS handshake") from e
                raise connect_timeout_error(
                    target.host, target.port, seconds or 0
                ) from e
            if isinstance(e, OSError):
                raise ConnectError(
                    Code.UNAVAILABLE,
                    f"TLS with {where} failed: {type(e).__name__}: {e}",
                ) from e
            raise
        return _SyncConn(sock, target.key, self)

    def _gone(self, conn: _SyncConn) -> None:
        """``conn`` closed: its slot is free for a waiting caller."""
        with self._lock:
            self._idle.discard(conn.key, conn)
            self._slots.closed(conn.key)
            self._room.notify_all()

    def _use(self, conn: _SyncConn) -> None:
        # Called with the lock held: the connection is now in use.
        conn.busy = self._busy
        self._busy.add(conn)

    def _release(self, conn: _SyncConn) -> None:
        busy = conn.busy
        if busy is not None:
            busy.discard(conn)
            conn.busy = None
        with self._lock:
            # No thread watches the pool: expired connections close when the
            # transport is next used.
            for old in self._idle.expired(time.monotonic()):
                old.close()
            if not self._closed and self._idle.put(conn.key, conn, time.monotonic()):
                self._room.notify_all()
                return
        conn.close()

    def close(self) -> None:
        """Close all connections; calls still using one fail with ``canceled``."""
        with self._lock:
            self._closed = True
            idle = self._idle.clear()
            busy = list(self._busy)
            self._room.notify_all()
        for conn in idle:
            conn.close()
        for conn in busy:
            conn.close()
