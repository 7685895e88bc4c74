#!/usr/bin/env bash
# make demo, as a newcomer runs it: scripts/demo.sh starts everything (grayd,
# the chain, nginx + gray-agent), the printed curl commands route as they
# say, and scripts/demo-stop.sh stops every process it started.
#
#   demo_test.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gray-demo-test.XXXXXX")
export DEMO_STATE=$tmp/demo.state
passed=0
failed=0
cleanup() {
  scripts/demo-stop.sh "$build" >/dev/null 2>&1 || true
  rm -rf -- "$tmp"
}
trap cleanup EXIT
check() { # check WHAT CONDITION-COMMAND...
  local what=$1
  shift
  if "$@"; then passed=$((passed + 1)); else
    failed=$((failed + 1))
    echo "FAIL: $what"
  fi
}

scripts/demo.sh "$build" >"$tmp/out" 2>&1 || { cat "$tmp/out"; echo "0 passed, 1 failed"; exit 1; }
ngx=$(sed -n 's|^  nginx *http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$tmp/out")
check "the nginx address is printed" test -n "$ngx"
check "the curl commands go through nginx" grep -q "curl -s -H 'X-Gray: 1' http://127.0.0.1:$ngx/orders/42" "$tmp/out"
beta=$(curl -s -H 'X-Gray: 1' "http://127.0.0.1:$ngx/orders/42")
plain=$(curl -s "http://127.0.0.1:$ngx/orders/42")
check "a beta tester reaches order-dal v2" grep -q '"service": "order-dal", "version": "v2", "id": "[^"]*", "tag": "beta"' <<<"$beta"
check "nginx forwarded the tag to the gateway" grep -q '"service": "gateway", "version": "v1", "id": "[^"]*", "tag": "beta"' <<<"$beta"
check "a plain request reaches order-dal v1" grep -q '"service": "order-dal", "version": "v1", "id": "[^"]*", "tag": ""' <<<"$plain"
check "a second make demo says it runs" bash -c 'scripts/demo.sh "$0" | grep -q "already running"' "$build"
dir=$(cat "$DEMO_STATE")
mapfile -t pids < <(awk '{print $1}' "$dir/pids")
check "seven processes were recorded" test "${#pids[@]}" = 7
scripts/demo-stop.sh "$build" >"$tmp/stop" 2>&1
check "demo-stop stops them all" grep -q "stopped 7 processes" "$tmp/stop"
alive=0
for p in "${pids[@]}"; do
  if [ -d "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; then alive=$((alive + 1)); fi
done
check "no demo process is left" test "$alive" = 0
check "the demo directory is gone" test ! -e "$dir"
if [ "$failed" != 0 ]; then
  echo "---- make demo printed"; cat "$tmp/out"
  echo "---- make demo-stop printed"; cat "$tmp/stop" 2>/dev/null || true
  echo "---- beta answer: $beta"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
