"""interop.v1.InteropService on grpcio's own server: the peer our gRPC clients call.

It behaves like ``py_service`` and ``node/server.mjs``: every request says which
headers, trailers, delay and error it wants back. Errors carry their details
the grpcio way, a ``google.rpc.Status`` built with ``grpc_status.rpc_status``
and sent with ``context.abort_with_status``. Like the other servers it reports
the HTTP method in ``x-http-method`` (always POST for gRPC).

Header values whose names end in ``-bin`` are base64 text in a ``CallSpec``;
they are sent as bytes (grpcio encodes them), and such request headers are
echoed back base64-encoded.

Needs the generated ``interop.v1`` modules, grpcio stubs included, on
``sys.path`` (``codegen.generate(out, grpc_stubs=True)``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Iterator
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status
from interop.v1 import interop_pb2_grpc  # type: ignore[import-not-found]
from interop.v1.interop_pb2 import (  # type: ignore[import-not-found]
    CallSpec,
    ChatResponse,
    CollectResponse,
    CountResponse,
    EchoResponse,
    ErrorInfo,
    Header,
)

Metadata = list[tuple[str, str | bytes]]


def _value(name: str, value: str) -> str | bytes:
    if name.endswith("-bin"):
        return base64.b64decode(value + "=" * (-len(value) % 4))
    return value


def _metadata(headers: Iterable[Any]) -> Metadata:
    return [(h.name, _value(h.name, h.value)) for h in headers]


def seen_headers(context: Any) -> list[Any]:
    """The ``x-test-`` request headers, sorted by name, repeated values joined."""
    found: dict[str, list[str]] = {}
    for key, value in context.invocation_metadata():
        if not key.startswith("x-test-"):
            continue
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii").rstrip("=")
        found.setdefault(key, []).append(value)
    return [Header(name=k, value=", ".join(found[k])) for k in sorted(found)]


class _Call:
    """One call's metadata: headers go out once, trailers go with the status."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.trailers: Metadata = []
        self.started = False

    def start(self, spec: CallSpec | None) -> None:
        if self.started:
            return
        self.started = True
        headers: Metadata = [("x-http-method", "POST")]
        if spec is not None:
            headers += _metadata(spec.response_headers)
            self.trailers = _metadata(spec.response_trailers)
            self.context.set_trailing_metadata(self.trailers)
        self.context.send_initial_metadata(headers)

    def delay(self, spec: CallSpec) -> None:
        want = spec.delay_ms / 1000
        remaining = self.context.time_remaining()
        if remaining is not None and remaining < want:
            time.sleep(max(remaining, 0))
            self.context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while waiting"
            )
        if want > 0:
            time.sleep(want)

    def fail(self, spec: CallSpec | None) -> None:
        """Abort with the error the request asks for, if any."""
        if spec is None or not spec.HasField("error") or spec.error.code == 0:
            return
        e = spec.error
        status = status_pb2.Status(code=e.code, message=e.message)
        if e.with_detail:
            detail = any_pb2.Any()
            detail.Pack(ErrorInfo(reason=e.message, code=e.code))
            status.details.append(detail)
        converted = rpc_status.to_status(status)
        # abort_with_status replaces the trailers; keep the requested ones.
        converted = converted._replace(
            trailing_metadata=tuple(self.trailers) + converted.trailing_metadata
        )
        self.context.abort_with_status(converted)


class InteropGrpcio(interop_pb2_grpc.InteropServiceServicer):  # type: ignore[misc]
    """The service for ``grpc.server``."""

    def Echo(self, request: Any, context: Any) -> Any:
        call = _Call(context)
        call.start(request.spec)
        call.delay(request.spec)
        call.fail(request.spec)
        return EchoResponse(
            text=request.text, request_headers=seen_headers(context), protocol="grpc"
        )

    def EchoGet(self, request: Any, context: Any) -> Any:
        return self.Echo(request, context)

    def Count(self, request: Any, context: Any) -> Iterator[Any]:
        call = _Call(context)
        call.start(request.spec)
        for i in range(request.n):
            call.delay(request.spec)
            yield CountResponse(
                index=i,
                text=f"{request.text}-{i}",
                request_headers=seen_headers(context) if i == 0 else [],
            )
        call.fail(request.spec)

    def Collect(self, request_iterator: Iterator[Any], context: Any) -> Any:
        call = _Call(context)
        spec: CallSpec | None = None
        texts: list[str] = []
        for req in request_iterator:
            if spec is None:
                spec = req.spec
                call.start(spec)
            texts.append(req.text)
        call.start(None)
        if spec is not None:
            call.delay(spec)
            call.fail(spec)
        return CollectResponse(
            text="".join(texts), count=len(texts), request_headers=seen_headers(context)
        )

    def Chat(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        call = _Call(context)
        spec: CallSpec | None = None
        for index, req in enumerate(request_iterator):
            if spec is None:
                spec = req.spec
                call.start(spec)
            call.delay(spec)
            yield ChatResponse(index=index, text=f"echo: {req.text}")
        call.start(None)
        call.fail(spec)


def serve(*, gzip: bool = False) -> tuple[Any, int]:
    """Start a grpc.server on a free loopback port; returns it and the port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        compression=grpc.Compression.Gzip if gzip else None,
    )
    interop_pb2_grpc.add_InteropServiceServicer_to_server(InteropGrpcio(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
