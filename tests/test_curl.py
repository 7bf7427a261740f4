"""The curl one-liners of docs/http.md, run exactly as documented.

Each runs against the example on uvicorn (ASGI) and on gunicorn (WSGI).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from example_env import (
    doc_commands,
    envelopes,
    generate_example,
    run_doc_command,
    serve,
    tool,
)

CURL_CHECKS = {"curl-unary", "curl-get", "curl-error", "curl-stream"}


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_example(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module", params=["uvicorn", "gunicorn"])
def base_url(
    request: pytest.FixtureRequest,
    gen_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    tool("curl")
    with serve(gen_dir, tmp_path_factory.mktemp("curl"), server=request.param) as url:
        yield url


def run(name: str, base_url: str) -> bytes:
    done = run_doc_command(name, base_url)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_every_documented_curl_command_is_checked() -> None:
    documented = {k for k in doc_commands() if k.startswith("curl-")}
    assert documented == CURL_CHECKS


def test_unary(base_url: str) -> None:
    reply = json.loads(run("curl-unary", base_url))
    assert reply["greeting"] == "Hello, World!"
    assert reply["time"].endswith("Z")


def test_get(base_url: str) -> None:
    reply = json.loads(run("curl-get", base_url))
    assert reply["greeting"] == "Hello, World!"


def test_error(base_url: str) -> None:
    out = run("curl-error", base_url).decode()
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400"), head
    assert "content-type: application/json" in head.lower()
    assert json.loads(body) == {
        "code": "invalid_argument",
        "message": "name must not be empty",
    }


def test_stream(base_url: str) -> None:
    frames = envelopes(run("curl-stream", base_url))
    greetings = [json.loads(p)["greeting"] for f, p in frames if f == 0]
    assert greetings == ["Hello, World #1!", "Hello, World #2!", "Hello, World #3!"]
    flags, end = frames[-1]
    assert flags == 2
    assert json.loads(end) == {}
