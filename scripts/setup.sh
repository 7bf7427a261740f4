#!/usr/bin/env bash
# Installs everything the project needs, idempotently: the Python venv (.venv)
# with the package and its tools, the npm packages of the interop tests, and the
# Debian packages the tests use. Safe to run again; quick when nothing changed.
# PYTHON picks the interpreter and VENV the venv; SETUP_PYTHON_ONLY=1 sets up
# only the venv (scripts/test.sh does so for each other supported Python).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
PYTHON_ONLY="${SETUP_PYTHON_ONLY:-}"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages: curl, nginx (proxy tests), chromium (browser test) -----
need_apt=()
if [ -z "$PYTHON_ONLY" ]; then
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "apt-get install ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    log "missing ${need_apt[*]}: install them with your package manager"; exit 1
  fi
fi

# --- Python -----------------------------------------------------------------
stamp="$VENV/.setup-stamp"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
want="$({ cat pyproject.toml scripts/setup.sh; "$VENV/bin/python" --version; } | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages"
  piplog="$VENV/pip-install.log"
  if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
         "$VENV/bin/python" -m pip install -q -e ".[plugin,brotli,zstd,dev]"; } >"$piplog" 2>&1; then
    cat "$piplog" >&2; log "pip install failed"; exit 1
  fi
  "$VENV/bin/python" -c "import protoc_gen_connect_python.runtime, jinja2, black, grpc_tools, pyqwest" 
  echo "$want" > "$stamp"
fi

# --- npm packages: interop tests and the browser example --------------------------------------
npm_dirs=(tests/interop/node examples/browser)
[ -z "$PYTHON_ONLY" ] || npm_dirs=()
for dir in "${npm_dirs[@]}"; do
  if [ -f "$dir/package-lock.json" ]; then
    lockhash="$(sha256sum "$dir/package-lock.json" | cut -c1-16)"
    if [ "$(cat "$dir/node_modules/.setup-stamp" 2>/dev/null)" != "$lockhash" ]; then
      log "npm ci in $dir"
      npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
      echo "$lockhash" > "$dir/node_modules/.setup-stamp"
    fi
  fi
done
log "ready"
