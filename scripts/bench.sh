#!/usr/bin/env bash
# make bench: every benchmark, printing `name: value` lines.
# bench/eval: graylane's evaluator vs unleash-client's local evaluation on the
# same reference policy and request mix, alternated A B A B in one run; the
# figures are medians of the rounds and the ratio of the medians.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
rounds=${BENCH_ALTERNATIONS:-3}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "# bench/eval ($rounds alternations)"
"$build/bin/bench_eval" --write-expected "$build/expected.jsonl" --rounds 1 --passes 1 \
  "$root/bench/eval" >/dev/null
if [ ! -d "$root/bench/eval/unleash/node_modules" ]; then
  (cd "$root/bench/eval/unleash" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
c_ns=(); u_ns=(); allocs=0
for i in $(seq "$rounds"); do
  out=$("$build/bin/bench_eval" "$root/bench/eval" 2>/dev/null)
  c_ns+=("$(awk -F': ' '/^eval_ns_per_decision:/ {print $2}' <<<"$out")")
  allocs=$(awk -F': ' '/^eval_allocations_per_decision:/ {print $2}' <<<"$out")
  uout=$(cd "$root/bench/eval/unleash" && node bench.js --expected="$build/expected.jsonl" 2>/dev/null)
  u_ns+=("$(awk -F': ' '/^unleash_ns_per_decision:/ {print $2}' <<<"$uout")")
  agree=$(awk -F': ' '/^unleash_agreement_nonpercent_pct:/ {print $2}' <<<"$uout")
  echo "# alternation $i: graylane ${c_ns[-1]} ns, unleash ${u_ns[-1]} ns"
done
cm=$(printf '%s\n' "${c_ns[@]}" | median)
um=$(printf '%s\n' "${u_ns[@]}" | median)
echo "eval_ns_per_decision: $cm"
echo "eval_allocations_per_decision: $allocs"
echo "unleash_ns_per_decision: $um"
echo "unleash_agreement_nonpercent_pct: ${agree:-n/a}"
awk -v u="$um" -v c="$cm" 'BEGIN {printf "eval_speedup_vs_unleash: %.1f\n", u / c}'

# bench/grayd: grayd's change propagation to 1,000 and 10,000 parked
# watchers against etcd 3.4's watch, alternated in the same run, then its
# registry (heartbeats per second) and memory; see bench/grayd/run.sh.
# BENCH_GRAYD=0 skips it.
if [ "${BENCH_GRAYD:-1}" != 0 ]; then
  echo "# bench/grayd ($rounds alternations)"
  BUILD="$build" BENCH_ALTERNATIONS="$rounds" "$root/bench/grayd/run.sh"
fi

# bench/sdk: the client SDK — decide + pick in-process on a snapshot followed
# from a real grayd (with the bare core evaluator as the in-run peer), the
# propagation from a PUT on grayd to the SDK's snapshot (with grayd's own PUT
# time), and decide + pick from 8 threads while snapshots swap 1,000 times a
# second; see bench/sdk/run.sh. BENCH_SDK=0 skips it.
if [ "${BENCH_SDK:-1}" != 0 ]; then
  echo "# bench/sdk"
  BUILD="$build" "$root/bench/sdk/run.sh"
fi

# bench/nginx: the routing decision in the proxy, five ways in one run on
# loopback — stock nginx proxy_pass, nginx + ngx_http_gray_module with the
# reference policy, the same decision as native map/geo, in Lua (access
# phase) and as HAProxy ACLs (plus stock forwarding fixed headers) — with
# requests/s, p99, the proxy's CPU time per request and each decision's
# agreement with the core, then the module side by side with stock and
# each peer (both at once on one CPU: the ratios other work cannot move);
# see bench/nginx/run.sh. Skipped with a message when the module is not built.
# BENCH_NGINX=0 skips it.
if [ "${BENCH_NGINX:-1}" != 0 ]; then
  echo "# bench/nginx ($rounds alternations)"
  BUILD="$build" BENCH_ALTERNATIONS="$rounds" "$root/bench/nginx/run.sh"
fi

# bench/nginx churn: policy and upstream changes under wrk load — 60 policy
# PUTs (no reload, no error), 60 registry changes (agent reloads) against 60
# plain `nginx -s reload` as the peer, and the propagation from a PUT on
# grayd to Nginx serving the new decision over 50 changes; see
# bench/nginx/churn.sh (about 4.5 minutes). BENCH_NGINX_CHURN=0 skips it.
if [ "${BENCH_NGINX_CHURN:-1}" != 0 ]; then
  echo "# bench/nginx churn"
  BUILD="$build" "$root/bench/nginx/churn.sh"
fi
