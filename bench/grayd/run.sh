#!/usr/bin/env bash
# bench/grayd: grayd's change propagation to N parked long-poll watchers,
# side by side with etcd 3.4's watch (gRPC gateway, one watch per
# connection), alternated A B A B in one run; then grayd's registry
# (registrations, heartbeats) and its memory with 10,000 instances and
# 10,000 parked watchers at once.
#
# Prints `name: value` lines on stdout; notes go to stderr. Figures are
# medians over every round of every alternation (each round: one write,
# every watcher's latency from just before the write to its whole answer;
# the round's p50/p99/max). grayd and etcd run on 127.0.0.1 only, from a
# temporary directory removed on exit, and are stopped by PID.
#
# Environment: BUILD (build directory, default build), GRAYD (grayd binary),
# ETCD (default /usr/bin/etcd), BENCH_ALTERNATIONS (default 3),
# BENCH_GRAYD_ROUNDS (writes per run, default 5), BENCH_GRAYD_WATCHERS
# (default "1000 10000"), BENCH_GRAYD_HEARTBEAT_S (default 10),
# BENCH_GRAYD_CONNS (heartbeat connections, default 64).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$root/build}
grayd=${GRAYD:-$build/bin/grayd}
etcd=${ETCD:-/usr/bin/etcd}
watch_bin=$build/bin/bench_grayd_watch
reg_bin=$build/bin/bench_grayd_registry
alts=${BENCH_ALTERNATIONS:-3}
rounds=${BENCH_GRAYD_ROUNDS:-5}
counts=${BENCH_GRAYD_WATCHERS:-"1000 10000"}
hb_s=${BENCH_GRAYD_HEARTBEAT_S:-10}
hb_conns=${BENCH_GRAYD_CONNS:-64}

note() { echo "# $*" >&2; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

for b in "$grayd" "$watch_bin" "$reg_bin"; do
  if [ ! -x "$b" ]; then
    note "missing $b: build first (make all)"
    exit 1
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-grayd.XXXXXX")
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
# Stops a process this script started and forgets it (so a recycled PID is
# never signalled later).
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

# run_child OUT ERR CMD...: runs a load generator in the background and waits
# for it, so that INT or TERM stop it at once through cleanup.
run_child() {
  local out=$1 err=$2 pid rc=0
  shift 2
  "$@" >"$out" 2>"$err" &
  pid=$!
  pids+=("$pid")
  wait "$pid" || rc=$?
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  pids=("${keep[@]+"${keep[@]}"}")
  return "$rc"
}

# Every watcher is one connection on each side: 10,000 watchers need over
# 10,000 descriptors in the client and in the server. Children inherit.
need=25000
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
  ulimit -Hn "$need" 2>/dev/null || note "cannot raise the hard open-file limit above $hard (no CAP_SYS_RESOURCE); using $hard"
fi
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
note "open-file limit: $(ulimit -Sn)"

# A free port below the ephemeral range (the watchers' own ports come from
# there). Nothing listening on it is checked with bash's /dev/tcp.
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# start_grayd NAME: sets gpid, gport, gtoken.
start_grayd() {
  local dir=$tmp/$1
  mkdir -p "$dir"
  "$grayd" --dev --listen 127.0.0.1:0 --data "$dir/grayd.db" --max-watchers 20000 --max-conns 30000 \
    2>"$dir/grayd.log" &
  gpid=$!
  pids+=("$gpid")
  gport=""
  gtoken=""
  for _ in $(seq 100); do
    gport=$(sed -n 's|^grayd: listening on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$dir/grayd.log")
    gtoken=$(sed -n 's|^grayd: dev admin token: \([0-9a-f]*\)$|\1|p' "$dir/grayd.log")
    [ -n "$gport" ] && [ -n "$gtoken" ] && return 0
    kill -0 "$gpid" 2>/dev/null || break
    sleep 0.1
  done
  note "grayd did not start:"
  sed 's/^/#   /' "$dir/grayd.log" >&2
  return 1
}

# start_etcd: sets epid, eport. Returns 1 when etcd is missing or fails.
start_etcd() {
  if [ ! -x "$etcd" ]; then
    note "etcd not found at $etcd (Debian: apt-get install etcd-server, or scripts/deps.sh); no etcd peer"
    return 1
  fi
  local try cport pport
  for try in 1 2 3; do
    cport=$(free_port) && pport=$(free_port) || return 1
    [ "$cport" != "$pport" ] || continue
    rm -rf "$tmp/etcd"
    "$etcd" --name bench --data-dir "$tmp/etcd" \
      --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
      --initial-cluster "bench=http://127.0.0.1:$pport" --logger zap --log-level warn \
      >"$tmp/etcd.log" 2>&1 &
    epid=$!
    pids+=("$epid")
    for _ in $(seq 100); do
      kill -0 "$epid" 2>/dev/null || break
      if (exec 3<>"/dev/tcp/127.0.0.1/$cport" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 &&
        timeout 2 cat <&3) 2>/dev/null |
        grep -q '"health":"true"'; then
        eport=$cport
        note "etcd $("$etcd" --version 2>/dev/null | sed -n 's/^etcd Version: //p') on 127.0.0.1:$eport"
        return 0
      fi
      sleep 0.1
    done
    stop "$epid"
  done
  note "etcd did not start:"
  tail -5 "$tmp/etcd.log" | sed 's/^/#   /' >&2
  return 1
}

# --- Propagation: grayd and etcd alternated ---------------------------------
start_grayd prop
have_etcd=1
start_etcd || have_etcd=0
note "propagation: watchers $counts, $rounds writes per run, $alts alternations (grayd then etcd)"

# rounds/<sys>_<n> collects one "p50 p99 max notified" line per round.
mkdir -p "$tmp/rounds"
run_watch() { # sys n
  local sys=$1 n=$2 out rc=0
  local args=(--system "$sys" --watchers "$n" --rounds "$rounds")
  if [ "$sys" = grayd ]; then args+=(--port "$gport" --token "$gtoken"); else args+=(--port "$eport"); fi
  run_child "$tmp/watch.out" "$tmp/watch.err" "$watch_bin" "${args[@]}" || rc=$?
  out=$(cat "$tmp/watch.out")
  sed 's/^/#   /' "$tmp/watch.err" >&2
  [ "$rc" -eq 0 ] || note "$sys $n: bench_grayd_watch exited $rc"
  awk -v n="$n" '/^round / {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      print v["p50_ms"], v["p99_ms"], v["max_ms"], v["notified"], n
    }' <<<"$out" >>"$tmp/rounds/${sys}_$n"
  awk -v s="$sys" -v n="$n" '/^round / {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      p50 = p50 " " v["p50_ms"]; p99 = p99 " " v["p99_ms"]
    } END { printf "#   %s %s: p50_ms%s | p99_ms%s\n", s, n, p50, p99 }' <<<"$out" >&2
}

for a in $(seq "$alts"); do
  note "alternation $a"
  for n in $counts; do
    run_watch grayd "$n"
    [ "$have_etcd" = 0 ] || run_watch etcd "$n"
  done
done

col_median() { # file column
  if [ -s "$1" ]; then awk -v c="$2" '{print $c}' "$1" | median; else echo n/a; fi
}
missed() { # file n rounds-expected
  if [ -s "$1" ]; then
    awk -v n="$2" -v want="$3" '{m += n - $4; r++} END {print m + (want - r) * n}' "$1"
  else
    echo "$(($2 * $3))"
  fi
}
for n in $counts; do
  for sys in grayd etcd; do
    [ "$sys" = grayd ] || [ "$have_etcd" = 1 ] || continue
    f=$tmp/rounds/${sys}_$n
    echo "${sys}_propagation_${n}_p50_ms: $(col_median "$f" 1)"
    echo "${sys}_propagation_${n}_p99_ms: $(col_median "$f" 2)"
    echo "${sys}_propagation_${n}_max_ms: $(col_median "$f" 3)"
    echo "${sys}_propagation_${n}_missed: $(missed "$f" "$n" $((alts * rounds)))"
  done
  if [ "$have_etcd" = 1 ]; then
    g=$(col_median "$tmp/rounds/grayd_$n" 2)
    e=$(col_median "$tmp/rounds/etcd_$n" 2)
    awk -v g="$g" -v e="$e" -v n="$n" 'BEGIN {
      if (g == "n/a" || e == "n/a" || e == 0) print "grayd_vs_etcd_p99_ratio_" n ": n/a";
      else printf "grayd_vs_etcd_p99_ratio_%s: %.2f\n", n, g / e }'
  fi
done
note "ratio = grayd p99 / etcd p99 (below 1: grayd is faster)"

[ "$have_etcd" = 0 ] || stop "$epid"
stop "$gpid"

# --- Registry and memory: a fresh grayd ---------------------------------------
start_grayd registry
note "registry: 10000 instances over 100 services, heartbeats over $hb_conns connections for ${hb_s} s;"
note "the client runs on the same 2 cores and competes with grayd for CPU"
rc=0
run_child "$tmp/reg.out" "$tmp/reg.err" "$reg_bin" --port "$gport" --token "$gtoken" --pid "$gpid" \
  --instances 10000 --services 100 --conns "$hb_conns" --seconds "$hb_s" --watchers 10000 || rc=$?
out=$(cat "$tmp/reg.out")
sed 's/^/#   /' "$tmp/reg.err" >&2
[ "$rc" -eq 0 ] || note "bench_grayd_registry exited $rc"
grep -E '^[a-z0-9_]+: ' <<<"$out" || true
stop "$gpid"
