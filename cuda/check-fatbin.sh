#!/usr/bin/env bash
# Checks the committed device code (CI runs it; see docs/cuda.md):
#   1. cuda/fatbin.sum matches the sources and the fatbin (no nvcc needed):
#      a kernel edited without `bash cuda/build.sh` fails here;
#   2. where nvcc is installed (NVCC, or the venv build.sh makes; with
#      HASHEVICT_CUDA_INSTALL=1 it is installed from PyPI), and it is the
#      pinned release: the fatbin rebuilt from the sources is byte-identical
#      to the committed one, the PTX holds no fused multiply-add, and ptxas
#      reports no spills. Without nvcc, part 2 is skipped with a warning.
set -euo pipefail
cd "$(dirname "$0")"
source ./toolchain.sh
status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. The recorded hashes (the nvcc line is checked in part 2).
if ! tail -n +2 fatbin.sum | sed 's|  hashevict.cu$|  kernels/hashevict.cu|; s|  hashevict_math.cuh$|  kernels/hashevict_math.cuh|' | sha256sum --quiet -c -; then
	echo "check-fatbin: cuda/fatbin.sum does not match the sources or the fatbin: rebuild with bash cuda/build.sh" >&2
	status=1
fi

if [ -z "${NVCC:-}" ]; then
	echo "check-fatbin: WARNING: nvcc not found: the fatbin was NOT rebuilt (only its recorded hashes were checked);" >&2
	echo "check-fatbin:   HASHEVICT_CUDA_INSTALL=1 bash cuda/check-fatbin.sh installs nvcc $NVCC_PIN from PyPI" >&2
	exit "$status"
fi
have=$(nvcc_release)
if [ "$have" != "$NVCC_PIN" ]; then
	echo "check-fatbin: nvcc $have is not the pinned $NVCC_PIN: the rebuild would differ; install the pinned release" >&2
	exit 1
fi
if [ "$(head -1 fatbin.sum)" != "nvcc $NVCC_PIN" ]; then
	echo "check-fatbin: the fatbin was built with $(head -1 fatbin.sum), not nvcc $NVCC_PIN" >&2
	status=1
fi

# 2a. Rebuild and compare the bytes.
bash build.sh "$tmp/rebuilt.fatbin" >/dev/null
if ! cmp -s "$tmp/rebuilt.fatbin" hashevict.fatbin; then
	echo "check-fatbin: cuda/hashevict.fatbin differs from what nvcc $NVCC_PIN builds from the sources: bash cuda/build.sh" >&2
	status=1
fi

# 2b. No fused multiply-add in the PTX (the exactness of every result
# rests on separate rounded multiplies and adds).
(cd kernels && "$NVCC" -ptx -O3 -fmad=false -ftz=false -prec-div=true -prec-sqrt=true -arch=compute_90 -o "$tmp/k.ptx" hashevict.cu)
if grep -n 'fma\.' "$tmp/k.ptx" >&2; then
	echo "check-fatbin: the PTX holds fused multiply-adds" >&2
	status=1
fi

# 2c. No register spills on either SASS target.
for sm in 80 90; do
	(cd kernels && "$NVCC" -cubin -O3 -fmad=false -ftz=false -prec-div=true -prec-sqrt=true -Xptxas -v \
		-gencode arch=compute_$sm,code=sm_$sm -o "$tmp/k$sm.cubin" hashevict.cu) 2> "$tmp/ptxas$sm.txt"
	if grep -E '[1-9][0-9]* bytes spill (stores|loads)' "$tmp/ptxas$sm.txt" >&2; then
		echo "check-fatbin: ptxas spills registers on sm_$sm" >&2
		status=1
	fi
	if ! grep -q '0 bytes spill stores' "$tmp/ptxas$sm.txt"; then
		echo "check-fatbin: no ptxas report for sm_$sm:" >&2
		cat "$tmp/ptxas$sm.txt" >&2
		status=1
	fi
done
if [ "$status" = 0 ]; then
	echo "check-fatbin: cuda/hashevict.fatbin matches its sources (nvcc $NVCC_PIN, byte for byte); no fma in the PTX; no spills on sm_80, sm_90"
fi
exit "$status"
