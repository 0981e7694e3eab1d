# Sourced by build.sh and check-fatbin.sh: finds the compilers (NVCC and
# PTXAS12 when set, else the venv under .cache/cuda-toolchain, which
# build.sh, or HASHEVICT_CUDA_INSTALL=1, installs from PyPI) and defines
# write_sum, the record of what the fatbins were built from.
#
# Two images are built (docs/cuda.md):
#   hashevict.fatbin       nvcc 13 (nvidia-cuda-nvcc with nvidia-nvvm,
#                          nvidia-cuda-crt, nvidia-cuda-runtime): SASS sm_80,
#                          sm_90 and PTX compute_90 (ISA 9.x): drivers for
#                          CUDA 13 (580 and later);
#   hashevict_cu12.fatbin  the same PTX, declared as ISA 8.0 and assembled by
#                          ptxas 12.9 (nvidia-cuda-nvcc-cu12, which ships
#                          ptxas but no nvcc): drivers for CUDA 12 (525 and
#                          later); packed uncompressed, so that no driver
#                          needs a newer decompressor.
NVCC_PIN=13.5.37
PTXAS12_PIN=12.9.86
TOOLCHAIN=${HASHEVICT_CUDA_TOOLCHAIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache/cuda-toolchain}

find_tools() {
	local c
	if [ -z "${NVCC:-}" ]; then
		for c in "$TOOLCHAIN"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc; do
			[ -x "$c" ] && NVCC=$c
		done
	fi
	if [ -z "${PTXAS12:-}" ]; then
		for c in "$TOOLCHAIN"/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas; do
			[ -x "$c" ] && PTXAS12=$c
		done
	fi
	[ -n "${NVCC:-}" ] && [ -n "${PTXAS12:-}" ]
}

install_toolchain() {
	echo "toolchain: installing nvcc $NVCC_PIN and ptxas $PTXAS12_PIN from PyPI into $TOOLCHAIN" >&2
	python3 -m venv "$TOOLCHAIN"
	"$TOOLCHAIN/bin/pip" install --quiet "nvidia-cuda-nvcc==$NVCC_PIN" "nvidia-nvvm==$NVCC_PIN" \
		"nvidia-cuda-crt==$NVCC_PIN" "nvidia-cuda-runtime==$NVCC_PIN" "nvidia-cuda-nvcc-cu12==$PTXAS12_PIN"
}

if ! find_tools; then
	if [ "${HASHEVICT_CUDA_INSTALL:-0}" = 1 ] || [ "$(basename "$0")" = build.sh ]; then
		install_toolchain
		find_tools
	fi
fi

nvcc_release() { "$NVCC" --version | sed -n 's/.*, V\([0-9.]*\)$/\1/p'; }
ptxas12_release() { "$PTXAS12" --version | sed -n 's/.*, V\([0-9.]*\)$/\1/p'; }

# The flags of every device compilation: no multiply-add contraction (the
# kernels use _rn intrinsics, which are never contracted; this is a second
# guard), exact division and square root, no flush-to-zero.
CUFLAGS="-O3 -fmad=false -ftz=false -prec-div=true -prec-sqrt=true"

# The record checked by check-fatbin.sh: the tool releases and the hashes of
# the sources, the build script and the fatbins, so that a source changed
# without a rebuild is caught even where nvcc is absent.
write_sum() {
	echo "nvcc $(nvcc_release)"
	echo "ptxas12 $(ptxas12_release)"
	(cd kernels && sha256sum hashevict.cu hashevict_math.cuh)
	sha256sum build.sh toolchain.sh hashevict.fatbin hashevict_cu12.fatbin
}
