#!/usr/bin/env bash
# Reruns the whole benchmark suite and rewrites docs/benchmarks.md.
# Arguments go to bench/run.py (e.g. --quick, --only server,client).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
exec .venv/bin/python bench/run.py "$@"
