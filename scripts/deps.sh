#!/usr/bin/env bash
# Install every Debian package graylane builds, tests and benchmarks with.
# Idempotent: installs only what is missing. As a non-root user it prints the
# command to run instead.
set -euo pipefail

packages=(
  build-essential cmake pkg-config   # toolchain
  clang libclang-rt-14-dev          # libFuzzer and sanitizer runtimes
  libpcre2-dev                       # regex in the core evaluator
  libjansson-dev                     # JSON front-end
  libcmocka-dev                      # unit tests
  libevent-dev libssl-dev            # grayd: event loop, HTTP server, TLS, token hashes
  libsqlite3-dev sqlite3             # grayd's embedded store (sqlite3: integrity checks in tests)
  libcurl4-openssl-dev               # grayctl's client side (and the SDK later)
  python3 curl openssl               # integration tests (standard library only; openssl makes test certificates)
  etcd-server                        # bench/grayd: etcd as the watch peer
  nodejs npm                         # unleash-client peer benchmark (bench/eval)
  nginx nginx-dev                    # the Nginx module (built against nginx-dev's tree) and its tests
  libnginx-mod-http-lua haproxy wrk  # bench/nginx: the Lua and HAProxy peers, the load generator
  valgrind                           # bench/nginx: instructions per request (callgrind), noise-free
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# nodejs/npm may come from elsewhere than Debian (for example nodesource or a
# version manager); a working `node` and `npm` on PATH is enough.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]}"; do
    [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p")
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all packages present"
  exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}"
  echo "deps: run as root:  apt-get update && $cmd"
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages such as nginx and haproxy start a system service on install
# (port 80); our tests start their own on loopback, so keep the packages'
# services from starting while installing (exit 101: "action forbidden").
rcd=/usr/sbin/policy-rc.d
if [ ! -e "$rcd" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$rcd"
  chmod 755 "$rcd"
  trap 'rm -f "$rcd"' EXIT
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
