"""Shared by the interop tests: generated ``interop.v1`` code, our service, our clients.

Importing this module puts ``tests/interop`` on ``sys.path``, so the harness
there (``expectations``, ``py_service``, ``py_scenarios``, ``grpcio_service``)
can be imported by name. ``generated_code`` runs protoc for a test module and
makes the code importable; ``serve_py_service`` runs ``py_service``'s ASGI or
WSGI app on one of the servers of ``servers.py``; ``run_python_client`` runs
every scenario with our async or sync client and ``check_all`` checks a run.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from servers import WSGI_SERVERS, Server, run_server

INTEROP = Path(__file__).resolve().parent / "interop"
if str(INTEROP) not in sys.path:
    sys.path.insert(0, str(INTEROP))

from codegen import Generated, forget_modules, generate  # noqa: E402
from expectations import SCENARIOS, Call, Observation, check  # noqa: E402

__all__ = [
    "INTEROP",
    "SCENARIOS",
    "Call",
    "Generated",
    "Observation",
    "check",
    "check_all",
    "generated_code",
    "generated_module",
    "observation",
    "run_python_client",
    "serve_py_service",
]


@contextmanager
def generated_code(
    tmp_path_factory: pytest.TempPathFactory, *, grpc_stubs: bool = False
) -> Iterator[Generated]:
    """Generate the code into a new temporary directory, importable until the end.

    Then the generated and harness modules are dropped from ``sys.modules``, so
    the next test module imports its own. A failing protoc fails the test.
    """
    try:
        gen = generate(tmp_path_factory.mktemp("interop-gen"), grpc_stubs=grpc_stubs)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    sys.path.insert(0, str(gen.python))
    try:
        yield gen
    finally:
        sys.path.remove(str(gen.python))
        forget_modules()


def generated_module(name: str) -> Any:
    """A module of the generated ``interop.v1`` package (``interop_pb2``, ...)."""
    return importlib.import_module(f"interop.v1.{name}")


@contextmanager
def serve_py_service(gen: Generated, server: str) -> Iterator[Server]:
    """``py_service``'s WSGI app on a WSGI server, its ASGI app on any other."""
    app = "py_service:" + ("wsgi_app" if server in WSGI_SERVERS else "asgi_app")
    with run_server(server, app, pythonpath=[gen.python, INTEROP]) as srv:
        yield srv


def run_python_client(
    flavor: str,
    base_url: str,
    *,
    protocol: str,
    http2: bool,
    json: bool = False,
    gzip: bool = False,
) -> dict[str, Observation]:
    """Every scenario with our ``"async"`` or ``"sync"`` client, by scenario name."""
    import py_scenarios  # needs the generated code on sys.path

    options = py_scenarios.ClientOptions(
        base_url=base_url, protocol=protocol, http2=http2, json=json, gzip=gzip
    )
    if flavor == "async":
        observed = asyncio.run(py_scenarios.AsyncScenarios(options).run())
    else:
        observed = py_scenarios.SyncScenarios(options).run()
    return {obs["scenario"]: obs for obs in observed}


def observation(results: dict[str, Observation], scenario: str) -> Observation:
    """The observation of ``scenario``; fails the test if the run has none."""
    assert scenario in results, f"{scenario} did not report; got {sorted(results)}"
    return results[scenario]


def check_all(results: dict[str, Observation], call: Call) -> None:
    """Check every scenario of a run; one AssertionError listing all failures."""
    failures = []
    for scenario in SCENARIOS:
        try:
            check(observation(results, scenario), call)
        except (AssertionError, KeyError) as e:
            failures.append(f"--- {scenario}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)
