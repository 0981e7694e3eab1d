package simd

import (
	"math/bits"
	"math/rand/v2"
	"testing"
)

// HammingAdd of every set against a plain loop (and the generic kernel
// against Hamming followed by an add): every length 0…1100 (sparser under
// -short) and a few past a block of 1024, words 1, 2 and 4, 1 to 9,
// 15, 31, 63 and 64 probes (equal ones, all ones against all zeros), totals that start anywhere below 2^31, a guard after run that
// must stay untouched, and the probes and table unmodified.
func TestHammingAddAgainstLoop(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		rng := rand.New(rand.NewPCG(3, 14))
		step := 1
		if testing.Short() {
			step = 13
		}
		lengths := []int{2047, 2048, 2049, 4100}
		for n := 0; n <= 1100; n += step {
			lengths = append(lengths, n)
		}
		for _, words := range []int{1, 2, 4} {
			for _, n := range lengths {
				// 3, 7, 15, 31 and 63 one-word probes take the slices.
				np := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 7, 15, 31, 63, 64}[rng.IntN(15)]
				table := randCodes(rng, n*words)
				probes := randCodes(rng, np*words)
				switch rng.IntN(6) {
				case 0: // every probe the same: the counts are 0 or np
					for i := words; i < len(probes); i++ {
						probes[i] = probes[i%words]
					}
				case 1: // the largest distances
					for i := range probes {
						probes[i] = ^uint64(0)
					}
					for i := range table {
						table[i] = 0
					}
				}
				tableCopy, probesCopy := append([]uint64(nil), table...), append([]uint64(nil), probes...)
				buf := make([]uint32, n+8)
				for i := range buf {
					buf[i] = rng.Uint32() >> 1
				}
				want := append([]uint32(nil), buf...)
				for i := 0; i < n; i++ {
					for p := 0; p < np; p++ {
						for w := 0; w < words; w++ {
							want[i] += uint32(bits.OnesCount64(table[i*words+w] ^ probes[p*words+w]))
						}
					}
				}
				k.HammingAdd(buf[:n], table, words, probes)
				for i := range buf {
					if buf[i] != want[i] {
						t.Fatalf("words %d, n %d, np %d: run[%d] = %d, want %d (guard from %d)", words, n, np, i, buf[i], want[i], n)
					}
				}
				for i := range table {
					if table[i] != tableCopy[i] {
						t.Fatalf("words %d, n %d: the table changed", words, n)
					}
				}
				for i := range probes {
					if probes[i] != probesCopy[i] {
						t.Fatalf("words %d, n %d: the probes changed", words, n)
					}
				}
			}
		}
	})
}
