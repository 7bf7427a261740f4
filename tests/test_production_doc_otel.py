"""The OpenTelemetry and validation snippets of docs/production.md,
run as written against the apps they define, on real servers in this process.

Each snippet marked ``<!-- check: NAME -->`` is executed unchanged; the test
gives it only what the text says comes from elsewhere (``url``, the address of
the server the previous snippet's app runs on) and checks what it did.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from example_env import EXAMPLES, ROOT, checked_blocks, generate_example
from inproc_servers import serve_asgi, serve_wsgi

DOC = ROOT / "docs" / "production.md"
SNIPPETS = {
    k: v
    for k, v in checked_blocks(DOC, "python").items()
    if k.startswith(("otel-", "validate-"))
}


def run(name: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(SNIPPETS[name], f"{DOC.name}:{name}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def on_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example's generated code and ``examples/`` on ``sys.path``."""
    gen = generate_example(tmp_path_factory.mktemp("gen"))
    added = [str(gen), str(EXAMPLES)]
    sys.path[:0] = added
    try:
        yield gen
    finally:
        for p in added:
            sys.path.remove(p)


def test_all_snippets_are_checked() -> None:
    assert sorted(SNIPPETS) == [
        "otel-client",
        "otel-sdk",
        "otel-server",
        "validate-client",
        "validate-server",
    ]


def test_otel_snippets(on_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    ns = run("otel-sdk", {"__name__": "docs_otel"})
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        pytest.fail("the SDK snippet did not install its tracer provider")
    # Besides the console, keep the spans where the test can read them.
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    run("otel-server", ns)
    for serve, app in ((serve_asgi, ns["app"]), (serve_wsgi, ns["wsgi_app"])):
        spans.clear()
        with serve(app) as url:
            run("otel-client", {**ns, "url": url})
        finished = {(s.name, s.kind.name): s for s in spans.get_finished_spans()}
        outer = finished["greet someone", "INTERNAL"]
        client = finished["greet.v1.GreetService/Greet", "CLIENT"]
        server = finished["greet.v1.GreetService/Greet", "SERVER"]
        assert outer.context is not None and client.context is not None
        assert client.parent is not None
        assert client.parent.span_id == outer.context.span_id
        assert server.parent is not None
        assert server.parent.span_id == client.context.span_id
        assert dict(server.attributes or {})["rpc.method"] == "Greet"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="protovalidate needs 3.11+")
def test_validate_snippets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import validate_proto

    validate_proto.generate(tmp_path)
    ns = run("validate-server", {"__name__": "docs_validate"})
    with serve_asgi(ns["app"]) as url:
        run("validate-client", {**ns, "url": url})
    assert capsys.readouterr().out.split() == ["name", "string.min_len"]
