"""Installs and generates everything the benchmarks need, idempotently.

- Debian packages: h2load (nghttp2-client), wrk, curl.
- The project's .venv (via scripts/setup.sh when it is missing) plus py-spy.
- bench/.venv-official: the official ``connectrpc`` package, its plugin
  ``protoc-gen-connectrpc``, and the same versions of protobuf, grpcio-tools and
  the servers as the project's .venv.
- Generated code for both, from bench/proto, into bench/gen/{ours,official}.
- Request bodies for the load generator, into bench/gen/bodies.
"""

from __future__ import annotations

import base64
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

from common import (
    BENCH,
    GEN,
    GEN_OFFICIAL,
    GEN_OURS,
    LARGE,
    OFFICIAL_PLUGIN_SPEC,
    OFFICIAL_SPEC,
    OFFICIAL_VENV,
    OURS_VENV,
    PROTO_DIR,
    PROTO_FILE,
    ROOT,
    SMALL,
    STREAM_COUNT,
    UPLOAD_COUNT,
    envelope,
    eprint,
    venv_python,
)

SHARED = (
    "protobuf",
    "grpcio",
    "grpcio-tools",
    "uvicorn",
    "uvloop",
    "httptools",
    "granian",
    "hypercorn",
    "pyvoy",
    "gunicorn",
)
BENCH_EXTRAS = ("py-spy", "httptools")
"""Bench-only extras of the project's venv (httptools: the uvicorn-httptools kind)."""
TOOLS = {
    "h2load": "nghttp2-client",
    "wrk": "wrk",
    "curl": "curl",
    "valgrind": "valgrind",
}


def run(argv: list[str | Path], **kw: object) -> None:
    subprocess.run([str(a) for a in argv], check=True, **kw)  # type: ignore[call-overload]


def apt() -> None:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if not missing:
        return
    eprint(f"[setup] apt-get install {' '.join(missing)}")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
    run(
        ["apt-get", "install", "-y", "-qq", *missing],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def ours_venv() -> None:
    if not venv_python(OURS_VENV).exists():
        eprint("[setup] creating the project's .venv (scripts/setup.sh)")
        run(["bash", ROOT / "scripts" / "setup.sh"])
    missing = [p for p in BENCH_EXTRAS if not _installed(p)]
    if missing:
        run([venv_python(OURS_VENV), "-m", "pip", "install", "-q", *missing])


def _installed(dist: str) -> bool:
    # run.py runs in the project's venv, so its metadata is the venv's.
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def shared_pins() -> list[str]:
    """Versions of the packages both venvs share, as in the project's .venv."""
    pins = []
    for name in SHARED:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def official_venv() -> None:
    want = " ".join([OFFICIAL_SPEC, OFFICIAL_PLUGIN_SPEC, *shared_pins()])
    stamp = OFFICIAL_VENV / ".bench-stamp"
    if stamp.exists() and stamp.read_text() == want:
        return
    if not venv_python(OFFICIAL_VENV).exists():
        eprint("[setup] creating bench/.venv-official")
        run([sys.executable, "-m", "venv", OFFICIAL_VENV])
    eprint(f"[setup] installing into bench/.venv-official: {want}")
    run([venv_python(OFFICIAL_VENV), "-m", "pip", "install", "-q", *want.split()])
    stamp.write_text(want)


def generate() -> None:
    for out in (GEN_OURS, GEN_OFFICIAL):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
    std: list[str | Path] = [
        "-I",
        PROTO_DIR,
        f"--python_out={GEN_OURS}",
        f"--pyi_out={GEN_OURS}",
    ]
    run(
        [
            venv_python(OURS_VENV),
            "-m",
            "grpc_tools.protoc",
            *std,
            f"--plugin=protoc-gen-connect-python={OURS_VENV / 'bin' / 'protoc-gen-connect-python'}",
            f"--connect-python_out={GEN_OURS}",
            PROTO_FILE,
        ],
        cwd=BENCH,
    )
    run(
        [
            venv_python(OFFICIAL_VENV),
            "-m",
            "grpc_tools.protoc",
            "-I",
            PROTO_DIR,
            f"--python_out={GEN_OFFICIAL}",
            f"--pyi_out={GEN_OFFICIAL}",
            f"--plugin=protoc-gen-connectrpc={OFFICIAL_VENV / 'bin' / 'protoc-gen-connectrpc'}",
            f"--connectrpc_out={GEN_OFFICIAL}",
            "--connectrpc_opt=protobuf=google",
            PROTO_FILE,
        ],
        cwd=BENCH,
    )


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def echo_request(size: int) -> bytes:
    """EchoRequest{payload: {data: 'x' * size}} in the proto wire format."""
    data = b"x" * size
    inner = b"\x0a" + _pb_varint(len(data)) + data
    return b"\x0a" + _pb_varint(len(inner)) + inner


def stream_request(count: int, size: int) -> bytes:
    """StreamRequest{count, size} in the proto wire format."""
    return b"\x08" + _pb_varint(count) + b"\x10" + _pb_varint(size)


def bodies() -> dict[str, Path]:
    """Request bodies for the load generator, by name."""
    out = GEN / "bodies"
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "proto16": echo_request(SMALL),
        "proto16k": echo_request(LARGE),
        "json16": (b'{"payload":{"data":"' + base64.b64encode(b"x" * SMALL) + b'"}}'),
        "download": envelope(stream_request(STREAM_COUNT, LARGE)),
        "upload": envelope(echo_request(LARGE)) * UPLOAD_COUNT,
        "grpc16": envelope(echo_request(SMALL)),
    }
    paths = {}
    for name, body in data.items():
        path = out / f"{name}.bin"
        path.write_bytes(body)
        paths[name] = path
    return paths


def setup() -> dict[str, Path]:
    """Everything, in order; returns the body files."""
    GEN.mkdir(exist_ok=True)
    apt()
    ours_venv()
    official_venv()
    generate()
    return bodies()


if __name__ == "__main__":
    setup()
