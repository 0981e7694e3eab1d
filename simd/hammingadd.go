package simd

import "math/bits"

// hammingAddGeneric adds to run[i], for i < len(run), the sum over the
// probes of the Hamming distance between code i of table (words uint64
// long) and the probe: Hamming into run's elements instead of over them.
// The token-mode decode step keeps a running per-slot total this way.
// The accelerated sets give the same result as long as no sum reaches
// 2^32 (as AddSmallU32; the step bounds its totals below it).
func hammingAddGeneric(run []uint32, table []uint64, words int, probes []uint64) {
	if words == 1 {
		table = table[:len(run)]
		for i, c := range table {
			var d int
			for _, pr := range probes {
				d += bits.OnesCount64(c ^ pr)
			}
			run[i] += uint32(d)
		}
		return
	}
	np := len(probes) / words
	for i := range run {
		c := table[i*words : (i+1)*words]
		var d int
		for p := 0; p < np; p++ {
			pr := probes[p*words : (p+1)*words]
			for j, w := range c {
				d += bits.OnesCount64(w ^ pr[j])
			}
		}
		run[i] += uint32(d)
	}
}
