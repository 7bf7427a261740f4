"""Conformance client adapter: runs the runner's RPCs through our generated clients.

Run by the conformance runner (see ``docs/conformance.md``)::

    connectconformance --mode client --conf tests/conformance/config.yaml -- \
        .venv/bin/python tests/conformance/client.py --mode async

It reads size-prefixed ``ClientCompatRequest`` messages from stdin until EOF,
makes each call with ``ConformanceServiceClient`` (``--mode async``, calls run
concurrently on one event loop) or ``ConformanceServiceClientSync`` (``--mode
sync``, calls run on a thread pool), and writes one ``ClientCompatResponse``
per request. Each request gets its own client, built from the request's
protocol, codec, compression, HTTP version, TLS settings and receive limit.

Unary calls use ``call_unary_detailed`` (the generated ``unary`` returns only the
message, and the result must report headers and trailers). Client-stream calls
go through the stream API with the client-stream method spec for the same
reason: ``call_client_stream`` returns only the message.

Cancellation follows the runner's instructions: the async adapter cancels the
task making the call; the sync adapter closes the stream, or for unary calls
(whose blocking API has no cancel handle) closes the client from a timer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import conformance_gen

conformance_gen.ensure_generated()

from conformance_io import read_message, write_message  # noqa: E402
from connectrpc.conformance.v1 import (  # type: ignore[import-not-found]  # noqa: E402
    client_compat_pb2,
    config_pb2,
    service_connect,
    service_pb2,
)
from google.protobuf import any_pb2  # noqa: E402
from google.protobuf.message import Message  # noqa: E402

from protoc_gen_connect_python.runtime import (  # noqa: E402
    Code,
    ConnectError,
    Headers,
    MethodSpec,
)

SERVICE = "connectrpc.conformance.v1.ConformanceService"
METHODS: dict[str, MethodSpec[Any, Any]] = {
    m.name: m for m in service_connect.CONFORMANCE_SERVICE.methods
}
PROTOCOLS = {
    config_pb2.PROTOCOL_CONNECT: "connect",
    config_pb2.PROTOCOL_GRPC: "grpc",
    config_pb2.PROTOCOL_GRPC_WEB: "grpc-web",
}
CODECS = {config_pb2.CODEC_PROTO: "proto", config_pb2.CODEC_JSON: "json"}
COMPRESSIONS = {
    config_pb2.COMPRESSION_IDENTITY: None,
    config_pb2.COMPRESSION_UNSPECIFIED: None,
    config_pb2.COMPRESSION_GZIP: "gzip",
    config_pb2.COMPRESSION_BR: "br",
    config_pb2.COMPRESSION_ZSTD: "zstd",
    config_pb2.COMPRESSION_DEFLATE: "deflate",
    config_pb2.COMPRESSION_SNAPPY: "snappy",
}
HTTP_VERSIONS = {
    config_pb2.HTTP_VERSION_1: "1.1",
    config_pb2.HTTP_VERSION_2: "2",
    config_pb2.HTTP_VERSION_3: "3",
}


class Unsupported(Exception):
    """The request cannot even be turned into a call (reported as ``error``)."""


# ---------------------------------------------------------------------------
# Request -> client and call arguments; results -> response
# ---------------------------------------------------------------------------


def client_options(req: Any) -> dict[str, Any]:
    """Keyword arguments of the client constructor for this request."""
    protocol = PROTOCOLS.get(req.protocol)
    codec = CODECS.get(req.codec)
    if protocol is None or codec is None:
        raise Unsupported(f"unsupported protocol {req.protocol} or codec {req.codec}")
    if req.compression not in COMPRESSIONS:
        raise Unsupported(f"unsupported compression {req.compression}")
    if req.http_version not in HTTP_VERSIONS:
        raise Unsupported(f"unsupported HTTP version {req.http_version}")
    tls = bool(req.server_tls_cert)
    opts: dict[str, Any] = {
        "protocol": protocol,
        "codec": codec,
        "send_compression": COMPRESSIONS[req.compression],
        "http_version": HTTP_VERSIONS[req.http_version],
        "use_get": req.use_get_http_method,
        # The runner checks that the requested compression is used, so even
        # messages too small to be worth it are compressed.
        "compress_min_bytes": 0,
    }
    if req.message_receive_limit:
        opts["read_max_bytes"] = req.message_receive_limit
    if tls:
        opts["tls_ca_cert"] = bytes(req.server_tls_cert)
        if req.HasField("client_tls_creds"):
            opts["tls_cert"] = bytes(req.client_tls_creds.cert)
            opts["tls_key"] = bytes(req.client_tls_creds.key)
    return opts


def base_url(req: Any) -> str:
    scheme = "https" if req.server_tls_cert else "http"
    host = req.host if ":" not in req.host else f"[{req.host}]"
    return f"{scheme}://{host}:{req.port}"


def call_headers(req: Any) -> list[tuple[str, str]]:
    return [(h.name, v) for h in req.request_headers for v in h.value]


def call_timeout(req: Any) -> float | None:
    return req.timeout_ms / 1000.0 if req.HasField("timeout_ms") else None


def method_of(req: Any) -> MethodSpec[Any, Any]:
    if req.service != SERVICE or req.method not in METHODS:
        raise Unsupported(f"unknown method {req.service}/{req.method}")
    return METHODS[req.method]


def request_messages(req: Any, method: MethodSpec[Any, Any]) -> list[Message]:
    out: list[Message] = []
    for a in req.request_messages:
        msg = method.input()
        if not a.Unpack(msg):
            raise Unsupported(
                f"request message {a.type_url} is not {method.input.DESCRIPTOR.full_name}"
            )
        out.append(msg)
    return out


def to_headers(headers: Headers | None) -> list[Any]:
    if not headers:
        return []
    return [
        service_pb2.Header(name=name, value=headers.getall(name)) for name in headers
    ]


def to_error(e: BaseException) -> Any:
    """The ``Error`` describing how a call failed."""
    if isinstance(e, ConnectError):
        err = service_pb2.Error(code=int(e.code))
        if e.message:
            err.message = e.message
        err.details.extend(
            any_pb2.Any(type_url=d.type_url, value=d.value) for d in e.details
        )
        return err
    if isinstance(e, asyncio.CancelledError):
        return service_pb2.Error(code=int(Code.CANCELED), message="call canceled")
    return service_pb2.Error(code=int(Code.UNKNOWN), message=f"{type(e).__name__}: {e}")


class Result:
    """What one call produced so far; becomes a ``ClientResponseResult``."""

    def __init__(self, total_requests: int = 0) -> None:
        self.headers: Headers | None = None
        self.trailers: Headers | None = None
        self.payloads: list[Any] = []
        self.error: BaseException | None = None
        self.total_requests = total_requests
        self.sent = 0

    def fail(self, e: BaseException) -> None:
        self.error = e
        if isinstance(e, ConnectError) and self.trailers is None:
            # Errors carry the metadata they arrived with; headers may be
            # unknown when the call failed before the response started.
            self.trailers = e.metadata

    def to_proto(self, streaming_requests: bool) -> Any:
        res = client_compat_pb2.ClientResponseResult(
            response_headers=to_headers(self.headers),
            payloads=self.payloads,
            response_trailers=to_headers(self.trailers),
        )
        if self.error is not None:
            res.error.CopyFrom(to_error(self.error))
            if streaming_requests:
                res.num_unsent_requests = max(0, self.total_requests - self.sent)
        return res


def response(req: Any, result: Result, streaming_requests: bool) -> Any:
    return client_compat_pb2.ClientCompatResponse(
        test_name=req.test_name, response=result.to_proto(streaming_requests)
    )


def error_response(req: Any, e: BaseException) -> Any:
    return client_compat_pb2.ClientCompatResponse(
        test_name=req.test_name,
        error=client_compat_pb2.ClientErrorResult(message=f"{type(e).__name__}: {e}"),
    )


def check_single(payloads: list[Any]) -> None:
    """A client stream must be answered with exactly one message."""
    if len(payloads) != 1:
        raise ConnectError(
            Code.UNIMPLEMENTED,
            f"protocol error: client stream answered with {len(payloads)} messages",
        )


def _cancel_kind(req: Any) -> str | None:
    if not req.HasField("cancel"):
        return None
    kind: str | None = req.cancel.WhichOneof("cancel_timing")
    return kind


class Call:
    """What an async and a sync call share: the request's method, messages,
    headers and timeout, the runner's cancel instructions and the result.

    Subclasses cancel (``cancel_now``, ``cancel_later``) and send requests
    (``_requests``) their own way.
    """

    def __init__(self, req: Any) -> None:
        self.req = req
        self.method = method_of(req)
        self.messages = request_messages(req, self.method)
        self.headers = call_headers(req)
        self.timeout = call_timeout(req)
        self.delay = req.request_delay_ms / 1000.0
        self.cancel = _cancel_kind(req)
        # Cancel once this many responses arrived, if the runner says so.
        self.cancel_after: int | None = (
            req.cancel.after_num_responses
            if self.cancel == "after_num_responses"
            else None
        )
        self.result = Result(len(self.messages))
        self.stream: Any = None

    def cancel_now(self) -> None:
        raise NotImplementedError

    def cancel_later(self, ms: int) -> None:
        raise NotImplementedError

    def _requests(self) -> Any:
        """The request messages as the client's stream input."""
        raise NotImplementedError

    def _close_send(self) -> None:
        if self.cancel == "before_close_send":
            self.cancel_now()
        elif self.cancel == "after_close_send_ms":
            self.cancel_later(self.req.cancel.after_close_send_ms)

    def _call_unary(self, client: Any) -> Any:
        """Start the unary call (a coroutine for the async client)."""
        if self.cancel == "after_close_send_ms":
            self.cancel_later(self.req.cancel.after_close_send_ms)
        return client.call_unary_detailed(
            self.method, self.messages[0], headers=self.headers, timeout=self.timeout
        )

    def _unary_done(self, res: Any) -> None:
        self.result.headers, self.result.trailers = res.headers, res.trailers
        self.result.payloads.append(res.message.payload)

    def _open_stream(self, client: Any) -> None:
        """Open a server, client or half-duplex bidi stream as ``self.stream``."""
        if self.req.stream_type == config_pb2.STREAM_TYPE_SERVER_STREAM:
            self.result.sent = 1
            self.stream = client.server_stream(
                self.messages[0], headers=self.headers, timeout=self.timeout
            )
            self._close_send()
        else:
            self.stream = client.call_bidi_stream(
                self.method,
                self._requests(),
                headers=self.headers,
                timeout=self.timeout,
            )

    def _client_stream(self) -> bool:
        return bool(self.req.stream_type == config_pb2.STREAM_TYPE_CLIENT_STREAM)

    def _payload_list(self) -> list[Any]:
        """Where a stream's responses go: a client stream's single response
        counts only once the stream ended (``_read_all``)."""
        return [] if self._client_stream() else self.result.payloads

    def _received(self, payloads: list[Any], msg: Any) -> None:
        payloads.append(msg.payload)
        if self.cancel_after is not None and len(payloads) == self.cancel_after:
            self.cancel_now()

    def _keep_headers(self, stream: Any) -> None:
        """The stream's headers, when the call ended before they were recorded."""
        if self.result.headers is None and stream.headers:
            self.result.headers = stream.headers

    def _read_all(self, payloads: list[Any]) -> None:
        """The stream was read to its end."""
        if self._client_stream():
            check_single(payloads)
            self.result.payloads = payloads


# ---------------------------------------------------------------------------
# Async
# ---------------------------------------------------------------------------


class AsyncCall(Call):
    """One call through ``ConformanceServiceClient``, cancellable as the runner asks."""

    def __init__(self, req: Any) -> None:
        super().__init__(req)
        self.task: asyncio.Task[Any] | None = None
        self.canceled_by_us = False

    def cancel_now(self) -> None:
        if self.task is not None and not self.task.done():
            self.canceled_by_us = True
            self.task.cancel()

    def cancel_later(self, ms: int) -> None:
        asyncio.get_running_loop().call_later(ms / 1000.0, self.cancel_now)

    async def run(self, client: Any) -> Result:
        self.task = asyncio.current_task()
        try:
            st = self.req.stream_type
            if st == config_pb2.STREAM_TYPE_UNARY:
                self._unary_done(await self._call_unary(client))
            elif st in (
                config_pb2.STREAM_TYPE_CLIENT_STREAM,
                config_pb2.STREAM_TYPE_SERVER_STREAM,
                config_pb2.STREAM_TYPE_HALF_DUPLEX_BIDI_STREAM,
            ):
                self._open_stream(client)
                await self._read()
            elif st == config_pb2.STREAM_TYPE_FULL_DUPLEX_BIDI_STREAM:
                await self._full_duplex(client)
            else:
                raise Unsupported(f"unsupported stream type {st}")
        except asyncio.CancelledError as e:
            if not self.canceled_by_us:
                raise
            if sys.version_info >= (3, 11) and self.task is not None:
                self.task.uncancel()
            self.result.fail(e)
        except ConnectError as e:
            self.result.fail(e)
        return self.result

    async def _requests(self) -> AsyncIterator[Message]:
        for msg in self.messages:
            if self.delay:
                await asyncio.sleep(self.delay)
            self.result.sent += 1
            yield msg
        self._close_send()

    async def _read(self) -> None:
        stream = self.stream
        payloads = self._payload_list()
        try:
            async with stream:
                async for msg in stream:
                    self.result.headers = stream.headers
                    self._received(payloads, msg)
                self.result.headers = stream.headers
                self.result.trailers = stream.trailers
        finally:
            self._keep_headers(stream)
        self._read_all(payloads)

    async def _full_duplex(self, client: Any) -> None:
        queue: asyncio.Queue[Message | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[Message]:
            while (msg := await queue.get()) is not None:
                self.result.sent += 1
                yield msg

        stream = client.bidi_stream(
            requests(), headers=self.headers, timeout=self.timeout
        )
        try:
            await self._full_duplex_exchange(stream, queue)
        finally:
            self.result.headers = stream.headers

    async def _full_duplex_exchange(
        self, stream: Any, queue: asyncio.Queue[Message | None]
    ) -> None:
        async with stream:
            ended = False
            for msg in self.messages:
                if self.delay:
                    await asyncio.sleep(self.delay)
                queue.put_nowait(msg)
                try:
                    reply = await stream.__anext__()
                except StopAsyncIteration:
                    ended = True
                    break
                self._received(self.result.payloads, reply)
            queue.put_nowait(None)
            self._close_send()
            if not ended:
                async for reply in stream:
                    self._received(self.result.payloads, reply)
            self.result.trailers = stream.trailers


async def run_async_one(req: Any) -> Any:
    try:
        call = AsyncCall(req)
        client = service_connect.ConformanceServiceClient(
            base_url(req), **client_options(req)
        )
    except Exception as e:
        return error_response(req, e)
    try:
        result = await call.run(client)
    except Exception as e:
        call.result.fail(e)
        result = call.result
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return response(req, result, req.stream_type != config_pb2.STREAM_TYPE_UNARY)


async def main_async(parallel: int) -> None:
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(parallel)
    pending: set[asyncio.Task[None]] = set()

    async def one(req: Any) -> None:
        async with limit:
            resp = await run_async_one(req)
        write_message(sys.stdout.buffer, resp)

    while True:
        req = await loop.run_in_executor(
            None, read_message, sys.stdin.buffer, client_compat_pb2.ClientCompatRequest
        )
        if req is None:
            break
        task = asyncio.ensure_future(one(req))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


# ---------------------------------------------------------------------------
# Sync
# ---------------------------------------------------------------------------


class SyncCall(Call):
    """One call through ``ConformanceServiceClientSync``."""

    def __init__(self, req: Any, client: Any) -> None:
        super().__init__(req)
        self.client = client
        self.canceled = threading.Event()
        self.timers: list[threading.Timer] = []

    def cancel_now(self) -> None:
        self.canceled.set()
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.close()
        else:
            with contextlib.suppress(Exception):
                self.client.close()

    def cancel_later(self, ms: int) -> None:
        t = threading.Timer(ms / 1000.0, self.cancel_now)
        t.daemon = True
        self.timers.append(t)
        t.start()

    def run(self) -> Result:
        try:
            st = self.req.stream_type
            if st == config_pb2.STREAM_TYPE_UNARY:
                self._unary_done(self._call_unary(self.client))
            elif st == config_pb2.STREAM_TYPE_FULL_DUPLEX_BIDI_STREAM:
                self._full_duplex()
            else:
                self._open_stream(self.client)
                self._read()
        except Exception as e:
            self.result.fail(e)
        finally:
            for t in self.timers:
                t.cancel()
        return self.result

    def _requests(self) -> Iterator[Message]:
        for msg in self.messages:
            if self.delay:
                time.sleep(self.delay)
            self.result.sent += 1
            yield msg
        self._close_send()

    def _read(self) -> None:
        stream = self.stream
        payloads = self._payload_list()
        try:
            with stream:
                for msg in stream:
                    self.result.headers = stream.headers
                    self._received(payloads, msg)
                self.result.headers = stream.headers
                self.result.trailers = stream.trailers
        finally:
            self._keep_headers(stream)
        self._read_all(payloads)

    def _full_duplex(self) -> None:
        # The sync client sends requests from an iterator while the response
        # is read; the iterator hands over one request per response received.
        turn = threading.Semaphore(0)
        done = threading.Event()

        def requests() -> Iterator[Message]:
            for i, msg in enumerate(self.messages):
                if i and not turn.acquire(timeout=30):
                    return
                if done.is_set():
                    return
                if self.delay:
                    time.sleep(self.delay)
                self.result.sent += 1
                yield msg
            # Full duplex: the last response arrives before the request ends.
            if self.messages and not turn.acquire(timeout=30):
                return
            if done.is_set():
                return
            self._close_send()

        self.stream = self.client.bidi_stream(
            requests(), headers=self.headers, timeout=self.timeout
        )
        try:
            with self.stream as stream:
                for msg in stream:
                    self.result.headers = stream.headers
                    turn.release()
                    self._received(self.result.payloads, msg)
                self.result.trailers = stream.trailers
        finally:
            self.result.headers = self.stream.headers
            done.set()
            turn.release()


def run_sync_one(req: Any) -> Any:
    try:
        client = service_connect.ConformanceServiceClientSync(
            base_url(req), **client_options(req)
        )
        call = SyncCall(req, client)
    except Exception as e:
        return error_response(req, e)
    try:
        result = call.run()
    finally:
        with contextlib.suppress(Exception):
            client.close()
    return response(req, result, req.stream_type != config_pb2.STREAM_TYPE_UNARY)


def main_sync(parallel: int) -> None:
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        while True:
            req = read_message(sys.stdin.buffer, client_compat_pb2.ClientCompatRequest)
            if req is None:
                break
            fut = pool.submit(run_sync_one, req)
            fut.add_done_callback(
                lambda f: write_message(sys.stdout.buffer, f.result())
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("async", "sync"), default="async")
    parser.add_argument(
        "--parallel", type=int, default=32, help="calls in flight at once (default 32)"
    )
    args = parser.parse_args(argv)
    if args.mode == "async":
        asyncio.run(main_async(args.parallel))
    else:
        main_sync(args.parallel)


if __name__ == "__main__":
    main()
