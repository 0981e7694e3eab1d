//go:build !amd64 || noasm

package simd

// Without amd64 assembly (other architectures, or the noasm build tag) only
// the generic set exists.
var (
	hasAVX2   = false
	hasAVX512 = false
	hasBITALG = false
)

func registerCPUSets() bool { return true }
