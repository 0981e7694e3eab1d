#!/usr/bin/env bash
# Regenerates the avo assembly (simd/kernels_amd64.s and bench/kernels_amd64.s,
# with their Go stubs) into a temporary directory and fails when the committed
# files differ. CI runs it; it needs the Go module proxy for avo (_gen/go.mod).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(
	cd _gen
	go run . -pkg simd -out "$tmp/simd.s" -stubs "$tmp/simd_stub.go"
	go run . -pkg bench -out "$tmp/bench.s" -stubs "$tmp/bench_stub.go"
)
status=0
check() {
	if ! diff -u "$2" "$tmp/$1"; then
		echo "check-generated: $2 differs from what _gen produces; regenerate with:" >&2
		echo "  go generate ./simd ./bench" >&2
		status=1
	fi
}
check simd.s simd/kernels_amd64.s
check simd_stub.go simd/kernels_stub_amd64.go
check bench.s bench/kernels_amd64.s
check bench_stub.go bench/kernels_stub_amd64.go
if [ "$status" = 0 ]; then
	echo "check-generated: the assembly matches _gen"
fi
exit "$status"
