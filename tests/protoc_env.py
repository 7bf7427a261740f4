"""Runs grpcio-tools' protoc for the tests.

``run_protoc`` returns the finished process, for tests of how protoc fails;
``protoc`` fails the test with protoc's errors when it does not succeed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_protoc(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m grpc_tools.protoc`` with ``args``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def protoc(*args: str) -> None:
    """:func:`run_protoc`, failing the test when protoc fails."""
    done = run_protoc(*args)
    if done.returncode != 0:
        pytest.fail(f"protoc {' '.join(args)} failed:\n{done.stderr}", pytrace=False)
