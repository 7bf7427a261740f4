"""``prime_allocator``: large blocks freed by a server or client are kept for reuse."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from server_apps import Pinger, PingerSync

from protoc_gen_connect_python.runtime import (
    ASGIApp,
    AsyncClient,
    SyncClient,
    WSGIApp,
    allocator,
)

# Run in a fresh interpreter: the thresholds belong to the whole process, and
# this one's have long moved. Three 1.5 MB buffers alive at once, then freed,
# as a server's read buffers are.
_PROBE = """
import resource, sys
from protoc_gen_connect_python.runtime.allocator import prime_allocator
if sys.argv[1] == "on":
    prime_allocator()
def reads():
    blocks = [bytearray(1_500_000) for _ in range(3)]
    del blocks
for _ in range(5):
    reads()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    reads()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
"""


def _faults_per_round(prime: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, prime], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's"
)
def test_priming_keeps_freed_blocks_for_reuse() -> None:
    # Unprimed, the heap gives the blocks back to the kernel each round and
    # faults them in again (hundreds of pages); primed, it keeps them.
    assert _faults_per_round("off") > 100
    assert _faults_per_round("on") < 5


def test_apps_prime_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(allocator, "prime_allocator", lambda: calls.append("primed"))
    ASGIApp(Pinger())
    WSGIApp(PingerSync())
    assert calls == ["primed", "primed"]
    ASGIApp(Pinger(), prime_allocator=False)
    WSGIApp(PingerSync(), prime_allocator=False)
    assert calls == ["primed", "primed"]


def test_clients_prime_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(allocator, "prime_allocator", lambda: calls.append("primed"))
    url = "http://127.0.0.1:9"
    AsyncClient(url)
    SyncClient(url).close()
    assert calls == ["primed", "primed"]
    AsyncClient(url, prime_allocator=False)
    SyncClient(url, prime_allocator=False).close()
    assert calls == ["primed", "primed"]
