# Sourced by build.sh and check-fatbin.sh: finds nvcc (NVCC, then the venv
# under .cache/cuda-toolchain, installing it from PyPI when
# HASHEVICT_CUDA_INSTALL=1 or when called from build.sh) and defines
# write_sum, the record of what the fatbin was built from.
NVCC_PIN=13.5.37
TOOLCHAIN=${HASHEVICT_CUDA_TOOLCHAIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache/cuda-toolchain}

find_nvcc() {
	if [ -n "${NVCC:-}" ]; then return 0; fi
	local c
	for c in "$TOOLCHAIN"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc; do
		if [ -x "$c" ]; then NVCC=$c; return 0; fi
	done
	return 1
}

install_toolchain() {
	echo "toolchain: installing nvcc $NVCC_PIN from PyPI into $TOOLCHAIN" >&2
	python3 -m venv "$TOOLCHAIN"
	"$TOOLCHAIN/bin/pip" install --quiet "nvidia-cuda-nvcc==$NVCC_PIN" "nvidia-nvvm==$NVCC_PIN" \
		"nvidia-cuda-crt==$NVCC_PIN" "nvidia-cuda-runtime==$NVCC_PIN"
}

if ! find_nvcc; then
	if [ "${HASHEVICT_CUDA_INSTALL:-0}" = 1 ] || [ "$(basename "$0")" = build.sh ]; then
		install_toolchain
		find_nvcc
	fi
fi

nvcc_release() { "$NVCC" --version | sed -n 's/.*, V\([0-9.]*\)$/\1/p'; }

# The record checked by check-fatbin.sh: the nvcc release and the hash of
# every source, so that a source change without a rebuild is caught even
# where nvcc is absent.
write_sum() {
	echo "nvcc $(nvcc_release)"
	(cd kernels && sha256sum hashevict.cu hashevict_math.cuh)
	sha256sum build.sh hashevict.fatbin
}
