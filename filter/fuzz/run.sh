#!/usr/bin/env bash
# Builds the fuzz targets and runs each for FUZZ_SECONDS (default 60), one after
# another, on the stable toolchain. Exits non-zero if any target crashed (panic,
# timeout, out of memory), after printing the crash file(s).
#
#   filter/fuzz/run.sh [TARGET...]      (default: every target)
#
# Variables:
#   FUZZ_SECONDS    seconds per target (default 60)
#   FUZZ_RUNS       stop each target after this many executions instead (0: no cap)
#   FUZZ_ARGS       extra libFuzzer flags
#   FUZZ_SANITIZER  none (default: safe Rust; about twice as fast) or address
#   FUZZ_NO_BUILD   1: run the binaries already built (no cargo-fuzz build)
#
# cargo-fuzz is installed into filter/fuzz/.tools on first use (cached there).
# Stable rustc refuses the -Z flags cargo-fuzz passes; RUSTC_BOOTSTRAP=1 lets it
# accept them. Corpora (corpus/<target>) are seeded by seed.py on first use and
# grow as the fuzzer finds new inputs; crashes go to artifacts/<target>/, logs to
# logs/<target>.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
FUZZ_DIR=$(pwd)

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
RUNS=${FUZZ_RUNS:-0}
SANITIZER=${FUZZ_SANITIZER:-none}
CARGO_FUZZ_VERSION=0.13.2
TOOLS="$FUZZ_DIR/.tools"
CARGO_FUZZ="$TOOLS/bin/cargo-fuzz"
export RUSTC_BOOTSTRAP=1

ALL_TARGETS=(
  request_body
  upstream_response
  gzip_response
  response_meter
  sse_decoder
  eventstream_decoder
  config_json
  cel_expression
  cli_yaml
)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
if [ ! -x "$CARGO_FUZZ" ] || ! "$CARGO_FUZZ" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "run.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS" >&2
  cargo install --quiet --locked --root "$TOOLS" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

BUILD_FLAGS=(-O --debug-assertions --sanitizer "$SANITIZER")
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
  echo "run.sh: building ${TARGETS[*]}" >&2
  for t in "${TARGETS[@]}"; do
    "$CARGO_FUZZ" build "${BUILD_FLAGS[@]}" "$t"
  done
fi

if [ ! -d corpus ]; then
  python3 seed.py
fi

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR="$FUZZ_DIR/target/$TRIPLE/release"
mkdir -p logs
failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="logs/$t.log"
  echo "run.sh: $t for ${SECONDS_PER_TARGET}s" >&2
  args=(
    "corpus/$t"
    -artifact_prefix="artifacts/$t/"
    -max_total_time="$SECONDS_PER_TARGET"
    -rss_limit_mb=2048
    -malloc_limit_mb=2048
    -timeout=10
    -max_len=65536
    -print_final_stats=1
  )
  [ "$RUNS" != 0 ] && args+=(-runs="$RUNS")
  # shellcheck disable=SC2206
  [ -n "${FUZZ_ARGS:-}" ] && args+=($FUZZ_ARGS)
  status=0
  "$BIN_DIR/$t" "${args[@]}" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  echo "run.sh: $t: ${execs:-?} executions, ${speed:-?} exec/s, exit $status" >&2
  if [ "$status" != 0 ]; then
    failed+=("$t")
    echo "run.sh: $t FAILED; log $FUZZ_DIR/$log:" >&2
    grep -E "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written to|Base64:" "$log" >&2 || tail -20 "$log" >&2
    for f in artifacts/"$t"/*; do
      [ -f "$f" ] && echo "run.sh: crash file: $FUZZ_DIR/$f (reproduce: $BIN_DIR/$t $FUZZ_DIR/$f)" >&2
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "run.sh: crashed: ${failed[*]}" >&2
  exit 1
fi
echo "run.sh: no crash in ${TARGETS[*]}" >&2
