#!/usr/bin/env bash
# `make bench`: gateway overhead of the aigw filter against plain Envoy.
# Needs wrk (installed with apt-get when missing and running as root), an Envoy 1.40
# command (ENVOY_BIN, else AIGW_ENVOY, else .venv/bin/envoy, else
# /tmp/setup/venv/bin/envoy, else envoy on PATH) and libaigw.so (AIGW_SO, else
# $AIGW_MODULE_DIR/libaigw.so, else target/release/libaigw.so; built here when missing).
# Settings: BENCH_DURATION, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_THREADS,
# BENCH_ROUNDS, BENCH_QUIET_WAIT, BENCH_PIN, BENCH_NICE, BENCH_WORKLOADS,
# BENCH_GATEWAYS, BENCH_TTFT*, BENCH_MEMORY* (see SETTINGS in bench/run.py; BENCH_MEMORY=0
# skips the 1,000-stream memory table, =only runs it alone), BENCH_LITELLM=1 (adds
# the LiteLLM gateway), BENCH_CHART=1 (bench/out/latest.png), BENCH_FLEET (fleet mode:
# on by default when redis-server is installed, BENCH_FLEET=0 turns it off; needs the
# aigw CLI, AIGW_CLI else next to libaigw.so, built when missing, and the repo's .venv
# for the rate-limit service), BENCH_FLEET_*. aigw.wasm: AIGW_WASM, else
# target/wasm32-wasip1/release (built when missing). Python 3 stdlib only (PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing wrk" >&2
    apt-get install -y wrk >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
  else
    echo "bench: wrk is not installed (apt-get install wrk)" >&2
    exit 1
  fi
fi

so="${AIGW_SO:-${AIGW_MODULE_DIR:-target/release}/libaigw.so}"
if [ ! -f "$so" ]; then
  echo "bench: $so is missing, building it" >&2
  cargo build --release -p aigw-shim
fi

# Fleet mode (bench/README.md) needs redis-server: on when it is installed, unless set.
if [ -z "${BENCH_FLEET:-}" ]; then
  if command -v redis-server >/dev/null 2>&1; then
    export BENCH_FLEET=1
  else
    echo "bench: redis-server is not installed: no fleet-mode rows (apt-get install redis-server)" >&2
    export BENCH_FLEET=0
  fi
fi
cli="${AIGW_CLI:-$(dirname "$so")/aigw}"
if [ "$BENCH_FLEET" = 1 ] && [ ! -f "$cli" ]; then
  echo "bench: $cli is missing, building it" >&2
  cargo build --release -p aigw-cli
fi

wasm="${AIGW_WASM:-target/wasm32-wasip1/release/aigw.wasm}"
case ",${BENCH_GATEWAYS:-wasm}," in
  *,wasm,*)
    if [ ! -f "$wasm" ]; then
      echo "bench: $wasm is missing, building it" >&2
      cargo build --release -p aigw-shim --target wasm32-wasip1
    fi ;;
esac

# LiteLLM (opt-in: BENCH_LITELLM=1 or BENCH_GATEWAYS naming litellm) lives in its own
# venv, installed from PyPI on first use (a few minutes), never by the default run.
case "${BENCH_LITELLM:-0},${BENCH_GATEWAYS:-}," in
  1,*|*litellm,*)
    venv=bench/.venv-litellm
    if [ ! -x "$venv/bin/litellm" ]; then
      echo "bench: installing litellm[proxy] into $venv" >&2
      "${PYTHON:-python3}" -m venv "$venv"
      "$venv/bin/pip" install -q 'litellm[proxy]'
    fi ;;
esac

# Chart (opt-in: BENCH_CHART=1): matplotlib in bench/.venv-chart, installed on first use.
if [ "${BENCH_CHART:-0}" = 1 ]; then
  cvenv=bench/.venv-chart
  if [ ! -x "$cvenv/bin/python" ] || ! "$cvenv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    echo "bench: installing matplotlib into $cvenv" >&2
    "${PYTHON:-python3}" -m venv "$cvenv"
    "$cvenv/bin/pip" install -q matplotlib
  fi
  "${PYTHON:-python3}" bench/run.py "$@"
  exec "$cvenv/bin/python" bench/chart.py
fi

exec "${PYTHON:-python3}" bench/run.py "$@"
