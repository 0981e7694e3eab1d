#!/usr/bin/env bash
# Rebuilds the embedded device code from cuda/kernels/*.cu (see toolchain.sh
# for the two images and docs/cuda.md), and cuda/fatbin.sum.
#
#   bash cuda/build.sh           install the pinned toolchain if needed, rebuild
#   bash cuda/build.sh DIR       build both images into DIR (check-fatbin.sh)
set -euo pipefail
cd "$(dirname "$0")"
source ./toolchain.sh
out=${1:-$PWD}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# SASS for Ampere (sm_80; also runs on sm_86/89) and Hopper (sm_90), PTX
# compute_90 that newer GPUs JIT-compile; -Xfatbin -compress-all keeps the
# image near 60 KB (CUDA 13 drivers all decompress it).
(
	cd kernels
	"$NVCC" -fatbin $CUFLAGS -Xfatbin -compress-all \
		-gencode arch=compute_80,code=sm_80 \
		-gencode arch=compute_90,code='[sm_90,compute_90]' \
		-o "$out/hashevict.fatbin" hashevict.cu
	for sm in 80 90; do
		"$NVCC" -ptx $CUFLAGS -arch=compute_$sm -o "$tmp/k$sm.ptx" hashevict.cu
		# The kernels use nothing newer than PTX ISA 8.0 (CUDA 12.0):
		# ptxas 12.9 refuses the file if that ever stops being true.
		sed -i 's/^\.version 9\.[0-9]*$/.version 8.0/' "$tmp/k$sm.ptx"
		"$PTXAS12" -O3 -arch=sm_$sm -o "$tmp/k$sm.cubin" "$tmp/k$sm.ptx"
	done
)
"$(dirname "$NVCC")/fatbinary" --64 --compress=false --create="$out/hashevict_cu12.fatbin" \
	--image3=kind=elf,sm=80,file="$tmp/k80.cubin" \
	--image3=kind=elf,sm=90,file="$tmp/k90.cubin" \
	--image3=kind=ptx,sm=90,file="$tmp/k90.ptx"
if [ "$out" = "$PWD" ]; then
	write_sum > fatbin.sum
	echo "build.sh: wrote cuda/hashevict.fatbin ($(wc -c < hashevict.fatbin) bytes), cuda/hashevict_cu12.fatbin ($(wc -c < hashevict_cu12.fatbin) bytes) and cuda/fatbin.sum"
fi
