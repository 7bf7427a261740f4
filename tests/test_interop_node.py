"""Interop with a real peer: connect-node (``@connectrpc/connect-node`` from npm).

Both directions run the same scenarios (``tests/interop/expectations.py``):

- the connect-node client (``interop/node/client.mjs``) calls our ASGI app on
  uvicorn (HTTP/1.1) and hypercorn (HTTP/2 without TLS), and our WSGI app on
  gunicorn (HTTP/1.1);
- our async and sync clients call the connect-node server
  (``interop/node/server.mjs``) over HTTP/1.1 and HTTP/2;
- the node client also calls the node server, which proves the harness and the
  expectations against the reference implementation;
- the same scenarios over gRPC (h2c) and gRPC-Web (HTTP/1.1 and h2c), both
  directions (``test_grpc_*``).

Each combination of server, client and options runs every scenario in one go
(one node process, one Python client); the tests then check one scenario each.
The Python code for ``interop.proto`` and the descriptor set the node side loads
are generated once per module, with protoc and this repo's plugin.

Set-up: ``npm ci --prefix tests/interop/node`` (``scripts/setup.sh`` runs it).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from interop_env import (
    INTEROP,
    SCENARIOS,
    Call,
    Generated,
    Observation,
    check,
    check_all,
    generated_code,
    observation,
    run_python_client,
    serve_py_service,
)

ROOT = INTEROP.parent.parent
NODE_DIR = INTEROP / "node"

NODE_START_SECONDS = 15.0
NODE_CLIENT_SECONDS = 60.0


@dataclass(frozen=True)
class Variant:
    """Codec and compression of one run."""

    json: bool
    gzip: bool

    @property
    def id(self) -> str:
        return ("json" if self.json else "proto") + ("-gzip" if self.gzip else "")


VARIANTS = [
    Variant(json=False, gzip=False),
    Variant(json=True, gzip=False),
    Variant(json=False, gzip=True),
    Variant(json=True, gzip=True),
]
SOME_VARIANTS = [Variant(json=False, gzip=False), Variant(json=True, gzip=True)]


@dataclass(frozen=True)
class PyServer:
    """One of our apps on one server: which fixture starts it, which HTTP it speaks."""

    fixture: str
    http2: bool

    @property
    def id(self) -> str:
        return self.fixture.removeprefix("py_") + ("-h2" if self.http2 else "-h1")


PY_SERVERS = [
    PyServer("py_uvicorn", http2=False),
    PyServer("py_hypercorn", http2=True),
    PyServer("py_gunicorn", http2=False),
]


# --- generated code and the descriptor set ---------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    """Run protoc once: Python messages, our Connect code, and a descriptor set."""
    with generated_code(tmp_path_factory) as gen:
        yield gen


# --- node ------------------------------------------------------------------------


def node_executable() -> str:
    """The node binary, after checking that ``npm ci`` has been run."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not on PATH (Node.js 20 or newer is needed)", pytrace=False
        )
    if not (NODE_DIR / "node_modules" / "@connectrpc" / "connect-node").is_dir():
        pytest.fail(
            f"npm packages missing: run `npm ci --prefix {NODE_DIR.relative_to(ROOT)}`"
            " (scripts/setup.sh does)",
            pytrace=False,
        )
    return node


def node_fixture(http2: bool) -> str:
    """The name of the fixture that serves server.mjs over HTTP/2 or HTTP/1.1."""
    return "node_h2" if http2 else "node_h1"


@contextmanager
def node_server(gen: Generated, *, http2: bool, log: Path) -> Iterator[str]:
    """Run server.mjs until the block ends; yields its base URL."""
    cmd = [node_executable(), str(NODE_DIR / "server.mjs")]
    cmd += ["--descriptor", str(gen.descriptor), "--port", "0"]
    if http2:
        cmd.append("--http2")
    with log.open("wb") as err:
        proc = subprocess.Popen(
            cmd, cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=err, text=True
        )
    assert proc.stdout is not None
    try:
        line = _read_line(proc, NODE_START_SECONDS)
        if not line.startswith("READY "):
            pytest.fail(
                f"node server did not start ({line!r}):\n{log.read_text()}",
                pytrace=False,
            )
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The process's first line of output, or "" when it exits or times out."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline().strip()


def _serve_node(
    generated: Generated, tmp_path_factory: pytest.TempPathFactory, http2: bool
) -> Iterator[str]:
    log = tmp_path_factory.mktemp(node_fixture(http2)) / "server.log"
    with node_server(generated, http2=http2, log=log) as url:
        yield url


@pytest.fixture(scope="module")
def node_h1(
    generated: Generated, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from _serve_node(generated, tmp_path_factory, http2=False)


@pytest.fixture(scope="module")
def node_h2(
    generated: Generated, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from _serve_node(generated, tmp_path_factory, http2=True)


def run_node_client(
    gen: Generated, base_url: str, *, protocol: str, http2: bool, variant: Variant
) -> dict[str, Observation]:
    """Run every scenario with client.mjs; its observations by scenario name."""
    cmd = [node_executable(), str(NODE_DIR / "client.mjs")]
    cmd += ["--descriptor", str(gen.descriptor), "--base-url", base_url]
    cmd += ["--protocol", protocol]
    if http2:
        cmd.append("--http2")
    if variant.json:
        cmd.append("--json")
    if variant.gzip:
        cmd.append("--gzip")
    done = subprocess.run(
        cmd,
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=NODE_CLIENT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"client.mjs exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    results: dict[str, Observation] = {}
    for line in done.stdout.splitlines():
        obs = json.loads(line)
        results[obs["scenario"]] = obs
    return results


# --- our servers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def py_uvicorn(generated: Generated) -> Iterator[str]:
    with serve_py_service(generated, "uvicorn") as srv:
        yield srv.url


@pytest.fixture(scope="module")
def py_hypercorn(generated: Generated) -> Iterator[str]:
    """hypercorn answers cleartext HTTP/2 with prior knowledge, as connect-node sends it."""
    with serve_py_service(generated, "hypercorn") as srv:
        yield srv.url


@pytest.fixture(scope="module")
def py_gunicorn(generated: Generated) -> Iterator[str]:
    with serve_py_service(generated, "gunicorn") as srv:
        yield srv.url


# --- running each combination once ---------------------------------------------


RunCache = dict[tuple[Any, ...], dict[str, Observation] | BaseException]


@pytest.fixture(scope="module")
def run_cache() -> RunCache:
    """The runs of this module so far, by client, server and options."""
    return {}


class Runs:
    """Runs each client/server/options combination once and remembers the result.

    A failed run (the client could not be built, the process crashed) is
    remembered too and reported by every test that needs it. Servers are the
    fixtures that start them, requested when a run first needs one.
    """

    def __init__(
        self, generated: Generated, request: pytest.FixtureRequest, cache: RunCache
    ) -> None:
        self.generated = generated
        self.request = request
        self._done = cache

    def node_client(
        self, server: str, protocol: str, http2: bool, variant: Variant
    ) -> dict[str, Observation]:
        """client.mjs against the server the fixture ``server`` starts."""
        return self._get(
            ("node", server, protocol, http2, variant),
            lambda: run_node_client(
                self.generated,
                self.request.getfixturevalue(server),
                protocol=protocol,
                http2=http2,
                variant=variant,
            ),
        )

    def python_client(
        self, flavor: str, protocol: str, http2: bool, variant: Variant
    ) -> dict[str, Observation]:
        """Our ``flavor`` client against server.mjs."""
        return self._get(
            ("python", flavor, protocol, http2, variant),
            lambda: run_python_client(
                flavor,
                self.request.getfixturevalue(node_fixture(http2)),
                protocol=protocol,
                http2=http2,
                json=variant.json,
                gzip=variant.gzip,
            ),
        )

    def _get(
        self, key: tuple[Any, ...], run: Callable[[], dict[str, Observation]]
    ) -> dict[str, Observation]:
        if key not in self._done:
            try:
                self._done[key] = run()
            except Exception as e:
                self._done[key] = e
        found = self._done[key]
        if isinstance(found, BaseException):
            raise RuntimeError(f"the run {key} failed: {found!r}") from found
        return found


@pytest.fixture
def runs(
    generated: Generated, request: pytest.FixtureRequest, run_cache: RunCache
) -> Runs:
    return Runs(generated, request, run_cache)


# --- the Python side against the real generated code ------------------------------


def test_python_side_type_checks_with_generated_code(generated: Generated) -> None:
    """py_service and py_scenarios are ``mypy --strict`` clean against the real code.

    The repository-wide mypy run sees neither the generated modules nor their
    types (they exist only here), so this is where handler overrides and client
    calls are checked against the signatures the plugin actually generates.
    """
    config = generated.python / "mypy.ini"
    # protoc's own .pyi stubs are not --strict clean; only our code must be.
    config.write_text("[mypy]\n[mypy-interop.v1.interop_pb2]\nignore_errors = True\n")
    cmd = [sys.executable, "-m", "mypy", f"--config-file={config}", "--strict"]
    cmd += ["--follow-imports=silent", "--no-incremental", "--python-version=3.10"]
    # The targeted ignores for the absent modules are unused here, by design.
    cmd += ["--no-warn-unused-ignores"]
    cmd += [str(INTEROP / "py_service.py"), str(INTEROP / "py_scenarios.py")]
    path = os.pathsep.join([str(generated.python), str(INTEROP), str(ROOT)])
    done = subprocess.run(
        cmd,
        cwd=generated.python,
        env={**os.environ, "MYPYPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- the harness itself: node client -> node server -------------------------------


def test_node_client_knows_every_scenario(generated: Generated) -> None:
    cmd = [node_executable(), str(NODE_DIR / "client.mjs")]
    cmd += ["--descriptor", str(generated.descriptor), "--list-scenarios"]
    done = subprocess.run(
        cmd, cwd=NODE_DIR, capture_output=True, text=True, timeout=30, check=True
    )
    assert tuple(json.loads(done.stdout)) == SCENARIOS


@pytest.mark.parametrize("variant", SOME_VARIANTS, ids=lambda v: v.id)
@pytest.mark.parametrize(
    ("protocol", "http2"),
    [
        ("connect", False),
        ("connect", True),
        ("grpc", True),
        ("grpc-web", False),
        ("grpc-web", True),
    ],
    ids=["connect-h1", "connect-h2", "grpc-h2", "grpc-web-h1", "grpc-web-h2"],
)
def test_node_client_to_node_server(
    runs: Runs, protocol: str, http2: bool, variant: Variant
) -> None:
    """The reference pair passes every expectation: the harness is sound."""
    results = runs.node_client(node_fixture(http2), protocol, http2, variant)
    check_all(
        results, Call(protocol, http2, variant.gzip, client="node", server="node")
    )


# --- connect-node client -> our servers (Connect) ---------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
@pytest.mark.parametrize("server", PY_SERVERS, ids=lambda s: s.id)
def test_node_client_to_python_server(
    runs: Runs, server: PyServer, variant: Variant, scenario: str
) -> None:
    results = runs.node_client(server.fixture, "connect", server.http2, variant)
    call = Call("connect", server.http2, variant.gzip, client="node", server="python")
    check(observation(results, scenario), call)


# --- our clients -> connect-node server (Connect) ---------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
@pytest.mark.parametrize("flavor", ["async", "sync"])
def test_python_client_to_node_server(
    runs: Runs, flavor: str, http2: bool, variant: Variant, scenario: str
) -> None:
    results = runs.python_client(flavor, "connect", http2, variant)
    call = Call("connect", http2, variant.gzip, client="python", server="node")
    check(observation(results, scenario), call)


# --- gRPC and gRPC-Web ----------------------------------------------------------
#
# The same scenarios over gRPC (HTTP/2 only) and gRPC-Web, in both directions.

GRPC_PY_SERVERS = [
    ("grpc", PyServer("py_hypercorn", http2=True)),
    ("grpc-web", PyServer("py_hypercorn", http2=True)),
    ("grpc-web", PyServer("py_uvicorn", http2=False)),
    ("grpc-web", PyServer("py_gunicorn", http2=False)),
]
GRPC_NODE_SERVERS = [("grpc", True), ("grpc-web", False), ("grpc-web", True)]


@pytest.mark.parametrize("variant", SOME_VARIANTS, ids=lambda v: v.id)
@pytest.mark.parametrize(
    ("protocol", "server"),
    GRPC_PY_SERVERS,
    ids=[f"{p}-{s.id}" for p, s in GRPC_PY_SERVERS],
)
def test_grpc_node_client_to_python_server(
    runs: Runs, protocol: str, server: PyServer, variant: Variant
) -> None:
    results = runs.node_client(server.fixture, protocol, server.http2, variant)
    check_all(
        results,
        Call(protocol, server.http2, variant.gzip, client="node", server="python"),
    )


@pytest.mark.parametrize("variant", SOME_VARIANTS, ids=lambda v: v.id)
@pytest.mark.parametrize(
    ("protocol", "http2"),
    GRPC_NODE_SERVERS,
    ids=[f"{p}-{'h2' if h else 'h1'}" for p, h in GRPC_NODE_SERVERS],
)
@pytest.mark.parametrize("flavor", ["async", "sync"])
def test_grpc_python_client_to_node_server(
    runs: Runs, flavor: str, protocol: str, http2: bool, variant: Variant
) -> None:
    results = runs.python_client(flavor, protocol, http2, variant)
    check_all(
        results, Call(protocol, http2, variant.gzip, client="python", server="node")
    )
