# Thin wrappers over scripts/, which also work on their own. `make dev` and `make test`
# are the two set-up commands of the README; .ci/run calls `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help dev test lint fmt build clean-dbs bench bench-tiny

# Outside the clone, so every clone (and CI) builds incrementally.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/esaas-target
# rustup's default place, last, for shells that never sourced ~/.cargo/env.
export PATH := $(PATH):$(HOME)/.cargo/bin

help:
	@echo "make dev        run the platform in the foreground (PostgreSQL, esaas serve on \$$ESAAS_LISTEN_ADDR)"
	@echo "make test       every check CI runs: fmt, clippy, buf lint, build, cargo test, tests/e2e"
	@echo "make lint       cargo fmt --check, clippy -D warnings, buf lint"
	@echo "make fmt        format the Rust code"
	@echo "make build      cargo build --workspace --all-targets"
	@echo "make clean-dbs  drop the esaas_test_* databases that interrupted tests left behind"
	@echo "make bench      the full benchmark (release build, ~30 min): BENCHMARKS.md, bench-results.json"
	@echo "make bench-tiny every benchmark scenario at a tiny size (CI runs it; output in a temp dir)"

dev:
	scripts/dev.sh

test:
	scripts/test.sh

lint:
	scripts/test.sh lint

fmt:
	cargo fmt --all

build:
	cargo build --workspace --all-targets

# Benchmarks are not tests: no timing assertions. Run the full one on a quiet machine.
bench:
	scripts/bench.sh full

bench-tiny:
	scripts/bench.sh tiny

# Tests drop their own databases; a killed test run leaves them behind.
clean-dbs:
	@url=$$(scripts/ensure-postgres.sh) && \
	for db in $$(psql -w -X -Atq -c "select datname from pg_database where datname like 'esaas\_test\_%'" "$$url"); do \
	  echo "dropping $$db"; psql -w -X -q -c "drop database \"$$db\" with (force)" "$$url" || exit 1; \
	done
