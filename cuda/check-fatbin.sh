#!/usr/bin/env bash
# Checks the committed device code (CI runs it; see docs/cuda.md):
#   1. cuda/fatbin.sum matches the sources and the fatbins (no nvcc needed):
#      a kernel edited without `bash cuda/build.sh` fails here;
#   2. where the toolchain is installed (NVCC and PTXAS12, or the venv
#      build.sh makes; with HASHEVICT_CUDA_INSTALL=1 it is installed from
#      PyPI), at the pinned releases: both fatbins rebuilt from the sources
#      are byte-identical to the committed ones, the PTX holds no fused
#      multiply-add, and ptxas (13 and 12) reports no spills. Without the
#      toolchain, part 2 is skipped with a warning.
set -euo pipefail
cd "$(dirname "$0")"
source ./toolchain.sh
status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. The recorded hashes (the nvcc line is checked in part 2).
if ! tail -n +3 fatbin.sum | sed 's|  hashevict.cu$|  kernels/hashevict.cu|; s|  hashevict_math.cuh$|  kernels/hashevict_math.cuh|' | sha256sum --quiet -c -; then
	echo "check-fatbin: cuda/fatbin.sum does not match the sources or the fatbin: rebuild with bash cuda/build.sh" >&2
	status=1
fi

if [ -z "${NVCC:-}" ] || [ -z "${PTXAS12:-}" ]; then
	echo "check-fatbin: WARNING: nvcc or ptxas 12 not found: the fatbins were NOT rebuilt (only their recorded hashes were checked);" >&2
	echo "check-fatbin:   HASHEVICT_CUDA_INSTALL=1 bash cuda/check-fatbin.sh installs nvcc $NVCC_PIN and ptxas $PTXAS12_PIN from PyPI" >&2
	exit "$status"
fi
if [ "$(nvcc_release)" != "$NVCC_PIN" ] || [ "$(ptxas12_release)" != "$PTXAS12_PIN" ]; then
	echo "check-fatbin: nvcc $(nvcc_release) / ptxas $(ptxas12_release) are not the pinned $NVCC_PIN / $PTXAS12_PIN: the rebuild would differ" >&2
	exit 1
fi
if [ "$(head -2 fatbin.sum | tr '\n' ' ')" != "nvcc $NVCC_PIN ptxas12 $PTXAS12_PIN " ]; then
	echo "check-fatbin: the fatbins were built with $(head -2 fatbin.sum | tr '\n' ' '), not the pinned tools" >&2
	status=1
fi

# 2a. Rebuild and compare the bytes.
bash build.sh "$tmp/rebuilt" >/dev/null
for f in hashevict.fatbin hashevict_cu12.fatbin; do
	if ! cmp -s "$tmp/rebuilt/$f" "$f"; then
		echo "check-fatbin: cuda/$f differs from what the pinned tools build from the sources: bash cuda/build.sh" >&2
		status=1
	fi
done

# 2b. No fused multiply-add in the PTX (the exactness of every result
# rests on separate rounded multiplies and adds).
(cd kernels && "$NVCC" -ptx $CUFLAGS -arch=compute_90 -o "$tmp/k.ptx" hashevict.cu)
if grep -n 'fma\.' "$tmp/k.ptx" >&2; then
	echo "check-fatbin: the PTX holds fused multiply-adds" >&2
	status=1
fi

# 2c. No register spills on either SASS target.
for sm in 80 90; do
	(cd kernels && "$NVCC" -cubin $CUFLAGS -Xptxas -v \
		-gencode arch=compute_$sm,code=sm_$sm -o "$tmp/k$sm.cubin" hashevict.cu) 2> "$tmp/ptxas$sm.txt"
	(cd kernels && "$NVCC" -ptx $CUFLAGS -arch=compute_$sm -o "$tmp/k$sm.ptx" hashevict.cu)
	sed -i 's/^\.version 9\.[0-9]*$/.version 8.0/' "$tmp/k$sm.ptx"
	"$PTXAS12" -O3 -v -arch=sm_$sm -o "$tmp/k12_$sm.cubin" "$tmp/k$sm.ptx" 2> "$tmp/ptxas12_$sm.txt"
	for r in "$tmp/ptxas$sm.txt" "$tmp/ptxas12_$sm.txt"; do
		if grep -E '[1-9][0-9]* bytes spill (stores|loads)' "$r" >&2; then
			echo "check-fatbin: ptxas spills registers on sm_$sm ($(basename "$r"))" >&2
			status=1
		fi
		kernels=$(grep -c 'Compiling entry function' "$r" || true)
		if [ "$kernels" -lt 1 ] || [ "$(grep -c '0 bytes spill stores' "$r")" != "$kernels" ]; then
			echo "check-fatbin: ptxas did not report $kernels kernels without spills for sm_$sm:" >&2
			cat "$r" >&2
			status=1
		fi
	done
done
if [ "$status" = 0 ]; then
	echo "check-fatbin: cuda/hashevict.fatbin and hashevict_cu12.fatbin match their sources (nvcc $NVCC_PIN, ptxas $PTXAS12_PIN, byte for byte); no fma in the PTX; no spills on sm_80, sm_90 ($kernels kernels each, ptxas 13 and 12)"
fi
exit "$status"
