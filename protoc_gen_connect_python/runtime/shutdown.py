"""Graceful shutdown: the drain state every app of a process shares.

A server is told to stop by a signal (SIGTERM, or SIGINT) or, for ASGI, by
the lifespan ``shutdown`` event. ``DRAIN.begin()`` records that moment; from
then on the apps refuse new streams with ``unavailable`` (unary calls the
server still hands over are served until the grace is over), let the calls
already running go on, and let handlers see it (``ctx.shutting_down``,
``ctx.wait_shutdown()``, ``await ctx.until_shutdown()``). Each app ends the
streams still open ``shutdown_grace`` seconds after the moment with
``unavailable``.

Servers own their signals, so the apps chain onto the handler the server
installed (``install_signal_hooks``) instead of replacing it: ours records the
moment, then calls the server's, which goes on to stop the server as it
would have. A signal handler must not take locks a thread it interrupted may
hold, so it only writes a byte to a pipe; a daemon thread wakes handlers and
event loops from there.

A server may also install its handlers after the app was built, replacing
ours (granian's WSGI worker does). The same pipe is then the process's signal
wakeup fd (``signal.set_wakeup_fd``), where Python itself writes the number
of each signal it catches, whoever's handler runs: the thread begins the
drain when it reads SIGTERM's or SIGINT's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("protoc_gen_connect_python.server")

SIGNALS = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGINT", None)) if s
)
"""The signals that begin a drain where the server handles them in Python."""

_BEGUN = b"\0"
"""What ``begin`` writes to the pipe: no signal has number 0."""

_SIGNAL_BYTES = frozenset(SIGNALS)
"""The signal numbers on the pipe that begin the drain; others are skipped."""


class Drain:
    """Whether and since when the process is shutting down.

    ``started`` is the ``time.monotonic()`` instant shutdown began, or None.
    The apps read it on every call; everything else happens once per process.
    """

    def __init__(self) -> None:
        self.started: float | None = None
        """When shutdown began (``time.monotonic()``), or None while serving."""
        self._event = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Event
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._pipe: tuple[int, int] | None = None

    @property
    def draining(self) -> bool:
        """Whether shutdown has begun."""
        return self.started is not None

    def begin(self) -> None:
        """Start the drain (once; later calls do nothing).

        Safe in a signal handler once ``listen`` was called (as
        ``install_signal_hooks`` does): it then only writes to a pipe.
        """
        if self.started is not None:
            return
        self.started = time.monotonic()
        pipe = self._pipe
        if pipe is not None:
            with contextlib.suppress(OSError):
                os.write(pipe[1], _BEGUN)
        else:
            self._wake()

    def remaining(self, grace: float) -> float | None:
        """Seconds left of ``grace`` since shutdown began (never negative), or None."""
        started = self.started
        if started is None:
            return None
        return max(0.0, started + grace - time.monotonic())

    def on_begin(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` when shutdown begins (at once if it has), off the signal.

        Hooks run in the thread that calls ``begin`` or in the drain's own
        thread; an async app's hook hands over to its loop itself.
        """
        with self._lock:
            self._hooks.append(hook)
        if self.started is not None and self._event.is_set():
            hook()

    def wait(self, timeout: float | None) -> bool:
        """Block until shutdown begins or ``timeout`` passes; True if it began."""
        return self._event.wait(timeout)

    async def wait_async(self) -> None:
        """Return once shutdown has begun (in the running event loop)."""
        if self.started is not None:
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            event = self._loops.get(loop)
            if event is None:
                event = self._loops[loop] = asyncio.Event()
        if self.started is None:
            await event.wait()

    def reset(self) -> None:
        """Serve again after a drain (tests, servers restarted in one process).

        The pipe and its thread stay: they serve the next drain.
        """
        if self.started is None:
            return
        with self._lock:
            self.started = None
            self._event.clear()
            self._loops.clear()

    def listen(self) -> int:
        """Wake waiters from a thread of our own, so ``begin`` may run in a signal
        handler (``install_signal_hooks`` calls this).

        Returns the pipe's write end, which never blocks: a byte that is a
        signal's number (SIGTERM's, SIGINT's) begins the drain too.
        """
        with self._lock:
            if self._pipe is not None:
                return self._pipe[1]
            r, w = os.pipe()
            os.set_blocking(w, False)
            self._pipe = (r, w)
        threading.Thread(
            target=self._relay, args=(r,), name="connect-drain", daemon=True
        ).start()
        return w

    def _relay(self, r: int) -> None:
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                return
            if not data:
                return
            signalled = not _SIGNAL_BYTES.isdisjoint(data)
            if signalled and self.started is None:  # the handler was not ours
                self.started = time.monotonic()
            # A byte of begin's that comes after a reset wakes nobody.
            if signalled or _BEGUN[0] in data:
                self._wake()

    def _wake(self) -> None:
        with self._lock:
            # Once per drain: a chained handler and the wakeup fd both report
            # one signal; a reset may have come first.
            if self.started is None or self._event.is_set():
                return
            self._event.set()
            hooks = list(self._hooks)
            loops = list(self._loops.items())
        for loop, event in loops:
            # A loop already closed has nobody waiting on it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        for hook in hooks:
            try:
                hook()
            except Exception:
                # One failing hook must not keep the others from running.
                logger.exception("a shutdown hook failed")


DRAIN = Drain()
"""The drain state of this process, shared by every app in it."""

_installed: dict[int, Any] = {}


def _after_fork() -> None:
    # A forked worker starts serving: the parent's drain, thread and pipe are
    # not its own, and its server installs its own signal handlers.
    pipe = DRAIN._pipe
    Drain.__init__(DRAIN)
    _installed.clear()
    if pipe is None:
        return
    try:  # the child's signals must not reach the parent's pipe
        old = signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        return  # it may still point there: keep the pipe open
    if old != pipe[1]:
        signal.set_wakeup_fd(old)
    for fd in pipe:
        os.close(fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def install_signal_hooks() -> bool:
    """Begin the drain on SIGTERM and SIGINT, then let the server's handler run.

    Only where the server handles the signal in Python (uvicorn, hypercorn,
    gunicorn's workers): a default or ignored disposition is left alone, since
    taking it over would change whether the process stops. Call it after the
    server installed its handlers and from the main thread: ``ASGIApp`` does
    at lifespan startup, ``WSGIApp`` when it is built (gunicorn builds it in
    each worker, after the worker's handlers; with ``--preload`` call this
    from gunicorn's ``post_worker_init`` hook). True if a hook is in place.

    The drain's pipe also becomes the signal wakeup fd, unless the process
    has one (an event loop's, gunicorn's worker's), so a handler the server
    installs later (granian's WSGI worker) begins the drain as well.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    _take_wakeup_fd(DRAIN.listen())
    hooked = False
    for sig in SIGNALS:
        current = signal.getsignal(sig)
        if current is _installed.get(sig) and current is not None:
            hooked = True
            continue
        if not callable(current):  # SIG_DFL, SIG_IGN or set outside Python
            continue
        hook = _chain(current)
        signal.signal(sig, hook)
        _installed[sig] = hook
        hooked = True
    return hooked


def _take_wakeup_fd(fd: int) -> None:
    """Make ``fd`` the signal wakeup fd if no other is set."""
    try:
        old = signal.set_wakeup_fd(fd)
    except (ValueError, OSError):  # e.g. Windows, where it must be a socket
        return
    if old not in (-1, fd):  # someone else's: theirs stays
        signal.set_wakeup_fd(old)


def _chain(
    previous: Callable[[int, FrameType | None], Any],
) -> Callable[[int, FrameType | None], Any]:
    def on_signal(signum: int, frame: FrameType | None) -> Any:
        DRAIN.begin()
        return previous(signum, frame)

    return on_signal
