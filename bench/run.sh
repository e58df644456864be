#!/usr/bin/env bash
# `make bench`: gateway overhead of the aigw filter against plain Envoy.
# Needs wrk (installed with apt-get when missing and running as root), an Envoy 1.40
# command (ENVOY_BIN, else AIGW_ENVOY, else .venv/bin/envoy, else
# /tmp/setup/venv/bin/envoy, else envoy on PATH) and libaigw.so (AIGW_SO, else
# $AIGW_MODULE_DIR/libaigw.so, else target/release/libaigw.so; built here when missing).
# Settings: BENCH_DURATION, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_THREADS,
# BENCH_ROUNDS, BENCH_QUIET_WAIT, BENCH_PIN, BENCH_NICE, BENCH_WORKLOADS,
# BENCH_GATEWAYS (see SETTINGS in bench/run.py). Python 3 stdlib only (PYTHON).
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

exec "${PYTHON:-python3}" bench/run.py "$@"
