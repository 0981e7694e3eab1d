#!/bin/sh
# build-lib.sh — the one recipe for libhashevict.so. CMake (and through it
# the Makefile) and bindings/python/setup.py all call this script, so the go
# flags, the SONAME, the version script and the file layout are written here
# only. It needs nothing but a POSIX shell, Go with cgo and a C compiler: an
# sdist of the Python package carries it and builds without CMake.
#
#   sh cmake/build-lib.sh OUTDIR [go build arguments...]
#       writes OUTDIR/libhashevict.so.<version>  (SONAME libhashevict.so.<abi>)
#              OUTDIR/libhashevict.so.<abi>      -> libhashevict.so.<version>
#              OUTDIR/libhashevict.so            -> libhashevict.so.<abi>
#              OUTDIR/hashevict.h                (a copy of include/hashevict.h)
#   sh cmake/build-lib.sh --names
#       prints "<realname> <soname>" (CMake reads it at configure time)
#
# <version> and <abi> come from include/hashevict.h: the SONAME changes
# exactly when the header says the ABI changed.
# Environment: GO (default: go on PATH), CC (cgo's compiler).
set -eu

root="$(cd "$(dirname "$0")/.." && pwd)"
header="$root/include/hashevict.h"

header_define() {
    v="$(sed -n "s/^#define HASHEVICT_$1[ 	][ 	]*\([0-9][0-9]*\).*/\1/p" "$header")"
    if [ -z "$v" ]; then
        echo "build-lib.sh: $header does not define HASHEVICT_$1" >&2
        exit 1
    fi
    echo "$v"
}

version="$(header_define VERSION_MAJOR).$(header_define VERSION_MINOR).$(header_define VERSION_PATCH)"
soname="libhashevict.so.$(header_define ABI_VERSION)"
realname="libhashevict.so.$version"

if [ "${1:-}" = "--names" ]; then
    echo "$realname $soname"
    exit 0
fi
if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "usage: sh cmake/build-lib.sh OUTDIR [go build arguments...] | --names" >&2
    exit 2
fi
mkdir -p "$1"
out="$(cd "$1" && pwd)"
shift

case "$root" in
*[[:space:]]*)
    # go splits -extldflags at spaces; a quoted path would reach the linker
    # with its quotes.
    echo "build-lib.sh: the source path '$root' contains white space; go cannot pass it to the linker" >&2
    exit 1 ;;
esac

# go writes next to its -o file a cgo header named after it; building in a
# private directory keeps that header (which is not the contract:
# include/hashevict.h is) and any half-written library out of OUTDIR, so a
# failed build never leaves a broken library where a good one was.
tmp="$(mktemp -d "$out/.build-lib.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# -s -w: no symbol table or DWARF (Go's own tracebacks still work); the
# version script leaves only the public hashevict_* functions exported;
# -trimpath and -buildvcs=false make the output independent of where the
# tree is and of whether it is a git checkout (an sdist is not).
# go's build cache keys cgo objects on the files of the package directory,
# not on headers included from include/: without this define a changed
# header (a new version macro, say) would reuse a stale shim object.
header_sum="$(cksum < "$header" | cut -d' ' -f1)"
CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -DHEV_HEADER_CKSUM=$header_sum"
export CGO_CFLAGS
cd "$root"
CGO_ENABLED=1 "${GO:-go}" build -buildmode=c-shared -trimpath -buildvcs=false \
    "-ldflags=-s -w -extldflags=-Wl,-soname,$soname,--version-script=$root/capi/exports.map" \
    "$@" -o "$tmp/$realname" ./capi

mv -f "$tmp/$realname" "$out/$realname"
ln -sfn "$realname" "$out/$soname"
ln -sfn "$soname" "$out/libhashevict.so"
cp "$header" "$tmp/hashevict.h"
mv -f "$tmp/hashevict.h" "$out/hashevict.h"
