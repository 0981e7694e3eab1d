//go:build !noasm

package simd

import "math/bits"

// Fused Hamming maximum (see _gen/hammingmax.go): the largest distance
// between one probe and a run of codes, the codes streamed once and no
// distance stored. The kernels take at least one vector of whole codes and
// finish an uneven length with one more vector that ends at the last code
// (it overlaps codes already counted, which leaves a maximum unchanged);
// fewer codes than a vector holds are counted here in Go.

// hammingMaxAVX512Go returns the largest Hamming distance between one probe
// and codes [0, n) of table (bits-bit codes in the layout of CodeWords: wide
// for 64/128/256 bits, narrow for 8/16/32), and ok = false, computing
// nothing, when the set has no fused kernel for this call (the caller then
// computes the distances). probe is the wide probe: bits/64 words, or one
// word for narrow codes (only its low bits bits count; higher bits must be
// ignored). n = 0 gives (0, true).
//
// ok is false for 8- and 16-bit codes without AVX512_BITALG, and for any
// call hammingMaxArgs rejects.
func hammingMaxAVX512Go(table []uint64, bits, n int, probe []uint64) (uint32, bool) {
	if n == 0 {
		return 0, true
	}
	if !hammingMaxArgs(table, bits, n, probe) || (bits <= 16 && !hasBITALG) {
		return 0, false
	}
	nbytes := n * bits / 8
	if nbytes < 64 {
		return hammingMaxGo(table, bits, n, probe), true
	}
	t, p := &table[0], &probe[0]
	switch bits {
	case 8:
		return hammingMax8AVX512(t, nbytes, p), true
	case 16:
		return hammingMax16AVX512(t, nbytes, p), true
	case 32:
		return hammingMax32AVX512(t, nbytes, p), true
	case 64:
		return hammingMax64AVX512(t, nbytes, p), true
	case 128:
		return hammingMax128AVX512(t, nbytes, p), true
	default:
		return hammingMax256AVX512(t, nbytes, p), true
	}
}

// hammingMaxAVX2Go is hammingMaxAVX512Go with the AVX2 kernels; ok is
// false only for calls hammingMaxArgs rejects.
func hammingMaxAVX2Go(table []uint64, bits, n int, probe []uint64) (uint32, bool) {
	if n == 0 {
		return 0, true
	}
	if !hammingMaxArgs(table, bits, n, probe) {
		return 0, false
	}
	nbytes := n * bits / 8
	if nbytes < 32 {
		return hammingMaxGo(table, bits, n, probe), true
	}
	t, p := &table[0], &probe[0]
	switch bits {
	case 8:
		return hammingMax8AVX2(t, nbytes, p), true
	case 16:
		return hammingMax16AVX2(t, nbytes, p), true
	case 32:
		return hammingMax32AVX2(t, nbytes, p), true
	case 64:
		return hammingMax64AVX2(t, nbytes, p), true
	case 128:
		return hammingMax128AVX2(t, nbytes, p), true
	default:
		return hammingMax256AVX2(t, nbytes, p), true
	}
}

// hammingMaxArgs reports whether the fused kernels take a call with n > 0:
// bits is 8, 16, 32, 64, 128 or 256, table holds CodeWords(bits, n) words
// and probe max(1, bits/64). The caller's distance path handles any other
// call (as the generic kernels do, panics included).
func hammingMaxArgs(table []uint64, bits, n int, probe []uint64) bool {
	switch bits {
	case 8, 16, 32, 64, 128, 256:
	default:
		return false
	}
	// n <= len(table)*64/bits is CodeWords(bits, n) <= len(table), and
	// n*bits cannot overflow.
	return n > 0 && uint(n) <= uint(len(table))*64/uint(bits) && len(probe) >= max(1, bits/64)
}

// hammingMaxGo is the maximum over codes [0, n) in Go, for runs shorter
// than a vector; the arguments are as hammingMaxArgs accepts.
func hammingMaxGo(table []uint64, width, n int, probe []uint64) uint32 {
	m := 0
	if Narrow(width) {
		k := 64 / width
		mask := uint64(1)<<uint(width) - 1
		p := probe[0] & mask
		for i := 0; i < n; i++ {
			c := table[i/k] >> (uint(i%k) * uint(width)) & mask
			m = max(m, bits.OnesCount64(c^p))
		}
		return uint32(m)
	}
	w := width / 64
	p := probe[:w]
	for i := 0; i < n; i++ {
		d := 0
		for j, c := range table[i*w : (i+1)*w] {
			d += bits.OnesCount64(c ^ p[j])
		}
		m = max(m, d)
	}
	return uint32(m)
}
