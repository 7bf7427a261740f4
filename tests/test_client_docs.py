"""The checked Python examples of docs/client.md, run as written.

They run in a child process with the example's generated code on its path
(``examples/gen`` from ``generate_example``), so its ``greet`` package stays
out of this process. Calls go through the in-process transports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from example_env import EXAMPLES, ROOT, checked_blocks, generate_example

DOC = ROOT / "docs" / "client.md"
BLOCKS = checked_blocks(DOC, "python")

# Runs the blocks given as files in argv with the example's service around them.
HARNESS = """\
import asyncio
import sys

from greet.v1.greet_connect import GreetService, GreetServiceClient, GreetServiceClientSync
from greet.v1.greet_pb2 import GreetRequest
from greet_service import Greeter, GreeterSync

from protoc_gen_connect_python.runtime import ASGIApp, ConnectError
from protoc_gen_connect_python.runtime.client import ASGITransport

blocks = {}
for path in sys.argv[1:]:
    ns = dict(globals())
    exec(open(path).read(), ns)
    blocks[path.rsplit("/", 1)[-1]] = ns


class Limited(GreetService):
    async def greet(self, request, ctx):
        blocks["error-details"]["reject"]()


async def main():
    details = blocks["error-details"]
    transport = ASGITransport(ASGIApp(Limited()))
    async with GreetServiceClient("http://test", transport=transport) as client:
        try:
            await client.greet(GreetRequest(name="Ada"))
        except ConnectError as err:
            print("retry after", details["retry_after"](err))
    transport = ASGITransport(ASGIApp(Greeter()))
    async with GreetServiceClient("http://test", transport=transport) as client:
        await blocks["capture"]["greet_with_headers"](client)
    await blocks["inprocess"]["test_greet"]()
    blocks["inprocess"]["test_greet_sync"]()
    print("in-process tests passed")


asyncio.run(main())
"""


def test_client_doc_examples_run(tmp_path: Path) -> None:
    assert {"error-details", "capture", "inprocess"} <= set(BLOCKS)
    gen = generate_example(tmp_path / "gen")
    names = []
    for name in ("error-details", "capture", "inprocess"):
        (tmp_path / name).write_text(BLOCKS[name])
        names.append(str(tmp_path / name))
    (tmp_path / "harness.py").write_text(HARNESS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(gen), str(EXAMPLES)])}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "harness.py"), *names],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "resource_exhausted too many greetings",
        "RATE_LIMITED {'limit': '10'}",
        "retry after 3.0",
        "Hello, Ada! 1 {}",
        "in-process tests passed",
    ], done.stdout
