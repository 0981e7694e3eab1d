#!/usr/bin/env bash
# Rebuilds cuda/hashevict.fatbin (embedded by the Go package) from
# cuda/kernels/*.cu with nvcc from PyPI, and cuda/fatbin.sum, which records
# the sources' SHA-256 and the nvcc release the fatbin was built with.
#
#   bash cuda/build.sh            install the toolchain if needed, rebuild
#   NVCC=/path/to/nvcc bash cuda/build.sh
#
# The toolchain (nvidia-cuda-nvcc, nvidia-nvvm, nvidia-cuda-crt,
# nvidia-cuda-runtime, ~350 MB) goes into a venv under .cache/ (gitignored),
# pinned to NVCC_PIN below: check-fatbin.sh rebuilds with the same release
# and compares the bytes.
set -euo pipefail
cd "$(dirname "$0")"
source ./toolchain.sh
out=${1:-hashevict.fatbin}
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
# -fmad=false: no multiply-add contraction (the kernels use _rn intrinsics,
# which are never contracted, so this is a second guard); exact division,
# no flush-to-zero. SASS for Ampere (sm_80, also runs on sm_86/89) and
# Hopper (sm_90), and PTX compute_90 that newer GPUs JIT-compile.
# -Xfatbin -compress-all keeps the embedded image near 60 KB.
(
	cd kernels
	"$NVCC" -fatbin -O3 -fmad=false -ftz=false -prec-div=true -prec-sqrt=true \
		-Xfatbin -compress-all \
		-gencode arch=compute_80,code=sm_80 \
		-gencode arch=compute_90,code='[sm_90,compute_90]' \
		-o "$out.tmp" hashevict.cu
)
mv "$out.tmp" "$out"
if [ "$out" = "$PWD/hashevict.fatbin" ]; then
	write_sum > fatbin.sum
	echo "build.sh: wrote cuda/hashevict.fatbin ($(wc -c < hashevict.fatbin) bytes) and cuda/fatbin.sum"
fi
