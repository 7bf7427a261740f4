"""A real browser calls the Python server from another origin, with no shim.

The page (``examples/browser``) is built with ``@connectrpc/connect-web`` and
esbuild, served from one origin, and calls ``example_app`` on another: Connect
with JSON (POST and GET) and binary, unary and server streaming, and gRPC-Web.
Headless Chromium runs it through ``check-page.mjs`` (playwright-core, driving
Debian's ``/usr/bin/chromium``); the results rendered into the page are checked
here and a screenshot is kept.

Needs node, ``npm ci --prefix examples/browser`` and chromium (scripts/setup.sh).
Set ``CONNECT_UPDATE_SCREENSHOT=1`` to refresh ``docs/browser.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from example_env import BIN, ROOT, generate_example, serve, static_server, tool

PAGE_DIR = ROOT / "examples" / "browser"
SCREENSHOT = ROOT / "docs" / "browser.png"
# The same as `npm run build` in examples/browser.
ESBUILD = [
    "esbuild",
    "src/app.ts",
    "--bundle",
    "--format=esm",
    "--target=es2020",
    "--outfile=dist/app.js",
    "--log-level=warning",
]

CONNECT_CASES = {
    "connect-json-unary": "Hello, JSON!",
    "connect-json-get": "Hello, GET!",
    "connect-binary-unary": "Hello, binary!",
    "connect-json-stream": "Hello, JSON #1! | Hello, JSON #2! | Hello, JSON #3!",
    "connect-binary-stream": "Hello, binary #1! | Hello, binary #2! | Hello, binary #3!",
    "connect-error": "InvalidArgument: name must not be empty",
}
GRPC_WEB_CASES = {
    "grpc-web-unary": "Hello, gRPC-Web!",
    "grpc-web-stream": "Hello, gRPC-Web #1! | Hello, gRPC-Web #2! | Hello, gRPC-Web #3!",
    "grpc-web-error": "InvalidArgument: name must not be empty",
}


def build_page() -> None:
    """Generate the page's TypeScript messages with buf + protoc-gen-es, bundle it."""
    node_bin = PAGE_DIR / "node_modules" / ".bin"
    if not (node_bin / "esbuild").exists():
        pytest.fail(
            "run `npm ci --prefix examples/browser` (scripts/setup.sh does)",
            pytrace=False,
        )
    buf = tool("buf", BIN / "buf")
    env = {**os.environ, "PATH": f"{node_bin}{os.pathsep}{os.environ['PATH']}"}
    shutil.rmtree(PAGE_DIR / "src" / "gen", ignore_errors=True)
    for cmd in ([buf, "generate", "--template", "buf.gen.yaml", "../proto"], ESBUILD):
        subprocess.run(cmd, cwd=PAGE_DIR, env=env, check=True, timeout=60)


def open_page(page_url: str, screenshot: Path) -> dict[str, Any]:
    node = tool("node")
    chromium = tool("chromium", Path("/usr/bin/chromium"))
    done = subprocess.run(
        [node, "check-page.mjs", page_url, str(screenshot)],
        cwd=PAGE_DIR,
        env={**os.environ, "CHROMIUM": chromium},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.fail(f"check-page.mjs failed:\n{done.stderr}", pytrace=False)
    out: dict[str, Any] = json.loads(done.stdout)
    return out


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_example(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def page(gen_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Open the page once; every test below checks part of what it rendered."""
    build_page()
    tmp = tmp_path_factory.mktemp("browser")
    shot = tmp / "browser.png"
    # Only the page's origin is allowed, so CORS is really in play.
    with (
        static_server(PAGE_DIR, tmp) as page_origin,
        serve(gen_dir, tmp, cors_origins=page_origin) as api,
    ):
        result = open_page(f"{page_origin}/index.html?api={api}", shot)
    if os.environ.get("CONNECT_UPDATE_SCREENSHOT") or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    result["by_id"] = {r["id"]: r for r in result["rendered"]}
    return result


def check(page: dict[str, Any], cases: dict[str, str]) -> None:
    by_id = page["by_id"]
    failures = []
    for case, expected in cases.items():
        row = by_id.get(case)
        if row is None or row["status"] != "ok" or expected not in row["text"]:
            failures.append(f"{case}: expected {expected!r}, page shows {row}")
    assert not failures, "\n".join(failures) + f"\nconsole: {page['console']}"


def test_connect_from_the_browser(page: dict[str, Any]) -> None:
    check(page, CONNECT_CASES)
    # Greet-Version is the handler's own header: readable only because the CORS
    # middleware exposes it.
    for case in ("connect-json-unary", "connect-json-get", "connect-binary-unary"):
        assert "greet-version: 1" in page["by_id"][case]["text"]


def test_grpc_web_from_the_browser(page: dict[str, Any]) -> None:
    check(page, GRPC_WEB_CASES)


def test_page_rendered_every_call(page: dict[str, Any]) -> None:
    ids = [r["id"] for r in page["rendered"]]
    assert ids == [*CONNECT_CASES, *GRPC_WEB_CASES]
    assert [r["id"] for r in page["results"]] == ids


def test_other_origins_are_refused(gen_dir: Path, tmp_path: Path) -> None:
    """The same page, with the server allowing some other origin only."""
    build_page()
    with (
        static_server(PAGE_DIR, tmp_path) as page_origin,
        serve(gen_dir, tmp_path, cors_origins="https://elsewhere.example") as api,
    ):
        result = open_page(f"{page_origin}/index.html?api={api}", tmp_path / "x.png")
    statuses = {r["id"]: r["status"] for r in result["rendered"]}
    assert set(statuses.values()) == {"error"}, statuses
    assert any("CORS" in line for line in result["console"]), result["console"]
