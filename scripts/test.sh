#!/usr/bin/env bash
# `make test` (and CI through .ci/run): every check, cheapest first, stopping at the first
# failure. `scripts/test.sh lint` runs only the static checks (`make lint`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || [ ! -x "$HOME/.cargo/bin/cargo" ] || PATH=$HOME/.cargo/bin:$PATH
# Outside the clone, so CI and fresh clones build incrementally.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/esaas-target}

# step NAME COMMAND...: announce on stderr, run, report the time; stop on failure.
step() {
  local name=$1 start=$SECONDS
  shift
  echo "==> $name" >&2
  "$@" || { echo "==> FAILED: $name ($((SECONDS - start))s)" >&2; exit 1; }
  echo "==> ok: $name ($((SECONDS - start))s)" >&2
}

# buf breaking: the protos against those of the previous commit (the FILE rules of
# buf.yaml), so that a change which would break a generated SDK in another service fails
# here. A clone without history (shallow, or a first commit) has nothing to compare.
buf_breaking() {
  local base dir rc=0
  if ! base=$(git rev-parse -q --verify 'HEAD~1^{commit}' 2>/dev/null); then
    echo "buf breaking: no previous commit to compare with" >&2
    return 0
  fi
  dir=$(mktemp -d)
  git archive "$base" proto buf.yaml | tar -x -C "$dir" || rc=$?
  [ "$rc" != 0 ] || "$ESAAS_BUF" breaking --against "$dir" || rc=$?
  rm -rf "$dir"
  return "$rc"
}

# Assignments first: a failure inside "$(...)" would be lost as an argument of eval or export.
tools_env=$(scripts/ensure-tools.sh --print-env)
eval "$tools_env"
if [ "${1:-}" != lint ]; then
  db_url=$(scripts/ensure-postgres.sh)
fi

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
step "buf lint" "$ESAAS_BUF" lint
step "buf format" "$ESAAS_BUF" format --diff --exit-code
step "buf breaking (against the previous commit)" buf_breaking
step "the SDK's protos are proto/'s" scripts/sync-protos.sh --check
# The SDK packages on its own (no path-only dependency, its protos inside). --no-verify:
# the workspace build below compiles the same files; a full verify rebuilds the whole
# dependency tree from the registry in target/package (minutes on a cold cache).
step "cargo package -p esaas-client" cargo package -q -p esaas-client --no-verify --allow-dirty
[ "${1:-}" != lint ] || exit 0

step "cargo build" cargo build --workspace --all-targets

# What the integration tests and the e2e scripts read.
export ESAAS_TEST_DATABASE_URL=$db_url
export ESAAS_BIN=$CARGO_TARGET_DIR/debug/esaas
export ESAAS_GRPCURL=$ESAAS_TEST_VENV/bin/grpcurl
step "cargo test" cargo test --workspace
# The benchmark once at a tiny size, so it cannot rot; its figures go to a temporary directory.
step "benchmark smoke run (tiny)" scripts/bench.sh tiny

shopt -s nullglob
for script in tests/e2e/*.sh; do
  if [ -x "$script" ]; then step "$script" "$script"; fi
done
echo "==> all passed (${SECONDS}s)" >&2
