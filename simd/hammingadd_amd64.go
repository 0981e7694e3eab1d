//go:build !noasm

package simd

import "math/bits"

// hammingAddAVX512Go is HammingAdd: one-word codes (a token-mode layer's
// combined codes) by hammingAddW1AVX512 in blocks of 32, or, for 2^m - 1
// probes, by hammingAddSlicesW1AVX512 over the m slices of their counts
// (countSlices); the rest and other widths through the set's Hamming and
// AddSmallU32.
func hammingAddAVX512Go(run []uint32, table []uint64, words int, probes []uint64) {
	n := len(run)
	if words != 1 || len(probes) == 0 || len(table) < n {
		hammingAddVia(hammingAVX512Go, run, table, words, probes)
		return
	}
	blocks := n / 32
	if blocks > 0 {
		np := len(probes)
		if m := bits.Len(uint(np)); np >= 3 && np+1 == 1<<m && m <= maxSlices {
			var u [maxSlices]uint64
			countSlices(&u, probes)
			// Horner from the highest slice down.
			for i, j := 0, m-1; i < j; i, j = i+1, j-1 {
				u[i], u[j] = u[j], u[i]
			}
			hammingAddSlicesW1AVX512(&run[0], &table[0], blocks, &u[0], m)
		} else {
			hammingAddW1AVX512(&run[0], &table[0], blocks, &probes[0], np)
		}
	}
	hammingAddGeneric(run[blocks*32:], table[blocks*32:n], 1, probes)
}

// maxSlices bounds the probes that go through the slices: 2^6 - 1.
const maxSlices = 6

// countSlices sets u[k] to bit k of the per-bit-position count of the
// probes that have that bit set (bit-sliced: u[k] bit b is bit k of u_b).
//
// With np = 2^m - 1 probes, a code bit c_b differs from u_b of them when
// it is 0 and from np - u_b = ^u_b (in m bits) when it is 1: that is
// u_b ^ (c_b ? 2^m-1 : 0), whose bit k is bit b of c ^ u[k]. So the summed
// distance of code c is Σ_k 2^k · popcount(c ^ u[k]), exactly: m popcounts
// instead of np (2 instead of 3 for SmolLM2's three query heads per KV
// head).
func countSlices(u *[maxSlices]uint64, probes []uint64) {
	for _, carry := range probes {
		for k := 0; k < maxSlices && carry != 0; k++ {
			u[k], carry = u[k]^carry, u[k]&carry
		}
	}
}

func hammingAddAVX2Go(run []uint32, table []uint64, words int, probes []uint64) {
	hammingAddVia(hammingAVX2Go, run, table, words, probes)
}

// hammingAddVia is HammingAdd by a Hamming kernel into an L1-resident
// block of distances and AddSmallU32; calls that kernel would not take
// the usual way go to the generic loop (panics included).
func hammingAddVia(hamming func([]uint32, []uint64, int, []uint64), run []uint32, table []uint64, words int, probes []uint64) {
	n := len(run)
	if words < 1 || words > 4 || len(table) < n*words || len(probes) < words {
		hammingAddGeneric(run, table, words, probes)
		return
	}
	sc := blockScratchPool.Get().(*blockScratch)
	defer blockScratchPool.Put(sc)
	for i := 0; i < n; i += scoreBlock {
		m := min(scoreBlock, n-i)
		d := sc.dist[:m]
		hamming(d, table[i*words:(i+m)*words], words, probes)
		AddSmallU32(run[i:i+m], d)
	}
}
