# bench/nginx/proc.sh — process helpers shared by run.sh and churn.sh
# (sourced). The caller keeps the PIDs it started in the array `pids` and
# stops them from its EXIT trap with stop_pid.

note() { echo "# $*" >&2; }

# stop_pid PID [SIGNAL]: the signal (TERM), up to 10 s, then KILL; reaped.
stop_pid() {
  local pid=$1 sig=${2:-TERM}
  kill -"$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# forget_pid PID: out of `pids` (it was waited for).
forget_pid() {
  local keep_=() p
  for p in "${pids[@]+"${pids[@]}"}"; do [ "$p" = "$1" ] || keep_+=("$p"); done
  pids=("${keep_[@]+"${keep_[@]}"}")
}

# run_child OUT ERR CMD...: a client in the background, waited for, so that
# INT or TERM stop it at once through the caller's cleanup. Returns its exit
# status.
run_child() {
  local o=$1 e=$2 pid rc=0
  shift 2
  "$@" >"$o" 2>"$e" &
  pid=$!
  pids+=("$pid")
  wait "$pid" || rc=$?
  forget_pid "$pid"
  return "$rc"
}

# wait_port PORT PID LOG: until something listens on 127.0.0.1:PORT (10 s),
# or PID exits; on failure the tail of LOG goes to stderr.
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  note "nothing listens on 127.0.0.1:$1; log:"
  tail -n 20 "$3" 2>/dev/null | sed 's/^/#   /' >&2
  return 1
}
