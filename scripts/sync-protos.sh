#!/usr/bin/env bash
# proto/ is the contract; crates/esaas-client/proto/ is its copy inside the SDK crate, so
# that the crate packages and builds on its own. `scripts/sync-protos.sh` refreshes the
# copy after a change to proto/; `--check` (run by make test) fails when they differ.
set -euo pipefail
cd "$(dirname "$0")/.."
copy=crates/esaas-client/proto
if [ "${1:-}" = --check ]; then
  if ! diff -r proto "$copy" >&2; then
    echo "sync-protos: $copy differs from proto/: run scripts/sync-protos.sh" >&2
    exit 1
  fi
  exit 0
fi
rm -rf "$copy"
cp -r proto "$copy"
echo "sync-protos: copied proto/ to $copy" >&2
