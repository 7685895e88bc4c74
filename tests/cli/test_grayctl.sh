#!/usr/bin/env bash
# grayctl check / eval as a user runs them: output, stderr and exit codes.
#   test_grayctl.sh GRAYCTL DATA_DIR
set -u
G=$1
D=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 passes=0

# expect NAME WANT_RC WANT_STDOUT_SUBSTRING WANT_STDERR_SUBSTRING -- CMD...
expect() {
  local name=$1 want_rc=$2 want_out=$3 want_err=$4
  shift 5
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local ok=1
  [ "$rc" -eq "$want_rc" ] || ok=0
  [ -z "$want_out" ] || grep -qF -- "$want_out" "$tmp/out" || ok=0
  [ -z "$want_err" ] || grep -qF -- "$want_err" "$tmp/err" || ok=0
  if [ $ok -eq 1 ]; then
    passes=$((passes + 1))
  else
    fails=$((fails + 1))
    echo "FAIL $name: rc=$rc (want $want_rc)"
    echo "  stdout: $(head -c 600 "$tmp/out")"
    echo "  stderr: $(head -c 600 "$tmp/err")"
  fi
}

P=$D/examples/policies.json
R=$D/bench/eval/reference-policy.json
INV=$D/tests/data/policy/invalid/unknown-operator/input

expect check-ok 0 "ok: 3 policies" "" -- "$G" check "$P"
expect check-one 0 "ok: 1 policies" "" -- "$G" check "$R"
expect check-invalid 2 "" "policies[0].rules[2].when.any[1].op: unknown operator \"equals\"" -- "$G" check "$INV"
expect check-missing 1 "" "cannot open" -- "$G" check "$tmp/nope.json"
expect check-usage 64 "" "usage: grayctl check FILE" -- "$G" check
expect check-help 0 "usage: grayctl check FILE" "" -- "$G" check --help

expect eval-exact 0 '{"service":"order","version":"v2","tag":"beta","rule":"testers"}' "" -- \
  "$G" eval --policies "$P" --service order --header 'X-Gray: 1'
expect eval-default 0 '{"service":"order","version":"v1","tag":null,"rule":null}' "" -- \
  "$G" eval --policies "$P" --service order
expect eval-mod 0 '"rule":"uid-20"' "" -- "$G" eval --policies "$P" --service order --param uid=1019
expect eval-mod-excluded-ip 0 '"rule":null' "" -- \
  "$G" eval --policies "$P" --service order --param uid=1019 --ip 10.9.3.4
expect eval-query-in-path 0 '"rule":"uid-20"' "" -- \
  "$G" eval --policies "$P" --service order --path '/api/orders?uid=1019&x=1'
expect eval-query 0 '"rule":"uid-20"' "" -- "$G" eval --policies "$P" --service order --query 'uid=10%319'
expect eval-lane 0 '{"service":"order-dal","version":"v2","tag":"beta","rule":"lane-beta"}' "" -- \
  "$G" eval --policies "$P" --service order-dal --tag beta
expect eval-cookie-header 0 '"rule":"testers"' "" -- \
  "$G" eval --policies "$P" --service order --header 'Cookie: a=1; gray=on'
expect eval-first-header-wins 0 '"rule":null' "" -- \
  "$G" eval --policies "$P" --service order --header 'X-Gray: 0' --header 'x-gray: 1'
expect eval-explain 0 '"trace":[{"rule":"testers","kind":"rule","depth":0,"result":false}' "" -- \
  "$G" eval --policies "$P" --service order --explain
expect eval-no-policy 3 "" 'no policy for service "payment"' -- \
  "$G" eval --policies "$P" --service payment
expect eval-invalid 2 "" "unknown operator" -- "$G" eval --policies "$INV" --service order
expect eval-no-service 64 "" "--service NAME is required" -- "$G" eval --policies "$P"
expect eval-bad-header 64 "" "--header expects 'Name: value'" -- \
  "$G" eval --policies "$P" --service order --header 'X-Gray'
expect eval-bad-cookie 64 "" "--cookie expects name=value" -- \
  "$G" eval --policies "$P" --service order --cookie gray
expect eval-unknown-flag 64 "" 'unknown option "--colour"' -- \
  "$G" eval --policies "$P" --service order --colour
expect eval-missing-value 64 "" "--ip needs a value" -- "$G" eval --policies "$P" --service order --ip
expect eval-help 0 "the FIRST value counts" "" -- "$G" eval --help
expect help 0 "Exit codes" "" -- "$G" --help
expect help-eval 0 "--explain" "" -- "$G" help eval
expect unknown-command 64 "" 'unknown command "frobnicate"' -- "$G" frobnicate
expect version 0 "grayctl " "" -- "$G" version

# Exactly one JSON object on stdout, parseable.
"$G" eval --policies "$R" --service order --header 'User-Agent: iPhone AppVersion/5.2' --explain >"$tmp/one" 2>/dev/null
if [ "$(wc -l <"$tmp/one")" -eq 1 ] && node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$tmp/one" 2>/dev/null; then
  passes=$((passes + 1))
elif ! command -v node >/dev/null; then
  [ "$(wc -l <"$tmp/one")" -eq 1 ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL one-json-line"; }
else
  fails=$((fails + 1))
  echo "FAIL one-json-object: $(head -c 300 "$tmp/one")"
fi

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
