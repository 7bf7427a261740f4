"""HTTP/2 transport in pure Python for the async client, on the event loop.

:class:`AsyncHTTP2Transport` drives the sans-IO connection of ``http2.py`` from
an asyncio protocol and implements the transport interface of
``transport.py``. It keeps one connection per (scheme, host, port) and
multiplexes concurrent calls on it; another connection opens when the server's
MAX_CONCURRENT_STREAMS is reached or after a GOAWAY. ``http://`` URLs speak
HTTP/2 with prior knowledge (h2c), ``https://`` URLs negotiate ``h2`` by ALPN
with the client's TLS options.

Why not pyqwest here: pyqwest runs its I/O on native threads, and every await
of it is a cross-thread wake-up of the event loop. This transport reads on the
loop itself: a burst of DATA frames costs one wake-up of the reading task.

Streamed request bodies are sent from a task while the response is read (full
duplex). Cancelling a call, or closing its response early, resets its stream
(RST_STREAM with CANCEL); a failing request iterator does the same, and the
client reports the iterator's exception.

Backpressure is HTTP/2 flow control: response window is returned to the server
only as the application reads, so a stream never holds more than its window of
unread bytes, and a connection never more than its own window, whatever the
size of the response. The socket is never paused: a stream the application
does not read must not stop the others.

What the server makes the client answer (PING and SETTINGS acknowledgements,
WINDOW_UPDATE, RST_STREAM) is bounded too: while the server reads nothing,
at most ``Limits.max_queued_control`` bytes of answers are queued, then the
connection fails (``resource_exhausted``) and is dropped.

Each connection has one timer, driven by a ``timers.ConnectionClock``: the
server must acknowledge SETTINGS in time, PINGs go out when keepalive is on
and calls wait on a silent server, and a connection without calls closes
after ``pool_idle_timeout``. Opening a connection is bounded by
``connect_timeout``, and a call waiting on the server by
``read_idle_timeout`` (all from ``ClientConfig.connection``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from protoc_gen_connect_python.runtime.client.config import (
    DEFAULT_CONNECTION,
    ClientConfig,
)
from protoc_gen_connect_python.runtime.client.http2 import (
    Connection,
    ErrorCode,
    Limits,
    ProtocolError,
    Stream,
    StreamReset,
)
from protoc_gen_connect_python.runtime.client.interface import (
    AsyncResponse,
    HTTPRequest,
)
from protoc_gen_connect_python.runtime.client.net import (
    AsyncSlots,
    Key,
    LazySSLContext,
    Target,
    TargetCache,
    canceled,
    expire,
    set_keepalive,
)
from protoc_gen_connect_python.runtime.client.timers import (
    ConnectionClock,
    connect_timeout_error,
)
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers

__all__ = ["AsyncHTTP2Transport", "stream_error"]

_RETRIES = 2  # extra sends of a request that got no response (see _retryable)

# RST_STREAM codes to RPC codes, as the gRPC HTTP/2 mapping defines them.
_RESET_CODES = {
    ErrorCode.REFUSED_STREAM: Code.UNAVAILABLE,
    ErrorCode.CANCEL: Code.CANCELED,
    ErrorCode.ENHANCE_YOUR_CALM: Code.RESOURCE_EXHAUSTED,
    ErrorCode.INADEQUATE_SECURITY: Code.PERMISSION_DENIED,
}


def stream_error(e: BaseException) -> ConnectError:
    """The RPC error for why an HTTP/2 stream failed."""
    if isinstance(e, ConnectError):
        return e
    if isinstance(e, StreamReset):
        if not e.remote and e.code == ErrorCode.CANCEL:
            return canceled()
        return ConnectError(_RESET_CODES.get(e.code, Code.INTERNAL), str(e))
    if isinstance(e, ProtocolError) and e.code == ErrorCode.ENHANCE_YOUR_CALM:
        # A limit was crossed (a header block too large or in too many
        # frames, too many answers queued), by either side.
        return ConnectError(Code.RESOURCE_EXHAUSTED, str(e))
    if isinstance(e, (ProtocolError, OSError, EOFError)):
        return ConnectError(Code.UNAVAILABLE, str(e))
    return ConnectError(Code.UNKNOWN, f"{type(e).__name__}: {e}")


def _retryable(err: Exception | None, s: Stream, method: str) -> bool:
    """Whether a request that got no response may be sent again.

    Refused streams were never processed. A reused connection lost without a
    GOAWAY may have processed the request (HTTP/2 servers close idle
    connections with a GOAWAY first), so only GET, which Connect sends for
    side-effect-free methods, is sent again then.
    """
    if isinstance(err, StreamReset):
        return err.refused
    return (
        method == "GET"
        and isinstance(err, ProtocolError)
        and err.code == ErrorCode.NO_ERROR
        and s.id > 1
    )


def _wake(f: object) -> None:
    if f is not None:
        fut: asyncio.Future[None] = f  # type: ignore[assignment]
        if not fut.done():
            fut.set_result(None)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection on the event loop, shared by concurrent calls."""

    def __init__(
        self, owner: AsyncHTTP2Transport, loop: asyncio.AbstractEventLoop, key: Key
    ) -> None:
        self.owner = owner
        self.loop = loop
        self.key = key
        self.h2 = Connection(owner.limits)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.retiring = False  # no new calls; closes when the last one ends
        self.blocked: set[Stream] = set()  # streams waiting for send window
        self._write_paused = False
        self._queued = 0  # answer bytes written while writing is paused
        self._drains: list[asyncio.Future[None]] = []
        self.clock = ConnectionClock(owner.options, loop.time())
        self._timer: asyncio.TimerHandle | None = None
        self._acks = 0  # PING acknowledgements seen
        self.counted = False  # holds one of the transport's host slots

    # protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_keepalive(transport.get_extra_info("socket"))
        # The clocks start now that TCP and TLS are done (connect_timeout's part).
        self.clock = ConnectionClock(self.owner.options, self.loop.time())
        self.flush()  # the preface and SETTINGS
        self.tick()

    def data_received(self, data: bytes) -> None:
        h2 = self.h2
        touched = h2.receive(data)
        clock = self.clock
        clock.received(self.loop.time())
        if h2.ping_acks != self._acks:
            self._acks = h2.ping_acks
            clock.ping_acked()
        if h2.settings_acked and not clock.settings_acked:
            clock.settings_acked = True
        if h2.has_output:
            written = self.flush()
            if self._write_paused:
                self._queued += written
                if self._queued > h2.limits.max_queued_control and h2.error is None:
                    # The server keeps asking and never reads the answers.
                    touched += h2.fail(
                        "the server does not read what it makes the client"
                        f" answer (over {h2.limits.max_queued_control} bytes queued)",
                        ErrorCode.ENHANCE_YOUR_CALM,
                    )
                    self.drop()
        for s in touched:
            _wake(s.waiter)
            _wake(s.send_waiter)
        if h2.window_opened:
            h2.window_opened = False
            for s in self.blocked:
                _wake(s.send_waiter)
        if h2.error is not None:
            self.abort()
        elif h2.closed:
            self.maybe_close()

    def eof_received(self) -> bool:
        return False  # connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        why = "connection closed by the server"
        if exc is not None:
            why = f"connection lost: {type(exc).__name__}: {exc}"
        for s in self.h2.connection_lost(why):
            _wake(s.waiter)
            _wake(s.send_waiter)
        for s in self.blocked:
            _wake(s.send_waiter)
        drains, self._drains = self._drains, []
        for d in drains:
            _wake(d)
        self.owner._forget(self)

    # timers (decided by the ConnectionClock)

    def tick(self) -> None:
        """Do what the clock asks now, then sleep until its next check."""
        self._timer = None
        if self.lost:
            return
        clock = self.clock
        while True:
            now = self.loop.time()
            action, when = clock.check(now)
            if action == "ping":
                self.h2.ping()
                self.flush()
                clock.ping_sent(now)
                continue
            if action == "settings":
                self.fail(
                    "the server did not acknowledge SETTINGS within"
                    f" {self.owner.options.settings_timeout:g} s (settings_timeout)",
                    ErrorCode.SETTINGS_TIMEOUT,
                )
            elif action == "dead":
                self.fail(
                    "the server did not answer a keepalive PING within"
                    f" {self.owner.options.keepalive_timeout:g} s (keepalive_timeout)",
                    ErrorCode.NO_ERROR,
                )
            elif action == "expire":
                self.shutdown()
            elif when is not None:
                self._timer = self.loop.call_at(when, self.tick)
            return

    def streams_changed(self) -> None:
        """Streams opened or ended: the idle and keepalive timers may move.

        A timer already due sooner is kept (it checks again when it fires),
        so a call costs no timer of its own.
        """
        now = self.loop.time()
        if not self.clock.streams(len(self.h2.streams), now):
            return
        action, when = self.clock.check(now)
        timer = self._timer
        if action is not None:
            if timer is not None:
                timer.cancel()
            self.tick()
        elif when is not None and (timer is None or when < timer.when()):
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(when, self.tick)

    def fail(self, message: str, code: int) -> None:
        """Give up on the connection: every call on it fails with ``unavailable``."""
        touched = self.h2.fail(message, code)
        self.retiring = True
        for s in touched:
            _wake(s.waiter)
            _wake(s.send_waiter)
        self.drop()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._queued = 0
        drains, self._drains = self._drains, []
        for d in drains:
            _wake(d)

    # for the transport and its calls

    @property
    def usable(self) -> bool:
        """Whether a new call may start a stream here now."""
        return not self.lost and not self.retiring and self.h2.can_open

    def flush(self) -> int:
        """Write what the connection queued; returns how many bytes."""
        if not self.lost and self.transport is not None:
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)
                return len(data)
        return 0

    async def wait(self, s: Stream) -> None:
        """Until something happens on ``s`` (or the connection ends).

        Raises ``unavailable`` after ``read_idle_timeout`` without news.
        """
        f = self.loop.create_future()
        s.waiter = f
        idle = self.owner.options.read_idle_timeout
        timer = None if idle is None else self.loop.call_later(idle, expire, f, idle)
        try:
            await f
        finally:
            s.waiter = None
            if timer is not None:
                timer.cancel()

    async def drain(self) -> None:
        while self._write_paused and not self.lost:
            d = self.loop.create_future()
            self._drains.append(d)
            await d

    async def send_body(self, s: Stream, data: bytes, end: bool) -> None:
        """Send ``data`` on ``s`` as the windows allow; stops if the stream ends."""
        h2 = self.h2
        total = len(data)
        view = memoryview(data) if total > h2.peer_max_frame else None
        pos = 0
        while True:
            if s.error is not None or s.remote_ended or h2.error is not None:
                return  # the reader reports why
            chunk = data if pos == 0 else view[pos:]  # type: ignore[index]
            pos += h2.send_data(s, chunk, end)
            self.flush()
            if pos >= total and (s.local_ended or not end):
                break
            if self.lost:
                return
            f = self.loop.create_future()
            s.send_waiter = f
            self.blocked.add(s)
            # Waiting for window is waiting on the server too.
            idle = self.owner.options.read_idle_timeout
            timer = (
                None if idle is None else self.loop.call_later(idle, expire, f, idle)
            )
            try:
                await f
            finally:
                s.send_waiter = None
                self.blocked.discard(s)
                if timer is not None:
                    timer.cancel()
        if self._write_paused:
            await self.drain()

    def reset(self, s: Stream) -> None:
        """Give up on ``s``: RST_STREAM(CANCEL) if it is still open."""
        self.h2.reset(s, ErrorCode.CANCEL)
        self.flush()
        _wake(s.send_waiter)
        self.maybe_close()
        self.ended()

    def finish(self, s: Stream) -> None:
        """``s`` is over for the caller; close the connection if it is retired."""
        if s.id in self.h2.streams:
            # The response ended before the request did: the rest is unwanted.
            self.reset(s)
        else:
            self.h2.release(s)
            self.flush()
            self.maybe_close()
            self.ended()

    def ended(self) -> None:
        """A call ended: timers may move, and a call waiting for room may go."""
        self.streams_changed()
        self.owner._slots.wake(self.key)

    def maybe_close(self) -> None:
        """Close (with GOAWAY) once no stream may start and none is left."""
        h2 = self.h2
        if (h2.closed or self.retiring) and not h2.streams and not self.lost:
            h2.close()
            self.flush()
            if self.transport is not None:
                self.transport.close()

    def shutdown(self) -> None:
        """No new calls; close when the last stream ends.

        The GOAWAY waits until then: some servers close the connection as soon
        as they receive one, even with streams open.
        """
        self.retiring = True
        self.maybe_close()

    def abort(self) -> None:
        """Close at once (after writing what is queued, e.g. a GOAWAY)."""
        if not self.lost and self.transport is not None:
            self.flush()
            self.transport.close()

    def drop(self) -> None:
        """Close without writing what is queued: the server does not read it."""
        if not self.lost and self.transport is not None:
            self.h2.data_to_send()
            self.transport.abort()


class _Response:
    __slots__ = ("_conn", "_done", "_pump", "_stream", "headers", "status")

    def __init__(
        self, conn: _Connection, stream: Stream, pump: asyncio.Task[None] | None
    ) -> None:
        self._conn = conn
        self._stream = stream
        self._pump = pump
        self._done = False
        self.status = stream.status
        self.headers = Headers._from_lower(stream.headers)

    async def read(self) -> bytes:
        s = self._stream
        conn = self._conn
        try:
            while True:
                if s.buffered:
                    data = s.take()
                    conn.h2.consume(s, len(data))
                    if conn.h2.has_output:
                        conn.flush()
                    return data
                if s.error is not None:
                    err = s.error
                    self._fail()
                    raise stream_error(err) from None
                if s.remote_ended:
                    self._finish()
                    return b""
                if self._done:
                    raise canceled()
                await conn.wait(s)
        except BaseException:
            self._fail()
            raise

    @property
    def trailers(self) -> Headers:
        return Headers._from_lower(self._stream.trailers)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        pump = self._pump
        if pump is not None and not pump.done():
            pump.cancel()
        self._conn.finish(self._stream)

    def _fail(self) -> None:
        if not self._done:
            self._done = True
            if self._pump is not None:
                self._pump.cancel()
            self._conn.reset(self._stream)

    async def aclose(self) -> None:
        s = self._stream
        if s.remote_ended and not s.buffered and s.error is None:
            self._finish()
        else:
            self._fail()


class AsyncHTTP2Transport:
    """:class:`~.transport.AsyncTransport` speaking HTTP/2 on the event loop.

    ``config`` supplies the TLS options (``tls_ca_cert``, ``tls_cert``,
    ``tls_key``); ``https://`` URLs negotiate ``h2`` by ALPN, ``http://`` URLs
    use HTTP/2 without TLS (prior knowledge). Calls share one connection per
    (scheme, host, port) as long as the server lets them. ``limits`` are the
    windows and bounds of each connection (:class:`~.http2.Limits`).
    """

    def __init__(
        self, config: ClientConfig | None = None, *, limits: Limits | None = None
    ) -> None:
        self.limits = limits or Limits()
        self.options = config.connection if config is not None else DEFAULT_CONNECTION
        self._ssl = LazySSLContext(config, "h2")
        self._conns: dict[Key, list[_Connection]] = {}
        self._connecting: dict[Key, asyncio.Task[_Connection]] = {}
        self._slots = AsyncSlots(self.options.max_connections_per_host)
        self._targets = TargetCache()
        self._closed = False

    async def send(
        self, request: HTTPRequest, body: AsyncIterator[bytes] | None
    ) -> AsyncResponse:
        """Send ``request``; returns once the response head has arrived."""
        if self._closed:
            raise ConnectError(Code.CANCELED, "transport closed")
        target, path = self._targets.parse(request.url)
        data = request.body or b""
        headers = request.headers
        if data and body is None:
            headers = [*headers, ("content-length", str(len(data)))]
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            conn = self._usable(target.key, loop) or await self._acquire(target, loop)
            try:
                s = conn.h2.open_stream(
                    request.method,
                    target.scheme,
                    target.host_header,
                    path,
                    headers,
                    body is None and not data,
                )
            except ValueError as e:
                raise ConnectError(Code.INTERNAL, f"invalid request: {e}") from None
            except ProtocolError:
                continue  # the connection closed meanwhile: take another
            conn.streams_changed()
            pump: asyncio.Task[None] | None = None
            try:
                if body is not None:
                    conn.flush()
                    pump = loop.create_task(_pump(conn, s, body))
                elif data:
                    await conn.send_body(s, data, True)
                else:
                    conn.flush()
                while not s.head_received:
                    if s.error is not None:
                        break
                    await conn.wait(s)
            except BaseException:
                if pump is not None:
                    pump.cancel()
                conn.reset(s)
                raise
            if s.head_received:
                return _Response(conn, s, pump)
            err = s.error
            if pump is not None:
                pump.cancel()
            conn.reset(s)
            if (
                body is None
                and attempt <= _RETRIES
                and _retryable(err, s, request.method)
            ):
                continue
            assert err is not None
            raise stream_error(err) from None

    def _usable(self, key: Key, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        for conn in self._conns.get(key, ()):
            if conn.loop is loop and conn.usable:
                return conn
        return None

    async def _acquire(
        self, target: Target, loop: asyncio.AbstractEventLoop
    ) -> _Connection:
        """A connection that may start a stream now, opened if need be."""
        while True:
            if self._closed:
                raise ConnectError(Code.CANCELED, "transport closed")
            conn = self._usable(target.key, loop)
            if conn is not None:
                return conn
            task = self._connecting.get(target.key)
            if task is None or task.get_loop() is not loop:
                if not self._slots.try_open(target.key):
                    # At max_connections_per_host: wait for a stream to end
                    # or a connection to close (the call's deadline bounds it).
                    await self._slots.wait(target.key, loop)
                    continue
                task = loop.create_task(self._connect(target, loop))
                self._connecting[target.key] = task
                task.add_done_callback(
                    lambda t, k=target.key: self._connected(k, t)  # type: ignore[misc]
                )
            # Every call waiting for the new connection shares the attempt;
            # one of them being cancelled does not stop it.
            conn = await asyncio.shield(task)
            if conn.usable:
                return conn

    def _connected(self, key: Key, task: asyncio.Task[_Connection]) -> None:
        if self._connecting.get(key) is task:
            del self._connecting[key]
        if task.cancelled() or task.exception() is not None:
            self._slots.closed(key)
            return
        conn = task.result()
        if conn.lost:
            # Lost before it was counted as open: its slot is free again.
            self._slots.closed(key)
            return
        conn.counted = True
        if self._closed:
            conn.shutdown()
        else:
            self._conns.setdefault(key, []).append(conn)

    async def _connect(
        self, target: Target, loop: asyncio.AbstractEventLoop
    ) -> _Connection:
        """A new connection to ``target``: TCP, TLS with ALPN ``h2`` if https."""
        seconds = self.options.connect_timeout
        try:
            if target.tls:
                transport, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Connection(self, loop, target.key),
                        target.host,
                        target.port,
                        ssl=self._ssl.get(),
                        server_hostname=target.host,
                    ),
                    seconds,
                )
                tls = transport.get_extra_info("ssl_object")
                alpn = tls.selected_alpn_protocol() if tls is not None else None
                if alpn != "h2":
                    transport.abort()
                    raise ConnectError(
                        Code.UNAVAILABLE,
                        f"{target.host}:{target.port} does not speak HTTP/2"
                        f" over TLS (ALPN: {alpn})",
                    )
            else:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Connection(self, loop, target.key),
                        target.host,
                        target.port,
                    ),
                    seconds,
                )
        except asyncio.TimeoutError as e:
            raise connect_timeout_error(target.host, target.port, seconds) from e
        except OSError as e:
            raise ConnectError(
                Code.UNAVAILABLE,
                f"cannot connect to {target.host}:{target.port}: {type(e).__name__}: {e}",
            ) from e
        return conn

    def _forget(self, conn: _Connection) -> None:
        conns = self._conns.get(conn.key)
        if conns is not None and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._conns[conn.key]
        if conn.counted:
            conn.counted = False
            self._slots.closed(conn.key)

    async def aclose(self) -> None:
        """Close connections: idle ones now, the others when their calls end."""
        self._closed = True
        self._slots.wake_all()
        for conns in list(self._conns.values()):
            for conn in list(conns):
                with contextlib.suppress(RuntimeError):  # its loop may be gone
                    conn.shutdown()


async def _pump(conn: _Connection, s: Stream, body: AsyncIterator[bytes]) -> None:
    """Send a streamed request body, then end the stream."""
    try:
        async for chunk in body:
            if not chunk:
                continue
            if s.done or s.local_ended:
                return
            await conn.send_body(s, chunk, False)
        if not s.done:
            await conn.send_body(s, b"", True)
    except asyncio.CancelledError:
        raise
    except Exception:
        # The client reports the body's own exception; the reader just stops.
        conn.reset(s)
        _wake(s.waiter)
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
