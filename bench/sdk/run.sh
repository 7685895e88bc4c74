#!/usr/bin/env bash
# bench/sdk: the client SDK (lib/client).
#   1. decide + pick in-process, single thread, on a snapshot followed from a
#      real grayd, against the bare core gray_decide on the same policy and
#      requests in the same run (bench_sdk_decide);
#   2. propagation: a PUT on grayd until the SDK in this process serves the
#      new revision, 200 PUTs, with grayd's own PUT answer time
#      (bench_sdk_propagation), against the same grayd;
#   3. decide + pick from 8 reader threads while a writer swaps snapshots
#      1,000 times a second for 3 s, no server (bench_sdk_mt).
#
# Prints `name: value` lines on stdout; notes go to stderr. grayd runs on
# 127.0.0.1 only (--dev, port 0), from a temporary directory removed on
# exit, and is stopped by PID. Every loop is bounded; each harness exits
# non-zero on a wrong answer, a miss or a leak, and this script says so.
#
# Environment: BUILD (build directory, default build), GRAYD (grayd binary),
# BENCH_SDK_ROUNDS (decide rounds, default 9), BENCH_SDK_PASSES (passes over
# the 2,000 requests per round, default 50), BENCH_SDK_PUTS (default 200),
# BENCH_SDK_READERS (default 8), BENCH_SDK_SECONDS (default 3),
# BENCH_SDK_SWAPS_PER_S (default 1000).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$root/build}
grayd=${GRAYD:-$build/bin/grayd}
eval_dir=$root/bench/eval
decide_bin=$build/bin/bench_sdk_decide
prop_bin=$build/bin/bench_sdk_propagation
mt_bin=$build/bin/bench_sdk_mt

note() { echo "# $*" >&2; }

for b in "$grayd" "$decide_bin" "$prop_bin" "$mt_bin"; do
  if [ ! -x "$b" ]; then
    note "missing $b: build first (make all)"
    exit 1
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-sdk.XXXXXX")
pids=()
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# Stops a process this script started and forgets it.
stop() {
  local keep=() p
  stop_pid "$1"
  for p in "${pids[@]+"${pids[@]}"}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]+"${keep[@]}"}")
}
cleanup() {
  for p in "${pids[@]+"${pids[@]}"}"; do stop_pid "$p"; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_child NAME CMD...: runs a harness in the background (so INT or TERM
# stop it at once through cleanup), passes its name: value lines to stdout
# and its notes to stderr. Returns its exit status.
run_child() {
  local name=$1 pid rc=0
  shift
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!
  pids+=("$pid")
  wait "$pid" || rc=$?
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  pids=("${keep[@]+"${keep[@]}"}")
  sed 's/^/#   /' "$tmp/$name.err" >&2
  grep -E '^[a-z0-9_]+: ' "$tmp/$name.out" || true
  [ "$rc" -eq 0 ] || note "$name exited $rc"
  return "$rc"
}

# start_grayd: sets gpid, gurl, and GRAYLANE_TOKEN (exported to the
# harnesses, so the token never appears on a command line).
start_grayd() {
  local dir=$tmp/grayd port token
  mkdir -p "$dir"
  "$grayd" --dev --listen 127.0.0.1:0 --data "$dir/grayd.db" 2>"$dir/grayd.log" &
  gpid=$!
  pids+=("$gpid")
  for _ in $(seq 100); do
    port=$(sed -n 's|^grayd: listening on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$dir/grayd.log")
    token=$(sed -n 's|^grayd: dev admin token: \([0-9a-f]*\)$|\1|p' "$dir/grayd.log")
    if [ -n "$port" ] && [ -n "$token" ]; then
      gurl=http://127.0.0.1:$port
      export GRAYLANE_TOKEN=$token
      return 0
    fi
    kill -0 "$gpid" 2>/dev/null || break
    sleep 0.1
  done
  note "grayd did not start:"
  sed 's/^/#   /' "$dir/grayd.log" >&2
  return 1
}

status=0
start_grayd
note "grayd on $gurl (pid $gpid)"
run_child decide "$decide_bin" --url "$gurl" --rounds "${BENCH_SDK_ROUNDS:-9}" \
  --passes "${BENCH_SDK_PASSES:-50}" "$eval_dir" || status=1
run_child propagation "$prop_bin" --url "$gurl" --puts "${BENCH_SDK_PUTS:-200}" "$eval_dir" || status=1
stop "$gpid"
unset GRAYLANE_TOKEN

run_child mt "$mt_bin" --readers "${BENCH_SDK_READERS:-8}" --seconds "${BENCH_SDK_SECONDS:-3}" \
  --swaps-per-s "${BENCH_SDK_SWAPS_PER_S:-1000}" "$eval_dir" || status=1
exit "$status"
