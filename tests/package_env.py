"""Installs the package the way a user does, for the install and README tests.

The sources are copied out of the checkout first, so nothing the tests build
lands in it and nothing of the checkout is on the path of what they run.
Installs resolve from the package index as a user's do, constrained to the
versions of the test's own environment: pip's cache then serves them, and an
install takes seconds, not minutes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A fresh venv with a handful of packages takes about 10 s from pip's cache.
INSTALL_TIMEOUT = 600.0


def copy_sources(dest: Path) -> Path:
    """The files a build needs, copied to ``dest`` (which is returned)."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("protoc_gen_connect_python", "templates"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


def user_env(tmp: Path) -> dict[str, str]:
    """The environment of a user's shell: no venv of ours, no checkout, pip pinned.

    ``PIP_CONSTRAINT`` pins every package to the version this test runs with,
    so that pip finds them in its cache.
    """
    constraints = tmp / "constraints.txt"
    if not constraints.exists():
        frozen = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        # Pins by version only: a package installed from a path or URL stays free.
        pins = [
            line for line in frozen.splitlines() if "==" in line and " @ " not in line
        ]
        constraints.write_text("\n".join(pins) + "\n")
    ours = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p != ours]
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")
    }
    env.update(
        PATH=os.pathsep.join([str(Path(sys.base_prefix) / "bin"), *path]),
        PIP_CONSTRAINT=str(constraints),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_PROGRESS_BAR="off",
    )
    return env


def run(
    *cmd: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = INSTALL_TIMEOUT,
) -> str:
    """Run ``cmd``; its stdout, or an assertion error with everything it said."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def new_venv(where: Path, env: dict[str, str], *packages: str | Path) -> Path:
    """A venv at ``where`` with ``packages`` installed (dependencies too); its python."""
    run(
        Path(sys.base_prefix) / "bin" / "python3",
        "-m",
        "venv",
        where,
        cwd=where.parent,
        env=env,
    )
    py = where / "bin" / "python"
    run(py, "-m", "pip", "install", "-q", *packages, cwd=where.parent, env=env)
    return py


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
