"""grpcio's own asyncio server answering the bench service: the gRPC reference line.

Usage: python grpc_server.py PORT
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

pb: Any = importlib.import_module("connectbench.v1.bench_pb2")
SERVICE = "connectbench.v1.BenchService"


async def echo(request: Any, context: Any) -> Any:
    if request.response_size:
        return pb.EchoResponse(payload=pb.Payload(data=b"x" * request.response_size))
    return pb.EchoResponse(payload=request.payload)


async def download(request: Any, context: Any) -> AsyncIterator[Any]:
    msg = pb.EchoResponse(payload=pb.Payload(data=b"x" * request.size))
    for _ in range(request.count):
        yield msg


async def upload(requests: AsyncIterator[Any], context: Any) -> Any:
    count = size = 0
    async for r in requests:
        count += 1
        size += len(r.payload.data)
    return pb.SinkResponse(count=count, bytes=size)


async def serve(port: int) -> None:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(
            echo,
            request_deserializer=pb.EchoRequest.FromString,
            response_serializer=pb.EchoResponse.SerializeToString,
        ),
        "Download": grpc.unary_stream_rpc_method_handler(
            download,
            request_deserializer=pb.StreamRequest.FromString,
            response_serializer=pb.EchoResponse.SerializeToString,
        ),
        "Upload": grpc.stream_unary_rpc_method_handler(
            upload,
            request_deserializer=pb.EchoRequest.FromString,
            response_serializer=pb.SinkResponse.SerializeToString,
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
