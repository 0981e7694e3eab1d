package simd

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// Farthest, skipping the entries whose positions are outside [lo, hi), must
// pick what the instant score picks: Hamming, the instant Update with n
// tokens, then ArgmaxIn over the scores and positions.
func TestFarthestMatchesInstantScoreStep(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		rng := rand.New(rand.NewPCG(81, 82))
		ns := append(lengths(1024), 1025, 2047, 2048, 3001, 5000)
		for _, n := range ns {
			for _, bits := range []int{8, 16, 32, 64, 128, 256, 192} {
				for _, kind := range []string{"random", "ties", "ones", "none"} {
					np := 1 + (n+bits)%5
					table, wide, probes := randTable(rng, n, bits, np)
					switch kind {
					case "ties": // every code equal: the lowest qualifying index must win
						w := max(1, bits/64)
						for i := range wide {
							wide[i] = wide[i%w]
						}
					case "ones": // all-ones codes against all-zeros probes: the largest distance everywhere
						for i := range wide {
							wide[i] = ^uint64(0)
						}
						clear(probes)
					}
					if Narrow(bits) {
						for i := range wide {
							wide[i] &= uint64(1)<<uint(bits) - 1
							PutCode(table, wide[i:i+1], bits, i)
						}
					}
					pos := make([]int32, n)
					for i := range pos {
						pos[i] = int32(rng.IntN(n + 20))
					}
					lo, hi := int32(rng.IntN(10)), int32(n-rng.IntN(10))
					if kind == "none" {
						lo, hi = hi, lo // empty or inverted range
					}
					tokens := uint32(1 + n%3)
					dist := make([]uint32, n)
					hammingGeneric(dist, wide, max(1, bits/64), narrowProbes(probes, bits))
					score := make([]float32, n)
					updateGeneric(score, nil, dist, tokens, ScoreInstant, 0)
					want := argmaxRangeGeneric(score, pos, lo, hi)
					skip := skipOutside(rng, pos, lo, hi)
					before := append([]int32(nil), skip...)
					if got := k.Farthest(table, bits, probes, n, skip); got != want {
						t.Fatalf("n %d bits %d probes %d %s [%d,%d): victim %d, want %d", n, bits, np, kind, lo, hi, got, want)
					}
					if !slices.Equal(skip, before) {
						t.Fatalf("n %d bits %d: Farthest changed skip", n, bits)
					}
				}
			}
		}
	})
}

// A block's skipped entries must not leak into the next block: with equal
// distances (and scores) everywhere, skipping all of the first block and
// the start of the second must give the first entry after them, in
// Farthest and in ScoreStep.
func TestSkipIsPerEntry(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		for _, bits := range []int{16, 64, 256} {
			n := 3*scoreBlock + 5
			table := make([]uint64, CodeWords(bits, n))
			probes := make([]uint64, max(1, bits/64))
			var skip []int32
			for i := 0; i < scoreBlock+6; i++ {
				skip = append(skip, int32(i))
			}
			all := make([]int32, n)
			for i := range all {
				all[i] = int32(n - 1 - i)
			}
			if got := k.Farthest(table, bits, probes, n, skip); got != scoreBlock+6 {
				t.Fatalf("Farthest bits %d: victim %d, want %d", bits, got, scoreBlock+6)
			}
			if got := k.Farthest(table, bits, probes, n, all); got != -1 {
				t.Fatalf("Farthest bits %d: every entry skipped, victim %d, want -1", bits, got)
			}
			for _, mode := range []int{ScoreInstant, ScoreAccumulated, ScoreDecayed} {
				score, count := make([]float32, n), make([]uint32, n)
				if got := k.ScoreStep(score, count, table, bits, probes, 1, mode, 0.5, skip); got != scoreBlock+6 {
					t.Fatalf("ScoreStep bits %d mode %d: victim %d, want %d", bits, mode, got, scoreBlock+6)
				}
				if got := k.ScoreStep(score, count, table, bits, probes, 1, mode, 0.5, all); got != -1 {
					t.Fatalf("ScoreStep bits %d mode %d: every entry skipped, victim %d, want -1", bits, mode, got)
				}
			}
		}
	})
}

// BenchmarkFarthest times the scan of a decode step (instant score): bytes
// are table bytes; six protected entries are skipped.
func BenchmarkFarthest(b *testing.B) {
	benchSets(b, func(b *testing.B, k Kernels) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, bits := range []int{16, 64, 256} {
			for _, bytes := range []int{16 << 10, 64 << 20} {
				n := bytes * 8 / bits
				b.Run(fmt.Sprintf("bits=%d/probes=1/table=%s", bits, sizeName(bytes)), func(b *testing.B) {
					table := randCodes(rng, bytes/8)
					probes := randCodes(rng, max(1, bits/64))
					skip := []int32{0, 1, 2, 3, int32(n - 2), int32(n - 1)}
					b.SetBytes(int64(bytes))
					for b.Loop() {
						k.Farthest(table, bits, probes, n, skip)
					}
				})
			}
		}
	})
}
