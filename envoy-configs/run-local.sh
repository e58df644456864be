#!/usr/bin/env bash
# `make run`: the provider simulator and Envoy with the filter, in the foreground.
# Ctrl-C (or the end of either process) stops both. Access-log lines (JSON) appear on
# this terminal as requests complete.
#
# The Kubernetes resources in AIGW_EXAMPLE (default envoy-configs/examples/aigateway)
# are compiled by the CLI (`aigw compile`) into .run/compiled/ (config.json,
# bootstrap.yaml, bootstrap-wasm.yaml, envoy-gateway.yaml, and the credentials
# apart: secrets/ for the native build, secrets.env for the wasm build, which this
# script loads into Envoy's environment) and Envoy runs on the build's bootstrap;
# the simulator listens where the example's Backend points (127.0.0.1:8081) and
# checks the credentials the compiled config names, as the real providers would
# (API keys, bearer tokens, SigV4 recomputed with botocore over the Host it
# receives): envoy-configs/sim_expectations.py, as the tests start it. With
# AIGW_CONFIG set, envoy-configs/render.py renders a bootstrap from that filter
# config instead, and the simulator checks nothing.
#
# Environment: AIGW_EXAMPLE, AIGW_CONFIG, AIGW_BUILD (native, the default, or wasm),
# AIGW_PORT (1975), AIGW_SIM_PORT (8081; render.py only, the compiled example names
# its own), AIGW_ADMIN_PORT (9901), AIGW_MODULE_DIR (directory of libaigw.so),
# AIGW_WASM (path of aigw.wasm), AIGW_CLI (path of the aigw binary), AIGW_ENVOY
# (Envoy command), PYTHON (with PyYAML).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
EXAMPLE="${AIGW_EXAMPLE:-$ROOT/envoy-configs/examples/aigateway}"
CONFIG="${AIGW_CONFIG:-}"
PORT="${AIGW_PORT:-1975}"
SIM_PORT="${AIGW_SIM_PORT:-8081}"
ADMIN_PORT="${AIGW_ADMIN_PORT:-9901}"
BUILD="${AIGW_BUILD:-native}"
MODULE_DIR="${AIGW_MODULE_DIR:-$ROOT/target/release}"
WASM="${AIGW_WASM:-$ROOT/target/wasm32-wasip1/release/aigw.wasm}"
CLI="${AIGW_CLI:-$ROOT/target/release/aigw}"
read -r -a ENVOY <<<"${AIGW_ENVOY:-$ROOT/.venv/bin/envoy}"
RUN_DIR="$ROOT/.run"

mkdir -p "$RUN_DIR"
SIM_ARGS=()
if [ -z "$CONFIG" ]; then
  # The simulator's address comes from the example's Backend (an IP endpoint).
  SIM_PORT=8081
  rm -rf "$RUN_DIR/compiled"
  "$CLI" compile -o "$RUN_DIR/compiled" --listen-address 127.0.0.1 --listen-port "$PORT" \
    --admin-port "$ADMIN_PORT" --access-log /dev/stdout --wasm-path "$WASM" "$EXAMPLE"
  if [ "$BUILD" = wasm ]; then
    BOOTSTRAP="$RUN_DIR/compiled/bootstrap-wasm.yaml"
    [ -f "$BOOTSTRAP" ] || { echo "no bootstrap-wasm.yaml: the example reads credentials from files" >&2; exit 1; }
    # The wasm build reads its credentials from Envoy's environment.
    if [ -f "$RUN_DIR/compiled/secrets.env" ]; then
      set -a
      # shellcheck disable=SC1091
      . "$RUN_DIR/compiled/secrets.env"
      set +a
    fi
  else
    BOOTSTRAP="$RUN_DIR/compiled/bootstrap.yaml"
  fi
  mapfile -t SIM_ARGS < <("$PYTHON" "$ROOT/envoy-configs/sim_expectations.py" "$RUN_DIR/compiled" simulator)
  SOURCE="resources: ${EXAMPLE#"$ROOT"/}, compiled into .run/compiled/; the simulator checks credentials and signatures"
else
  BOOTSTRAP="$RUN_DIR/envoy.yaml"
  "$PYTHON" "$ROOT/envoy-configs/render.py" --config "$CONFIG" --out "$BOOTSTRAP" \
    --listen "127.0.0.1:$PORT" --admin-port "$ADMIN_PORT" --upstream "127.0.0.1:$SIM_PORT" \
    --access-log /dev/stdout --build "$BUILD" --wasm "$WASM"
  SOURCE="config: ${CONFIG#"$ROOT"/}, bootstrap: ${BOOTSTRAP#"$ROOT"/}"
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$PYTHON" "$ROOT/integration-tests/simulator.py" --listen "127.0.0.1:$SIM_PORT=simulator" "${SIM_ARGS[@]}" &
pids+=($!)

ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$MODULE_DIR" "${ENVOY[@]}" -c "$BOOTSTRAP" \
  --log-level warn --file-flush-interval-msec 100 --use-dynamic-base-id &
pids+=($!)

ready() {
  "$PYTHON" -c 'import sys, urllib.request as u
try: sys.exit(0 if u.urlopen(sys.argv[1], timeout=1).read().startswith(b"LIVE") else 1)
except OSError: sys.exit(1)' "http://127.0.0.1:$ADMIN_PORT/ready"
}
# V8 compiles the wasm module at startup: allow it a few minutes on a busy machine.
attempts=100
[ "$BUILD" = wasm ] && attempts=900
for _ in $(seq 1 "$attempts"); do
  if ready; then break; fi
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "a process exited during startup" >&2; exit 1; }; done
  sleep 0.2
done

URL="http://127.0.0.1:$PORT"
cat <<EOF

AI gateway ($BUILD build) on $URL
($SOURCE)
Simulator on 127.0.0.1:$SIM_PORT, Envoy admin on 127.0.0.1:$ADMIN_PORT. Ctrl-C stops both.

  curl -s $URL/v1/models

  curl -s $URL/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]}'

  curl -sN $URL/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "gpt-5-nano", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Hello!"}]}'

  curl -s $URL/v1/embeddings -H 'content-type: application/json' \\
    -d '{"model": "text-embedding-3-small", "input": "Hello!"}'

The model "mini" goes to the backend with a model name override. Token counts and
costs appear in the access-log lines printed below.

EOF

# Stop everything as soon as either process ends.
wait -n "${pids[@]}"
