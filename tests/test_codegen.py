"""The code generator end to end: protoc and buf, goldens, mypy, ruff, imports.

Regenerate the goldens under testdata/golden with::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_codegen.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import black
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from protoc_env import protoc, run_protoc

from protoc_gen_connect_python.plugin import main as plugin_main
from protoc_gen_connect_python.plugin.model import (
    TypeIndex,
    build_file,
    method_python_name,
    runtime_attributes,
)
from protoc_gen_connect_python.plugin.options import Options
from protoc_gen_connect_python.plugin.render import Renderer

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "testdata" / "protos"
GOLDEN = ROOT / "testdata" / "golden"
BIN = Path(sys.executable).parent
PROTO_FILES = sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))

RUFF_CONFIG = """\
line-length = 88
target-version = "py310"
[lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM", "RUF"]
ignore = ["E501"]  # long comments make long docstring lines
[lint.isort]
known-third-party = ["google", "protoc_gen_connect_python"]
known-first-party = [
    "acme", "comments", "editions", "greet", "keywords", "misc", "other", "top_level_pb2"
]
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def write_plugin(directory: Path) -> Path:
    """An executable ``protoc-gen-connect-python`` that runs this checkout's plugin."""
    script = directory / "protoc-gen-connect-python"
    script.write_text(
        f'#!/bin/sh\nPYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" '
        f'exec "{sys.executable}" -m protoc_gen_connect_python "$@"\n'
    )
    script.chmod(0o755)
    return script


def connect_files(root: Path) -> dict[str, bytes]:
    """Every generated ``*_connect.py`` under ``root``, by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*_connect.py"))
    }


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("codegen")


@pytest.fixture(scope="module")
def plugin(tmp: Path) -> Path:
    return write_plugin(tmp)


@pytest.fixture(scope="module")
def generated(tmp: Path, plugin: Path) -> Path:
    """Messages (with stubs) and Connect modules of all testdata, through protoc."""
    out = tmp / "protoc"
    out.mkdir()
    protoc(
        f"-I{PROTOS}",
        f"--plugin=protoc-gen-connect-python={plugin}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--connect-python_out={out}",
        *PROTO_FILES,
    )
    return out


@pytest.fixture(scope="module")
def descriptors(tmp: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    """Descriptors of all testdata files with imports and comments, as protoc sees them."""
    out = tmp / "descriptors.pb"
    protoc(
        f"-I{PROTOS}",
        f"--descriptor_set_out={out}",
        "--include_imports",
        "--include_source_info",
        *PROTO_FILES,
    )
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return list(fds.file)


def request(
    descriptors: list[descriptor_pb2.FileDescriptorProto],
    parameter: str = "",
    files: list[str] = PROTO_FILES,
) -> plugin_pb2.CodeGeneratorRequest:
    return plugin_pb2.CodeGeneratorRequest(
        file_to_generate=files, parameter=parameter, proto_file=descriptors
    )


def test_goldens(generated: Path) -> None:
    """protoc's output equals the checked-in goldens byte for byte."""
    got = connect_files(generated)
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for name, content in got.items():
            (GOLDEN / name).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / name).write_bytes(content)
    assert got == connect_files(GOLDEN)


def test_output_layout(generated: Path) -> None:
    """One module per file with services, next to protoc's ``_pb2`` module."""
    assert sorted(connect_files(generated)) == [
        "acme/store/v1/store_connect.py",
        "comments/v1/comments_connect.py",
        "editions/v1/editions_connect.py",
        "greet/v1/greet_connect.py",
        "keywords/v1/keywords_connect.py",
        "misc/with_dash_connect.py",
        "top_level_connect.py",
    ]
    for name in connect_files(generated):
        assert (generated / name.replace("_connect.py", "_pb2.py")).exists()


def test_buf_matches_protoc(tmp: Path, generated: Path) -> None:
    """``buf generate`` with a local plugin gives the same bytes as protoc."""
    work = tmp / "buf"
    shutil.copytree(PROTOS, work / "protos")
    (work / "buf.yaml").write_text("version: v2\nmodules:\n  - path: protos\n")
    (work / "buf.gen.yaml").write_text(
        textwrap.dedent(f"""\
            version: v2
            plugins:
              - local: ["{sys.executable}", "-m", "protoc_gen_connect_python"]
                out: gen
            """)
    )
    env = _env() | {"BUF_CACHE_DIR": str(tmp / "buf-cache")}
    proc = subprocess.run(
        [str(BIN / "buf"), "generate"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert connect_files(work / "gen") == connect_files(generated)


def test_black_stable_and_fast_path(
    descriptors: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    """Output is black's own, deterministic, and needed no black pass for testdata."""
    renderer = Renderer()
    types = TypeIndex(descriptors)
    by_name = {f.name: f for f in descriptors}
    for name in PROTO_FILES:
        if not by_name[name].service:
            continue
        file = build_file(by_name[name], types, Options())
        out = renderer.render(file)
        assert black.format_str(out, mode=black.Mode()) == out, name
        assert renderer.render(build_file(by_name[name], types, Options())) == out
        assert out.startswith(
            '"""Generated by protoc-gen-connect-python. DO NOT EDIT.\n\n'
            f'Source: {name}\n"""\n'
        )
    assert renderer.black_runs == 0


@pytest.mark.parametrize("python_version", ["3.10", "3.13"])
def test_mypy_strict(generated: Path, python_version: str) -> None:
    """The generated modules type-check with ``mypy --strict`` against the stubs,
    for the oldest and the newest Python the project supports.
    """
    modules = sorted(
        p.relative_to(generated).as_posix() for p in generated.rglob("*_connect.py")
    )
    # protoc's .pyi stubs are not --strict clean themselves; only ours must be.
    config = generated / "mypy.ini"
    config.write_text(
        "[mypy]\n"
        + "".join(
            f"[mypy-{p.relative_to(generated).with_suffix('').as_posix().replace('/', '.')}]\n"
            "ignore_errors = True\n"
            for p in generated.rglob("*_pb2.pyi")
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            f"--config-file={config}",
            "--strict",
            "--explicit-package-bases",
            "--follow-imports=silent",
            "--no-incremental",
            f"--python-version={python_version}",
            *modules,
        ],
        cwd=generated,
        env=_env() | {"MYPYPATH": f"{generated}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_ruff(generated: Path) -> None:
    """The generated modules pass ruff (with isort) and ruff's formatter agrees."""
    config = generated / "ruff.toml"
    config.write_text(RUFF_CONFIG)
    files = [str(p) for p in generated.rglob("*_connect.py")]
    ruff = [sys.executable, "-m", "ruff"]
    for args in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        proc = subprocess.run(
            [*ruff, *args, "--config", str(config), *files],
            cwd=generated,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


CHECK_IMPORTS = """
import asyncio, sys, warnings
from pathlib import Path
from protoc_gen_connect_python import runtime as rt

root = Path(sys.argv[1])
names = [str(p.relative_to(root).with_suffix("")).replace("/", ".")
         for p in sorted(root.rglob("*_connect.py"))]
checked = 0
for name in names:
    mod = __import__(name, fromlist=["x"])
    for cls in vars(mod).values():
        if not isinstance(cls, type) or cls.__module__ != mod.__name__:
            continue
        if issubclass(cls, (rt.AsyncService, rt.SyncService)):
            spec = cls.service_spec
            for m in spec.methods:
                assert getattr(cls, m.python_name).__qualname__.startswith(cls.__name__)
                try:
                    result = getattr(cls(), m.python_name)(None, None)
                    if asyncio.iscoroutine(result):
                        asyncio.run(result)
                except rt.ConnectError as e:
                    assert e.code is rt.Code.UNIMPLEMENTED, e
                    checked += 1
                else:
                    raise AssertionError(m)

# Deprecation warnings: constructing a deprecated service's client, calling a
# deprecated method.
from comments.v1 import comments_connect as c, comments_pb2 as pb

class Fake(c.MostlyFineClientSync):
    def call_unary(self, method, request, *, headers=None, timeout=None):
        return pb.Msg()

with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    client = Fake("http://localhost")
    assert not w, w
    client.old(pb.Msg())
    assert [str(x.message) for x in w] == ["comments.v1.MostlyFine.Old is deprecated"]
    assert w[0].filename == "<string>", w[0].filename  # stacklevel points at the caller
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    c.CommentedServiceClientSync("http://localhost")
    assert [x.category for x in w] == [DeprecationWarning], w
spec = c.COMMENTED_SERVICE_TRIPLE
assert spec.idempotency is rt.Idempotency.IDEMPOTENT
assert spec.procedure == "/comments.v1.CommentedService/Triple"
print(checked)
"""


def test_generated_modules_import_and_work(generated: Path) -> None:
    """Every module imports; handler defaults answer UNIMPLEMENTED; warnings fire."""
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS, str(generated)],
        env=_env() | {"PYTHONPATH": f"{generated}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 40


def test_naming(generated: Path) -> None:
    """Keywords, runtime attributes and duplicates get a trailing underscore."""
    text = (generated / "keywords/v1/keywords_connect.py").read_text()
    for name in (
        "import_",
        "none",
        "close_",
        "class_",
        "match_",
        "type_",
        "float_",
        "aclose_",
        "call_unary_",
        "service_spec_",
        "base_url_",
        "list",
        "say_hello",
        "say_hello_",
        "http_get",
        "keywords_pb2_",
        "__",
    ):
        assert f'python_name="{name}"' in text, name
    assert "from collections.abc import Iterator as _Iterator" in text
    assert "class Iterator(_rt.AsyncService):" in text
    assert "class def_(_rt.AsyncService):" in text
    store = (generated / "acme/store/v1/store_connect.py").read_text()
    assert (
        "from acme.common.v1 import money_pb2 as acme_dot_common_dot_v1_dot_money__pb2"
        in store
    )
    assert "output=acme_dot_common_dot_v1_dot_money__pb2.Money.Rounding," in store
    top = (generated / "top_level_connect.py").read_text()
    assert "\nimport top_level_pb2\n" in top


@pytest.mark.parametrize(
    ("rpc", "python_name"),
    [
        ("__init__", "__init___"),
        ("__getstate__", "__getstate___"),  # object's since 3.11
        ("__static_attributes__", "__static_attributes___"),  # 3.13
        ("__Hidden", "_hidden"),
        ("_IsProtocol", "_is_protocol"),  # typing.Generic's up to 3.11
    ],
)
def test_names_do_not_depend_on_python_version(rpc: str, python_name: str) -> None:
    """Names Python itself defines, which differ between versions, are never used."""
    assert method_python_name(rpc) == python_name
    assert python_name not in runtime_attributes()
    assert not any(n.startswith("__") for n in runtime_attributes())


def test_response_features(
    descriptors: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    resp = plugin_main.generate(request(descriptors))
    features = plugin_pb2.CodeGeneratorResponse
    assert resp.supported_features == (
        features.FEATURE_PROTO3_OPTIONAL | features.FEATURE_SUPPORTS_EDITIONS
    )
    assert resp.minimum_edition == descriptor_pb2.EDITION_PROTO2
    assert resp.maximum_edition >= descriptor_pb2.EDITION_2023
    assert not resp.error


@pytest.mark.parametrize(
    "parameter",
    [
        "bogus=1",
        "mode",
        "mode=",
        "=sync",
        "mode=fast",
        "sync=maybe",
        "templates=/nonexistent",
    ],
)
def test_bad_parameters(
    descriptors: list[descriptor_pb2.FileDescriptorProto], parameter: str
) -> None:
    """A bad parameter is a one-line error in the response, never a traceback."""
    resp = plugin_main.generate(request(descriptors, parameter))
    assert resp.error.startswith("protoc-gen-connect-python: ")
    assert "\n" not in resp.error
    assert not resp.file


def test_bad_parameter_through_protoc(tmp: Path, plugin: Path) -> None:
    proc = run_protoc(
        f"-I{PROTOS}",
        f"--plugin=protoc-gen-connect-python={plugin}",
        f"--connect-python_out=bogus=1:{tmp}",
        "greet/v1/greet.proto",
    )
    assert proc.returncode != 0
    assert "unknown parameter 'bogus'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("data", [b"", b"\xff\xfe garbage \x00\x01", b"hello world"])
def test_garbage_stdin(data: bytes) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "protoc_gen_connect_python"],
        input=data,
        env=_env(),
        capture_output=True,
        check=False,
    )
    assert proc.returncode != 0
    assert len(proc.stderr.decode().strip().splitlines()) == 1
    assert not proc.stdout


ASYNC_ONLY = [
    "AsyncService",
    "AsyncClient",
    "AsyncIterator",
    "AsyncIterable",
    "AsyncStream",
]
SYNC_ONLY = ["SyncService", "SyncClient", "SyncStream"]


@pytest.mark.parametrize(
    ("parameter", "absent"),
    [
        ("mode=sync", ASYNC_ONLY),
        ("async=false", ASYNC_ONLY),
        ("mode=async", SYNC_ONLY),
        ("sync=false", SYNC_ONLY),
        ("mode=both", []),
    ],
)
def test_modes(
    tmp: Path,
    descriptors: list[descriptor_pb2.FileDescriptorProto],
    parameter: str,
    absent: list[str],
) -> None:
    """Each mode keeps only its half, and stays lint-clean (no unused imports)."""
    resp = plugin_main.generate(request(descriptors, parameter))
    assert not resp.error
    out = tmp / f"mode-{parameter.replace('=', '-')}"
    for f in resp.file:
        text = f.content
        assert black.format_str(text, mode=black.Mode()) == text
        words = set(re.findall(r"\w+", text))
        assert not words.intersection(absent), f.name
        if absent == SYNC_ONLY:
            assert not re.search(r"(?<!Async)Iterator\[", text), f.name
        (out / f.name).parent.mkdir(parents=True, exist_ok=True)
        (out / f.name).write_text(text)
    (out / "ruff.toml").write_text(RUFF_CONFIG)
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_template_override(
    tmp: Path, descriptors: list[descriptor_pb2.FileDescriptorProto]
) -> None:
    """``templates=DIR`` replaces built-in templates by name; output is still black's."""
    templates = tmp / "templates"
    templates.mkdir()
    (templates / "client_sync.py.j2").write_text(
        "class {{ service.client_sync }}( {{ rt }}.SyncClient ):\n"
        "    '''Custom sync client.'''\n"
        "    custom_marker = True\n"
    )
    resp = plugin_main.generate(request(descriptors, f"templates={templates}"))
    assert not resp.error, resp.error
    greet = next(f.content for f in resp.file if f.name == "greet/v1/greet_connect.py")
    assert (
        'class GreetServiceClientSync(_rt.SyncClient):\n    """Custom sync client."""\n\n'
        "    custom_marker = True\n"
    ) in greet
    assert "class GreetServiceClient(_rt.AsyncClient):" in greet
    assert black.format_str(greet, mode=black.Mode()) == greet


def test_template_error_is_reported(
    tmp: Path, descriptors: list[descriptor_pb2.FileDescriptorProto]
) -> None:
    """A template using an undefined name fails with one line, not a traceback."""
    templates = tmp / "bad-templates"
    templates.mkdir()
    (templates / "client.py.j2").write_text("{{ no_such_thing }}\n")
    resp = plugin_main.generate(request(descriptors, f"templates={templates}"))
    assert "no_such_thing" in resp.error
    assert "\n" not in resp.error
    assert not resp.file


def test_file_without_services(
    descriptors: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    resp = plugin_main.generate(
        request(descriptors, files=["acme/common/v1/money.proto"])
    )
    assert not resp.error
    assert not resp.file
