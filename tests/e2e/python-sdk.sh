#!/usr/bin/env bash
# A second language from proto/ alone: tests/sdk/python/esaas_client.py generates Python
# code from proto/ with grpc_tools.protoc and drives a fresh `esaas serve` with it. Each of
# its `PASS:`/`FAIL:` lines counts as one check here.
# Run by scripts/test.sh; alone: ESAAS_TEST_DATABASE_URL=$(scripts/ensure-postgres.sh) tests/e2e/python-sdk.sh
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"

python=$ESAAS_TEST_VENV/bin/python
[ -x "$python" ] || e2e_die "no Python venv at $ESAAS_TEST_VENV: run make test (or scripts/ensure-tools.sh)"

client_rc=0
while IFS= read -r line; do
  case $line in
    PASS:*) pass "python: ${line#PASS: }" ;;
    FAIL:*) fail "python: ${line#FAIL: }" ;;
    EXIT:*) client_rc=${line#EXIT: } ;;
    *) echo "       $line" ;;
  esac
done < <("$python" tests/sdk/python/esaas_client.py --addr "$ADDR" --admin-key "$ADMIN_KEY" 2>&1 ||
  echo "EXIT: $?")

# A non-zero exit status arrives as the last line (EXIT: n): a crash without a FAIL line
# still counts as a failure.
if [ "$client_rc" != 0 ] && [ "$E2E_FAILED" = 0 ]; then
  fail "esaas_client.py exited with status $client_rc without a failed check"
fi
[ "$E2E_PASSED" -gt 0 ] || fail "esaas_client.py reported no checks"
finish
