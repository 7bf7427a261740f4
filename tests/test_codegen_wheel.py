"""The built wheel works on its own: templates ship in it, the console script runs.

Builds the wheel from a copy of the sources, installs it (without dependencies)
into a fresh venv that borrows the dependencies of the running environment
through a ``.pth`` file, and generates code from a directory outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTO = """\
syntax = "proto3";
package demo.v1;
service DemoService {
  rpc Echo(Msg) returns (Msg);
}
message Msg { string text = 1; }
"""


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_wheel_generates_outside_checkout(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(
        ROOT / "protoc_gen_connect_python",
        src / "protoc_gen_connect_python",
        ignore=ignore,
    )
    shutil.copytree(ROOT / "templates", src / "templates", ignore=ignore)
    wheels = tmp_path / "wheels"
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "-q", "-w", wheels, src,
        cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("protoc_gen_connect_python-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    py = venv / "bin" / "python"
    run(
        sys.executable, "-m", "pip", "--python", py, "install", "--no-deps",
        "--no-index", "-q", wheel,
        cwd=tmp_path,
    )  # fmt: skip
    site = run(
        py,
        "-c",
        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        cwd=tmp_path,
    )
    # Dependencies (protobuf, jinja2, black) come from the test's environment,
    # after the venv's own site-packages, so the wheel's package wins.
    Path(site.strip(), "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "outside"
    (work / "demo" / "v1").mkdir(parents=True)
    (work / "demo" / "v1" / "demo.proto").write_text(PROTO)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(
        py,
        "-c",
        "import protoc_gen_connect_python as p; print(p.__file__)",
        cwd=work,
        env=env,
    )
    assert where.startswith(str(venv)), where
    plugin = venv / "bin" / "protoc-gen-connect-python"
    assert plugin.exists()
    run(
        sys.executable, "-m", "grpc_tools.protoc", "-I.",
        f"--plugin=protoc-gen-connect-python={plugin}",
        "--connect-python_out=.", "--python_out=.", "demo/v1/demo.proto",
        cwd=work, env=env,
    )  # fmt: skip
    text = (work / "demo" / "v1" / "demo_connect.py").read_text()
    assert "class DemoServiceClient(_rt.AsyncClient):" in text
    run(
        py,
        "-c",
        "import demo.v1.demo_connect as m; print(m.DEMO_SERVICE)",
        cwd=work,
        env=env,
    )
