#!/bin/bash
# Builds ngx_http_gray_module.so against a copy of Debian's nginx-dev tree
# (never in system folders). Run by CMake (nginx/CMakeLists.txt), and by
# bench/nginx/run.sh for bench/nginx/floor's module (OUT_DIR/NAME.so, NAME
# from MODULE_DIR/config's ngx_module_name):
#
#   build.sh NGX_SRC OUT_DIR MODULE_DIR INCS LIBS [SAN_FLAGS]
#
# NGX_SRC   nginx-dev's configure tree (/usr/share/nginx/src)
# OUT_DIR   build/nginx: the copy goes to OUT_DIR/src, the module to OUT_DIR
# MODULE_DIR the module's directory (its `config`)
# INCS      include directories for the module (space-separated)
# LIBS      what the module links (the static libgray core + json, -l flags)
# SAN_FLAGS sanitizer flags for compiling and linking (the ASan build), or ""
#
# configure runs once per change of the module's `config`, of this script
# or of the arguments, with Debian's own flags (conf_flags: --with-compat,
# the same version), so the .so loads into Debian's nginx with load_module.
set -euo pipefail

src=$1 out=$2 mod=$3 incs=$4 libs=$5 san=${6:-}
tree=$out/src
mkdir -p "$out"

# Two builds of the same build directory at once (two `make`s) take turns:
# one of them may be replacing the tree the other is using.
exec 9>"$out/.build.lock"
flock 9
stamp=$tree/.graylane-configured
# configure again when any of these change (an upgraded nginx-dev included)
want="$(cat "$mod/config" "$0" "$src/conf_flags" "$src/src/core/nginx.h") $src $mod $incs $libs $san"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -rf "$tree"
    cp -a "$src" "$tree"
    (
        cd "$tree"
        # shellcheck disable=SC1091
        . ./conf_flags
        # Debian's compiler and linker flags for its own build (nginx -V),
        # so the module is hardened like the binary that loads it.
        GRAY_NGX_INCS=$incs GRAY_NGX_LIBS=$libs ./configure "${NGX_CONF_FLAGS[@]}" \
            --with-cc-opt="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2${san:+ $san}" \
            --with-ld-opt="-Wl,-z,relro -Wl,-z,now -fPIC${san:+ $san}" \
            --add-dynamic-module="$mod" >"$out/configure.log" 2>&1 \
            || { tail -n 30 "$out/configure.log" >&2; echo "nginx's configure failed: $out/configure.log" >&2; exit 1; }
    )
    printf '%s' "$want" >"$stamp"
fi

# The static libraries are link inputs nginx's Makefile does not track:
# always relink (compiling is still incremental).
# the module's name as its config gives it (bench/nginx/floor builds here too)
name=$(sed -n 's/^ngx_module_name=//p' "$mod/config")
rm -f "$tree/objs/$name.so"
# (a make of its own: the caller's jobserver does not reach through CMake)
env -u MAKEFLAGS -u MFLAGS make -s -j"$(nproc 2>/dev/null || echo 2)" -C "$tree" -f objs/Makefile modules
cp "$tree/objs/$name.so" "$out/$name.so.tmp"
mv -f "$out/$name.so.tmp" "$out/$name.so"
