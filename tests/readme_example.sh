#!/usr/bin/env bash
# Compiles and runs the C example of README.md against the built library, so
# the README never shows code that does not build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
awk '/<!-- readme-example/{on=1; next} on && /^```c/{grab=1; next} grab && /^```/{exit} grab{print}' \
    "$root/README.md" > "$tmp/example.c"
lines=$(wc -l < "$tmp/example.c")
[ "$lines" -gt 10 ] || { echo "readme example not found"; exit 1; }
# The library `make build` made (HASHEVICT_BUILD: the Makefile's BUILD).
build="${HASHEVICT_BUILD:-$root/build}"
[ -e "$build/libhashevict.so" ] || { echo "$build/libhashevict.so missing: run make build"; exit 1; }
cc -std=c11 -Wall -Werror -o "$tmp/example" "$tmp/example.c" -I"$root/include" -L"$build" -lhashevict \
    -Wl,-rpath,"$build"
"$tmp/example" > "$tmp/out.txt"
grep -q 'evicts' "$tmp/out.txt" || { echo "readme example evicted nothing"; cat "$tmp/out.txt"; exit 1; }
echo "readme example: $lines lines, compiled and ran, $(grep -c evicts "$tmp/out.txt") evictions"
