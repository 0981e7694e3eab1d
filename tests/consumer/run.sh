#!/usr/bin/env bash
# run.sh — install libhashevict into a temporary prefix and build a program
# against the installed copy, twice: with CMake (find_package) and with a
# plain compiler command line (pkg-config). Both binaries must run and pass.
#
#   bash tests/consumer/run.sh
#
# Environment: HASHEVICT_BUILD_DIR (a configured and built CMake build
# directory to install from, as `make test-consumer` passes, so the library
# is not built a second time; default: a fresh build in the temporary
# directory), HASHEVICT_GO (go binary), CC (C compiler, default cc),
# CMAKE_GENERATOR (default Ninja when ninja is installed),
# HASHEVICT_KEEP_TMP=1 keeps the temporary directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/hashevict-consumer.XXXXXX")"
cleanup() {
    if [[ "${HASHEVICT_KEEP_TMP:-0}" == 1 ]]; then
        echo "run.sh: kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "run.sh: FAIL: $*" >&2; exit 1; }

gen=()
if [[ -n "${CMAKE_GENERATOR:-}" ]]; then
    gen=(-G "$CMAKE_GENERATOR")
elif command -v ninja >/dev/null 2>&1; then
    gen=(-G Ninja)
fi
cc="${CC:-cc}"
extra=()
if [[ -n "${HASHEVICT_GO:-}" ]]; then
    extra+=("-DHASHEVICT_GO_EXECUTABLE=$HASHEVICT_GO")
fi

prefix="$tmp/prefix"

if [[ -n "${HASHEVICT_BUILD_DIR:-}" ]]; then
    step "install libhashevict from $HASHEVICT_BUILD_DIR into $prefix"
    [[ -f "$HASHEVICT_BUILD_DIR/CMakeCache.txt" ]] || fail "HASHEVICT_BUILD_DIR=$HASHEVICT_BUILD_DIR is not a CMake build directory"
    # Up to date first: installing a stale library would test the wrong one.
    cmake --build "$HASHEVICT_BUILD_DIR" --target hashevict_go
    cmake --install "$HASHEVICT_BUILD_DIR" --prefix "$prefix"
else
    step "build and install libhashevict into $prefix"
    cmake -S "$repo" -B "$tmp/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
          -DCMAKE_INSTALL_PREFIX="$prefix" -DHASHEVICT_BUILD_TESTS=OFF "${extra[@]}" >/dev/null
    cmake --build "$tmp/build"
    cmake --install "$tmp/build"
fi

step "installed layout"
libdir=""
for d in lib lib64 lib/*-linux-gnu; do
    if [[ -f "$prefix/$d/pkgconfig/hashevict.pc" ]]; then libdir="$prefix/$d"; break; fi
done
[[ -n "$libdir" ]] || fail "no hashevict.pc under $prefix"
(cd "$prefix" && find . \( -type f -o -type l \) | sort)
[[ -f "$prefix/include/hashevict.h" ]] || fail "include/hashevict.h not installed"
cmp -s "$prefix/include/hashevict.h" "$repo/include/hashevict.h" || fail "installed hashevict.h differs from include/hashevict.h"
if find "$prefix" -name 'libhashevict*.h' | grep -q .; then fail "the cgo-generated header was installed"; fi
[[ -f "$libdir/cmake/hashevict/hashevictConfig.cmake" ]] || fail "hashevictConfig.cmake missing"
cmp -s "$prefix/share/doc/hashevict/LICENSE" "$repo/LICENSE" || fail "share/doc/hashevict/LICENSE not installed"
[[ -f "$libdir/cmake/hashevict/hashevictConfigVersion.cmake" ]] || fail "hashevictConfigVersion.cmake missing"
[[ -L "$libdir/libhashevict.so" ]] || fail "libhashevict.so is not a symlink"
real="$(readlink -f "$libdir/libhashevict.so")"
[[ -f "$real" ]] || fail "libhashevict.so dangles"
soname=""
if command -v readelf >/dev/null 2>&1; then
    soname="$(readelf -d "$real" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
    [[ -n "$soname" ]] || fail "$real has no SONAME"
    [[ -L "$libdir/$soname" ]] || fail "no $soname link next to $real"
    echo "SONAME $soname -> $(readlink "$libdir/$soname")"
fi

# loads_installed BINARY: the libhashevict the binary resolves is the
# installed one (compared as canonical paths: rpaths may hold "..").
loads_installed() {
    command -v ldd >/dev/null 2>&1 || return 0
    local got
    got="$(ldd "$1" | awk '/libhashevict/ {print $3}')"
    ldd "$1" | grep hashevict
    [[ -n "$got" ]] && [[ "$(readlink -f "$got")" == "$(readlink -f "$real")" ]]
}

step "CMake consumer (find_package) outside the repository"
cp -r "$here" "$tmp/consumer-src"
rm -f "$tmp/consumer-src/run.sh"
cmake -S "$tmp/consumer-src" -B "$tmp/consumer-build" "${gen[@]}" \
      -DCMAKE_PREFIX_PATH="$prefix" -DHASHEVICT_TESTS_DIR="$repo/tests/c"
cmake --build "$tmp/consumer-build"
loads_installed "$tmp/consumer-build/long_decode" || fail "the CMake consumer does not load the installed library"
"$tmp/consumer-build/long_decode"

step "plain cc with pkg-config"
export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
pkg-config --exists --print-errors hashevict
echo "pkg-config: version $(pkg-config --modversion hashevict): $(pkg-config --cflags --libs hashevict)"
grep -qx 'License: MIT' "$libdir/pkgconfig/hashevict.pc" || fail "hashevict.pc has no License: MIT"
pc_libdir="$(pkg-config --variable=libdir hashevict)"
[[ "$(cd "$pc_libdir" && pwd -P)" == "$(cd "$libdir" && pwd -P)" ]] || fail "pkg-config libdir $pc_libdir is not $libdir"
mkdir -p "$tmp/cc"
# -I for check.h comes after pkg-config's flags: hashevict.h is the installed one
# shellcheck disable=SC2046
"$cc" -std=c11 -O2 -Wall -Wextra -D_POSIX_C_SOURCE=200809L $(pkg-config --cflags hashevict) \
      -I"$repo/tests/c" "$repo/tests/c/test_long_decode.c" -o "$tmp/cc/long_decode" \
      $(pkg-config --libs hashevict) -Wl,-rpath,"$pc_libdir"
loads_installed "$tmp/cc/long_decode" || fail "the pkg-config build does not load the installed library"
"$tmp/cc/long_decode"
# also without an rpath, through LD_LIBRARY_PATH
"$cc" -std=c11 -O2 $(pkg-config --cflags hashevict) -I"$repo/tests/c" "$repo/tests/c/test_long_decode.c" \
      -o "$tmp/cc/long_decode_norpath" $(pkg-config --libs hashevict)
LD_LIBRARY_PATH="$pc_libdir" "$tmp/cc/long_decode_norpath" 2000

step "consumer: OK"
