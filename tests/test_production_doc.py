"""The health and reflection blocks of docs/production.md, run as written.

App snippets are saved as modules and served by real servers (hypercorn for
gRPC and reflection, gunicorn for WSGI, uvicorn for the HTTP probe); client
snippets and commands run against them with the documented address replaced.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from example_env import checked_blocks, generate_example
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers import Server, run_server

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "production.md"
EXAMPLES = ROOT / "examples"
ADDRESS = "http://localhost:8080"
BIN = Path(sys.executable).parent
WAIT = 30.0
OURS = ("health-", "reflection-")


def blocks(*languages: str) -> dict[str, str]:
    return {
        k: v for k, v in checked_blocks(DOC, *languages).items() if k.startswith(OURS)
    }


def test_every_health_and_reflection_block_is_checked() -> None:
    assert set(blocks("python", "bash", "yaml")) == {
        "health-asgi",
        "health-wsgi",
        "health-statuses",
        "health-client",
        "health-k8s-grpc",
        "health-probe",
        "health-k8s-http",
        "health-probe-curl",
        "reflection-list-services",
        "reflection-list-methods",
        "reflection-call",
    }


@pytest.fixture(scope="module")
def snippets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's generated code plus each Python block as a module."""
    out = generate_example(tmp_path_factory.mktemp("doc"))
    for name, code in blocks("python").items():
        (out / (name.replace("-", "_") + ".py")).write_text(code + "\n")
    return out


@pytest.fixture(scope="module")
def asgi(snippets: Path) -> Iterator[Server]:
    with run_server(
        "hypercorn", "health_asgi:app", pythonpath=[snippets, EXAMPLES]
    ) as s:
        yield s


def run(command: list[str], base_url: str | None = None) -> str:
    if base_url is not None:
        command = [c.replace(ADDRESS, base_url) for c in command]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=WAIT, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def run_block(name: str, base_url: str) -> str:
    command = blocks("bash")[name]
    assert ADDRESS in command
    return run(["bash", "-c", "set -o pipefail; " + command], base_url)


def test_asgi_snippet_serves_health_to_grpcio(asgi: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{asgi.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "greet.v1.GreetService"):
            req = health_pb2.HealthCheckRequest(service=name)
            reply = stub.Check(req, timeout=WAIT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_commands(asgi: Server) -> None:
    assert run_block("reflection-list-services", asgi.url).split() == [
        "greet.v1.GreetService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    methods = run_block("reflection-list-methods", asgi.url).split()
    assert methods[:3] == [
        "greet.v1.GreetService/Greet",
        "greet.v1.GreetService/GreetStream",
        "grpc.health.v1.Health/Check",
    ]
    assert '"greeting": "Hello, Ada!"' in run_block("reflection-call", asgi.url)


def test_client_snippet_against_the_wsgi_snippet(snippets: Path) -> None:
    app = "health_wsgi:wsgi_app"
    with run_server("gunicorn", app, pythonpath=[snippets, EXAMPLES]) as srv:
        client = snippets / "health_client.py"
        out = run([sys.executable, "-c", client.read_text()], srv.url)
    assert out.strip() == "status: SERVING"


def test_statuses_snippet_runs() -> None:
    run([sys.executable, "-c", blocks("python")["health-statuses"]])


def test_grpc_probe_yaml_names_a_served_service(asgi: Server) -> None:
    yaml = blocks("yaml")["health-k8s-grpc"]
    services = re.findall(r"service: (\S+)", yaml)
    assert services == ["greet.v1.GreetService"]
    with grpc.insecure_channel(f"127.0.0.1:{asgi.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        req = health_pb2.HealthCheckRequest(service=services[0])
        assert stub.Check(req, timeout=WAIT).status == 1


def test_http_probe_snippets_on_uvicorn(snippets: Path) -> None:
    app = "health_probe:app"
    with run_server("uvicorn", app, pythonpath=[snippets, EXAMPLES]) as srv:
        assert run_block("health-probe-curl", srv.url) == "SERVING\n"
        paths = re.findall(r"path: (\S+)", blocks("yaml")["health-k8s-http"])
        assert paths == ["/healthz?service=greet.v1.GreetService", "/healthz"]
        for path in paths:
            with urllib.request.urlopen(srv.url + path, timeout=WAIT) as res:
                assert (res.status, res.read()) == (200, b"SERVING\n")
