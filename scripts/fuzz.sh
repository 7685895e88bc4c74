#!/usr/bin/env bash
# Run every libFuzzer target for SECONDS each, starting from the committed
# seed corpus (copied, so runs never modify tests/). Prints a summary line
# per target: executions, corpus size, seconds.
#   scripts/fuzz.sh BUILD_DIR SECONDS
set -euo pipefail
build=${1:-build-fuzz}
seconds=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
for target in ${FUZZ_TARGETS:-policy http xff regex}; do
  bin="$build/bin/fuzz_$target"
  [ -x "$bin" ] || { echo "fuzz: $bin is missing (make fuzz-build)"; exit 1; }
  corpus="$build/corpus/$target"
  mkdir -p "$corpus"
  cp -n "$root/tests/fuzz/corpus/$target"/* "$corpus"/ 2>/dev/null || true
  log="$build/fuzz-$target.log"
  echo "fuzz: $target for ${seconds}s (log: $log)"
  ASAN_OPTIONS=detect_leaks=1 "$bin" -max_total_time="$seconds" -max_len=65536 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/" \
    "$corpus" >"$log" 2>&1 || { tail -50 "$log"; echo "fuzz: $target FAILED"; exit 1; }
  runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "fuzz_${target}_executions: ${runs:-?}"
  echo "fuzz_${target}_corpus_files: $(ls "$corpus" | wc -l)"
  echo "fuzz_${target}_seconds: $seconds"
done
