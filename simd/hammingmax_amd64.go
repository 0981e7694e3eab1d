//go:build !noasm

package simd

import "math/bits"

// Fused Hamming maximum (see _gen/hammingmax.go): the largest sum of
// distances between a set of probes and a run of codes, the codes streamed
// once and no distance stored; hammingMax<bits><set> take one probe,
// hammingMaxN<bits><set> several. The kernels take at least one vector of
// whole codes and finish an uneven length with one more vector that ends
// at the last code (it overlaps codes already counted, which leaves a
// maximum unchanged); fewer codes than a vector holds are counted here in
// Go.

// hammingMaxAVX512Go returns the largest distance between codes [0, n) of
// table (bits-bit codes in the layout of CodeWords: wide for 64/128/256
// bits, narrow for 8/16/32) and the probes, the distance of a code being
// the sum of its Hamming distances to each probe (as Hamming and
// HammingNarrow compute it), and ok = false, computing nothing, when the
// set has no fused kernel for this call (the caller then computes the
// distances). probes holds np >= 1 wide probes of max(1, bits/64) words
// each (a narrow probe is one word, of which only the low bits bits count;
// higher bits are ignored), np at most hammingMaxProbeLimit(bits). n = 0
// gives (0, true).
//
// ok is false for 8- and 16-bit codes without AVX512_BITALG, and for any
// call hammingMaxArgs rejects.
func hammingMaxAVX512Go(table []uint64, bits, n int, probes []uint64) (uint32, bool) {
	if bits <= 16 && !hasBITALG && n > 0 {
		return 0, false // VPOPCNTB/W are AVX512_BITALG
	}
	return hammingMaxWith(table, bits, n, probes, 64, &hammingMaxKernAVX512)
}

// hammingMaxAVX2Go is hammingMaxAVX512Go with the AVX2 kernels; ok is
// false only for calls hammingMaxArgs rejects.
func hammingMaxAVX2Go(table []uint64, bits, n int, probes []uint64) (uint32, bool) {
	return hammingMaxWith(table, bits, n, probes, 32, &hammingMaxKernAVX2)
}

// hammingMaxKerns are one set's fused kernels by code width (widthIndex):
// one for a single probe, many for several.
type hammingMaxKerns struct {
	one  [6]func(table *uint64, nbytes int, probe *uint64) uint32
	many [6]func(table *uint64, nbytes int, probes *uint64, np int) uint32
}

var (
	hammingMaxKernAVX512 = hammingMaxKerns{
		one: [6]func(*uint64, int, *uint64) uint32{hammingMax8AVX512, hammingMax16AVX512, hammingMax32AVX512,
			hammingMax64AVX512, hammingMax128AVX512, hammingMax256AVX512},
		many: [6]func(*uint64, int, *uint64, int) uint32{hammingMaxN8AVX512, hammingMaxN16AVX512, hammingMaxN32AVX512,
			hammingMaxN64AVX512, hammingMaxN128AVX512, hammingMaxN256AVX512},
	}
	hammingMaxKernAVX2 = hammingMaxKerns{
		one: [6]func(*uint64, int, *uint64) uint32{hammingMax8AVX2, hammingMax16AVX2, hammingMax32AVX2,
			hammingMax64AVX2, hammingMax128AVX2, hammingMax256AVX2},
		many: [6]func(*uint64, int, *uint64, int) uint32{hammingMaxN8AVX2, hammingMaxN16AVX2, hammingMaxN32AVX2,
			hammingMaxN64AVX2, hammingMaxN128AVX2, hammingMaxN256AVX2},
	}
)

// hammingMaxWith runs a set's fused kernel on runs of at least one vector
// (vecBytes) and counts shorter runs in Go.
func hammingMaxWith(table []uint64, width, n int, probes []uint64, vecBytes int, k *hammingMaxKerns) (uint32, bool) {
	if n == 0 {
		return 0, true
	}
	np := hammingMaxArgs(table, width, n, probes)
	if np == 0 {
		return 0, false
	}
	nbytes := n * width / 8
	if nbytes < vecBytes {
		return hammingMaxGo(table, width, n, probes), true
	}
	w := bits.TrailingZeros(uint(width)) - 3 // widths 8, 16, ..., 256 as 0..5
	if np == 1 {
		return k.one[w](&table[0], nbytes, &probes[0]), true
	}
	return k.many[w](&table[0], nbytes, &probes[0], np), true
}

// hammingMaxProbeLimit is the most probes the fused kernels sum for
// bits-bit codes (bits 8, 16, 32, 64, 128 or 256): the kernels sum a code's
// distances in the element type of its counts, so np*bits, the largest
// sum, must fit a byte for 8-bit codes (np <= 31), a word for 16-bit codes
// (np <= 4095) and a uint32 otherwise (the result; the AVX2 wide kernels
// also take dword maxima of their qword sums): np <= (2^32-1)/bits, from
// 134217727 for 32-bit codes to 16777215 for 256-bit codes.
func hammingMaxProbeLimit(bits int) int {
	switch bits {
	case 8:
		return (1<<8 - 1) / 8
	case 16:
		return (1<<16 - 1) / 16
	}
	return (1<<32 - 1) / bits
}

// hammingMaxArgs returns the number of probes, np, when the fused kernels
// take a call with n > 0, and 0 when they do not. They take it when bits
// is 8, 16, 32, 64, 128 or 256, table holds CodeWords(bits, n) words and
// probes np >= 1 whole probes of max(1, bits/64) words, np at most
// hammingMaxProbeLimit(bits). The caller's distance path handles any
// other call (as the generic kernels do, panics included).
func hammingMaxArgs(table []uint64, bits, n int, probes []uint64) int {
	switch bits {
	case 8, 16, 32, 64, 128, 256:
	default:
		return 0
	}
	// n <= len(table)*64/bits is CodeWords(bits, n) <= len(table), and
	// n*bits cannot overflow.
	if n <= 0 || uint(n) > uint(len(table))*64/uint(bits) {
		return 0
	}
	pw := max(1, bits/64)
	np := len(probes) / pw
	if np == 0 || len(probes)%pw != 0 || np > hammingMaxProbeLimit(bits) {
		return 0
	}
	return np
}

// hammingMaxGo is the maximum over codes [0, n) in Go, for runs shorter
// than a vector; the arguments are as hammingMaxArgs accepts.
func hammingMaxGo(table []uint64, width, n int, probes []uint64) uint32 {
	m := 0
	if Narrow(width) {
		k := 64 / width
		mask := uint64(1)<<uint(width) - 1
		for i := 0; i < n; i++ {
			c := table[i/k] >> (uint(i%k) * uint(width)) & mask
			d := 0
			for _, p := range probes {
				d += bits.OnesCount64(c ^ p&mask)
			}
			m = max(m, d)
		}
		return uint32(m)
	}
	w := width / 64
	for i := 0; i < n; i++ {
		code := table[i*w : (i+1)*w]
		d := 0
		for p := 0; p+w <= len(probes); p += w {
			for j, c := range code {
				d += bits.OnesCount64(c ^ probes[p+j])
			}
		}
		m = max(m, d)
	}
	return uint32(m)
}
