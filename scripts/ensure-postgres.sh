#!/usr/bin/env bash
# Makes a PostgreSQL server usable and prints, as the only line on stdout, the URL of a role
# that may CREATE DATABASE (every integration test creates its own database).
# Tried in order, cheapest first:
#   1. the caller's DATABASE_URL, if it answers;
#   2. Debian's cluster: installed, created and started as needed, with a role esaas/esaas
#      made over the Unix socket as the postgres OS user (127.0.0.1 may want a password);
#   3. a private server under ~/.cache/esaas-pg on port 54329 (no root or sudo needed).
# Progress goes to stderr. Nothing prompts: stdin may be /dev/null.
set -euo pipefail

log() { echo "ensure-postgres: $*" >&2; }
# -w: never ask for a password; the timeout keeps a dead host from hanging us.
query() { PGCONNECT_TIMEOUT=5 psql -w -X -Atq -c "$2" "$1" 2>/dev/null; }
answers() { [ "$(query "$1" 'select 1')" = 1 ]; }
can_create_db() { [ "$(query "$1" 'select rolcreatedb or rolsuper from pg_roles where rolname = current_user')" = t ]; }

# Root acts directly and becomes postgres with runuser; anyone else needs password-less sudo.
if [ "$(id -u)" = 0 ]; then
  as_root() { "$@"; }
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_root() { command -v sudo >/dev/null && sudo -n "$@"; }
  # sudo -n -u postgres, unless we are postgres already.
  as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else as_root -u postgres "$@"; fi; }
fi

# Functions below run as `if` conditions, where `set -e` is off: each step says `|| return 1`.
debian_cluster() {
  command -v pg_lsclusters >/dev/null || return 1
  # A running cluster if there is one, else the newest; create one if the machine has none.
  local line ver name port status
  line=$(pg_lsclusters -h | awk '$4 ~ /^online/' | sort -V | tail -n 1)
  [ -n "$line" ] || line=$(pg_lsclusters -h | sort -V | tail -n 1)
  if [ -z "$line" ]; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    log "creating cluster $ver/main"
    as_root pg_createcluster "$ver" main >&2 || return 1
    line=$(pg_lsclusters -h | sort -V | tail -n 1)
  fi
  read -r ver name port status _ <<<"$line"
  url="postgres://esaas:esaas@127.0.0.1:$port/postgres"
  if [[ $status != online* ]]; then
    log "starting cluster $ver/$name"
    # --skip-systemctl-redirect: works where systemd is not running (containers, CI).
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 || return 1
  fi
  can_create_db "$url" && return 0
  log "setting up role esaas (password esaas, CREATEDB) in cluster $ver/$name"
  # cd /: the postgres user may not be allowed into the caller's directory.
  (cd / && as_pg psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres) >&2 <<'SQL' || return 1
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'esaas') THEN CREATE ROLE esaas; END IF;
END $$;
ALTER ROLE esaas WITH LOGIN CREATEDB PASSWORD 'esaas';
SQL
  can_create_db "$url"
}

private_server() {
  local dir=$HOME/.cache/esaas-pg port=54329 bin
  url="postgres://esaas:esaas@127.0.0.1:$port/postgres"
  can_create_db "$url" && return 0
  # Debian keeps initdb and pg_ctl off PATH.
  bin=$(dirname "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1)")
  [ -x "$bin/initdb" ] || { log "no initdb found"; return 1; }
  if [ ! -s "$dir/data/PG_VERSION" ]; then
    log "initialising a private server in $dir"
    rm -rf "$dir/data" && mkdir -p "$dir" || return 1
    "$bin/initdb" -D "$dir/data" -U esaas --pwfile=<(echo esaas) \
      --auth-local=trust --auth-host=scram-sha-256 >/dev/null || return 1
  fi
  log "starting the private server on port $port"
  # Its socket lives in $dir: /var/run/postgresql is not writable for ordinary users.
  "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >&2 || return 1
  can_create_db "$url"
}

# A fresh Debian machine: the server package brings psql, pg_ctlcluster and a cluster `main`.
if ! command -v psql >/dev/null || ! command -v pg_lsclusters >/dev/null; then
  log "installing postgresql with apt"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 </dev/null ||
    log "could not install postgresql (needs apt, and root or password-less sudo)"
fi
if [ -n "${DATABASE_URL:-}" ] && command -v psql >/dev/null && answers "$DATABASE_URL"; then
  echo "$DATABASE_URL"
  exit 0
fi
if debian_cluster; then
  echo "$url"
  exit 0
fi
log "no usable Debian cluster (needs root or password-less sudo); trying a private server"
if private_server; then
  echo "$url"
  exit 0
fi
log "could not make PostgreSQL usable"
exit 1
