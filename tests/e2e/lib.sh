# shellcheck shell=bash
# Sourced (never run) by the end-to-end scripts in this directory; not executable, so
# scripts/test.sh does not run it as a test.
#
# Sourcing it:
#   - creates a fresh database esaas_test_e2e_<random> on $ESAAS_TEST_DATABASE_URL,
#   - starts `$ESAAS_BIN serve --migrate` on a free port with a random bootstrap admin key
#     (log in a temp file), and waits until grpc.health.v1.Health/Check says SERVING,
#   - exports ADDR (host:port, plaintext h2c) and ADMIN_KEY (a platform-admin bearer key),
#   - on EXIT stops the server and drops the database.
# Then the script checks things with the helpers below and ends with `finish`, which prints
# `N passed, M failed` as its last line and exits non-zero if anything failed.
#
# Environment (scripts/test.sh sets all of it; run a script alone with
#   ESAAS_TEST_DATABASE_URL=$(scripts/ensure-postgres.sh) tests/e2e/grpcurl.sh):
#   ESAAS_TEST_DATABASE_URL  PostgreSQL URL of a role that may CREATE DATABASE (required)
#   ESAAS_BIN                the esaas binary (default $CARGO_TARGET_DIR/debug/esaas)
#   ESAAS_TEST_VENV          venv with grpcurl and grpcio (default ~/.cache/esaas-venv)
#   ESAAS_GRPCURL            grpcurl (default $ESAAS_TEST_VENV/bin/grpcurl)

set -euo pipefail

E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$E2E_ROOT"

e2e_die() {
  echo "e2e: $*" >&2
  exit 2
}

if [ -z "${ESAAS_TEST_DATABASE_URL:-}" ]; then
  e2e_die "ESAAS_TEST_DATABASE_URL is not set: run make test (or set it yourself:" \
    "ESAAS_TEST_DATABASE_URL=\$(scripts/ensure-postgres.sh) $0)"
fi
: "${ESAAS_BIN:=${CARGO_TARGET_DIR:-$HOME/.cache/esaas-target}/debug/esaas}"
: "${ESAAS_TEST_VENV:=$HOME/.cache/esaas-venv}"
: "${ESAAS_GRPCURL:=$ESAAS_TEST_VENV/bin/grpcurl}"
export ESAAS_BIN ESAAS_TEST_VENV ESAAS_GRPCURL
[ -x "$ESAAS_BIN" ] || e2e_die "no esaas binary at $ESAAS_BIN: run make test (or cargo build --bin esaas)"
[ -x "$ESAAS_GRPCURL" ] || e2e_die "no grpcurl at $ESAAS_GRPCURL: run make test (or scripts/ensure-tools.sh)"
command -v psql >/dev/null || e2e_die "psql is missing: run make test (or scripts/ensure-tools.sh)"
command -v python3 >/dev/null || e2e_die "python3 is missing"

# ---------------------------------------------------------------------------------------
# Checks.

E2E_PASSED=0
E2E_FAILED=0
E2E_FINISHED=

# pass MESSAGE: one check that held.
pass() {
  E2E_PASSED=$((E2E_PASSED + 1))
  echo "ok   - $1"
}

# fail MESSAGE [DETAIL...]: one check that did not hold; each DETAIL is printed indented.
fail() {
  E2E_FAILED=$((E2E_FAILED + 1))
  echo "FAIL - $1"
  shift
  local detail
  for detail in "$@"; do
    e2e_indent "$detail"
  done
}

# Prints text indented, at most 60 lines of it.
e2e_indent() {
  local text=$1 lines
  lines=$(printf '%s\n' "$text" | wc -l)
  printf '%s\n' "$text" | head -n 60 | sed 's/^/       | /'
  if [ "$lines" -gt 60 ]; then echo "       | ... ($((lines - 60)) more lines)"; fi
}

# check_eq MESSAGE EXPECTED ACTUAL
check_eq() {
  if [ "$2" = "$3" ]; then
    pass "$1"
  else
    fail "$1" "expected: $2" "got:      $3"
  fi
}

# check_contains MESSAGE NEEDLE HAYSTACK: HAYSTACK holds NEEDLE (a fixed string).
check_contains() {
  if [[ $3 == *"$2"* ]]; then
    pass "$1"
  else
    fail "$1" "expected output containing: $2" "got:" "$3"
  fi
}

# check_not_contains MESSAGE NEEDLE HAYSTACK
check_not_contains() {
  if [[ $3 != *"$2"* ]]; then
    pass "$1"
  else
    fail "$1" "expected output without: $2" "got:" "$3"
  fi
}

# capture COMMAND...: runs COMMAND (stdin passes through, so heredocs work), stores its
# stdout and stderr in OUT and its exit status in RC, and never fails.
OUT=
RC=0
capture() {
  RC=0
  OUT=$("$@" 2>&1) || RC=$?
}

# check_ok MESSAGE: the last `capture` exited 0.
check_ok() {
  if [ "$RC" = 0 ]; then
    pass "$1"
  else
    fail "$1" "expected exit status 0, got $RC; output:" "$OUT"
  fi
}

# check_err MESSAGE: the last `capture` exited non-zero.
check_err() {
  if [ "$RC" != 0 ]; then
    pass "$1"
  else
    fail "$1" "expected a non-zero exit status, got 0; output:" "$OUT"
  fi
}

# json_get PATH [JSON]: the value at a dotted PATH (`cluster.spec.nodeSets.0.count`) of
# JSON (default $OUT); strings bare, anything else as JSON; empty if absent or not JSON.
json_get() {
  python3 -c '
import json, sys
try:
    v = json.loads(sys.argv[2])
    for k in sys.argv[1].split("."):
        v = v[int(k)] if isinstance(v, list) else v[k]
except Exception:
    sys.exit(0)
print(v if isinstance(v, str) else json.dumps(v))
' "$1" "${2-$OUT}"
}

# finish: prints the server log on failure, then `N passed, M failed` as the last line;
# exits non-zero if a check failed.
finish() {
  E2E_FINISHED=1
  if [ "$E2E_FAILED" -gt 0 ]; then e2e_server_log; fi
  echo "$E2E_PASSED passed, $E2E_FAILED failed"
  [ "$E2E_FAILED" = 0 ] || exit 1
  exit 0
}

# ---------------------------------------------------------------------------------------
# The database and the server.

E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/esaas-e2e.XXXXXX")
E2E_LOG=$E2E_TMP/server.log
E2E_DB=
E2E_SERVER_PID=

e2e_random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

e2e_server_log() {
  [ -s "$E2E_LOG" ] || return 0
  echo "--- last lines of the server log ($E2E_LOG) ---"
  tail -n 40 "$E2E_LOG"
  echo "---"
}

e2e_psql() { PGCONNECT_TIMEOUT=10 psql -w -X -q -v ON_ERROR_STOP=1 "$@"; }

e2e_stop_server() {
  local pid=$E2E_SERVER_PID i
  E2E_SERVER_PID=
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  # Graceful shutdown first (it ends open calls), then no more patience.
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

e2e_cleanup() {
  local rc=$?
  set +e
  if [ -z "$E2E_FINISHED" ]; then
    # The script stopped before `finish` (set -e, a signal, or setup failed): say so in the
    # same summary form, so a reader of the last line never mistakes it for success.
    E2E_FAILED=$((E2E_FAILED + 1))
    echo "FAIL - the script stopped early (exit status $rc) after $E2E_PASSED checks passed"
    e2e_server_log
    echo "$E2E_PASSED passed, $E2E_FAILED failed"
    [ "$rc" != 0 ] || rc=1
  fi
  e2e_stop_server
  if [ -n "$E2E_DB" ]; then
    e2e_psql -c "drop database if exists \"$E2E_DB\" with (force)" "$ESAAS_TEST_DATABASE_URL" >&2 ||
      echo "e2e: could not drop database $E2E_DB (make clean-dbs drops leftovers)" >&2
  fi
  rm -rf "$E2E_TMP"
  exit "$rc"
}
trap e2e_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The URL of database $2 on the server of URL $1 (user, password, host and query kept).
e2e_db_url() {
  python3 -c '
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
' "$1" "$2"
}

e2e_free_port() {
  python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
'
}

# Health/Check answers SERVING (the first argument bounds one try, in seconds).
e2e_serving() {
  local out
  out=$("$ESAAS_GRPCURL" -plaintext -connect-timeout 1 -max-time "$1" "$ADDR" \
    grpc.health.v1.Health/Check 2>&1) || return 1
  [[ $out == *'"status": "SERVING"'* ]]
}

E2E_DB=esaas_test_e2e_$(e2e_random_hex 6)
e2e_psql -c "create database \"$E2E_DB\"" "$ESAAS_TEST_DATABASE_URL" ||
  { E2E_DB= && e2e_die "could not create database on $ESAAS_TEST_DATABASE_URL"; }
E2E_DATABASE_URL=$(e2e_db_url "$ESAAS_TEST_DATABASE_URL" "$E2E_DB")

ADMIN_KEY=e2e-admin-$(e2e_random_hex 16)
export ADMIN_KEY ADDR

# A port can be taken between picking and binding it: a few tries.
for e2e_try in 1 2 3; do
  ADDR=127.0.0.1:$(e2e_free_port)
  # ESAAS_CONFIG unset and no in-process workers: the built-in defaults, operations stay QUEUED.
  env -u ESAAS_CONFIG ESAAS_LISTEN_ADDR="$ADDR" DATABASE_URL="$E2E_DATABASE_URL" \
    ESAAS_BOOTSTRAP_ADMIN_KEY="$ADMIN_KEY" ESAAS_WORKERS=0 NO_COLOR=1 \
    "$ESAAS_BIN" serve --migrate >"$E2E_LOG" 2>&1 </dev/null &
  E2E_SERVER_PID=$!
  e2e_deadline=$((SECONDS + 60))
  until e2e_serving 2; do
    if ! kill -0 "$E2E_SERVER_PID" 2>/dev/null; then
      wait "$E2E_SERVER_PID" 2>/dev/null || true
      E2E_SERVER_PID=
      break
    fi
    if [ "$SECONDS" -ge "$e2e_deadline" ]; then
      echo "e2e: esaas did not answer SERVING on $ADDR within 60 s" >&2
      exit 1
    fi
    sleep 0.2
  done
  [ -z "$E2E_SERVER_PID" ] || break
  if [ "$e2e_try" = 3 ] || ! grep -q 'binding' "$E2E_LOG"; then
    echo "e2e: esaas serve exited during start-up" >&2
    exit 1
  fi
done
unset e2e_try e2e_deadline
echo "e2e: esaas serving on $ADDR (database $E2E_DB, log $E2E_LOG)"
