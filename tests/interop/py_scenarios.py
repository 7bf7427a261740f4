"""Our async and sync clients running the scenarios of ``node/client.mjs``.

Each scenario returns the same observation dict the node client prints, so one
set of assertions (``expectations.check``) covers both directions. Like
``py_service``, this needs the generated ``interop.v1`` modules on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from expectations import SCENARIOS
from google.protobuf import json_format
from google.protobuf.message import Message
from interop.v1 import interop_connect  # type: ignore[import-not-found]
from interop.v1.interop_pb2 import (  # type: ignore[import-not-found]
    CallSpec,
    ChatRequest,
    ChatResponse,
    CollectRequest,
    CollectResponse,
    CountRequest,
    CountResponse,
    EchoRequest,
    EchoResponse,
    ErrorInfo,
    ErrorSpec,
    Header,
)

from protoc_gen_connect_python.runtime import (
    ConnectError,
    Headers,
    MethodSpec,
    UnaryResponse,
)

Observation = dict[str, Any]

REQUEST_HEADERS = [
    ("x-test-alpha", "one"),
    ("x-test-beta", "two words"),
    ("x-other", "not echoed"),
]
LARGE_TEXT = "0123456789abcdef" * 4096
BIDI_TEXTS = ("one", "two", "three")
# How long a sync bidi request generator waits for the next message before it
# gives up; only reached when a client cannot read while it sends.
BIDI_STALL_SECONDS = 10.0


def metadata_spec(**fields: Any) -> CallSpec:
    """A CallSpec asking for the response headers and trailers the tests check."""
    return CallSpec(
        response_headers=[
            Header(name="x-test-header", value="header value"),
            Header(name="x-test-header-two", value="second"),
        ],
        response_trailers=[Header(name="x-test-trailer", value="trailer value")],
        **fields,
    )


def pairs(headers: Headers) -> list[list[str]]:
    """Headers as [name, value] lists, like the node client prints them."""
    return [[k, v] for k, v in headers.multi_items()]


def header_list(msg: Any) -> list[list[str]]:
    """The request headers a server echoed back."""
    return [[h.name, h.value] for h in msg.request_headers]


def describe_error(err: ConnectError) -> Observation:
    """A ConnectError as the node client prints errors."""
    infos = [d.unpack(ErrorInfo) for d in err.details]
    return {
        "code": err.code.wire_name,
        "message": err.message,
        "details": [d.type_name for d in err.details],
        "error_info": [json_format.MessageToDict(i) for i in infos if i is not None],
        "metadata": pairs(err.metadata),
    }


@dataclass(frozen=True)
class ClientOptions:
    """Which client to build: the same knobs as node/client.mjs's flags."""

    base_url: str
    protocol: str = "connect"
    http2: bool = False
    json: bool = False
    gzip: bool = False

    def kwargs(self, *, use_get: bool = False) -> dict[str, Any]:
        """Keyword arguments for the generated client constructors."""
        return {
            "protocol": self.protocol,
            "codec": "json" if self.json else "proto",
            "send_compression": "gzip" if self.gzip else None,
            "accept_compression": ["gzip"] if self.gzip else [],
            "compress_min_bytes": 0,
            "http_version": "2" if self.http2 else "1.1",
            "use_get": use_get,
        }


def method_specs() -> dict[str, MethodSpec[Any, Any]]:
    """The generated specs of InteropService, by proto method name."""
    spec = interop_connect.InteropService.service_spec
    return {m.name: m for m in spec.methods}


def unary_error_request() -> EchoRequest:
    return EchoRequest(
        text="fail",
        spec=metadata_spec(
            error=ErrorSpec(code=5, message="no such thing: ünïcödé", with_detail=True)
        ),
    )


def stream_error_request() -> CountRequest:
    return CountRequest(
        n=2,
        text="e",
        spec=metadata_spec(
            error=ErrorSpec(code=9, message="stream broke", with_detail=True)
        ),
    )


def collect_requests() -> list[CollectRequest]:
    return [
        CollectRequest(text="a", spec=metadata_spec()),
        CollectRequest(text="b"),
        CollectRequest(text="c"),
    ]


def collect_error_requests() -> list[CollectRequest]:
    return [
        CollectRequest(
            text="a",
            spec=CallSpec(error=ErrorSpec(code=8, message="too many")),
        ),
        CollectRequest(text="b"),
    ]


def chat_error_request() -> ChatRequest:
    return ChatRequest(
        text="only",
        spec=CallSpec(
            error=ErrorSpec(code=10, message="chat aborted", with_detail=True)
        ),
    )


def chat_requests() -> list[ChatRequest]:
    """BIDI_TEXTS as requests, the first asking for metadata."""
    first = ChatRequest(text=BIDI_TEXTS[0], spec=metadata_spec())
    return [first] + [ChatRequest(text=t) for t in BIDI_TEXTS[1:]]


METADATA_REQUEST = EchoRequest(text="with metadata", spec=metadata_spec())
GET_REQUEST = EchoRequest(text="via get")
DEADLINE_REQUEST = EchoRequest(text="slow", spec=CallSpec(delay_ms=2000))
DEADLINE_SECONDS = 0.2
COUNT_REQUEST = CountRequest(n=3, text="s", spec=metadata_spec(delay_ms=5))


# --- what the scenarios observe, for both clients ---------------------------------


def echo_observation(res: EchoResponse | CollectResponse) -> Observation:
    """The answer to a call with REQUEST_HEADERS."""
    return {"text": res.text, "request_headers": header_list(res)}


_Message = TypeVar("_Message", bound=Message)


def detailed(seen: Observation, res: UnaryResponse[_Message]) -> _Message:
    """Record a detailed unary result's headers and trailers; its message."""
    seen["response_headers"] = pairs(res.headers)
    seen["response_trailers"] = pairs(res.trailers)
    return res.message


def large_observation(message: EchoResponse) -> Observation:
    return {"length": len(message.text), "same": message.text == LARGE_TEXT}


def count_message(res: CountResponse) -> Observation:
    return {"index": res.index, "text": res.text, "request_headers": header_list(res)}


def indexed(res: CountResponse | ChatResponse) -> Observation:
    return {"index": res.index, "text": res.text}


def chat_message(res: ChatResponse, sent: int) -> Observation:
    return {"index": res.index, "text": res.text, "sent_before_reply": sent}


def stream_failed(messages: list[Observation], e: ConnectError) -> Observation:
    return {"messages": messages, "error": describe_error(e)}


def deadline_observation(started: float, e: ConnectError | None) -> Observation:
    out: Observation = {"elapsed_ms": _ms_since(started)}
    if e is not None:
        out["error"] = describe_error(e)
    return out


def no_metadata() -> Observation:
    """What a scenario saw before it recorded response headers and trailers."""
    return {"response_headers": [], "response_trailers": []}


_Client = TypeVar("_Client")


class _Scenarios:
    """What both clients' scenario runners share: the options and specs."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.specs = method_specs()

    def _clients(self, client_cls: Callable[..., _Client]) -> tuple[_Client, _Client]:
        """A client, and one that sends side-effect-free calls with GET."""
        base_url = self.options.base_url
        return (
            client_cls(base_url, **self.options.kwargs()),
            client_cls(base_url, **self.options.kwargs(use_get=True)),
        )


# --- async ----------------------------------------------------------------------


class AsyncScenarios(_Scenarios):
    """The scenarios with ``InteropServiceClient``."""

    async def run(self, names: tuple[str, ...] = SCENARIOS) -> list[Observation]:
        """Run each scenario; a ConnectError becomes the observation's "error"."""
        out: list[Observation] = []
        client, get_client = self._clients(interop_connect.InteropServiceClient)
        async with client, get_client:
            self.client = client
            self.get_client = get_client
            for name in names:
                seen = no_metadata()
                scenario: Callable[[Observation], Awaitable[Observation]] = getattr(
                    self, name
                )
                try:
                    result = await scenario(seen)
                except ConnectError as e:
                    result = {"error": describe_error(e)}
                out.append({"scenario": name, **result, **seen})
        return out

    async def unary(self, seen: Observation) -> Observation:
        res = await self.client.echo(EchoRequest(text="hello"), headers=REQUEST_HEADERS)
        return {**echo_observation(res), "protocol": res.protocol}

    async def unary_large(self, seen: Observation) -> Observation:
        res = await self.client.call_unary_detailed(
            self.specs["Echo"], EchoRequest(text=LARGE_TEXT), headers=REQUEST_HEADERS
        )
        return large_observation(detailed(seen, res))

    async def unary_metadata(self, seen: Observation) -> Observation:
        res = await self.client.call_unary_detailed(
            self.specs["Echo"], METADATA_REQUEST, headers=REQUEST_HEADERS
        )
        return {"text": detailed(seen, res).text}

    async def unary_error(self, seen: Observation) -> Observation:
        await self.client.echo(unary_error_request(), headers=REQUEST_HEADERS)
        return {}

    async def unary_deadline(self, seen: Observation) -> Observation:
        started = time.monotonic()
        try:
            await self.client.echo(
                DEADLINE_REQUEST, headers=REQUEST_HEADERS, timeout=DEADLINE_SECONDS
            )
        except ConnectError as e:
            return deadline_observation(started, e)
        return deadline_observation(started, None)

    async def get(self, seen: Observation) -> Observation:
        res = await self.get_client.call_unary_detailed(
            self.specs["EchoGet"], GET_REQUEST, headers=REQUEST_HEADERS
        )
        return echo_observation(detailed(seen, res))

    async def server_stream(self, seen: Observation) -> Observation:
        messages = []
        async with self.client.count(COUNT_REQUEST, headers=REQUEST_HEADERS) as stream:
            async for res in stream:
                seen["response_headers"] = pairs(stream.headers)
                messages.append(count_message(res))
            seen["response_trailers"] = pairs(stream.trailers)
        return {"messages": messages}

    async def server_stream_error(self, seen: Observation) -> Observation:
        messages = []
        try:
            async with self.client.count(
                stream_error_request(), headers=REQUEST_HEADERS
            ) as stream:
                async for res in stream:
                    seen["response_headers"] = pairs(stream.headers)
                    messages.append(indexed(res))
        except ConnectError as e:
            return stream_failed(messages, e)
        return {"messages": messages}

    async def client_stream(self, seen: Observation) -> Observation:
        async def requests() -> AsyncIterator[CollectRequest]:
            for r in collect_requests():
                yield r

        res = await self.client.collect(requests(), headers=REQUEST_HEADERS)
        return {**echo_observation(res), "count": res.count}

    async def client_stream_error(self, seen: Observation) -> Observation:
        # A plain list: client-streaming inputs accept any iterable.
        await self.client.collect(collect_error_requests(), headers=REQUEST_HEADERS)
        return {}

    async def bidi(self, seen: Observation) -> Observation:
        if not self.options.http2:
            return await self._bidi_half_duplex(seen)
        outbox: asyncio.Queue[ChatRequest | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[ChatRequest]:
            while (msg := await outbox.get()) is not None:
                yield msg

        chat = chat_requests()
        outbox.put_nowait(chat[0])
        sent = 1
        messages = []
        async with self.client.chat(requests(), headers=REQUEST_HEADERS) as stream:
            async for res in stream:
                seen["response_headers"] = pairs(stream.headers)
                messages.append(chat_message(res, sent))
                if sent < len(chat):
                    outbox.put_nowait(chat[sent])
                    sent += 1
                else:
                    outbox.put_nowait(None)
            seen["response_trailers"] = pairs(stream.trailers)
        return {"mode": "full-duplex", "messages": messages}

    async def _bidi_half_duplex(self, seen: Observation) -> Observation:
        requests = chat_requests()
        messages = []
        async with self.client.chat(requests, headers=REQUEST_HEADERS) as stream:
            async for res in stream:
                seen["response_headers"] = pairs(stream.headers)
                messages.append(chat_message(res, len(requests)))
            seen["response_trailers"] = pairs(stream.trailers)
        return {"mode": "half-duplex", "messages": messages}

    async def bidi_error(self, seen: Observation) -> Observation:
        messages = []
        try:
            async with self.client.chat(
                [chat_error_request()], headers=REQUEST_HEADERS
            ) as stream:
                async for res in stream:
                    messages.append(indexed(res))
        except ConnectError as e:
            return stream_failed(messages, e)
        return {"messages": messages}


# --- sync -----------------------------------------------------------------------


class SyncScenarios(_Scenarios):
    """The scenarios with ``InteropServiceClientSync``."""

    def run(self, names: tuple[str, ...] = SCENARIOS) -> list[Observation]:
        """Run each scenario; a ConnectError becomes the observation's "error"."""
        out: list[Observation] = []
        client, get_client = self._clients(interop_connect.InteropServiceClientSync)
        with client, get_client:
            self.client = client
            self.get_client = get_client
            for name in names:
                seen = no_metadata()
                scenario: Callable[[Observation], Observation] = getattr(self, name)
                try:
                    result = scenario(seen)
                except ConnectError as e:
                    result = {"error": describe_error(e)}
                out.append({"scenario": name, **result, **seen})
        return out

    def unary(self, seen: Observation) -> Observation:
        res = self.client.echo(EchoRequest(text="hello"), headers=REQUEST_HEADERS)
        return {**echo_observation(res), "protocol": res.protocol}

    def unary_large(self, seen: Observation) -> Observation:
        res = self.client.call_unary_detailed(
            self.specs["Echo"], EchoRequest(text=LARGE_TEXT), headers=REQUEST_HEADERS
        )
        return large_observation(detailed(seen, res))

    def unary_metadata(self, seen: Observation) -> Observation:
        res = self.client.call_unary_detailed(
            self.specs["Echo"], METADATA_REQUEST, headers=REQUEST_HEADERS
        )
        return {"text": detailed(seen, res).text}

    def unary_error(self, seen: Observation) -> Observation:
        self.client.echo(unary_error_request(), headers=REQUEST_HEADERS)
        return {}

    def unary_deadline(self, seen: Observation) -> Observation:
        started = time.monotonic()
        try:
            self.client.echo(
                DEADLINE_REQUEST, headers=REQUEST_HEADERS, timeout=DEADLINE_SECONDS
            )
        except ConnectError as e:
            return deadline_observation(started, e)
        return deadline_observation(started, None)

    def get(self, seen: Observation) -> Observation:
        res = self.get_client.call_unary_detailed(
            self.specs["EchoGet"], GET_REQUEST, headers=REQUEST_HEADERS
        )
        return echo_observation(detailed(seen, res))

    def server_stream(self, seen: Observation) -> Observation:
        messages = []
        with self.client.count(COUNT_REQUEST, headers=REQUEST_HEADERS) as stream:
            for res in stream:
                seen["response_headers"] = pairs(stream.headers)
                messages.append(count_message(res))
            seen["response_trailers"] = pairs(stream.trailers)
        return {"messages": messages}

    def server_stream_error(self, seen: Observation) -> Observation:
        messages = []
        try:
            with self.client.count(
                stream_error_request(), headers=REQUEST_HEADERS
            ) as stream:
                for res in stream:
                    seen["response_headers"] = pairs(stream.headers)
                    messages.append(indexed(res))
        except ConnectError as e:
            return stream_failed(messages, e)
        return {"messages": messages}

    def client_stream(self, seen: Observation) -> Observation:
        def requests() -> Iterator[CollectRequest]:
            yield from collect_requests()

        res = self.client.collect(requests(), headers=REQUEST_HEADERS)
        return {**echo_observation(res), "count": res.count}

    def client_stream_error(self, seen: Observation) -> Observation:
        self.client.collect(collect_error_requests(), headers=REQUEST_HEADERS)
        return {}

    def bidi(self, seen: Observation) -> Observation:
        if not self.options.http2:
            return self._bidi_half_duplex(seen)
        outbox: queue.Queue[ChatRequest | None] = queue.Queue()

        def requests() -> Iterator[ChatRequest]:
            while True:
                try:
                    msg = outbox.get(timeout=BIDI_STALL_SECONDS)
                except queue.Empty:
                    raise RuntimeError(
                        "no reply arrived while the request stream was open: "
                        "the sync client did not read and send at the same time"
                    ) from None
                if msg is None:
                    return
                yield msg

        chat = chat_requests()
        outbox.put(chat[0])
        sent = 1
        messages = []
        with self.client.chat(requests(), headers=REQUEST_HEADERS) as stream:
            for res in stream:
                seen["response_headers"] = pairs(stream.headers)
                messages.append(chat_message(res, sent))
                if sent < len(chat):
                    outbox.put(chat[sent])
                    sent += 1
                else:
                    outbox.put(None)
            seen["response_trailers"] = pairs(stream.trailers)
        return {"mode": "full-duplex", "messages": messages}

    def _bidi_half_duplex(self, seen: Observation) -> Observation:
        requests = chat_requests()
        messages = []
        with self.client.chat(requests, headers=REQUEST_HEADERS) as stream:
            for res in stream:
                seen["response_headers"] = pairs(stream.headers)
                messages.append(chat_message(res, len(requests)))
            seen["response_trailers"] = pairs(stream.trailers)
        return {"mode": "half-duplex", "messages": messages}

    def bidi_error(self, seen: Observation) -> Observation:
        messages = []
        try:
            with self.client.chat(
                [chat_error_request()], headers=REQUEST_HEADERS
            ) as stream:
                for res in stream:
                    messages.append(indexed(res))
        except ConnectError as e:
            return stream_failed(messages, e)
        return {"messages": messages}


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
