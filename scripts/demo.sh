#!/usr/bin/env bash
# make demo: grayd, the example call chain and, in front of it, Debian's
# nginx with the gray module kept in step by gray-agent, all in the
# background; the sample policies in grayd, and curl commands to try.
#
#   scripts/demo.sh [BUILD_DIR]      (make demo builds first, then runs this)
#
# Everything runs on 127.0.0.1 with free ports. grayd runs with --dev (an
# admin token, loopback only) on SQLite in a temporary directory that also
# holds the logs, the SDK cache files and the PIDs; BUILD_DIR/demo.state
# names that directory so scripts/demo-stop.sh (make demo-stop) can stop
# exactly these processes and remove it. A second run while the demo is up
# says so and prints the commands again.
set -euo pipefail

cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/bin
state_file=${DEMO_STATE:-$build/demo.state} # the test of the demo uses its own
policies=examples/lanes.json

module=$(cd "$build" && pwd)/nginx/ngx_http_gray_module.so
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
for b in "$bin/grayd" "$bin/grayctl" "$bin/gray-agent" "$bin/examples/gateway" "$bin/examples/order" \
  "$bin/examples/order-dal" "$module" "$nginx_bin"; do
  if [ ! -x "$b" ]; then
    echo "demo: $b is missing; run it as \`make demo\`, which builds first" >&2
    exit 1
  fi
done

# The gateway's port, read back from its log.
port_of() { sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | tail -n 1; }

print_try() {
  local dir=$1 gw grayd ngx
  gw=$(port_of "$dir/gateway-v1.log")
  grayd=$(port_of "$dir/grayd.log")
  ngx=$(cat "$dir/nginx.port")
  cat <<TRY

  nginx         http://127.0.0.1:$ngx   (gray module; gray-agent renders its upstreams)
  grayd         http://127.0.0.1:$grayd   (sample policies: $policies)
  gateway v1    http://127.0.0.1:$gw   -> order v1 -> order-dal v1 | v2
  state         $dir   (logs, SQLite, SDK caches, nginx prefix, PIDs)

Requests go in through nginx: the gray module decides with the gateway
policy, sends X-Gray-Tag to the gateway upstream gray-agent rendered from the
registry, and every answer shows the call chain behind it: each hop's
service, version, the gray tag it saw, and what it decided. Try:

  # 1. A plain request: default versions all the way, order-dal v1.
  curl -s http://127.0.0.1:$ngx/orders/42

  # 2. A beta tester: nginx's gray module tags the request "beta" (the
  #    gateway hop shows "tag": "beta", forwarded in X-Gray-Tag), and the lane
  #    rule sends it to order-dal v2. (No order v2 runs, so order v1 serves
  #    the lane: "fell_back": true.)
  curl -s -H 'X-Gray: 1' http://127.0.0.1:$ngx/orders/42

  # 3. User id modulo: 1019 mod 100 = 19 < 20, the gateway's uid-20 rule.
  curl -s 'http://127.0.0.1:$ngx/orders/42?uid=1019'

  # 4. Change a policy while everything runs: without its lane rule, the
  #    order-dal policy sends the beta lane to order-dal v1 at once. Then
  #    roll it back.
  export GRAYLANE_SERVER=http://127.0.0.1:$grayd GRAYLANE_TOKEN=\$(cat $dir/token)
  echo '{"service": "order-dal", "default": "v1"}' | $bin/grayctl policy put order-dal -
  curl -s -H 'X-Gray: 1' http://127.0.0.1:$ngx/orders/42
  $bin/grayctl policy history order-dal   # then: grayctl policy rollback order-dal REV

  # 5. The Nginx side: the policy revision its workers run, counters per
  #    version, and what gray-agent reported to grayd.
  curl -s http://127.0.0.1:$ngx/gray_status
  $bin/grayctl agents

Stop everything: make demo-stop
TRY
}

# Does PID $1 still run program $2 (and not as a zombie)?
ours() {
  local st comm
  read -r st comm < <(ps -o stat=,comm= -p "$1" 2>/dev/null) || return 1
  [ "${st#Z}" = "$st" ] && [ "$comm" = "$2" ]
}

# Is the demo of state file $1 running? (its grayd is)
running() {
  local dir pid name
  dir=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$dir" ] && [ -f "$dir/pids" ] || return 1
  while read -r pid name; do
    if [ "$name" = grayd ] && ours "$pid" grayd; then
      return 0
    fi
  done <"$dir/pids"
  return 1
}

if [ -f "$state_file" ]; then
  if running "$state_file"; then
    echo "demo: already running (make demo-stop stops it; then make demo starts afresh)"
    print_try "$(cat "$state_file")"
    exit 0
  fi
  scripts/demo-stop.sh "$build" >/dev/null # leftovers of a demo that died
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/graylane-demo.XXXXXX")
printf '%s\n' "$dir" >"$state_file"
: >"$dir/pids"

fail() {
  echo "demo: $*" >&2
  for f in "$dir"/*.log; do
    [ -f "$f" ] && { echo "---- $f"; tail -n 5 "$f"; } >&2
  done
  scripts/demo-stop.sh "$build" >/dev/null 2>&1 || true
  exit 1
}

# start NAME LOG CMD...: run CMD in the background with its output in LOG,
# record "PID COMMAND-NAME" and wait for its "listening on" line.
start() {
  local name=$1 log=$2 i
  shift 2
  "$@" </dev/null >/dev/null 2>"$log" &
  echo "$! $(basename "$1")" >>"$dir/pids"
  for i in $(seq 100); do
    [ -n "$(port_of "$log")" ] && return 0
    kill -0 "$!" 2>/dev/null || fail "$name exited at start"
    sleep 0.05
  done
  fail "$name did not start within 5 s"
}

echo "demo: starting grayd and the chain (state in $dir)"
start grayd "$dir/grayd.log" "$bin/grayd" --dev --listen 127.0.0.1:0 --data "$dir/grayd.db"
grayd_url=http://127.0.0.1:$(port_of "$dir/grayd.log")
(umask 077 && sed -n 's/.*dev admin token: \([A-Za-z0-9]*\).*/\1/p' "$dir/grayd.log" | head -n 1 >"$dir/token")
[ -s "$dir/token" ] || fail "no dev token in grayd's log"

export GRAYLANE_SERVER=$grayd_url
GRAYLANE_TOKEN=$(cat "$dir/token")
export GRAYLANE_TOKEN

# The sample set has one policy per service; grayd takes them one by one.
for svc in gateway order order-dal; do
  python3 -c 'import json, sys
doc = json.load(open(sys.argv[1]))
print(json.dumps(next(p for p in doc["policies"] if p["service"] == sys.argv[2])))' "$policies" "$svc" |
    "$bin/grayctl" policy put "$svc" - >/dev/null || fail "could not put the $svc policy"
done

for svc in order-dal:v1 order-dal:v2 order:v1 gateway:v1; do
  name=${svc%%:*}
  version=${svc##*:}
  start "$name $version" "$dir/$name-$version.log" "$bin/examples/$name" --listen 127.0.0.1:0 \
    --version "$version" --cache "$dir/$name-$version.cache"
done

# nginx in front, with its own prefix in the demo directory. Paths go into
# its configuration, so the directory must be a plain path (mktemp under an
# odd TMPDIR could make it otherwise).
case "$dir$module" in
  *[!A-Za-z0-9/._-]*) fail "the demo directory or module path holds characters unsafe in an nginx config: $dir $module" ;;
esac
ngx=$dir/nginx
mkdir -p "$ngx/gray" "$ngx/tmp" "$ngx/logs"
ngx_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "$ngx_port" >"$dir/nginx.port"
user=""
[ "$(id -u)" = 0 ] && user="user root;" # the workers read the private demo directory
cat >"$ngx/nginx.conf" <<CONF
load_module $module;
$user
daemon off;
worker_processes 1;
pid $ngx/nginx.pid;
lock_file $ngx/nginx.lock;
error_log $ngx/logs/error.log notice;
events { worker_connections 512; }
http {
    access_log $ngx/logs/access.log;
    client_body_temp_path $ngx/tmp/body;
    proxy_temp_path $ngx/tmp/proxy;
    fastcgi_temp_path $ngx/tmp/fastcgi;
    uwsgi_temp_path $ngx/tmp/uwsgi;
    scgi_temp_path $ngx/tmp/scgi;
    include $ngx/gray/gray-upstreams.conf;
    gray_policies $ngx/gray/gray-policies.json;
    server {
        listen 127.0.0.1:$ngx_port;
        location / {
            gray_route gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Gray-Tag \$gray_tag;
            proxy_pass http://\$gray_upstream;
        }
        location = /gray_status { allow 127.0.0.1; deny all; gray_status; }
    }
}
CONF
"$bin/gray-agent" --init --nginx-dir "$ngx/gray" >/dev/null 2>"$dir/gray-agent.log" || fail "gray-agent --init failed"
"$nginx_bin" -p "$ngx" -c "$ngx/nginx.conf" </dev/null >/dev/null 2>"$dir/nginx.log" &
echo "$! nginx" >>"$dir/pids"
"$bin/gray-agent" --server "$grayd_url" --nginx-dir "$ngx/gray" --nginx-conf "$ngx/nginx.conf" \
  --nginx-prefix "$ngx" --nginx "$nginx_bin" --pid-file "$ngx/nginx.pid" \
  --nginx-status "http://127.0.0.1:$ngx_port/gray_status" --id demo-nginx \
  --cache "$dir/gray-agent.cache" </dev/null >/dev/null 2>>"$dir/gray-agent.log" &
echo "$! gray-agent" >>"$dir/pids"

# Ready when a beta tester reaches order-dal v2 through nginx and the chain.
gw=http://127.0.0.1:$ngx_port
for i in $(seq 150); do
  if curl -s -H 'X-Gray: 1' "$gw/" | grep -q '"service": "order-dal", "version": "v2"'; then
    echo "demo: running"
    print_try "$dir"
    exit 0
  fi
  sleep 0.1
done
fail "nginx and the chain did not route the beta lane within 15 s"
