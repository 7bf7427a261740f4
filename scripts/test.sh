#!/usr/bin/env bash
# The whole test suite: sets everything up, then lints, type-checks and runs pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k codegen -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python

echo "== ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
echo "== mypy --strict"
"$PY" -m mypy protoc_gen_connect_python tests
echo "== pytest"
"$PY" -m pytest -q -p no:cacheprovider "$@"
