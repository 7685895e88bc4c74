#!/usr/bin/env bash
# grayctl against a real grayd on 127.0.0.1: every command, its output, its
# messages and its exit code, including the refusals (400, 401, 403, 404,
# 412, 413) and the transport failures.
#   test_grayctl_server.sh GRAYCTL GRAYD
set -u
G=$1
GD=$2
tmp=$(mktemp -d)
pids=()
unset GRAYLANE_SERVER GRAYLANE_TOKEN

stop_pid() { # stop_pid PID: kill it, reap it, forget it
  local p=$1 i
  kill "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  for i in "${!pids[@]}"; do
    [ "${pids[$i]}" = "$p" ] && unset "pids[$i]"
  done
  return 0
}
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

fails=0 passes=0
pass() { passes=$((passes + 1)); }
fail() {
  fails=$((fails + 1))
  echo "FAIL $*"
}

# expect NAME WANT_RC WANT_STDOUT_SUBSTRING WANT_STDERR_SUBSTRING -- CMD...
# Standard input comes from $STDIN (default /dev/null). Everything printed is
# also kept in all.log, which must never show a token.
expect() {
  local name=$1 want_rc=$2 want_out=$3 want_err=$4
  shift 5
  "$@" <"${STDIN:-/dev/null}" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  cat "$tmp/out" "$tmp/err" >>"$tmp/all.log"
  local ok=1
  [ "$rc" -eq "$want_rc" ] || ok=0
  [ -z "$want_out" ] || grep -qF -- "$want_out" "$tmp/out" || ok=0
  [ -z "$want_err" ] || grep -qF -- "$want_err" "$tmp/err" || ok=0
  if [ $ok -eq 1 ]; then
    pass
  else
    fail "$name: rc=$rc (want $want_rc)"
    echo "  stdout: $(head -c 600 "$tmp/out")"
    echo "  stderr: $(head -c 600 "$tmp/err")"
  fi
}

# check NAME COMMAND...: a plain condition (a test command, grep, ...).
check() {
  local name=$1
  shift
  if "$@"; then pass; else fail "$name"; fi
}

# wait_for PID SECONDS: wait for a background command; 124 when it did not
# finish in time (then it is killed).
wait_for() {
  local p=$1 limit=$(($2 * 10)) i
  for ((i = 0; i < limit; i++)); do
    if ! kill -0 "$p" 2>/dev/null; then
      wait "$p"
      local rc=$?
      stop_pid "$p"
      return $rc
    fi
    sleep 0.1
  done
  stop_pid "$p"
  return 124
}

# start_grayd NAME ARGS...: start grayd with ARGS and --listen 127.0.0.1:0,
# wait up to 5 s for "grayd: listening on URL"; sets GPID, GURL and GTOKEN
# (the dev admin token, when one is printed).
start_grayd() {
  local name=$1 listen=127.0.0.1:0 try i
  shift
  GPID='' GURL='' GTOKEN=''
  for try in 1 2 3; do
    "$GD" "$@" --listen "$listen" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    local p=$!
    pids+=("$p")
    for ((i = 0; i < 50; i++)); do
      GURL=$(sed -n 's/^grayd: listening on \(https\{0,1\}:\/\/[^ ]*\).*$/\1/p' "$tmp/$name.err" 2>/dev/null | head -n 1)
      [ -n "$GURL" ] && break
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    if [ -n "$GURL" ]; then
      GPID=$p
      GTOKEN=$(sed -n 's/^grayd: dev admin token: //p' "$tmp/$name.err" 2>/dev/null | head -n 1)
      return 0
    fi
    stop_pid "$p"
    # A grayd that does not take port 0 gets a random high port instead.
    grep -q "listen address" "$tmp/$name.err" || break
    echo "NOTE: grayd refused --listen $listen; trying another port" >&2
    listen=127.0.0.1:$((20000 + RANDOM % 20000))
  done
  echo "cannot start grayd ($name):" >&2
  cat "$tmp/$name.err" >&2
  return 1
}

# ---- Offline: help, usage, configuration errors ---------------------------

expect help 0 "policy put SERVICE FILE" "" -- "$G" --help
expect help-exit-codes 0 "5   auth" "" -- "$G" --help
for c in "policy" "policy put" "policy get" "policy history" "policy rollback" "policy delete" \
  explain instances register deregister heartbeat watch audit; do
  # shellcheck disable=SC2086 # split the subcommand on purpose
  expect "help-$c" 0 "Example" "" -- "$G" $c --help
done
expect help-cmd 0 "usage: grayctl watch" "" -- "$G" help watch
expect no-server 64 "" "no server given" -- "$G" policy get
expect bad-scheme 64 "" "must be an http:// or https:// URL" -- "$G" --server 127.0.0.1:7070 policy get
expect plain-remote 64 "" "refusing to send the token in clear text" -- \
  "$G" --server http://192.0.2.1:7070 --token secret-not-sent policy get
expect plain-any-addr 64 "" "refusing to send the token" -- "$G" --server http://0.0.0.0:9 --token x policy get
expect insecure-plain 1 "" "Connection refused" -- "$G" --server http://0.0.0.0:9 --token x --insecure-plain policy get
expect token-spaces 64 "" "the token contains spaces" -- "$G" --server http://127.0.0.1:9 --token 'a b' audit
expect ca-on-http 64 "" "--ca verifies an https:// server" -- \
  "$G" --server http://127.0.0.1:9 --ca "$tmp/none.pem" audit
expect usage-put 64 "" "FILE is required" -- "$G" --server http://127.0.0.1:9 policy put order
expect usage-sub 64 "" 'unknown subcommand "frob"' -- "$G" policy frob
expect usage-register 64 "" "--address A is required" -- \
  "$G" --server http://127.0.0.1:9 register order i-1 --port 80 --version v1
expect usage-port 64 "" "--port expects 1..65535" -- \
  "$G" register order i-1 --address 10.0.0.1 --port 0 --version v1
expect usage-option 64 "" 'unknown option "--colour"' -- "$G" audit --colour
expect usage-not-ours 64 "" "--port is not an option of deregister" -- "$G" deregister order i-1 --port 80
expect usage-stray-option 64 "" "--if-match is not an option of policy get" -- "$G" policy get --if-match 3
expect help-policy 0 "policy rollback SERVICE REV" "" -- "$G" help policy
expect usage-global-value 64 "" "--server needs a value" -- "$G" --server
expect usage-explain-header 64 "" "--header expects 'Name: value'" -- \
  "$G" --server http://127.0.0.1:9 explain order --header nocolon

# ---- One grayd in dev mode ---------------------------------------------------

mkdir -p "$tmp/d1"
if ! start_grayd d1 --dev --data "$tmp/d1/grayd.db"; then
  fail "grayd did not start"
  echo "$passes passed, $fails failed"
  exit 1
fi
S=$GURL
T=$GTOKEN
check dev-token test -n "$T"
GS=("$G" --server "$S" --token "$T")

cat >"$tmp/order.json" <<'EOF'
{"service": "order", "default": "v1", "rules": [
  {"name": "testers", "route": "v2", "tag": "beta",
   "when": {"any": [{"attr": "header:x-gray", "op": "eq", "value": "1"},
                    {"attr": "cookie:gray", "op": "eq", "value": "on"}]}},
  {"name": "uid-20", "route": "v2",
   "when": {"all": [{"attr": "param:uid", "op": "mod", "divisor": 100, "lt": 20},
                    {"not": {"attr": "ip", "op": "cidr", "value": ["10.9.0.0/16"]}}]}}]}
EOF
cat >"$tmp/order2.json" <<'EOF'
{"service": "order", "default": "v2", "rules": []}
EOF
cat >"$tmp/gateway.json" <<'EOF'
{"service": "gateway", "default": "v1", "rules": [{"name": "all", "route": "v1"}]}
EOF
cat >"$tmp/bad.json" <<'EOF'
{"service": "order", "default": "v1", "rules": [
  {"name": "r", "route": "v2", "when": {"attr": "header:x", "op": "equals", "value": "1"}}]}
EOF

# Policies: put.
expect put-created 0 "order: revision " "" -- "${GS[@]}" policy put order "$tmp/order.json"
check put-created-word grep -qF "(created)" "$tmp/out"
R1=$(sed -n 's/^order: revision \([0-9]*\).*/\1/p' "$tmp/out")
STDIN=$tmp/gateway.json expect put-stdin 0 "gateway: revision" "" -- "${GS[@]}" policy put gateway -
expect put-invalid 2 "" 'policy put order: 400 ESCHEMA at rules[0].when.op: unknown operator "equals"' -- \
  "${GS[@]}" policy put order "$tmp/bad.json"
expect put-wrong-service 2 "" "400 ESCHEMA at service" -- "${GS[@]}" policy put payment "$tmp/order.json"
echo 'not json' >"$tmp/notjson"
expect put-not-json 2 "" "400 E" -- "${GS[@]}" policy put order "$tmp/notjson"
expect put-directory 1 "" "cannot read" -- "${GS[@]}" policy put order "$tmp/d1"
expect put-missing-file 1 "" "cannot open" -- "${GS[@]}" policy put order "$tmp/nope.json"
expect put-if-match-0-conflict 4 "" "412 ECONFLICT" -- "${GS[@]}" policy put order "$tmp/order2.json" --if-match 0
expect put-if-match-stale 4 "" "412 ECONFLICT" -- \
  "${GS[@]}" policy put order "$tmp/order2.json" --if-match $((R1 + 1000))
expect put-if-match-ok 0 "(updated)" "" -- "${GS[@]}" policy put order "$tmp/order2.json" --if-match "$R1"
R2=$(sed -n 's/^order: revision \([0-9]*\).*/\1/p' "$tmp/out")
check put-revisions-grow test "${R2:-0}" -gt "${R1:-0}"
head -c 1100000 /dev/zero | tr '\0' a >"$tmp/big.pad"
{ printf '{"service": "order", "default": "v1", "rules": [], "x": "'; cat "$tmp/big.pad"; printf '"}'; } >"$tmp/big.json"
expect put-too-big 2 "" "413" -- "${GS[@]}" policy put order "$tmp/big.json"

# Policies: get.
expect get-list 0 "SERVICE  REVISION  DEFAULT  RULES" "" -- "${GS[@]}" policy get
check get-list-row grep -qE "^order +$R2 +v2 +0$" "$tmp/out"
check get-list-gateway grep -qE "^gateway +[0-9]+ +v1 +1$" "$tmp/out"
expect get-flags-after 0 "order" "" -- "$G" policy get --server "$S" --token "$T"
expect get-env 0 "order" "" -- env GRAYLANE_SERVER="$S" GRAYLANE_TOKEN="$T" "$G" policy get
expect get-flags-win 0 "order" "" -- \
  env GRAYLANE_SERVER=http://127.0.0.1:9 GRAYLANE_TOKEN=wrong "$G" --server "$S" --token "$T" policy get
expect get-set-json 0 '"policies"' "" -- "${GS[@]}" policy get --json
cp "$tmp/out" "$tmp/set.json"
expect get-set-checks 0 "ok: 2 policies" "" -- "$G" check "$tmp/set.json"
expect get-one 0 '"default": "v2"' "" -- "${GS[@]}" policy get order
cp "$tmp/out" "$tmp/got.json"
expect get-one-checks 0 "ok: 1 policies" "" -- "$G" check "$tmp/got.json"
expect get-one-json 0 '"service":"order"' "" -- "${GS[@]}" policy get order --json
# (grayd may wait for the end of a request head that never comes: then
# grayctl gives up after its 5 s connect limit, which covers the handshake.)
expect tls-to-plain 1 "" "https://127.0.0.1" -- "$G" --server "https://${S#http://}" --token "$T" policy get
expect get-missing 3 "" "policy get payment: 404 ENOTFOUND" -- "${GS[@]}" policy get payment

# Policies: history, rollback, delete.
expect history 0 "REVISION  OP   ACTOR" "" -- "${GS[@]}" policy history order
check history-rows test "$(grep -cE '^[0-9]+ +put ' "$tmp/out")" -eq 2
expect history-limit 0 "" "" -- "${GS[@]}" policy history order --limit 1
check history-limit-rows test "$(wc -l <"$tmp/out")" -eq 2
expect history-json 0 '"history"' "" -- "${GS[@]}" policy history order --json
expect rollback 0 "rolled back to revision $R1" "" -- "${GS[@]}" policy rollback order "$R1"
R3=$(sed -n 's/^order: revision \([0-9]*\).*/\1/p' "$tmp/out")
expect rollback-took 0 '"default": "v1"' "" -- "${GS[@]}" policy get order
expect rollback-unknown-rev 3 "" "404 ENOTFOUND" -- "${GS[@]}" policy rollback order 999999
expect rollback-if-match 4 "" "412 ECONFLICT" -- "${GS[@]}" policy rollback order "$R1" --if-match "$R1"
expect rollback-bad-rev 64 "" "REV must be a revision number" -- "${GS[@]}" policy rollback order abc
expect delete-if-match 4 "" "412 ECONFLICT" -- "${GS[@]}" policy delete gateway --if-match 999999
expect delete 0 "gateway: deleted at revision" "" -- "${GS[@]}" policy delete gateway
expect delete-again 3 "" "404 ENOTFOUND" -- "${GS[@]}" policy delete gateway
expect history-shows-delete 0 "delete" "" -- "${GS[@]}" policy history gateway

# Explain: the same decision as eval offline, plus grayd's revision.
expect explain 0 '"rule":"testers"' "" -- "${GS[@]}" explain order --header 'X-Gray: 1'
ex=$(cat "$tmp/out")
"$G" eval --policies "$tmp/order.json" --service order --header 'X-Gray: 1' --explain >"$tmp/ev" 2>&1
ev=$(cat "$tmp/ev")
check explain-equals-eval test "${ex%,\"revision\":*}" = "${ev%\}}"
check explain-one-line test "$(wc -l <"$tmp/out")" -eq 1
expect explain-params 0 '"rule":"uid-20"' "" -- "${GS[@]}" explain order --path '/o?uid=1019'
expect explain-ip 0 '"rule":null' "" -- "${GS[@]}" explain order --param uid=1019 --ip 10.9.3.4
expect explain-table 0 "header:x-gray eq" "" -- "${GS[@]}" explain order --cookie gray=on --explain-table
check explain-table-head grep -q "^RESULT  STEP" "$tmp/out"
expect explain-json 0 '"trace"' "" -- "${GS[@]}" explain order --json
expect explain-missing 3 "" "404 ENOTFOUND" -- "${GS[@]}" explain payment

# Registry.
expect register 0 "order/i-1: registered, revision" "" -- \
  "${GS[@]}" register order i-1 --address 10.0.0.7 --port 8080 --version v2 --ttl 30 --meta zone=a
expect register-2 0 "ttl 15 s" "" -- "${GS[@]}" register order i-2 --address 10.0.0.8 --port 8081 --version v1
expect register-invalid 2 "" "400 " -- "${GS[@]}" register order i-3 --address 10.0.0.9 --port 80 --version 'v 1'
expect instances 0 "SERVICE  INSTANCES  VERSIONS" "" -- "${GS[@]}" instances
check instances-row grep -qE "^order +2 +v1=1 v2=1$" "$tmp/out"
expect instances-svc 0 "10.0.0.7:8080" "" -- "${GS[@]}" instances order
check instances-svc-head grep -q "^ID   ADDRESS        VERSION  EXPIRES_IN_MS" "$tmp/out"
expect instances-version 0 "i-1" "" -- "${GS[@]}" instances order --version v2
check instances-version-filter test "$(grep -c 'i-2' "$tmp/out")" -eq 0
expect instances-json 0 '"zone":"a"' "" -- "${GS[@]}" instances order --json
expect instances-none 0 "no instances of payment" "" -- "${GS[@]}" instances payment
expect heartbeat 0 "order/i-1: alive, ttl 30 s" "" -- "${GS[@]}" heartbeat order i-1
expect heartbeat-unknown 3 "" "heartbeat order/i-9: 404 ENOTFOUND" -- "${GS[@]}" heartbeat order i-9
expect deregister 0 "order/i-2: deregistered" "" -- "${GS[@]}" deregister order i-2
expect deregister-again 3 "" "404 ENOTFOUND" -- "${GS[@]}" deregister order i-2

# Watch: events as they happen, a reset first when started without --since.
"${GS[@]}" instances --json >"$tmp/rev" 2>&1
R=$(sed -n 's/^{"revision":\([0-9]*\).*/\1/p' "$tmp/rev")
check watch-rev test -n "$R"
"${GS[@]}" watch --since "$R" --count 3 >"$tmp/w1" 2>"$tmp/w1.err" &
w1=$!
pids+=("$w1")
"${GS[@]}" watch --count 1 >"$tmp/w2" 2>"$tmp/w2.err" &
w2=$!
pids+=("$w2")
"${GS[@]}" watch --since "$R" --services pay --count 1 --json >"$tmp/w3" 2>"$tmp/w3.err" &
w3=$!
pids+=("$w3")
"${GS[@]}" watch --count 1 --json >"$tmp/w6" 2>"$tmp/w6.err" &
w6=$!
pids+=("$w6")
# The watchers without --since are in once they printed their reset.
for ((i = 0; i < 50; i++)); do
  [ -s "$tmp/w2" ] && [ -s "$tmp/w6" ] && break
  sleep 0.1
done
sleep 0.2
"${GS[@]}" policy put order "$tmp/order.json" >/dev/null 2>&1
"${GS[@]}" register pay p-1 --address 10.0.0.1 --port 80 --version v1 >/dev/null 2>&1
"${GS[@]}" deregister pay p-1 >/dev/null 2>&1
wait_for "$w1" 10
check watch-count-exit test $? -eq 0
cat "$tmp/w1" "$tmp/w1.err" "$tmp/w2" "$tmp/w2.err" "$tmp/w3" "$tmp/w3.err" >>"$tmp/all.log"
check watch-lines test "$(wc -l <"$tmp/w1")" -eq 3
check watch-policy grep -qE "^$((R + 1)) policy.put order$" "$tmp/w1"
check watch-instance grep -qE "^$((R + 2)) instance.put pay p-1$" "$tmp/w1"
check watch-delete grep -qE "^$((R + 3)) instance.delete pay p-1$" "$tmp/w1"
wait_for "$w2" 10
check watch-reset-exit test $? -eq 0
check watch-reset-line grep -qE "^$R reset snapshot \([0-9]+ policies, [0-9]+ services, store [^)]+\)$" "$tmp/w2"
check watch-reset-then-event grep -qE "^$((R + 1)) policy.put order$" "$tmp/w2"
wait_for "$w3" 10
check watch-filter-exit test $? -eq 0
check watch-filter-json grep -qF "{\"revision\":$((R + 2)),\"type\":\"instance.put\",\"service\":\"pay\",\"id\":\"p-1\"" \
  "$tmp/w3"
check watch-filter-one test "$(wc -l <"$tmp/w3")" -eq 1
wait_for "$w6" 10
check watch-json-exit test $? -eq 0
cat "$tmp/w6" "$tmp/w6.err" >>"$tmp/all.log"
check watch-json-reset test "$(head -n 1 "$tmp/w6" | grep -cF '"reset":true')" -eq 1
check watch-json-event grep -qF "{\"revision\":$((R + 1)),\"type\":\"policy.put\",\"service\":\"order\"" "$tmp/w6"
check watch-json-lines test "$(wc -l <"$tmp/w6")" -eq 2
"${GS[@]}" watch --since $((R + 3)) >"$tmp/w4" 2>&1 &
w4=$!
pids+=("$w4")
sleep 0.5
kill -INT "$w4"
wait_for "$w4" 3
check watch-sigint-clean test $? -eq 0
"${GS[@]}" watch --since $((R + 3)) >"$tmp/w5" 2>&1 &
w5=$!
pids+=("$w5")
sleep 0.5
kill -TERM "$w5"
wait_for "$w5" 3
check watch-sigterm-clean test $? -eq 0

# Audit, and the token refusals (which are audited too).
expect wrong-token 5 "" "grayd does not accept the token (401" -- "$G" --server "$S" --token wrong-token audit
expect wrong-token-write 5 "" "policy delete order: grayd does not accept the token (401" -- \
  "$G" --server "$S" --token wrong-token policy delete order
expect no-token 5 "" "no token given" -- "$G" --server "$S" policy get
expect audit 0 "TIME" "" -- "${GS[@]}" audit
check audit-head grep -qE "^TIME +TOKEN +OP +TARGET +STATUS +MESSAGE$" "$tmp/out"
check audit-put grep -qE " policy.put +order +200" "$tmp/out"
check audit-refused grep -qE " 412 " "$tmp/out"
expect audit-limit 0 "" "" -- "${GS[@]}" audit --limit 2
check audit-limit-rows test "$(wc -l <"$tmp/out")" -eq 3
expect audit-json 0 '"audit"' "" -- "${GS[@]}" audit --json
check audit-401 grep -q '"status":401' "$tmp/out"

# Connection refused: the same address once grayd is gone.
stop_pid "$GPID"
expect refused 1 "" "grayctl: cannot connect to $S: Connection refused (is grayd running? set --server or GRAYLANE_SERVER)" -- \
  "${GS[@]}" policy get

# ---- 403: a read token may not write ---------------------------------------

mkdir -p "$tmp/d2"
RT=readtoken-$RANDOM$RANDOM$RANDOM
AT=admintoken-$RANDOM$RANDOM$RANDOM
{
  echo "ops admin sha256:$(printf %s "$AT" | sha256sum | cut -d' ' -f1)"
  echo "viewer read sha256:$(printf %s "$RT" | sha256sum | cut -d' ' -f1)"
} >"$tmp/d2/tokens"
if start_grayd d2 --tokens "$tmp/d2/tokens" --data "$tmp/d2/grayd.db"; then
  expect read-may-read 0 "no policies" "" -- "$G" --server "$GURL" --token "$RT" policy get
  # An empty store (revision 0): watch prints at most one reset, never a
  # stream of them, and then the first change.
  "$G" --server "$GURL" --token "$AT" watch >"$tmp/w7" 2>&1 &
  w7=$!
  pids+=("$w7")
  sleep 1.5
  "$G" --server "$GURL" --token "$AT" policy put order "$tmp/order.json" >/dev/null 2>&1
  sleep 1
  kill -TERM "$w7"
  wait_for "$w7" 3
  check watch-empty-store-exit test $? -eq 0
  check watch-empty-store-no-spin test "$(grep -c " reset snapshot" "$tmp/w7")" -le 1
  check watch-empty-store-event grep -qE "^[0-9]+ policy.put order$" "$tmp/w7"
  expect read-may-not-write 5 "" "policy put order: the token's role does not allow this (403" -- \
    "$G" --server "$GURL" --token "$RT" policy put order "$tmp/order.json"
  expect admin-may-write 0 "(updated)" "" -- "$G" --server "$GURL" --token "$AT" policy put order "$tmp/order.json"
  stop_pid "$GPID"
else
  fail "grayd with --tokens did not start"
fi

# ---- HTTPS with --ca ---------------------------------------------------------

if command -v openssl >/dev/null; then
  mkdir -p "$tmp/d3"
  if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$tmp/d3/key.pem" -out "$tmp/d3/cert.pem" >/dev/null 2>&1 &&
    start_grayd d3 --dev --data "$tmp/d3/grayd.db" --tls-cert "$tmp/d3/cert.pem" --tls-key "$tmp/d3/key.pem"; then
    check tls-url test "${GURL#https://}" != "$GURL"
    expect tls-untrusted 1 "" "is not trusted" -- "$G" --server "$GURL" --token "$GTOKEN" policy get
    expect tls-ca 0 "no policies" "" -- "$G" --server "$GURL" --token "$GTOKEN" --ca "$tmp/d3/cert.pem" policy get
    expect tls-plain-to-tls 1 "" "did not answer properly" -- \
      "$G" --server "http://${GURL#https://}" --token "$GTOKEN" policy get
    stop_pid "$GPID"
  else
    fail "grayd with TLS did not start"
  fi
else
  echo "SKIP https tests: no openssl"
fi

# ---- Answers over the cap, from something that is not grayd -----------------

if command -v python3 >/dev/null; then
  mkdir -p "$tmp/www/v1"
  head -c $((17 << 20)) /dev/zero >"$tmp/www/v1/policies"
  python3 -u -m http.server --bind 127.0.0.1 --directory "$tmp/www" 0 >"$tmp/www.log" 2>&1 &
  wp=$!
  pids+=("$wp")
  wurl=''
  for ((i = 0; i < 50; i++)); do
    wurl=$(sed -n 's/.*Serving HTTP on [0-9.]* port \([0-9]*\).*/http:\/\/127.0.0.1:\1/p' "$tmp/www.log" | head -n 1)
    [ -n "$wurl" ] && break
    sleep 0.1
  done
  if [ -n "$wurl" ]; then
    expect body-cap 1 "" "larger than 16 MiB" -- "$G" --server "$wurl" --token x policy get --json
    expect not-grayd 3 "" "404 HTTP" -- "$G" --server "$wurl" --token x audit
  else
    fail "python3 http.server did not start"
  fi
  stop_pid "$wp"
else
  echo "SKIP body cap test: no python3"
fi

# The tokens never appear in anything grayctl printed.
for tok in "$T" "$RT" "$AT" secret-not-sent; do
  [ -n "$tok" ] || continue
  check "token-not-printed" test "$(grep -cF -- "$tok" "$tmp/all.log")" -eq 0
done

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
