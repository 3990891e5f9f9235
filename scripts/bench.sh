#!/usr/bin/env bash
# Benchmarks (BENCHMARKS.md says what they measure and how):
#   scripts/bench.sh full [esaas-bench flags...]   `make bench`: release build; writes
#       bench-results.json and the generated part of BENCHMARKS.md in the repository.
#   scripts/bench.sh tiny [esaas-bench flags...]   `make bench-tiny` and CI: debug build, every
#       scenario at a tiny size; writes into $ESAAS_BENCH_OUT or a new temporary directory,
#       never over the committed BENCHMARKS.md.
# Extra flags go to esaas-bench, e.g. `scripts/bench.sh full --only watch`.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || [ ! -x "$HOME/.cargo/bin/cargo" ] || PATH=$HOME/.cargo/bin:$PATH
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/esaas-target}

size=${1:-full}
[ $# -eq 0 ] || shift
# The tiny run builds what `make test` built already (the whole workspace with its tests:
# the same features, so nothing is compiled twice); the full run builds release binaries.
case $size in
  full) profile=release; build=(--release -p esaas -p esaas-bench -p esaas-tests --bins) ;;
  tiny) profile=debug; build=(--workspace --all-targets) ;;
  *) echo "usage: $0 full|tiny [esaas-bench flags...]" >&2; exit 2 ;;
esac

cargo build "${build[@]}"
# Assignment first: a failure inside "$(...)" would be lost as an argument of export.
db_url=${ESAAS_TEST_DATABASE_URL:-}
[ -n "$db_url" ] || db_url=$(scripts/ensure-postgres.sh)
export ESAAS_TEST_DATABASE_URL=$db_url

bin=$CARGO_TARGET_DIR/$profile
if [ "$size" = tiny ]; then
  out=${ESAAS_BENCH_OUT:-}
  [ -n "$out" ] || out=$(mktemp -d "${TMPDIR:-/tmp}/esaas-bench-tiny.XXXXXX")
  json=$out/bench-results.json
  markdown=$out/BENCHMARKS.md
else
  json=bench-results.json
  markdown=BENCHMARKS.md
fi
# Thousands of watch streams and workers' connections: ask for room if the limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$bin/esaas-bench" --size "$size" --out "$json" --markdown "$markdown" \
  --esaas-bin "$bin/esaas" --test-worker-bin "$bin/esaas-test-worker" "$@"
echo "bench: results in $json and $markdown" >&2
