//go:build !noasm

package simd

// hammingAddAVX512Go is HammingAdd: one-word codes (a token-mode layer's
// combined codes) by hammingAddW1AVX512 in blocks of 32, the rest and
// other widths through the set's Hamming and AddSmallU32.
func hammingAddAVX512Go(run []uint32, table []uint64, words int, probes []uint64) {
	n := len(run)
	if words != 1 || len(probes) == 0 || len(table) < n {
		hammingAddVia(hammingAVX512Go, run, table, words, probes)
		return
	}
	blocks := n / 32
	if blocks > 0 {
		hammingAddW1AVX512(&run[0], &table[0], blocks, &probes[0], len(probes))
	}
	hammingAddGeneric(run[blocks*32:], table[blocks*32:n], 1, probes)
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
