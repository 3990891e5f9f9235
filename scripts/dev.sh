#!/usr/bin/env bash
# `make dev`: the local platform in the foreground. Starts PostgreSQL if needed, creates the
# database esaas_dev, builds esaas, starts moto (the EKS emulator) unless AWS_ENDPOINT_URL_EKS
# names one already, creates the configured EKS cluster there (`esaas eks-setup`) and execs
# `esaas serve --migrate`, so signals (Ctrl-C, a kill of the process group) reach the server
# itself. Never prompts: stdin may be /dev/null.
# Honours DATABASE_URL, ESAAS_LISTEN_ADDR, ESAAS_BOOTSTRAP_ADMIN_KEY and AWS_ENDPOINT_URL_EKS
# (DESIGN.md contract).
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

log "building esaas and esaasctl"
cargo build --bin esaas --bin esaasctl >&2
log "esaasctl: $CARGO_TARGET_DIR/debug/esaasctl (ESAAS_ADDR=$ESAAS_LISTEN_ADDR)"

# EKS: an emulator someone else started (AWS_ENDPOINT_URL_EKS), or moto of our own. Started
# after the build, so no long-lived helper (a compiler cache server, PostgreSQL) inherits the
# guard pipe below.
if [ -z "${AWS_ENDPOINT_URL_EKS:-}" ]; then
  tools_env=$(scripts/ensure-tools.sh --print-env)
  eval "$tools_env"
  py=$ESAAS_TEST_VENV/bin/python
  moto_port=5000
  "$py" -c 'import socket; socket.socket().bind(("127.0.0.1", 5000))' 2>/dev/null ||
    moto_port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p .dev
  rm -f .dev/moto.pid
  # moto lives as long as this shell, and then as long as the esaas it execs: it runs under
  # a guardian that holds the read end of a pipe whose write end stays open in this
  # process (exec keeps it). When the server exits for any reason the pipe closes and the
  # guardian stops moto. Everything stays in this process group, so a kill of the group
  # (Ctrl-C reaches esaas; moto, started with &, ignores SIGINT) stops them all at once.
  # shellcheck disable=SC2034 # the descriptor is the point: it must stay open
  exec {moto_guard}> >(
    "$ESAAS_TEST_VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" </dev/null >.dev/moto.log 2>&1 &
    pid=$!
    echo "$pid" >.dev/moto.pid
    trap 'kill "$pid" 2>/dev/null; wait "$pid"; exit 0' TERM HUP
    read -r _ || true
    kill "$pid" 2>/dev/null
    wait "$pid"
  )
  moto_guardian=$!
  # Until the exec below, this shell's own exit stops moto too.
  trap 'kill "$moto_guardian" 2>/dev/null' EXIT
  # Up to 30 s for moto to answer; sooner out if it dies (a zombie until the guardian goes).
  "$py" - "$moto_port" <<'PY' || { log "moto did not start; .dev/moto.log says:"; tail -n 20 .dev/moto.log >&2; exit 1; }
import sys, time, urllib.request
port = sys.argv[1]
def dead():
    try:
        pid = open(".dev/moto.pid").read().strip()
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except (OSError, IndexError):
        return False  # not started yet, or no /proc: rely on the deadline
deadline = time.monotonic() + 30
while time.monotonic() < deadline and not dead():
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
        sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit(1)
PY
  export AWS_ENDPOINT_URL_EKS=http://127.0.0.1:$moto_port
  log "moto (EKS emulator) on $AWS_ENDPOINT_URL_EKS, log in .dev/moto.log"
fi
# An emulator takes any credentials; keep whatever the caller configured.
if [ -z "${AWS_ACCESS_KEY_ID:-}" ] && [ -z "${AWS_PROFILE:-}" ]; then
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
fi
[ -n "${AWS_REGION:-}" ] || export AWS_REGION=${AWS_DEFAULT_REGION:-us-east-1}
log "creating the configured EKS cluster at $AWS_ENDPOINT_URL_EKS if it is missing"
"$CARGO_TARGET_DIR/debug/esaas" eks-setup

# Kubernetes and Elasticsearch: the project's stand-ins (tests/src), which the worker reaches
# with the real kube-rs client and over HTTPS with each cluster's own CA. A caller with a
# configuration of their own (ESAAS_CONFIG) brings their own Kubernetes instead.
if [ -z "${ESAAS_CONFIG:-}" ]; then
  log "building the Kubernetes and Elasticsearch stand-ins"
  cargo build -p esaas-tests --bin esaas-kube-standin --bin esaas-es-standin >&2
  free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  kube_port=$(free_port)
  es_port=$(free_port)
  mkdir -p .dev
  rm -f .dev/kubeconfig .dev/es-standin.log
  # Same lifetime as moto: a guardian stops both when the server (or this shell) goes.
  # shellcheck disable=SC2034 # the descriptor is the point: it must stay open
  exec {standins_guard}> >(
    "$CARGO_TARGET_DIR/debug/esaas-kube-standin" --port "$kube_port" --ready-after-ms 2000 \
      --kubeconfig .dev/kubeconfig </dev/null >.dev/kube-standin.log 2>&1 &
    kube_pid=$!
    ES_STANDIN_LISTEN_ADDR=127.0.0.1:$es_port ES_STANDIN_KUBE_URL=http://127.0.0.1:$kube_port \
      ES_STANDIN_DRAIN_DELAY_MS=3000 ES_STANDIN_S3_ENDPOINT="$AWS_ENDPOINT_URL_EKS" \
      "$CARGO_TARGET_DIR/debug/esaas-es-standin" </dev/null >.dev/es-standin.log 2>&1 &
    es_pid=$!
    trap 'kill "$kube_pid" "$es_pid" 2>/dev/null; wait; exit 0' TERM HUP
    read -r _ || true
    kill "$kube_pid" "$es_pid" 2>/dev/null
    wait
  )
  standins_guardian=$!
  trap 'kill ${moto_guardian:-} "$standins_guardian" 2>/dev/null' EXIT
  for _ in $(seq 1 150); do
    [ -s .dev/kubeconfig ] && grep -q listening .dev/es-standin.log 2>/dev/null && break
    sleep 0.2
  done
  [ -s .dev/kubeconfig ] || { log "the Kubernetes stand-in did not start:"; tail -n 20 .dev/kube-standin.log >&2; exit 1; }
  # Snapshots: a bucket in the same emulator's S3, which the Elasticsearch stand-in writes to.
  snapshot_bucket=esaas-dev-snapshots
  log "creating the snapshot bucket $snapshot_bucket at $AWS_ENDPOINT_URL_EKS if it is missing"
  "$ESAAS_TEST_VENV/bin/python" - "$AWS_ENDPOINT_URL_EKS" "$snapshot_bucket" <<'PY' || { log "could not create the snapshot bucket"; exit 1; }
import sys
import boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
if sys.argv[2] not in names:
    region = s3.meta.region_name
    where = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=sys.argv[2], **where)
PY
  printf '# Written by scripts/dev.sh: the local platform stand-ins.\n[kubernetes]\nkubeconfig = "%s"\n[elasticsearch]\nconnect_to = "127.0.0.1:%s"\n[snapshots]\nbucket = "%s"\ns3_endpoint = "%s"\n' \
    "$PWD/.dev/kubeconfig" "$es_port" "$snapshot_bucket" "$AWS_ENDPOINT_URL_EKS" >.dev/esaas.toml
  export ESAAS_CONFIG=$PWD/.dev/esaas.toml
  export ESAAS_WORKERS=${ESAAS_WORKERS:-1}
  log "Kubernetes stand-in on http://127.0.0.1:$kube_port (kubeconfig .dev/kubeconfig), Elasticsearch stand-in on 127.0.0.1:$es_port"
  log "in-process workers: $ESAAS_WORKERS"
fi
# Credentials stay out of the log: only what follows the '@'.
log "serving on $ESAAS_LISTEN_ADDR, database ${DATABASE_URL#*@}"
exec "$CARGO_TARGET_DIR/debug/esaas" serve --migrate
