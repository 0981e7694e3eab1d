//go:build !noasm

package simd

import "github.com/klauspost/cpuid/v2"

// CPU features, read once at start-up. They are plain variables so that
// tests can pretend a feature is missing (see setFeatures in the tests);
// the cpuid package also checks that the OS saves the wider registers.
var (
	// hasAVX2 enables the "avx2" set: AVX2 with F16C for the f16
	// conversion and BMI2 (PEXT, SHLX) for packing hash bits.
	hasAVX2 = cpuid.CPU.Supports(cpuid.AVX, cpuid.AVX2, cpuid.F16C, cpuid.BMI2, cpuid.POPCNT)
	// hasAVX512 enables the "avx512" set: AVX-512 F/BW/VL and the vector
	// popcount VPOPCNTQ (VPOPCNTDQ).
	hasAVX512 = hasAVX2 && cpuid.CPU.Supports(cpuid.AVX512F, cpuid.AVX512BW, cpuid.AVX512VL, cpuid.AVX512VPOPCNTDQ)
	// hasBITALG selects the avx512 set's narrow Hamming kernels that count
	// bits per byte and word (VPOPCNTB/W, AVX512_BITALG); without it the set
	// zero-extends 8- and 16-bit codes to dwords for VPOPCNTD.
	hasBITALG = hasAVX512 && cpuid.CPU.Supports(cpuid.AVX512BITALG)
)

// Registered during package variable initialisation, before simd.go's init
// picks the active set.
var _ = registerCPUSets()

// registerCPUSets registers the accelerated sets this CPU runs, best first.
func registerCPUSets() bool {
	if hasAVX512 {
		register(avx512Kernels())
	}
	if hasAVX2 {
		register(avx2Kernels())
	}
	return true
}
