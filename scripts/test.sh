#!/usr/bin/env bash
# The whole test suite: sets everything up, then lints, type-checks and runs pytest
# with python3 (.venv). Then every other supported Python found on this machine
# gets a venv of its own (.venv-py310, ...) that runs mypy --strict and a part of
# the suite: the core, client core and codegen tests and the apps on real servers.
# Extra arguments go to every pytest run (e.g. scripts/test.sh -k codegen -x).
# OTHER_PYTHONS=no skips the other versions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python

# What requires-python in pyproject.toml and the README promise.
SUPPORTED=(3.10 3.11 3.12 3.13)
OLDEST="${SUPPORTED[0]}"
NEWEST="${SUPPORTED[${#SUPPORTED[@]} - 1]}"
# The part of the suite the other versions run: about a minute each.
PART=(
  tests/test_core_*.py tests/test_client_core.py tests/test_client_cancel.py
  tests/test_client_http1.py tests/test_client_http2.py tests/test_codegen.py
  tests/test_server_apps.py tests/test_cors.py tests/test_server_e2e.py
)

start=$SECONDS
echo "== ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
echo "== mypy --strict (for Python $OLDEST and $NEWEST)"
"$PY" -m mypy --python-version "$OLDEST" protoc_gen_connect_python tests
"$PY" -m mypy --python-version "$NEWEST" protoc_gen_connect_python tests
echo "== lint-imports (the layering contracts in pyproject.toml)"
.venv/bin/lint-imports
echo "== pytest"
"$PY" -m pytest -q -p no:cacheprovider "$@"

version_of() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }
main="$(version_of "$PY")"
summary=("$(printf '%-8s %-13s ruff, mypy, the whole suite: passed (%d s)' \
  "$main" .venv $((SECONDS - start)))")

# An interpreter of version $1 that can make venvs, or nothing. pyenv's shims
# answer only for its selected version, so its interpreters are tried directly.
find_python() {
  local v="$1" c
  for c in "python$v" \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$v".*/bin/python"$v" 2>/dev/null |
      sort -rV) \
    "/usr/local/bin/python$v" "/usr/bin/python$v"; do
    if [ "$("$c" -c 'import ensurepip, sys; print("%d.%d" % sys.version_info[:2])' \
      2>/dev/null)" = "$v" ]; then
      command -v "$c"
      return
    fi
  done
}

# Set up venv $3 with interpreter $2 (version $1); mypy; the part of the suite.
run_other() {
  local v="$1" py="$2" venv="$3" rc=0
  shift 3
  PYTHON="$py" VENV="$venv" SETUP_PYTHON_ONLY=1 bash scripts/setup.sh || return 1
  "$venv/bin/python" -m mypy --python-version "$v" --cache-dir "$venv/.mypy_cache" \
    protoc_gen_connect_python tests || return 1
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "${PART[@]}" "$@" || rc=$?
  # 5: the arguments deselected every test of the part.
  [ "$rc" = 0 ] || [ "$rc" = 5 ]
}

failed=0
for v in "${SUPPORTED[@]}"; do
  [ "$v" != "${main%.*}" ] || continue
  if [ "${OTHER_PYTHONS:-}" = no ]; then
    summary+=("$(printf '%-8s skipped (OTHER_PYTHONS=no)' "$v")")
    continue
  fi
  py="$(find_python "$v")"
  if [ -z "$py" ]; then
    summary+=("$(printf '%-8s not found: no python%s that can make a venv' "$v" "$v")")
    continue
  fi
  venv=".venv-py${v/./}"
  start=$SECONDS
  echo "== Python $v ($py): setup $venv, mypy --strict, pytest (part of the suite)"
  result=passed
  run_other "$v" "$py" "$venv" "$@" || { result=FAILED; failed=1; }
  summary+=("$(printf '%-8s %-13s mypy, part of the suite: %s (%d s)' \
    "$(version_of "$py")" "$venv" "$result" $((SECONDS - start)))")
done

echo "== Python versions"
printf '  %s\n' "${summary[@]}"
exit "$failed"
