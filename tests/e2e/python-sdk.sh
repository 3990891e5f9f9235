#!/usr/bin/env bash
# The Python package as a user gets it: build the wheel of sdk/python (code generated from
# proto/ by grpcio-tools at build time), install it into a directory of its own, and run
# tests/sdk/python/test_sdk.py from that install against a fresh `esaas serve` with a worker
# on the simulated world (so operations really finish). Each `PASS:`/`FAIL:` line of the
# script counts as one check here.
# Run by scripts/test.sh; alone: ESAAS_TEST_DATABASE_URL=$(scripts/ensure-postgres.sh) tests/e2e/python-sdk.sh
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"

python=$ESAAS_TEST_VENV/bin/python
[ -x "$python" ] || e2e_die "no Python venv at $ESAAS_TEST_VENV: run make test (or scripts/ensure-tools.sh)"
worker_bin=$(dirname "$ESAAS_BIN")/esaas-test-worker
[ -x "$worker_bin" ] || e2e_die "no $worker_bin: run make test (or cargo build -p esaas-tests --bins)"

# The build needs setuptools and grpcio-tools, which the venv has: no index needed.
wheels=$E2E_TMP/wheels site=$E2E_TMP/site
capture "$python" -m pip wheel -q --no-deps --no-build-isolation -w "$wheels" sdk/python
check_ok "the wheel builds from sdk/python"
wheel=$(ls "$wheels"/esaas_client-*.whl 2>/dev/null | head -n 1)
# Its dependencies (grpcio, protobuf, googleapis-common-protos, grpcio-status) are in the venv.
capture "$python" -m pip install -q --no-deps --target "$site" "$wheel"
check_ok "the wheel installs"

# A WORKER key, and a worker that drives the simulated world in the test database.
worker_key=$(PYTHONPATH=$site "$python" -c '
import sys
from esaas import Client, v1
c = Client(sys.argv[1], sys.argv[2])
print(c.create_api_key("", "python e2e worker", v1.admin_pb2.ROLE_WORKER).secret)
' "$ADDR" "$ADMIN_KEY") || e2e_die "could not create a worker key with the package"
ESAAS_CONTROL_PLANE_URL=http://$ADDR ESAAS_WORKER_KEY=$worker_key ESAAS_WORKER_ID=py-e2e \
  SIM_DATABASE_URL=$E2E_DATABASE_URL EXEC_POLL_MS=20 RUST_LOG=warn \
  "$worker_bin" >"$E2E_TMP/worker.log" 2>&1 </dev/null &
worker_pid=$!
trap 'kill "$worker_pid" 2>/dev/null; wait "$worker_pid" 2>/dev/null; e2e_cleanup' EXIT

client_rc=0
while IFS= read -r line; do
  case $line in
    PASS:*) pass "python: ${line#PASS: }" ;;
    FAIL:*) fail "python: ${line#FAIL: }" ;;
    EXIT:*) client_rc=${line#EXIT: } ;;
    *) echo "       $line" ;;
  esac
done < <(cd "$E2E_TMP" && PYTHONPATH=$site "$python" "$E2E_ROOT/tests/sdk/python/test_sdk.py" \
  --addr "$ADDR" --admin-key "$ADMIN_KEY" --expect-from "$site" --wheel "$wheel" \
  --database-url "$E2E_DATABASE_URL" 2>&1 || echo "EXIT: $?")

if [ "$client_rc" != 0 ] && [ "$E2E_FAILED" = 0 ]; then
  fail "test_sdk.py exited with status $client_rc without a failed check"
fi
[ "$E2E_PASSED" -gt 5 ] || fail "test_sdk.py reported too few checks"
finish
