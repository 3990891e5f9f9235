#!/usr/bin/env bash
# `make dev`: the local platform in the foreground. Starts PostgreSQL if needed, creates the
# database esaas_dev, builds esaas and execs `esaas serve --migrate`, so signals (Ctrl-C,
# a kill of the process group) reach the server itself. Never prompts: stdin may be /dev/null.
# Honours DATABASE_URL, ESAAS_LISTEN_ADDR and ESAAS_BOOTSTRAP_ADMIN_KEY (DESIGN.md contract).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "dev: $*" >&2; }
command -v cargo >/dev/null || [ ! -x "$HOME/.cargo/bin/cargo" ] || PATH=$HOME/.cargo/bin:$PATH
# Outside the clone, so every clone builds incrementally.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/esaas-target}
export ESAAS_LISTEN_ADDR=${ESAAS_LISTEN_ADDR:-127.0.0.1:50051}

# with_db URL NAME: the same server and role, database NAME (query parameters kept).
with_db() {
  local url=${1%%\?*} query=
  [[ $1 != *\?* ]] || query="?${1#*\?}"
  local rest=${url#*://}
  echo "${url%%://*}://${rest%%/*}/$2$query"
}

admin_url=$(scripts/ensure-postgres.sh)
if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(with_db "$admin_url" esaas_dev)
  if [ "$(psql -w -X -Atq -c "select 1 from pg_database where datname = 'esaas_dev'" "$admin_url")" != 1 ]; then
    log "creating database esaas_dev"
    psql -w -X -q -c 'create database esaas_dev' "$admin_url"
  fi
  export DATABASE_URL
fi

# A bootstrap admin key made once per clone, so the commands it prints keep working.
if [ -z "${ESAAS_BOOTSTRAP_ADMIN_KEY:-}" ]; then
  key_file=.dev/admin-key
  if [ ! -s "$key_file" ]; then
    (umask 077 && mkdir -p .dev && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$key_file")
  fi
  chmod 600 "$key_file"
  ESAAS_BOOTSTRAP_ADMIN_KEY=$(cat "$key_file")
  export ESAAS_BOOTSTRAP_ADMIN_KEY
  log "platform-admin key in $key_file; to call the API as admin:"
  log "  export ESAAS_KEY=\$(cat $PWD/$key_file)"
  log "  grpcurl -plaintext -H \"authorization: Bearer \$ESAAS_KEY\" $ESAAS_LISTEN_ADDR list"
fi

log "building esaas"
cargo build --bin esaas >&2
# Credentials stay out of the log: only what follows the '@'.
log "serving on $ESAAS_LISTEN_ADDR, database ${DATABASE_URL#*@}"
exec "$CARGO_TARGET_DIR/debug/esaas" serve --migrate
