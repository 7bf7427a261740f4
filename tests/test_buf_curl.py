"""``buf curl`` against the example server, with the commands of docs/http.md.

The server runs on hypercorn, which speaks HTTP/1.1 and HTTP/2 in cleartext, so
the same process answers Connect, gRPC (HTTP/2 prior knowledge) and gRPC-Web.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from example_env import (
    BIN,
    doc_commands,
    generate_example,
    json_documents,
    run_doc_command,
    serve,
    tool,
)

STREAM = [
    {"greeting": "Hello, World #1!"},
    {"greeting": "Hello, World #2!"},
    {"greeting": "Hello, World #3!"},
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tool("buf", BIN / "buf")
    gen = generate_example(tmp_path_factory.mktemp("gen"))
    with serve(gen, tmp_path_factory.mktemp("buf"), server="hypercorn") as url:
        yield url


def call(name: str, base_url: str) -> list[Any]:
    done = run_doc_command(name, base_url)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    return json_documents(done.stdout.decode())


def greetings(replies: list[Any]) -> list[dict[str, str]]:
    return [{"greeting": r["greeting"]} for r in replies]


def test_every_documented_buf_curl_command_is_checked() -> None:
    documented = {k for k in doc_commands() if k.startswith("buf-curl-")}
    assert documented == {
        f"buf-curl-{p}{s}"
        for p in ("connect", "grpc", "grpcweb")
        for s in ("", "-stream")
    }


def test_buf_curl_connect_unary(base_url: str) -> None:
    assert greetings(call("buf-curl-connect", base_url)) == [
        {"greeting": "Hello, World!"}
    ]


def test_buf_curl_connect_stream(base_url: str) -> None:
    assert greetings(call("buf-curl-connect-stream", base_url)) == STREAM


def test_buf_curl_grpc_unary_http2(base_url: str) -> None:
    assert greetings(call("buf-curl-grpc", base_url)) == [{"greeting": "Hello, World!"}]


def test_buf_curl_grpc_stream_http2(base_url: str) -> None:
    assert greetings(call("buf-curl-grpc-stream", base_url)) == STREAM


def test_buf_curl_grpc_web_unary(base_url: str) -> None:
    assert greetings(call("buf-curl-grpcweb", base_url)) == [
        {"greeting": "Hello, World!"}
    ]


def test_buf_curl_grpc_web_stream(base_url: str) -> None:
    assert greetings(call("buf-curl-grpcweb-stream", base_url)) == STREAM
