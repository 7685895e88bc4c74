#!/usr/bin/env bash
# make demo-stop: stop what scripts/demo.sh started, by the PIDs it recorded,
# and remove its temporary directory.
#
#   scripts/demo-stop.sh [BUILD_DIR]
#
# A PID is signalled only while it still runs the program recorded with it,
# so a PID reused by another process after a reboot is left alone.
set -euo pipefail

cd "$(dirname "$0")/.."
build=${1:-build}
state_file=${DEMO_STATE:-$build/demo.state} # the test of the demo uses its own

if [ ! -f "$state_file" ]; then
  echo "demo: not running"
  exit 0
fi
dir=$(cat "$state_file")

# Ours: the PID runs the recorded program (and has not exited: a zombie
# waiting for its parent to reap it counts as stopped).
ours() {
  local st comm
  read -r st comm < <(ps -o stat=,comm= -p "$1" 2>/dev/null) || return 1
  [ "${st#Z}" = "$st" ] && [ "$comm" = "$2" ]
}

pids=()
if [ -n "$dir" ] && [ -f "$dir/pids" ]; then
  # The services first (they deregister from grayd on the way out), grayd last.
  while read -r pid name; do
    [ "$name" = grayd ] && continue
    if ours "$pid" "$name"; then
      kill -TERM "$pid" && pids+=("$pid:$name")
    fi
  done <"$dir/pids"
  for i in $(seq 100); do
    alive=0
    for p in "${pids[@]+"${pids[@]}"}"; do ours "${p%%:*}" "${p#*:}" && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.05
  done
  while read -r pid name; do
    if [ "$name" = grayd ] && ours "$pid" grayd; then
      kill -TERM "$pid" && pids+=("$pid:$name")
      for i in $(seq 100); do
        ours "$pid" grayd || break
        sleep 0.05
      done
    fi
  done <"$dir/pids"
  for p in "${pids[@]+"${pids[@]}"}"; do
    if ours "${p%%:*}" "${p#*:}"; then
      echo "demo: ${p#*:} (PID ${p%%:*}) did not stop on SIGTERM; killing it"
      kill -KILL "${p%%:*}" 2>/dev/null || true
    fi
  done
fi

# Only a directory that looks like ours is removed.
case "$(basename "$dir")" in
  graylane-demo.*) [ -d "$dir" ] && rm -rf -- "$dir" ;;
esac
rm -f -- "$state_file"
echo "demo: stopped ${#pids[@]} processes"
