#!/usr/bin/env bash
# The main job, end to end: set up, generate code for the example protos with protoc
# and with buf, serve the example (ASGI on uvicorn, then WSGI on gunicorn), and call
# it with the generated clients and with curl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ROOT=$PWD
PY=$ROOT/.venv/bin/python
EX=$ROOT/examples
PORT="${PORT:-8080}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "generate with protoc (grpcio-tools): messages, stubs and Connect code"
rm -rf "$EX/gen" && mkdir -p "$EX/gen"
"$PY" -m grpc_tools.protoc -I "$EX/proto" \
  --plugin=protoc-gen-connect-python="$ROOT/.venv/bin/protoc-gen-connect-python" \
  --python_out="$EX/gen" --pyi_out="$EX/gen" --connect-python_out="$EX/gen" \
  greet/v1/greet.proto
find "$EX/gen" -name '*.py' | sort

step "generate with buf: the same Connect code"
BUF_OUT=$(mktemp -d)
(cd "$EX" && BUF_CACHE_DIR="$BUF_OUT/cache" "$ROOT/.venv/bin/buf" generate --output "$BUF_OUT")
cmp "$BUF_OUT/gen/greet/v1/greet_connect.py" "$EX/gen/greet/v1/greet_connect.py"
echo "buf and protoc produced identical greet_connect.py"
rm -rf "$BUF_OUT"

export PYTHONPATH="$EX:$EX/gen${PYTHONPATH:+:$PYTHONPATH}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() {
  for _ in $(seq 100); do
    (: > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server did not start on port $1" >&2; return 1
}
calls() {
  local base=http://127.0.0.1:$PORT
  step "generated clients (async and sync) -> $1"
  "$PY" "$EX/client.py" "$base" "Ada"
  step "curl: JSON unary POST"
  curl -sS -X POST -H 'Content-Type: application/json' -d '{"name":"curl"}' \
    "$base/greet.v1.GreetService/Greet"; echo
  step "curl: GET (NO_SIDE_EFFECTS method)"
  curl -sS "$base/greet.v1.GreetService/Greet?encoding=json&message=%7B%22name%22%3A%22GET%22%7D"; echo
  step "curl: an error, with its HTTP status and JSON body"
  curl -sS -w '\nHTTP %{http_code}\n' -X POST -H 'Content-Type: application/json' \
    -d '{"name":""}' "$base/greet.v1.GreetService/Greet"
  step "curl: server streaming (Connect envelopes, shown as text)"
  local msg='{"name":"stream","count":3,"intervalMs":10}'
  # One envelope: flags 0, a 4-byte big-endian length, then the JSON message.
  printf "\\0\\0\\0\\0\\x$(printf %02x ${#msg})%s" "$msg" \
    | curl -sS -X POST -H 'Content-Type: application/connect+json' --data-binary @- \
      "$base/greet.v1.GreetService/GreetStream" | tr -c '[:print:]\n' '.'; echo
}

step "serve the ASGI app with uvicorn on :$PORT"
(cd "$EX" && exec "$ROOT/.venv/bin/uvicorn" server:app --port "$PORT" --log-level warning) &
pids+=($!); wait_port "$PORT"
calls "ASGI on uvicorn"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

step "serve the WSGI app with gunicorn on :$PORT"
(cd "$EX" && exec "$ROOT/.venv/bin/gunicorn" server:wsgi_app -b "127.0.0.1:$PORT" -w 1 --threads 4 --log-level warning) &
pids+=($!); wait_port "$PORT"
calls "WSGI on gunicorn"
step "done"
