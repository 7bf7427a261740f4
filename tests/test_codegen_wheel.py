"""The built package works on its own, installed as a user installs it.

Builds the wheel and the sdist from a copy of the sources, installs each (with
its dependencies, as ``pip install`` resolves them) into a fresh venv with
grpcio-tools and buf, and in a folder outside the checkout: generates code with
protoc and with buf through the installed programs, imports it, serves it on a
real server (the standard library's WSGI server) and calls it with both
generated clients.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from package_env import ROOT, copy_sources, new_venv, run, user_env

PROTO = """\
syntax = "proto3";
package demo.v1;
import "google/protobuf/timestamp.proto";
service DemoService {
  rpc Echo(Msg) returns (Msg);
  rpc Count(Msg) returns (stream Msg);
}
message Msg { string text = 1; google.protobuf.Timestamp at = 2; }
"""
BUF_YAML = "version: v2\nmodules:\n  - path: proto\n"
# Run by the venv's python in the generated project: serve, then call.
SERVE_AND_CALL = """\
import asyncio
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from demo.v1 import demo_connect, demo_pb2

import protoc_gen_connect_python
from protoc_gen_connect_python.runtime import WSGIApp


class Demo(demo_connect.DemoServiceSync):
    def echo(self, request, ctx):
        return demo_pb2.Msg(text=request.text[::-1])

    def count(self, request, ctx):
        for i in range(3):
            yield demo_pb2.Msg(text=f"{request.text}{i}")


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


server = make_server("127.0.0.1", 0, WSGIApp(Demo()), handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}"
try:
    with demo_connect.DemoServiceClientSync(url, timeout=30) as client:
        print("sync", client.echo(demo_pb2.Msg(text="abc")).text)
        print("sync", [m.text for m in client.count(demo_pb2.Msg(text="n"))])

    async def main():
        async with demo_connect.DemoServiceClient(url, timeout=30) as client:
            print("async", (await client.echo(demo_pb2.Msg(text="xyz"))).text)

    asyncio.run(main())
finally:
    server.shutdown()
print("package", protoc_gen_connect_python.__file__)
"""


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel and the sdist, built by setuptools' PEP 517 hooks."""
    tmp = tmp_path_factory.mktemp("dists")
    src = copy_sources(tmp / "src")
    out = tmp / "dist"
    out.mkdir()
    build = (
        # The hooks rewrite sys.argv: read the folder first.
        "import sys; from setuptools import build_meta as b; out = sys.argv[1]; "
        "b.build_wheel(out); b.build_sdist(out)"
    )
    run(sys.executable, "-c", build, out, cwd=src)
    (wheel,) = out.glob("protoc_gen_connect_python-*.whl")
    (sdist,) = out.glob("protoc_gen_connect_python-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_dists_hold_the_templates_and_declare_the_generator_deps(
    dists: dict[str, Path],
) -> None:
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
        (meta,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(meta).decode()
    assert "protoc_gen_connect_python/templates/module.py.j2" in names
    assert "protoc_gen_connect_python/plugin/pb2.py" in names
    requires = [
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    # A plain install must give a working generator.
    assert any(r.startswith("jinja2") for r in requires), requires
    assert any(r.startswith("black") for r in requires), requires
    for extra in ("brotli", "zstd", "tools"):
        assert f"Provides-Extra: {extra}" in metadata
    with tarfile.open(dists["sdist"]) as sdist:
        members = sdist.getnames()
    assert any(m.endswith("templates/module.py.j2") for m in members), members


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installed_package_generates_serves_and_calls(
    kind: str, dists: dict[str, Path], tmp_path: Path
) -> None:
    env = user_env(tmp_path)
    venv = tmp_path / "venv"
    py = new_venv(venv, env, dists[kind], "grpcio-tools", "buf-bin")
    bin_dir = venv / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

    work = tmp_path / "outside"
    (work / "proto" / "demo" / "v1").mkdir(parents=True)
    (work / "proto" / "demo" / "v1" / "demo.proto").write_text(PROTO)
    (work / "gen").mkdir()
    run(
        py, "-m", "grpc_tools.protoc", "-I", "proto",
        "--python_out=gen", "--pyi_out=gen", "--connect-python_out=gen",
        "demo/v1/demo.proto",
        cwd=work, env=env,
    )  # fmt: skip
    by_protoc = {
        p.name: p.read_text() for p in sorted((work / "gen" / "demo" / "v1").iterdir())
    }
    assert set(by_protoc) == {"demo_pb2.py", "demo_pb2.pyi", "demo_connect.py"}
    assert "class DemoServiceClient(_rt.AsyncClient):" in by_protoc["demo_connect.py"]

    # buf, with the buf.gen.yaml the README gives a user: no protoc program here.
    (work / "buf.yaml").write_text(BUF_YAML)
    shutil.copy(ROOT / "examples" / "project" / "buf.gen.yaml", work / "buf.gen.yaml")
    env["BUF_CACHE_DIR"] = str(tmp_path / "buf-cache")
    assert shutil.which("protoc", path=env["PATH"]) is None
    run(bin_dir / "buf", "generate", cwd=work, env=env)
    by_buf = {
        p.name: p.read_text() for p in sorted((work / "gen" / "demo" / "v1").iterdir())
    }
    assert by_buf == by_protoc

    (work / "serve_and_call.py").write_text(SERVE_AND_CALL)
    env["PYTHONPATH"] = "gen"
    said = run(py, "serve_and_call.py", cwd=work, env=env, timeout=120)
    lines = said.splitlines()
    assert lines[:3] == ["sync cba", "sync ['n0', 'n1', 'n2']", "async zyx"], said
    assert lines[3].startswith(f"package {venv}"), said

    if kind == "wheel":
        type_check(py, work, env)


TYPED = """\
from demo.v1 import demo_connect, demo_pb2


async def call(client: demo_connect.DemoServiceClient) -> str:
    reply = await client.echo(demo_pb2.Msg(text="a"))
    return reply.text
"""


def type_check(py: Path, work: Path, env: dict[str, str]) -> None:
    """The README's mypy setup passes on a proto with a message-typed field."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```toml\n# pyproject.toml\n") + len("```toml\n")
    config = readme[start : readme.index("```", start)]
    config = config.replace('["greet.*"]', '["demo.*"]')
    config = config.replace('["server.py", "client.py"]', '["typed.py"]')
    (work / "pyproject.toml").write_text(config)
    (work / "typed.py").write_text(TYPED)
    run(py, "-m", "pip", "install", "-q", "mypy", "types-protobuf", cwd=work, env=env)
    said = run(py, "-m", "mypy", cwd=work, env=env)
    assert "Success: no issues found in 1 source file" in said, said
