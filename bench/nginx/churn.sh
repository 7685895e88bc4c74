#!/usr/bin/env bash
# bench/nginx/churn.sh — policy and upstream changes under load (issue 5).
#
# One stack on 127.0.0.1, as tests/nginx/agent_nginx.py builds it: grayd
# (--dev, SQLite in the run's directory), backends (one small nginx
# answering `return 200 "vN"` on one port per instance, each registered in
# grayd as an instance of service `order`), Debian's nginx with the gray
# module and one worker (`gray_route order` + `proxy_pass
# http://$gray_upstream`), and gray-agent rendering its upstreams and policy
# file. The policy is bench/eval's 10-rule reference policy (service
# `order`); the load is wrk with keepalive (`-t1 -c32`, GET /, which no rule
# matches, so the policy's `default` decides it). Each phase is its own wrk
# run; it starts CHURN_LEAD_S (3 s) before the first change and is stopped
# (SIGINT: wrk prints its summary) once the agent has reported the last
# change applied, plus 3 s (1 s after the propagation phase):
#
#  1. policy:   60 policy PUTs on grayd at 1/s, the default alternating
#               v1/v2 (so each is a real change, and the load moves between
#               backends). Expected: 0 non-2xx, 0 socket errors, no reload
#               (the master's SIGHUPs and "reconfiguring" lines in the error
#               log, and the worker's PID, before and after).
#  2. upstream: 60 registry changes at 1/s (an extra instance of v1
#               registered, deregistered, ...): the agent re-renders the
#               upstreams and reloads Nginx each time (SIGHUP).
#  3. reload:   the peer of 2 in the same run: 60 plain `nginx -s reload`
#               (same -p/-c) at 1/s, no change at all.
#  4. propagation: 50 policy PUTs, each timed from just before the PUT to
#               the first answer through Nginx from the new default's backend
#               (polled every 2 ms on a keep-alive connection, at most 5 s);
#               under wrk load, then (CHURN_IDLE=1, default) once more
#               without load as the reference.
#
# Prints `name: value` lines on stdout (churn_*), notes on stderr. Exits 0
# with `# skipped: ...` when the module, nginx, wrk, grayd, gray-agent or
# python3 is missing. Everything runs from a temporary directory removed on
# exit; processes are stopped by PID; every wait is bounded. About 4.5
# minutes. Each phase also prints the CPU that other tasks on the machine used
# meanwhile (`_other_work_cpu_pct`, as bench/nginx/run.sh measures it).
#
# Environment: BUILD (default build), GRAY_NGINX_MODULE, NGINX (default
# /usr/sbin/nginx), WRK (default /usr/bin/wrk), CHURN_CONNS (32),
# CHURN_THREADS (1), CHURN_CHANGES (60), CHURN_INTERVAL (seconds between
# changes, 1), CHURN_PROPAGATION_CHANGES (50), CHURN_CHECK_INTERVAL (the
# module's gray_policies_check_interval, 200ms as its default),
# CHURN_IDLE (1: also the propagation without load), CHURN_LEAD_S (3),
# CHURN_MIN_RELOAD_INTERVAL (the agent's --min-reload-interval; default its
# own, 1s), CHURN_KEEP (1: keep the run's directory and say where).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/bench/nginx
build=${BUILD:-$root/build}
case $build in /*) ;; *) build=$root/$build ;; esac
module=${GRAY_NGINX_MODULE:-$build/nginx/ngx_http_gray_module.so}
nginx=${NGINX:-/usr/sbin/nginx}
wrk=${WRK:-/usr/bin/wrk}
grayd=$build/bin/grayd
agent=$build/bin/gray-agent
conns=${CHURN_CONNS:-32}
threads=${CHURN_THREADS:-1}
changes=${CHURN_CHANGES:-60}
interval=${CHURN_INTERVAL:-1}
prop_changes=${CHURN_PROPAGATION_CHANGES:-50}
check_interval=${CHURN_CHECK_INTERVAL:-200ms}
idle=${CHURN_IDLE:-1}
lead=${CHURN_LEAD_S:-3}
keep=${CHURN_KEEP:-0}
min_reload=${CHURN_MIN_RELOAD_INTERVAL:-} # empty: the agent's default (1s)
policy_src=$root/bench/eval/reference-policy.json
agent_id=churn-edge

. "$here/proc.sh" # note, stop_pid, forget_pid, run_child, wait_port
summary=""
out() {
  echo "$1: $2"
  summary+="$1: $2"$'\n'
}
get() { printf %s "$summary" | awk -F': ' -v k="$1" '$1 == k {v = $2} END {print v}'; }

# --- What can run -------------------------------------------------------------
if [ ! -f "$module" ]; then
  note "skipped: the Nginx module is not built ($module is missing; 'make' builds it)"
  exit 0
fi
for b in "$nginx" "$wrk" "$grayd" "$agent"; do
  if [ ! -x "$b" ]; then
    note "skipped: $b is missing (scripts/deps.sh installs nginx and wrk; make builds grayd and gray-agent)"
    exit 0
  fi
done
for c in python3 sha256sum pgrep; do
  if ! command -v "$c" >/dev/null; then
    note "skipped: $c is missing"
    exit 0
  fi
done

# --- Processes and the temporary directory -----------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-churn.XXXXXX")
pids=() # started by this script, stopped in reverse order
cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]}"; done
  if [ "$keep" = 1 ]; then note "kept: $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drive() { # drive OUT CMD ARGS...: churn_drive.py, its notes passed on
  local o=$1 rc=0
  shift
  run_child "$o" "$tmp/drive.err" timeout 400 python3 "$here/churn_drive.py" "$@" || rc=$?
  sed 's/^/#   /' "$tmp/drive.err" | grep -v '^#   $' >&2 || true
  return "$rc"
}
val() { awk -F': ' -v k="$1" '$1 == k {print $2}' "$2"; }

wait_log() { # wait_log FILE REGEX PID: until the log has it (10 s)
  for _ in $(seq 200); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.05
  done
  note "timed out waiting for /$2/ in $1:"
  tail -n 20 "$1" | sed 's/^/#   /' >&2
  return 1
}
user_line=""
[ "$(id -u)" = 0 ] && user_line="user $(id -un) $(id -gn);" # workers read the run's directory

# --- grayd ----------------------------------------------------------------------
agent_token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "edge agent sha256:$(printf %s "$agent_token" | sha256sum | cut -d' ' -f1)" >"$tmp/tokens"
"$grayd" --dev --listen 127.0.0.1:0 --data "$tmp/grayd.db" --tokens "$tmp/tokens" \
  </dev/null >"$tmp/grayd.log" 2>&1 &
grayd_pid=$!
pids+=("$grayd_pid")
wait_log "$tmp/grayd.log" 'listening on http://127\.0\.0\.1:[0-9]+' "$grayd_pid" || exit 1
grayd_url=$(grep -Eo 'http://127\.0\.0\.1:[0-9]+' "$tmp/grayd.log" | head -n 1)
admin_token=$(sed -n 's/.*dev admin token: \([A-Za-z0-9]*\).*/\1/p' "$tmp/grayd.log" | tail -n 1)
export CHURN_GRAYD=$grayd_url GRAYLANE_TOKEN=$admin_token

# --- backends: one nginx, one port per instance -----------------------------------
read -r p_v1a p_v1b p_v2 p_v3 p_extra front_port <<<"$(python3 "$here/churn_drive.py" ports 6)"
mkdir -p "$tmp/backend" "$tmp/front/gray" "$tmp/front/tmp"
# ngx_preamble DIR TEMPDIR LEVEL: the main context and the start of the
# http block both nginx configurations share (one worker, in the
# foreground, keepalive, no access log, everything under DIR).
ngx_preamble() {
  cat <<EOF
$user_line
daemon off;
worker_processes 1;
pid $1/nginx.pid;
lock_file $1/nginx.lock;
error_log $1/error.log $3;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $2/body;
    proxy_temp_path $2/proxy;
    fastcgi_temp_path $2/fastcgi;
    uwsgi_temp_path $2/uwsgi;
    scgi_temp_path $2/scgi;
EOF
}
{
  ngx_preamble "$tmp/backend" "$tmp/backend" warn
  echo "    default_type text/plain;"
  for pv in "$p_v1a v1" "$p_v1b v1" "$p_v2 v2" "$p_v3 v3" "$p_extra v1"; do
    set -- $pv
    echo "    server { listen 127.0.0.1:$1 backlog=4096; location / { return 200 \"$2\\n\"; } }"
  done
  echo "}"
} >"$tmp/backend/nginx.conf"
"$nginx" -p "$tmp/backend/" -c "$tmp/backend/nginx.conf" -e "$tmp/backend/error.log" \
  </dev/null >"$tmp/backend/stdout.log" 2>&1 &
backend_pid=$!
pids+=("$backend_pid")
wait_port "$p_extra" "$backend_pid" "$tmp/backend/error.log" || exit 1

rev=$(python3 "$here/churn_drive.py" setup --policy "$policy_src" \
  --instances "v1-a:v1:$p_v1a,v1-b:v1:$p_v1b,v2-a:v2:$p_v2,v3-a:v3:$p_v3") || exit 1

# --- the Nginx under test, and the agent ---------------------------------------
f=$tmp/front
{
  echo "load_module $tmp/ngx_http_gray_module.so;"
  ngx_preamble "$f" "$f/tmp" notice
  cat <<EOF
    include $f/gray/gray-upstreams.conf;
    gray_policies $f/gray/gray-policies.json;
    gray_policies_check_interval $check_interval;
    server {
        listen 127.0.0.1:$front_port backlog=4096;
        location / {
            gray_route order;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Gray-Tag \$gray_tag;
            proxy_connect_timeout 2s;
            proxy_pass http://\$gray_upstream;
        }
        location = /gray_status { allow 127.0.0.1; deny all; gray_status; }
    }
}
EOF
} >"$f/nginx.conf"
# A copy of the module, so that a rebuild during the run changes nothing.
cp "$module" "$tmp/ngx_http_gray_module.so"
# The agent's nginx -t, with the error log of startup in the run's directory
# rather than Debian's compiled-in /var/log/nginx/error.log.
cat >"$tmp/nginx-t" <<EOF
#!/bin/sh
exec "$nginx" -e "$f/test-error.log" "\$@"
EOF
chmod +x "$tmp/nginx-t"
"$agent" --init --nginx-dir "$f/gray" >"$tmp/agent-init.log" 2>&1 || {
  note "gray-agent --init failed:"
  sed 's/^/#   /' "$tmp/agent-init.log" >&2
  exit 1
}
ngx=("$nginx" -p "$f/" -c "$f/nginx.conf" -e "$f/error.log")
"${ngx[@]}" </dev/null >"$f/stdout.log" 2>&1 &
master=$!
pids+=("$master")
wait_port "$front_port" "$master" "$f/error.log" || exit 1
GRAYLANE_TOKEN=$agent_token "$agent" --server "$grayd_url" --nginx-dir "$f/gray" --nginx-conf "$f/nginx.conf" \
  --nginx-prefix "$f/" --nginx "$tmp/nginx-t" --nginx-status "http://127.0.0.1:$front_port/gray_status" \
  --id "$agent_id" --cache "$tmp/agent.cache" --report-interval 2s \
  ${min_reload:+--min-reload-interval "$min_reload"} </dev/null >"$tmp/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
drive "$tmp/wait.out" wait-applied --agent "$agent_id" --rev "$rev" --timeout 20 || {
  note "the agent did not apply the first state; its log:"
  tail -n 20 "$tmp/agent.log" | sed 's/^/#   /' >&2
  exit 1
}
sleep 1.2 # past the agent's minimum reload interval after its first apply
note "stack: grayd $grayd_url, nginx 127.0.0.1:$front_port (1 worker, master $master, gray_policies_check_interval $check_interval), backends v1 $p_v1a $p_v1b, v2 $p_v2, v3 $p_v3, extra v1 $p_extra"
note "versions: $("$nginx" -v 2>&1 | sed 's/^nginx version: //'), $("$wrk" -v 2>&1 | head -n 1 | awk '{print "wrk " $2}'), $(python3 --version)"

# --- helpers for the phases ------------------------------------------------------
workers() { pgrep -P "$master" | sort -n | tr '\n' ' ' | sed 's/ $//'; }
log_size() { stat -c %s "$1"; }
since() { tail -c +"$(($2 + 1))" "$1"; } # since FILE OFFSET: what was appended

wrk_pid=""
load_start() { # load_start NAME: wrk in the background (stopped by load_stop; at most CAP s)
  local cap
  cap=$(awk -v l="$lead" -v n="$changes" -v i="$interval" 'BEGIN {printf "%d", l + n * i + 150}')
  "$wrk" -t"$threads" -c"$conns" -d"${cap}s" --latency --timeout 5s "http://127.0.0.1:$front_port/" \
    >"$tmp/wrk.$1.out" 2>"$tmp/wrk.$1.err" &
  wrk_pid=$!
  pids+=("$wrk_pid")
  sleep "$lead"
}
load_stop() { # load_stop NAME: SIGINT (wrk prints its summary), bounded wait
  local rc=0
  kill -INT "$wrk_pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$wrk_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" || rc=$?
  forget_pid "$wrk_pid"
  if [ "$rc" != 0 ] || ! grep -q 'requests in' "$tmp/wrk.$1.out"; then
    note "$1: wrk exited $rc:"
    sed 's/^/#   /' "$tmp/wrk.$1.out" "$tmp/wrk.$1.err" >&2
    return 1
  fi
}
# wrk_figures NAME: "requests rps p99_ms max_ms non2xx connect read write timeout"
wrk_figures() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /m$/) return substr(v, 1, length(v) - 1) * 60000
      if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
      return v + 0
    }
    /^ +Latency +[0-9]/ { mx = ms($4) }
    /^ +99%/ { p99 = ms($2) }
    / requests in / { n = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { gsub(/,/, ""); c = $4; r = $6; w = $8; t = $10 }
    /Non-2xx or 3xx responses:/ { bad = $5 }
    END { printf "%d %.0f %.2f %.2f %d %d %d %d %d\n", n, rps, p99, mx, bad, c, r, w, t }
  ' "$tmp/wrk.$1.out"
}
# phase_begin / phase_end NAME: what the phase did to Nginx and the agent.
hz=$(getconf CLK_TCK)
cpu_ticks() { python3 "$here/churn_drive.py" ticks --root $$; }
phase_begin() {
  read -r m0 o0 <<<"$(cpu_ticks)"
  t0=$(date +%s.%N)
  err0=$(log_size "$f/error.log")
  ag0=$(log_size "$tmp/agent.log")
  workers0=$(workers)
  drive "$tmp/status0.out" status --port "$front_port" || true
}
phase_end() { # phase_end NAME PREFIX
  local name=$1 p=$2 fig
  since "$f/error.log" "$err0" >"$tmp/$name.error.log"
  since "$tmp/agent.log" "$ag0" >"$tmp/$name.agent.log"
  workers1=$(workers)
  read -r m1 o1 <<<"$(cpu_ticks)"
  t1=$(date +%s.%N)
  drive "$tmp/status1.out" status --port "$front_port" || true
  read -r w_n w_rps w_p99 w_max w_bad w_c w_r w_w w_t <<<"$(wrk_figures "$name")"
  sighups=$(grep -c '(SIGHUP) received' "$tmp/$name.error.log" || true)
  reconf=$(grep -c 'reconfiguring' "$tmp/$name.error.log" || true)
  ngx_errors=$(grep -Ec '\[(error|crit|alert|emerg)\]' "$tmp/$name.error.log" || true)
  ag_errors=$(grep -Ec '^[^ ]+ (error|warn) ' "$tmp/$name.agent.log" || true)
  out "${p}_requests" "$w_n"
  out "${p}_rps" "$w_rps"
  out "${p}_p99_ms" "$w_p99"
  out "${p}_latency_max_ms" "$w_max"
  out "${p}_non2xx" "$w_bad"
  out "${p}_socket_errors" "$((w_c + w_r + w_w + w_t))"
  out "${p}_socket_errors_detail" "connect $w_c, read $w_r, write $w_w, timeout $w_t"
  out "${p}_reloads" "$sighups"
  if [ "$sighups" != 0 ]; then
    out "${p}_socket_errors_per_reload" "$(awk -v e="$((w_c + w_r + w_w + w_t))" -v n="$sighups" 'BEGIN {printf "%.1f", e / n}')"
  fi
  out "${p}_reconfiguring_lines" "$reconf"
  out "${p}_nginx_error_lines" "$ngx_errors"
  out "${p}_agent_warn_error_lines" "$ag_errors"
  # CPU the machine's other tasks used meanwhile (not this script's processes),
  # in % of one CPU: other work on a shared machine disturbs these figures.
  other=$(awk -v m="$((m1 - m0))" -v o="$((o1 - o0))" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" \
    -v hz="$hz" 'BEGIN {v = (m - o) / (s * hz) * 100; if (v < 0) v = 0; printf "%.0f", v}')
  out "${p}_other_work_cpu_pct" "$other"
  [ "$other" -le 15 ] || note "$name: other work on the machine used $other % of a CPU during this phase; its figures are disturbed"
  if [ "$ngx_errors" != 0 ]; then
    note "$name: nginx error log lines at error or above (first 5):"
    grep -E '\[(error|crit|alert|emerg)\]' "$tmp/$name.error.log" | head -n 5 | sed 's/^/#   /' >&2
  fi
  if [ "$ag_errors" != 0 ]; then
    note "$name: agent warnings/errors (first 5):"
    grep -E '^[^ ]+ (error|warn) ' "$tmp/$name.agent.log" | head -n 5 | sed 's/^/#   /' >&2
  fi
  # What the agent says each apply took (nginx -t, swap, reload, confirm).
  { grep -Eo 'in [0-9]+ ms \((reloaded|no reload)\)' "$tmp/$name.agent.log" || true; } | awk '{print $2}' | sort -n >"$tmp/$name.apply"
  if [ -s "$tmp/$name.apply" ]; then
    out "${p}_agent_applies" "$(wc -l <"$tmp/$name.apply")"
    out "${p}_agent_apply_p50_ms" "$(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' "$tmp/$name.apply")"
    out "${p}_agent_apply_max_ms" "$(tail -n 1 "$tmp/$name.apply")"
  fi
}

# --- warm-up ----------------------------------------------------------------------
"$wrk" -t"$threads" -c"$conns" -d2s --timeout 5s "http://127.0.0.1:$front_port/" >"$tmp/wrk.warmup.out" 2>&1 || true
read -r w_n _ _ _ w_bad w_c w_r w_w w_t <<<"$(wrk_figures warmup)"
note "warm-up: $w_n requests in 2 s, non-2xx $w_bad, socket errors $((w_c + w_r + w_w + w_t))"

# --- 1. policy changes ---------------------------------------------------------------
note "1/4 policy: $changes policy PUTs at 1 per ${interval} s under wrk -t$threads -c$conns"
phase_begin
load_start policy
rc=0
drive "$tmp/policy.out" policy --policy "$policy_src" --count "$changes" --interval "$interval" --agent "$agent_id" || rc=$?
sleep 3
load_stop policy || exit 1
out churn_policy_changes "$(val changes "$tmp/policy.out")"
phase_end policy churn_policy
g0=$(val policy_generation "$tmp/status0.out")
g1=$(val policy_generation "$tmp/status1.out")
out churn_policy_loads_by_worker "$((g1 - g0))"
out churn_policy_worker_pids "before $workers0, after $workers1"
out churn_policy_worker_unchanged "$([ "$workers0" = "$workers1" ] && echo yes || echo no)"
out churn_policy_put_p50_ms "$(val put_p50_ms "$tmp/policy.out")"
[ "$rc" = 0 ] || note "policy: the driver exited $rc (see above)"

# --- 2. upstream changes -------------------------------------------------------------
sleep 1.2
note "2/4 upstream: $changes registry changes at 1 per ${interval} s (agent renders, nginx -t, SIGHUP)"
phase_begin
load_start upstream
rc=0
drive "$tmp/upstream.out" upstream --extra "extra:v1:$p_extra" --count "$changes" --interval "$interval" --agent "$agent_id" || rc=$?
sleep 3
load_stop upstream || exit 1
out churn_upstream_changes "$(val changes "$tmp/upstream.out")"
phase_end upstream churn_upstream
[ "$rc" = 0 ] || note "upstream: the driver exited $rc (see above)"

# --- 3. plain reloads (the peer of 2) ------------------------------------------------
note "3/4 plain reload: $changes x nginx -s reload at 1 per ${interval} s, no change"
phase_begin
load_start reload
rc=0
drive "$tmp/reload.out" reload --count "$changes" --interval "$interval" -- "${ngx[@]}" -s reload || rc=$?
sleep 3
load_stop reload || exit 1
out churn_plain_reload_changes "$(val changes "$tmp/reload.out")"
phase_end reload churn_plain_reload
[ "$rc" = 0 ] || note "reload: the driver exited $rc (see above)"

# --- 4. propagation ----------------------------------------------------------------
prop() { # prop NAME PREFIX
  out "${2}_changes" "$(val changes "$tmp/$1.out")"
  out "${2}_missed" "$(val missed "$tmp/$1.out")"
  out "${2}_p50_ms" "$(val serve_p50_ms "$tmp/$1.out")"
  out "${2}_p99_ms" "$(val serve_p99_ms "$tmp/$1.out")"
  out "${2}_max_ms" "$(val serve_max_ms "$tmp/$1.out")"
  out "${2}_min_ms" "$(val serve_min_ms "$tmp/$1.out")"
  out "${2}_file_p50_ms" "$(val file_p50_ms "$tmp/$1.out")"
  out "${2}_file_max_ms" "$(val file_max_ms "$tmp/$1.out")"
  out "${2}_file_to_serve_p50_ms" "$(val file_to_serve_p50_ms "$tmp/$1.out")"
  out "${2}_file_to_serve_max_ms" "$(val file_to_serve_max_ms "$tmp/$1.out")"
  out "${2}_put_p50_ms" "$(val put_p50_ms "$tmp/$1.out")"
  out "${2}_poll_errors" "$(($(val poll_errors "$tmp/$1.out") + $(val poll_non200 "$tmp/$1.out")))"
}
sleep 1.2
note "4/4 propagation: $prop_changes policy PUTs, each until Nginx serves it (poll every 2 ms), under load"
phase_begin
load_start propagation
rc=0
drive "$tmp/propagation.out" propagation --policy "$policy_src" --count "$prop_changes" --port "$front_port" \
  --live "$f/gray/gray-policies.json" --agent "$agent_id" --samples "$tmp/propagation.samples" || rc=$?
sleep 1
load_stop propagation || exit 1
phase_end propagation churn_propagation_load
out churn_propagation_check_interval "$check_interval"
prop propagation churn_propagation
[ "$rc" = 0 ] || note "propagation: the driver exited $rc (see above)"
if [ "$idle" = 1 ]; then
  note "propagation again without load (reference)"
  rc=0
  drive "$tmp/propagation_idle.out" propagation --policy "$policy_src" --count "$prop_changes" --port "$front_port" \
    --live "$f/gray/gray-policies.json" --agent "$agent_id" --seed 7 || rc=$?
  prop propagation_idle churn_propagation_idle
  [ "$rc" = 0 ] || note "propagation (idle): the driver exited $rc (see above)"
fi

# --- the targets (issue 5), read on stderr -----------------------------------------
verdict() { if [ "$1" = 1 ]; then echo "met"; else echo "NOT met"; fi; }
ok=0
[ "$(get churn_policy_non2xx)" = 0 ] && [ "$(get churn_policy_socket_errors)" = 0 ] &&
  [ "$(get churn_policy_reloads)" = 0 ] && [ "$(get churn_policy_reconfiguring_lines)" = 0 ] &&
  [ "$(get churn_policy_worker_unchanged)" = yes ] && ok=1
note "target: $(get churn_policy_changes) policy changes -> 0 errors of any kind, no reload: $(verdict $ok)"
ok=0
[ "$(get churn_upstream_non2xx)" = 0 ] && ok=1
note "target: $(get churn_upstream_changes) upstream changes -> 0 non-2xx: $(verdict $ok) ($(get churn_upstream_non2xx))"
ok=0
[ "$(get churn_upstream_socket_errors)" -le "$(get churn_plain_reload_socket_errors)" ] && ok=1
if [ "$(get churn_upstream_reloads)" -lt "$(get churn_upstream_changes)" ]; then
  note "upstream: $(get churn_upstream_reloads) reloads for $(get churn_upstream_changes) changes: the agent allows one reload per --min-reload-interval, counted from the end of the previous reload, so it falls behind a 1/s schedule and a register/deregister pair that arrives while it waits coalesces into no change (agent.log: revisions skipped)"
fi
note "target: upstream-change socket errors <= plain reloads': $(verdict $ok) ($(get churn_upstream_socket_errors) with $(get churn_upstream_reloads) reloads, $(get churn_upstream_socket_errors_per_reload) per reload; plain: $(get churn_plain_reload_socket_errors) with $(get churn_plain_reload_reloads), $(get churn_plain_reload_socket_errors_per_reload) per reload)"
ok=0
awk -v v="$(get churn_propagation_p99_ms)" 'BEGIN {exit !(v + 0 <= 1000 && v != "nan")}' && [ "$(get churn_propagation_missed)" = 0 ] && ok=1
note "target: propagation p99 <= 1 s under load: $(verdict $ok) ($(get churn_propagation_p99_ms) ms; gray_policies_check_interval $check_interval)"
note "done; the agent logged $(grep -c ' info  revision ' "$tmp/agent.log" || true) applied revisions in all"
