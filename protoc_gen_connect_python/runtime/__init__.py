"""The Connect runtime: what generated code and applications import.

Everything public is re-exported here, so ``from protoc_gen_connect_python import
runtime`` (or importing names from this module) is the one import users need.
"""

from protoc_gen_connect_python.runtime.client.async_client import (
    AsyncClient,
    AsyncStream,
    UnaryResponse,
)
from protoc_gen_connect_python.runtime.client.capture import ResponseCapture
from protoc_gen_connect_python.runtime.client.config import ConnectionOptions
from protoc_gen_connect_python.runtime.client.retry import RetryPolicy, RetryThrottling
from protoc_gen_connect_python.runtime.client.sync_client import SyncClient, SyncStream
from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.context import RequestContext
from protoc_gen_connect_python.runtime.cors import (
    CORSMiddleware,
    CORSPolicy,
    WSGICORSMiddleware,
)
from protoc_gen_connect_python.runtime.errors import ConnectError, ErrorDetail
from protoc_gen_connect_python.runtime.headers import Headers, HeadersInput
from protoc_gen_connect_python.runtime.interceptors import (
    AsyncServerInterceptor,
    AsyncStreamFunc,
    AsyncUnaryFunc,
    ClientCall,
    ClientInterceptor,
    SyncServerInterceptor,
    SyncStreamFunc,
    SyncUnaryFunc,
)
from protoc_gen_connect_python.runtime.method import (
    Idempotency,
    MethodSpec,
    ServiceSpec,
    StreamType,
    unimplemented,
)
from protoc_gen_connect_python.runtime.server import ASGIApp, ServerOptions, WSGIApp
from protoc_gen_connect_python.runtime.service import AsyncService, SyncService

__all__ = [
    "ASGIApp",
    "AsyncClient",
    "AsyncServerInterceptor",
    "AsyncService",
    "AsyncStream",
    "AsyncStreamFunc",
    "AsyncUnaryFunc",
    "CORSMiddleware",
    "CORSPolicy",
    "ClientCall",
    "ClientInterceptor",
    "Code",
    "ConnectError",
    "ConnectionOptions",
    "ErrorDetail",
    "Headers",
    "HeadersInput",
    "Idempotency",
    "MethodSpec",
    "RequestContext",
    "ResponseCapture",
    "RetryPolicy",
    "RetryThrottling",
    "ServerOptions",
    "ServiceSpec",
    "StreamType",
    "SyncClient",
    "SyncServerInterceptor",
    "SyncService",
    "SyncStream",
    "SyncStreamFunc",
    "SyncUnaryFunc",
    "UnaryResponse",
    "WSGIApp",
    "WSGICORSMiddleware",
    "unimplemented",
]
