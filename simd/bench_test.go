package simd

// Benchmarks of every kernel on every set, named for benchstat:
//
//	go test -run '^$' -bench . -count 10 ./simd | tee new.txt
//	benchstat -col /set new.txt
//
// Throughput (MB/s) counts the bytes each kernel reads from its main
// input: the code table, the scores and positions, the distances (and
// scores, counts), the source rows. Sizes are cache-resident; the command
// cmd/hashevict-bench measures tables larger than the caches.

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func benchSets(b *testing.B, f func(b *testing.B, k Kernels)) {
	for _, name := range Available() {
		b.Run("set="+name, func(b *testing.B) { f(b, *available[name]) })
	}
}

func sizeName(bytes int) string {
	if bytes >= 1<<20 {
		return fmt.Sprintf("%dMiB", bytes>>20)
	}
	return fmt.Sprintf("%dKiB", bytes>>10)
}

func BenchmarkHamming(b *testing.B) {
	benchSets(b, func(b *testing.B, k Kernels) {
		benchHamming(b, k.Hamming)
	})
}

func benchHamming(b *testing.B, ham func([]uint32, []uint64, int, []uint64)) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, nb := range []int{16, 64, 128, 256} {
		words := (nb + 63) / 64
		for _, np := range []int{1, 4} {
			for _, bytes := range []int{16 << 10, 1 << 20} {
				n := bytes / 8 / words
				table := randCodes(rng, n*words)
				probes := randCodes(rng, np*words)
				dist := make([]uint32, n)
				b.Run(fmt.Sprintf("bits=%d/probes=%d/table=%s", nb, np, sizeName(bytes)), func(b *testing.B) {
					b.SetBytes(int64(n * words * 8))
					for b.Loop() {
						ham(dist, table, words, probes)
					}
				})
			}
		}
	}
}

func BenchmarkHash(b *testing.B) {
	benchSets(b, func(b *testing.B, k Kernels) {
		rng := rand.New(rand.NewPCG(3, 4))
		for _, dim := range []int{64, 128, 100} {
			for _, nb := range []int{16, 64, 256} {
				x := make([]float32, dim)
				rt := make([]float32, nb*dim)
				fillFloats(rng, x, 0)
				fillFloats(rng, rt, 0)
				code := make([]uint64, (nb+63)/64)
				b.Run(fmt.Sprintf("dim=%d/bits=%d", dim, nb), func(b *testing.B) {
					b.SetBytes(int64(4 * dim)) // one row hashed per op
					for b.Loop() {
						k.Hash(code, x, rt)
					}
				})
			}
		}
	})
}

func BenchmarkArgmaxIn(b *testing.B) {
	benchSets(b, func(b *testing.B, k Kernels) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, n := range []int{2048, 32768} {
			score := make([]float32, n)
			pos := make([]int32, n)
			fillFloats(rng, score, 0)
			for i := range pos {
				pos[i] = int32(rng.IntN(n))
			}
			b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
				b.SetBytes(int64(8 * n))
				for b.Loop() {
					k.ArgmaxIn(score, pos, 4, int32(n-10))
				}
			})
		}
	})
}

func BenchmarkUpdate(b *testing.B) {
	benchSets(b, func(b *testing.B, k Kernels) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, mode := range []int{ScoreInstant, ScoreAccumulated, ScoreDecayed} {
			n := 4096
			score := make([]float32, n)
			count := make([]uint32, n)
			dist := make([]uint32, n)
			for i := range dist {
				dist[i] = uint32(rng.IntN(64))
				count[i] = uint32(rng.IntN(100))
			}
			b.Run(fmt.Sprintf("mode=%d/entries=%d", mode, n), func(b *testing.B) {
				b.SetBytes(int64(4 * n)) // the distances
				for b.Loop() {
					k.Update(score, count, dist, 4, mode, 0.9)
					if mode == ScoreAccumulated {
						clear(count)
					}
				}
			})
		}
	})
}

func BenchmarkConvert(b *testing.B) {
	benchSets(b, func(b *testing.B, k Kernels) {
		for _, dim := range []int{128, 4096} {
			src := make([]uint16, dim)
			for i := range src {
				src[i] = uint16(0x3c00 + i%1000)
			}
			x := make([]float32, dim)
			b.Run(fmt.Sprintf("kind=f16/dim=%d", dim), func(b *testing.B) {
				b.SetBytes(int64(2 * dim))
				for b.Loop() {
					k.F16ToF32(x, src)
				}
			})
			b.Run(fmt.Sprintf("kind=bf16/dim=%d", dim), func(b *testing.B) {
				b.SetBytes(int64(2 * dim))
				for b.Loop() {
					k.BF16ToF32(x, src)
				}
			})
			b.Run(fmt.Sprintf("kind=finite/dim=%d", dim), func(b *testing.B) {
				b.SetBytes(int64(4 * dim))
				for b.Loop() {
					k.FiniteF32(x)
				}
			})
		}
	})
}

func BenchmarkBitCount(b *testing.B) {
	benchSets(b, func(b *testing.B, k Kernels) {
		rng := rand.New(rand.NewPCG(9, 10))
		for _, nb := range []int{16, 64, 256} {
			words := (nb + 63) / 64
			n := 4096
			table := randCodes(rng, n*words)
			ones := make([]uint32, nb)
			for j := range ones {
				ones[j] = uint32(rng.IntN(100))
			}
			dist := make([]uint32, n)
			b.Run(fmt.Sprintf("bits=%d/codes=%d", nb, n), func(b *testing.B) {
				b.SetBytes(int64(8 * n * words))
				for b.Loop() {
					k.BitCount(dist, table, words, ones, 100)
				}
			})
		}
	})
}
