"""Deadlines and cancellation in both client shells, over transports written here.

The transports stand in for a server that answers the head at once and then
stalls, or for a network that breaks at a chosen moment, so every case runs
the same way on every machine and for every protocol. The last part runs the
cancellations against real servers (uvicorn, hypercorn, pyvoy, gunicorn), whose
handlers (``cancel_apps``) must see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from client_env import BIDI_SPEC, SERVER_STREAM_SPEC, UNARY_SPEC
from google.protobuf.wrappers_pb2 import StringValue
from server_apps import COUNT_UP, PING, pb
from servers import run_server

from protoc_gen_connect_python.runtime import (
    AsyncClient,
    Code,
    ConnectError,
    Headers,
    SyncClient,
    SyncStream,
)
from protoc_gen_connect_python.runtime.client.config import HTTPVersionName
from protoc_gen_connect_python.runtime.client.config import Protocol as Proto
from protoc_gen_connect_python.runtime.client.core import HTTPRequest, past_deadline
from protoc_gen_connect_python.runtime.envelope import encode_envelope

PROTOCOLS: list[Proto] = ["connect", "grpc", "grpc-web"]
STREAM_TYPES = {
    "connect": "application/connect+proto",
    "grpc": "application/grpc+proto",
    "grpc-web": "application/grpc-web+proto",
}


def message(text: str) -> bytes:
    return encode_envelope(0, StringValue(value=text).SerializeToString())


# -- async: a head at once, then nothing ------------------------------------------


class _StalledResponse:
    def __init__(self, protocol: Proto, first: bytes) -> None:
        self.status = 200
        self.headers = Headers({"content-type": STREAM_TYPES[protocol]})
        self._first = first
        self.closed = False

    async def read(self) -> bytes:
        if self._first:
            chunk, self._first = self._first, b""
            return chunk
        await asyncio.sleep(60)
        return b""

    @property
    def trailers(self) -> Headers:
        return Headers()

    async def aclose(self) -> None:
        self.closed = True


class _StalledAsync:
    """Sends the response head at once; the body (after ``first``) never comes."""

    def __init__(self, protocol: Proto, first: bytes = b"") -> None:
        self.protocol = protocol
        self.first = first
        self.responses: list[_StalledResponse] = []

    async def send(
        self, request: HTTPRequest, body: AsyncIterator[bytes] | None
    ) -> _StalledResponse:
        resp = _StalledResponse(self.protocol, self.first)
        self.responses.append(resp)
        return resp

    async def aclose(self) -> None:
        pass


async def _requests() -> AsyncIterator[StringValue]:
    yield StringValue(value="a")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["server", "bidi"])
def test_deadline_bounds_the_first_stream_read(protocol: Proto, kind: str) -> None:
    async def main() -> tuple[list[str], ConnectError]:
        transport = _StalledAsync(protocol)
        client = AsyncClient("http://h", protocol=protocol, transport=transport)
        if kind == "server":
            stream = client.call_server_stream(
                SERVER_STREAM_SPEC, StringValue(), timeout=0.1
            )
        else:
            stream = client.call_bidi_stream(BIDI_SPEC, _requests(), timeout=0.1)
        got: list[str] = []
        with pytest.raises(ConnectError) as raised:
            async for m in stream:
                got.append(m.value)
        assert transport.responses[0].closed
        return got, raised.value

    got, err = asyncio.run(asyncio.wait_for(main(), 10))
    assert got == []
    assert err.code is Code.DEADLINE_EXCEEDED


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_deadline_bounds_later_stream_reads(protocol: Proto) -> None:
    async def main() -> tuple[list[str], ConnectError]:
        transport = _StalledAsync(protocol, first=message("one"))
        client = AsyncClient("http://h", protocol=protocol, transport=transport)
        got: list[str] = []
        with pytest.raises(ConnectError) as raised:
            async for m in client.call_server_stream(
                SERVER_STREAM_SPEC, StringValue(), timeout=0.1
            ):
                got.append(m.value)
        return got, raised.value

    got, err = asyncio.run(asyncio.wait_for(main(), 10))
    assert got == ["one"]
    assert err.code is Code.DEADLINE_EXCEEDED


# -- sync: reads that block until closed ---------------------------------------


class _BlockingResponse:
    """One message, then a read that blocks until :meth:`close`.

    Like pyqwest's, a read interrupted by ``close`` fails as a read error.
    """

    def __init__(self, protocol: Proto, first: bytes) -> None:
        self.status = 200
        self.headers = Headers({"content-type": STREAM_TYPES[protocol]})
        self._first = first
        self.closed = threading.Event()
        self.reading = threading.Event()

    def read(self) -> bytes:
        if self._first:
            chunk, self._first = self._first, b""
            return chunk
        self.reading.set()
        if not self.closed.wait(30):
            return b""
        raise ConnectError(Code.UNAVAILABLE, "ReadError: Response body read cancelled")

    @property
    def trailers(self) -> Headers:
        return Headers()

    def close(self) -> None:
        self.closed.set()


class _BlockingSync:
    """A sync transport whose responses block; ``send`` may block too."""

    def __init__(self, protocol: Proto, first: bytes = b"", head_waits: bool = False):
        self.protocol = protocol
        self.first = first
        self.head_waits = head_waits
        self.responses: list[_BlockingResponse] = []
        self.sending = threading.Event()
        self.closed = threading.Event()

    def send(
        self, request: HTTPRequest, body: Iterator[bytes] | None
    ) -> _BlockingResponse:
        if body is not None:
            for _ in body:
                pass
        if self.head_waits:
            # A server that answers late; closing the transport aborts the call.
            self.sending.set()
            if self.closed.wait(30):
                raise ConnectError(Code.UNAVAILABLE, "connection closed")
        resp = _BlockingResponse(self.protocol, self.first)
        self.responses.append(resp)
        return resp

    def close(self) -> None:
        self.closed.set()


def _blocked_after_one(
    protocol: Proto,
) -> tuple[_BlockingSync, SyncStream[StringValue]]:
    """A sync server stream that read its first message, "one", and whose
    next read blocks; with its transport."""
    transport = _BlockingSync(protocol, first=message("one"))
    client = SyncClient("http://h", protocol=protocol, transport=transport)
    stream = client.call_server_stream(SERVER_STREAM_SPEC, StringValue())
    assert next(stream).value == "one"
    return transport, stream


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sync_stream_closed_by_the_reader_raises_canceled(protocol: Proto) -> None:
    transport, stream = _blocked_after_one(protocol)
    stream.close()
    assert transport.responses[0].closed.is_set()
    with pytest.raises(ConnectError) as raised:
        next(stream)
    assert raised.value.code is Code.CANCELED
    # Iterating again says the same.
    with pytest.raises(ConnectError) as raised:
        next(stream)
    assert raised.value.code is Code.CANCELED


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sync_stream_closed_from_another_thread_is_canceled(protocol: Proto) -> None:
    transport, stream = _blocked_after_one(protocol)

    def close_when_blocked() -> None:
        transport.responses[0].reading.wait(10)
        stream.close()

    threading.Thread(target=close_when_blocked).start()
    with pytest.raises(ConnectError) as raised:
        next(stream)
    assert raised.value.code is Code.CANCELED


def test_sync_stream_closed_by_its_request_iterator_is_canceled() -> None:
    transport = _BlockingSync("connect", first=message("one"))
    client = SyncClient("http://h", transport=transport)
    holder: list[Any] = []

    def requests() -> Iterator[StringValue]:
        yield StringValue(value="a")
        holder[0].close()  # before the request ends, as on a cancel button

    stream = client.call_bidi_stream(BIDI_SPEC, requests())
    holder.append(stream)
    with pytest.raises(ConnectError) as raised:
        next(stream)
    assert raised.value.code is Code.CANCELED
    assert transport.responses[0].closed.is_set()


def test_sync_unary_canceled_by_closing_the_client() -> None:
    transport = _BlockingSync("connect", head_waits=True)
    client = SyncClient("http://h", transport=transport)

    def close_when_sent() -> None:
        transport.sending.wait(10)
        client.close()

    threading.Thread(target=close_when_sent).start()
    with pytest.raises(ConnectError) as raised:
        client.call_unary(UNARY_SPEC, StringValue())
    assert raised.value.code is Code.CANCELED
    # A closed client cancels every later call too.
    with pytest.raises(ConnectError) as raised:
        client.call_unary(UNARY_SPEC, StringValue())
    assert raised.value.code is Code.CANCELED


# -- transport errors after the deadline -----------------------------------------


def test_past_deadline_decision() -> None:
    reset = ConnectError(Code.CANCELED, "StreamError: CANCEL")
    lost = ConnectError(Code.UNAVAILABLE, "connection reset")
    stated = ConnectError(Code.PERMISSION_DENIED, "no")
    assert past_deadline(reset, None, 5.0) is reset
    assert past_deadline(reset, 6.0, 5.0) is reset
    assert past_deadline(stated, 5.0, 5.0) is stated
    for err in (reset, lost):
        late = past_deadline(err, 5.0, 5.0)
        assert late.code is Code.DEADLINE_EXCEEDED
        assert err.message in late.message


class _ResetAfterDeadlineSync:
    """Answers the head, then resets the stream once the deadline has passed."""

    def __init__(self, protocol: Proto, at_send: bool) -> None:
        self.protocol = protocol
        self.at_send = at_send

    def send(self, request: HTTPRequest, body: Iterator[bytes] | None) -> Any:
        assert request.timeout is not None
        if self.at_send:
            threading.Event().wait(request.timeout + 0.05)
            raise ConnectError(Code.CANCELED, "StreamError: CANCEL")
        return _ResetResponse(self.protocol, request.timeout)

    def close(self) -> None:
        pass


class _ResetResponse:
    def __init__(self, protocol: Proto, timeout: float) -> None:
        self.status = 200
        self.headers = Headers({"content-type": STREAM_TYPES[protocol]})
        self._timeout = timeout

    def read(self) -> bytes:
        threading.Event().wait(self._timeout + 0.05)
        raise ConnectError(Code.CANCELED, "StreamError: stream no longer needed")

    @property
    def trailers(self) -> Headers:
        return Headers()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sync_reset_after_the_deadline_is_deadline_exceeded(protocol: Proto) -> None:
    client = SyncClient(
        "http://h", protocol=protocol, transport=_ResetAfterDeadlineSync(protocol, True)
    )
    with pytest.raises(ConnectError) as raised:
        client.call_unary(UNARY_SPEC, StringValue(), timeout=0.05)
    assert raised.value.code is Code.DEADLINE_EXCEEDED
    client = SyncClient(
        "http://h",
        protocol=protocol,
        transport=_ResetAfterDeadlineSync(protocol, False),
    )
    with pytest.raises(ConnectError) as raised:
        list(client.call_server_stream(SERVER_STREAM_SPEC, StringValue(), timeout=0.05))
    assert raised.value.code is Code.DEADLINE_EXCEEDED


class _ResetAsync:
    def __init__(self, protocol: Proto) -> None:
        self.protocol = protocol

    async def send(self, request: HTTPRequest, body: Any) -> Any:
        return _ResetAsyncResponse(self.protocol, request.timeout)

    async def aclose(self) -> None:
        pass


class _ResetAsyncResponse:
    def __init__(self, protocol: Proto, timeout: float | None) -> None:
        self.status = 200
        self.headers = Headers({"content-type": STREAM_TYPES[protocol]})
        self._timeout = timeout

    async def read(self) -> bytes:
        # Block the loop past the deadline, so the client's timer cannot win.
        threading.Event().wait((self._timeout or 0) + 0.05)
        raise ConnectError(Code.CANCELED, "StreamError: stream no longer needed")

    @property
    def trailers(self) -> Headers:
        return Headers()

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_stream_reset_after_the_deadline_is_deadline_exceeded(
    protocol: Proto,
) -> None:
    async def main() -> ConnectError:
        client = AsyncClient(
            "http://h", protocol=protocol, transport=_ResetAsync(protocol)
        )
        with pytest.raises(ConnectError) as raised:
            async for _ in client.call_server_stream(
                SERVER_STREAM_SPEC, StringValue(), timeout=0.05
            ):
                pass
        return raised.value

    assert asyncio.run(main()).code is Code.DEADLINE_EXCEEDED


# -- async: the deadline passes while the transport pulls the request stream --------


class _PullingAsync:
    """Pulls request messages in a task of its own and never sends a head.

    Like a transport that streams the request while it waits for the response:
    when the deadline passes, the caller's generator is in the middle of
    producing its next message for that task.
    """

    def __init__(self) -> None:
        self.pulled = 0
        self.pull_started = asyncio.Event()
        self.pull: asyncio.Task[None] | None = None

    async def send(
        self, request: HTTPRequest, body: AsyncIterator[bytes] | None
    ) -> Any:
        assert body is not None

        async def pull() -> None:
            self.pull_started.set()
            async for _ in body:
                self.pulled += 1

        self.pull = asyncio.ensure_future(pull())
        await asyncio.sleep(60)

    async def aclose(self) -> None:
        if self.pull is not None:
            self.pull.cancel()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_deadline_while_the_transport_pulls_requests(protocol: Proto) -> None:
    async def main() -> tuple[ConnectError, int, bool]:
        transport = _PullingAsync()
        answered = asyncio.Event()
        finished = []

        async def requests() -> AsyncIterator[StringValue]:
            # A full-duplex caller: the next message waits for an answer that
            # never comes.
            try:
                yield StringValue(value="a")
                await answered.wait()
                yield StringValue(value="b")
            finally:
                finished.append(True)

        client = AsyncClient("https://h", protocol=protocol, transport=transport)
        with pytest.raises(ConnectError) as raised:
            async for _ in client.call_bidi_stream(BIDI_SPEC, requests(), timeout=0.05):
                pass
        await client.aclose()
        if transport.pull is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await transport.pull
        return raised.value, transport.pulled, bool(finished)

    err, pulled, finished = asyncio.run(main())
    assert err.code is Code.DEADLINE_EXCEEDED, err
    assert pulled == 1
    # Once the transport stops pulling, the caller's generator is closed.
    assert finished


# -- cancellation seen by real servers ---------------------------------------------
#
# The handlers of cancel_apps wait for the client to go away; each test cancels
# a call and waits (bounded) for the handler to say it was cancelled.

ASGI_SERVERS: list[tuple[str, str, HTTPVersionName | None]] = [
    ("uvicorn", "cancel_apps:asgi_app", None),
    ("hypercorn", "cancel_apps:asgi_app", "2"),
    ("pyvoy", "cancel_apps:asgi_app", None),
]
REAL_SERVERS = [*ASGI_SERVERS, ("gunicorn", "cancel_apps:wsgi_app", None)]
"""Unary calls run on the ASGI servers only: a WSGI handler learns that its
client went away only when it writes, and a unary one writes once, at the end."""


@dataclass
class Real:
    """A server of cancel_apps and the folder its handlers report to."""

    name: str
    url: str
    http_version: HTTPVersionName | None
    reports: Path

    def cancelled(self, case: str) -> str:
        """What the handler of ``case`` reported, waiting for it up to 20 s."""
        path = self.reports / case
        end = time.monotonic() + 20
        while not path.exists():
            assert time.monotonic() < end, f"{self.name}: {case} was never cancelled"
            time.sleep(0.02)
        return path.read_text()

    async def started(self, case: str) -> None:
        """Wait (up to 20 s) until the handler of ``case`` runs."""
        path = self.reports / (case + ".started")
        end = time.monotonic() + 20
        while not path.exists():
            assert time.monotonic() < end, f"{self.name}: {case} never started"
            await asyncio.sleep(0.02)


def _ids(servers: list[tuple[str, str, HTTPVersionName | None]]) -> list[str]:
    return [s[0] for s in servers]


@pytest.fixture(scope="module")
def real(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Real]:
    """A server of ``cancel_apps``, from the test's parameters."""
    name, app, version = request.param
    reports = tmp_path_factory.mktemp(f"cancel-{name}")
    with run_server(name, app, env={"CANCEL_DIR": str(reports)}) as srv:
        yield Real(name, srv.url, version, reports)


@pytest.mark.parametrize("real", REAL_SERVERS, ids=_ids(REAL_SERVERS), indirect=True)
def test_real_async_stream_closed_by_the_reader(real: Real) -> None:
    async def main() -> None:
        async with AsyncClient(real.url, http_version=real.http_version) as client:
            stream = client.call_server_stream(
                COUNT_UP, pb.CountUpRequest(), headers={"x-case": "async-stream"}
            )
            assert (await stream.__anext__()).number == 1
            await stream.aclose()

    asyncio.run(asyncio.wait_for(main(), 20))
    assert real.cancelled("async-stream") == "cancelled"


@pytest.mark.parametrize("real", REAL_SERVERS, ids=_ids(REAL_SERVERS), indirect=True)
def test_real_sync_stream_closed_by_the_reader(real: Real) -> None:
    with SyncClient(real.url, http_version=real.http_version) as client:
        stream = client.call_server_stream(
            COUNT_UP, pb.CountUpRequest(), headers={"x-case": "sync-stream"}
        )
        assert next(stream).number == 1
        stream.close()
    assert real.cancelled("sync-stream") == "cancelled"


@pytest.mark.parametrize("real", ASGI_SERVERS, ids=_ids(ASGI_SERVERS), indirect=True)
def test_real_async_unary_task_cancelled(real: Real) -> None:
    async def main() -> None:
        async with AsyncClient(real.url, http_version=real.http_version) as client:
            call = asyncio.ensure_future(
                client.call_unary(
                    PING, pb.PingRequest(), headers={"x-case": "async-unary"}
                )
            )
            await real.started("async-unary")
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    asyncio.run(asyncio.wait_for(main(), 20))
    assert real.cancelled("async-unary") == "cancelled"


@pytest.mark.parametrize("real", ASGI_SERVERS, ids=_ids(ASGI_SERVERS), indirect=True)
def test_real_async_deadline_cancels_the_handler(real: Real) -> None:
    async def main() -> ConnectError:
        async with AsyncClient(real.url, http_version=real.http_version) as client:
            with pytest.raises(ConnectError) as raised:
                await client.call_unary(
                    PING, pb.PingRequest(), headers={"x-case": "deadline"}, timeout=0.3
                )
            return raised.value

    err = asyncio.run(asyncio.wait_for(main(), 20))
    assert err.code is Code.DEADLINE_EXCEEDED
    assert real.cancelled("deadline") == "cancelled"


SYNC_UNARY_SERVERS = [
    pytest.param(
        s,
        id=s[0],
        marks=[
            pytest.mark.xfail(
                strict=True,
                reason="the sync client's HTTP/2 transport (pyqwest) cannot be "
                "interrupted: SyncClient.close() from another thread leaves a "
                "unary call waiting for its response head until its timeout",
            )
        ]
        if s[2] == "2"
        else [],
    )
    for s in ASGI_SERVERS
]


@pytest.mark.parametrize("real", SYNC_UNARY_SERVERS, indirect=True)
def test_real_sync_unary_cancelled_by_closing_the_client(real: Real) -> None:
    # No timeout: only the close may end the call. It runs in a thread of its
    # own so that a call close fails to end cannot hang the test.
    client = SyncClient(real.url, http_version=real.http_version)
    raised: list[BaseException] = []

    def call() -> None:
        try:
            client.call_unary(PING, pb.PingRequest(), headers={"x-case": "sync-unary"})
        except BaseException as e:
            raised.append(e)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        asyncio.run(real.started("sync-unary"))
        client.close()
        caller.join(10)
        assert not caller.is_alive(), "close() did not end the call"
        assert isinstance(raised[0], ConnectError)
        assert raised[0].code is Code.CANCELED
        assert real.cancelled("sync-unary") == "cancelled"
    finally:
        # A call close failed to end is ended by its handler: the server
        # must not be stopped with it in flight.
        (real.reports / "sync-unary.release").touch()
        caller.join(10)
