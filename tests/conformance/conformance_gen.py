"""Generate Python code for the conformance protos, once per proto/plugin version.

The conformance protos live outside the repository (``CONFORMANCE_PROTO_DIR``,
by default ``/work/shared/conformance/proto``). At start-up each adapter calls
:func:`ensure_generated`, which runs ``grpc_tools.protoc`` with ``--python_out``,
``--pyi_out`` and our plugin into ``.work/conformance/gen-<hash>/`` (ignored by
git) and puts that folder on ``sys.path``. The hash covers the protos, the
plugin and its templates, so a changed generator regenerates. Generation goes
to a temporary folder that is renamed into place, so several adapter processes
starting at once never see half-written output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PROTO_DIR = Path("/work/shared/conformance/proto")
PROTO_FILES = (
    "connectrpc/conformance/v1/config.proto",
    "connectrpc/conformance/v1/service.proto",
    "connectrpc/conformance/v1/client_compat.proto",
    "connectrpc/conformance/v1/server_compat.proto",
)


def proto_dir() -> Path:
    """Where the conformance protos are read from."""
    return Path(os.environ.get("CONFORMANCE_PROTO_DIR", DEFAULT_PROTO_DIR))


def plugin_path() -> Path:
    """The plugin executable: next to the running interpreter, else in the venv."""
    for cand in (
        Path(sys.executable).parent / "protoc-gen-connect-python",
        REPO / ".venv" / "bin" / "protoc-gen-connect-python",
    ):
        if cand.exists():
            return cand
    raise RuntimeError("protoc-gen-connect-python not found; run the setup script")


def _fingerprint(src: Path) -> str:
    h = hashlib.sha256()
    inputs = [src / f for f in PROTO_FILES]
    for folder in (REPO / "protoc_gen_connect_python" / "plugin", REPO / "templates"):
        if folder.is_dir():
            inputs.extend(
                sorted(
                    p
                    for p in folder.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts
                )
            )
    for p in inputs:
        h.update(str(p).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def ensure_generated() -> Path:
    """Generate (if needed) and put the generated modules on ``sys.path``."""
    src = proto_dir()
    missing = [f for f in PROTO_FILES if not (src / f).is_file()]
    if missing:
        raise RuntimeError(f"conformance protos not found under {src}: {missing}")
    cache = REPO / ".work" / "conformance"
    out = cache / f"gen-{_fingerprint(src)}"
    if not (out / "connectrpc" / "conformance" / "v1" / "service_pb2.py").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=cache))
        try:
            cmd = [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{src}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--plugin=protoc-gen-connect-python={plugin_path()}",
                f"--connect-python_out={tmp}",
                *PROTO_FILES,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"code generation failed ({proc.returncode}):\n{proc.stderr}"
                )
            try:
                tmp.rename(out)
            except OSError:
                # Another adapter process won the race; its output is identical.
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return out


if __name__ == "__main__":
    print(ensure_generated())
