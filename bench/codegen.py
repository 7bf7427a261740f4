"""Code generation speed: 100 files x 5 services x 11 methods through real protoc.

Usage: .venv/bin/python bench/codegen.py [--files N] [--repeat R]

Prints the wall time of ``protoc --connect-python_out`` next to protoc's own
``--python_out`` on the same files (best of R runs each).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Per method index: 5 unary, 2 client stream, 2 server stream, 2 bidi.
CLIENT_STREAMS = {5, 6, 9, 10}
SERVER_STREAMS = {7, 8, 9, 10}


def _stream(yes: bool) -> str:
    return "stream " if yes else ""


def write_protos(root: Path, files: int) -> list[str]:
    """Synthetic protos with realistic names; returns their paths relative to root."""
    names = []
    for f in range(files):
        pkg = f"bench{f % 10}.v{f}"
        name = f"bench{f % 10}/v{f}/service_{f}.proto"
        lines = [
            'syntax = "proto3";',
            f"package {pkg};",
            'import "google/protobuf/empty.proto";',
        ]
        for s in range(5):
            lines.append(f"// Service{s} is benchmark service number {s} of file {f}.")
            lines.append(f"service InventoryService{s} {{")
            for m in range(11):
                req = "google.protobuf.Empty" if m == 10 else f"ListItemsRequest{m}"
                lines.append(f"  // Method {m} does something with the inventory.")
                lines.append(
                    f"  rpc ListInventoryItems{m}({_stream(m in CLIENT_STREAMS)}{req}) "
                    f"returns ({_stream(m in SERVER_STREAMS)}ListItemsResponse{m});"
                )
            lines.append("}")
        for m in range(11):
            lines.append(f"message ListItemsRequest{m} {{ string page_token = 1; }}")
            lines.append(
                f"message ListItemsResponse{m} {{ repeated string items = 1; }}"
            )
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        names.append(name)
    return names


def plugin_path(tmp: Path) -> Path:
    """The installed console script, else a wrapper that runs this checkout."""
    installed = Path(sys.executable).parent / "protoc-gen-connect-python"
    if installed.exists():
        return installed
    script = tmp / "protoc-gen-connect-python"
    script.write_text(
        f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" '
        '-m protoc_gen_connect_python "$@"\n'
    )
    script.chmod(0o755)
    return script


def timed(cmd: list[str], repeat: int) -> float:
    """Best wall time of ``repeat`` runs of ``cmd``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Run the benchmark and print the two timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src, out_py, out_connect = tmp / "src", tmp / "py", tmp / "connect"
        for p in (src, out_py, out_connect):
            p.mkdir()
        files = write_protos(src, args.files)
        protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}"]
        py = timed([*protoc, f"--python_out={out_py}", *files], args.repeat)
        connect = timed(
            [
                *protoc,
                f"--plugin=protoc-gen-connect-python={plugin_path(tmp)}",
                f"--connect-python_out={out_connect}",
                *files,
            ],
            args.repeat,
        )
        generated = list(out_connect.rglob("*_connect.py"))
        lines = sum(p.read_text().count("\n") for p in generated)
        methods = args.files * 5 * 11
        print(f"{args.files} files, {methods} methods, cpus={os.cpu_count()}")
        print(f"protoc --python_out:          {py:6.2f} s")
        print(f"protoc --connect-python_out:  {connect:6.2f} s ({lines} lines)")


if __name__ == "__main__":
    main()
