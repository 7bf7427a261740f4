"""Calls the example server with the generated async and sync clients.

Usage: python client.py [BASE_URL] [NAME]
"""

from __future__ import annotations

import asyncio
import sys

from greet.v1.greet_connect import GreetServiceClient, GreetServiceClientSync
from greet.v1.greet_pb2 import GreetRequest, GreetStreamRequest

from protoc_gen_connect_python.runtime import Code, ConnectError


async def main_async(base_url: str, name: str) -> None:
    """Unary over POST and GET, a server stream, and an error, with the async client."""
    async with GreetServiceClient(base_url) as client:
        reply = await client.greet(GreetRequest(name=name))
        print("async greet:", reply.greeting)
        stream = client.greet_stream(GreetStreamRequest(name=name, count=3))
        async for msg in stream:
            print("async stream:", msg.greeting)
        try:
            await client.greet(GreetRequest(name=""))
        except ConnectError as e:
            assert e.code is Code.INVALID_ARGUMENT
            print("async error:", e.code.wire_name, "-", e.message)
    async with GreetServiceClient(base_url, use_get=True, codec="json") as client:
        reply = await client.greet(GreetRequest(name=name))
        print("async GET + JSON greet:", reply.greeting)


def main_sync(base_url: str, name: str) -> None:
    """The same calls with the sync client."""
    with GreetServiceClientSync(base_url) as client:
        print("sync greet:", client.greet(GreetRequest(name=name)).greeting)
        with client.greet_stream(GreetStreamRequest(name=name, count=2)) as stream:
            for msg in stream:
                print("sync stream:", msg.greeting)


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
    who = sys.argv[2] if len(sys.argv) > 2 else "World"
    asyncio.run(main_async(url, who))
    main_sync(url, who)
