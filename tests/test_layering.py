"""The package's import graph has no cycle, lazy and type-only imports included.

``lint-imports`` (contracts in pyproject.toml) checks the layering in
scripts/test.sh; this test keeps the one rule that matters most on every
Python version, whatever import-linter release the version can install.
"""

from __future__ import annotations

import graphlib

import grimp
import pytest


def _graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("protoc_gen_connect_python", cache_dir=None)
    return {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}


def test_import_graph_is_acyclic() -> None:
    try:
        graphlib.TopologicalSorter(_graph()).prepare()
    except graphlib.CycleError as exc:
        # The cycle comes listed importer last.
        pytest.fail(f"import cycle: {' -> '.join(reversed(exc.args[1]))}")


def test_the_check_sees_a_lazy_import() -> None:
    # plugin/model.py imports the runtime inside a function only: that is an
    # edge of the graph, as a module-level import is.
    graph = _graph()
    assert (
        "protoc_gen_connect_python.runtime"
        in graph["protoc_gen_connect_python.plugin.model"]
    )
