#!/usr/bin/env bash
# Crash durability of grayd's SQLite store: start a writer of 1,000 policy
# revisions, kill it with SIGKILL at a random point (after a random 5-300 ms
# in odd rounds, after a random number of acknowledged writes in even
# rounds), then check that every acknowledged revision survived and the
# database is intact.
#   store_crash.sh STORE_CRASH_WRITER [ROUNDS]
set -u
writer=${1:?usage: store_crash.sh STORE_CRASH_WRITER [ROUNDS]}
rounds=${2:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/store-crash.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

pass=0
fail=0
for ((i = 1; i <= rounds; i++)); do
  dir=$work/$i
  mkdir "$dir"
  "$writer" "$dir/store.db" >"$dir/acked" 2>"$dir/writer.err" &
  pid=$!
  if ((i % 2)); then
    ms=$((5 + RANDOM % 296))
    how="after ${ms} ms"
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
  else
    want=$((1 + RANDOM % 999))
    how="once ${want} writes were acknowledged"
    # Poll the acknowledgements; give up after about 60 s or when the writer
    # is gone.
    for ((t = 0; t < 12000; t++)); do
      n=$(wc -l <"$dir/acked")
      ((n >= want)) && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.005
    done
  fi
  kill -KILL "$pid" 2>/dev/null
  { wait "$pid"; } 2>/dev/null # quiet the shell's "Killed" notice
  status=$?
  acked=$(awk '/^[0-9]+$/ { m = $1 } END { print m + 0 }' "$dir/acked")
  # 137: killed as intended; 0: it finished all writes before the kill.
  if [[ $status -ne 137 && $status -ne 0 ]]; then
    echo "round $i: FAIL: the writer failed (exit $status) before the kill:"
    sed 's/^/  /' "$dir/writer.err"
    fail=$((fail + 1))
    continue
  fi
  if out=$("$writer" check "$dir/store.db" "$acked" 2>&1); then
    echo "round $i: killed $how ($acked acknowledged): $out"
    pass=$((pass + 1))
  else
    echo "round $i: FAIL: killed $how ($acked acknowledged):"
    printf '%s\n' "$out" | sed 's/^/  /'
    fail=$((fail + 1))
  fi
done
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
