"""README.md's "Install in your project" and "Use it" work as written.

The code blocks of those sections are taken out of the README: a block whose
first line is a comment naming a file (``# server.py``) is written to that
file, ``sh`` blocks run in order in one bash session, and the ``text`` block is
the output the commands must print. They run in a new folder beside a copy of
the sources, as ``../protoc-gen-connect-python``, with no venv of ours on
``PATH``. The one change: port 8080 becomes a free port, and a command sent to
the background (``... &``) is waited for until its port answers.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from package_env import ROOT, copy_sources, free_port, user_env

README = ROOT / "README.md"
FIRST = "## Install in your project"
LAST = "### The name on PyPI"
# The path a block names on its first line: `# server.py`, `// proto/a.proto`.
FILE_COMMENT = re.compile(r"^(?:#|//) ([\w./-]+\.\w+)$")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
# pip, protoc, buf, mypy and the calls; pip's cache serves every package.
SCRIPT_TIMEOUT = 600.0


@dataclass
class Snippets:
    files: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)


def snippets(text: str) -> Snippets:
    """The files, shell commands and expected output of the two sections."""
    part = text[text.index(FIRST) : text.index(LAST)]
    found = Snippets()
    for lang, body in BLOCK.findall(part):
        first = body.partition("\n")[0]
        named = FILE_COMMENT.match(first)
        if lang == "sh":
            found.commands.extend(line for line in body.splitlines() if line.strip())
        elif lang == "text":
            found.output.extend(body.splitlines())
        elif named:
            found.files[named.group(1)] = body
        else:
            pytest.fail(f"a {lang or 'plain'} block names no file: {first!r}")
    return found


def test_readme_sections_hold_what_the_test_runs() -> None:
    found = snippets(README.read_text())
    assert set(found.files) == {
        "proto/greet/v1/greet.proto",
        "buf.yaml",
        "buf.gen.yaml",
        "server.py",
        "client.py",
        "pyproject.toml",
    }
    assert any(
        c.startswith("pip install ../protoc-gen-connect-python") for c in found.commands
    )
    assert any("grpc_tools.protoc" in c for c in found.commands)
    assert "buf generate" in found.commands
    assert "mypy" in found.commands
    assert found.output[0] == "Hello, Ada!"


def test_shipped_buf_gen_yaml_is_the_readmes() -> None:
    shipped = (ROOT / "examples" / "project" / "buf.gen.yaml").read_text()
    body = "".join(
        line for line in shipped.splitlines(keepends=True) if not line.startswith("# ")
    )
    readme = snippets(README.read_text()).files["buf.gen.yaml"]
    assert body == readme.partition("\n")[2]


def script(commands: list[str], port: int, pids: Path) -> str:
    """The commands as one bash script; background servers are waited for."""
    # Servers end with the script, whatever way it ends.
    lines = [
        "set -euo pipefail",
        f"trap 'kill $(cat {shlex.quote(str(pids))} 2>/dev/null) 2>/dev/null || true' EXIT",
    ]
    for command in commands:
        command = command.replace("8080", str(port))
        if command.endswith("&"):
            lines += [
                command,
                f"echo $! >> {shlex.quote(str(pids))}",
                # At most 20 s for the server to listen; the next call fails then.
                "for _ in $(seq 400); do"
                f" (: > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.05;"
                " done",
            ]
        else:
            # A newline after each command, for output that ends without one (curl).
            lines += [command, "echo"]
    return "\n".join(lines) + "\n"


def stop(pids: Path) -> None:
    if not pids.exists():
        return
    for pid in pids.read_text().split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGTERM)


@pytest.mark.slow
def test_readme_install_and_use_it_run_as_written(tmp_path: Path) -> None:
    found = snippets(README.read_text())
    copy_sources(tmp_path / "protoc-gen-connect-python")
    project = tmp_path / "project"
    project.mkdir()
    port = free_port()
    for name, body in found.files.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body.replace("8080", str(port)))
    pids = tmp_path / "servers.pid"
    (project / "run.sh").write_text(script(found.commands, port, pids))
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    # Files, not pipes: a server left behind cannot hold the test up.
    with out.open("w") as stdout, err.open("w") as stderr:
        try:
            rc = subprocess.run(
                ["bash", "run.sh"],
                cwd=project,
                env=user_env(tmp_path),
                stdout=stdout,
                stderr=stderr,
                timeout=SCRIPT_TIMEOUT,
                check=False,
            ).returncode
        finally:
            stop(pids)
    said = out.read_text() + err.read_text()
    assert rc == 0, said
    assert (project / "gen" / "greet" / "v1" / "greet_connect.py").exists()
    # The expected output, in order and together, among pip's and mypy's lines
    # (uvicorn's access log, on the same stdout, left out).
    lines = [
        line
        for line in out.read_text().splitlines()
        if line.strip() and not line.startswith("INFO:")
    ]
    n = len(found.output)
    assert any(lines[i : i + n] == found.output for i in range(len(lines))), said
    assert "Success: no issues found in 2 source files" in said, said
