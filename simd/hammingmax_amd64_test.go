//go:build !noasm

package simd

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"testing"
)

// The fused Hamming-maximum kernels against a reference on unpacked codes,
// for every set this CPU runs (and AVX-512 without BITALG), every code
// width and every length up to 1100.

type hammingMaxFunc func(table []uint64, bits, n int, probe []uint64) (uint32, bool)

// hammingMaxSet is one way to call the fused kernels; unsupported says
// which widths it may decline.
type hammingMaxSet struct {
	name        string
	f           hammingMaxFunc
	unsupported func(bits int) bool
	setup       func(t *testing.T)
}

func hammingMaxSets(t *testing.T) []hammingMaxSet {
	none := func(int) bool { return false }
	var sets []hammingMaxSet
	if hasAVX512 {
		sets = append(sets, hammingMaxSet{"avx512", hammingMaxAVX512Go, func(b int) bool { return b <= 16 && !hasBITALG }, nil})
		sets = append(sets, hammingMaxSet{"avx512-nobitalg", hammingMaxAVX512Go, func(b int) bool { return b <= 16 },
			func(t *testing.T) {
				old := hasBITALG
				hasBITALG = false
				t.Cleanup(func() { hasBITALG = old })
			}})
	}
	if hasAVX2 {
		sets = append(sets, hammingMaxSet{"avx2", hammingMaxAVX2Go, none, nil})
	}
	if len(sets) == 0 {
		t.Skip("SKIP: this CPU has neither AVX2 nor AVX-512")
	}
	return sets
}

func forEachHammingMaxSet(t *testing.T, f func(t *testing.T, s hammingMaxSet)) {
	for _, s := range hammingMaxSets(t) {
		t.Run(s.name, func(t *testing.T) {
			if s.setup != nil {
				s.setup(t)
			}
			f(t, s)
		})
	}
}

var hammingMaxWidths = []int{8, 16, 32, 64, 128, 256}

// hmCodes are n unpacked codes of w = max(1, bits/64) words each (a narrow
// code in the low bits of its word, the rest zero).
type hmCodes struct {
	bits, n int
	c       []uint64
}

func (c hmCodes) words() int { return max(1, c.bits/64) }

func (c hmCodes) code(i int) []uint64 { w := c.words(); return c.c[i*w : (i+1)*w] }

func lowMask(nb int) uint64 {
	if nb >= 64 {
		return ^uint64(0)
	}
	return 1<<uint(nb) - 1
}

// pack lays the codes out as CodeWords(bits, n) table words; the bits of
// a narrow table that hold no code are set from fill.
func (c hmCodes) pack(fill uint64) []uint64 {
	t := make([]uint64, CodeWords(c.bits, c.n))
	c.packInto(t, fill)
	return t
}

func (c hmCodes) packInto(t []uint64, fill uint64) {
	if !Narrow(c.bits) {
		copy(t, c.c)
		return
	}
	for i := range t {
		t[i] = fill
	}
	k := 64 / c.bits
	for i := 0; i < c.n; i++ {
		sh := uint(i%k) * uint(c.bits)
		t[i/k] = t[i/k]&^(lowMask(c.bits)<<sh) | c.c[i]<<sh
	}
}

// refMax is the largest distance, from math/bits on the unpacked codes.
func (c hmCodes) refMax(probe []uint64) uint32 {
	m := 0
	for i := 0; i < c.n; i++ {
		d := 0
		for j, x := range c.code(i) {
			d += bits.OnesCount64((x ^ probe[j]) & lowMask(c.bits))
		}
		m = max(m, d)
	}
	return uint32(m)
}

// randProbe returns a probe of max(1, bits/64) words; a narrow probe has
// random bits above its width, which the kernels must ignore.
func randProbe(rng *rand.Rand, nb int) []uint64 {
	p := make([]uint64, max(1, nb/64))
	for i := range p {
		p[i] = rng.Uint64()
	}
	return p
}

// randHmCodes draws n codes. kind 0: uniformly random; kind 1: near the
// probe (few differing bits) with one farther code at a random position,
// so that the maximum is usually unique; kind 2: all equal to one random
// code; kind 3: all equal to the probe (maximum 0: a kernel that counted
// zero codes past the end would report popcount(probe)).
func randHmCodes(rng *rand.Rand, nb, n, kind int, probe []uint64) hmCodes {
	c := hmCodes{bits: nb, n: n}
	w := c.words()
	c.c = make([]uint64, n*w)
	mask := lowMask(nb)
	same := make([]uint64, w)
	for j := range same {
		same[j] = rng.Uint64() & mask
	}
	far := rng.IntN(max(n, 1))
	for i := 0; i < n; i++ {
		for j := 0; j < w; j++ {
			var x uint64
			switch kind {
			case 0:
				x = rng.Uint64()
			case 1:
				if i == far {
					x = probe[j] ^ (rng.Uint64() | rng.Uint64())
				} else {
					x = probe[j] ^ (rng.Uint64() & rng.Uint64() & rng.Uint64())
				}
			case 2:
				x = same[j]
			default:
				x = probe[j]
			}
			c.c[i*w+j] = x & mask
		}
	}
	return c
}

func (s hammingMaxSet) check(t *testing.T, what string, c hmCodes, table, probe []uint64) {
	t.Helper()
	got, ok := s.f(table, c.bits, c.n, probe)
	if !ok {
		if !s.unsupported(c.bits) {
			t.Fatalf("%s bits %d n %d: ok = false", what, c.bits, c.n)
		}
		if got != 0 {
			t.Fatalf("%s bits %d n %d: ok = false with %d", what, c.bits, c.n, got)
		}
		return
	}
	if c.n > 0 && s.unsupported(c.bits) {
		t.Fatalf("%s bits %d n %d: ok = true where the set has no kernel", what, c.bits, c.n)
	}
	if want := c.refMax(probe); got != want {
		t.Fatalf("%s bits %d n %d: max %d, want %d", what, c.bits, c.n, got, want)
	}
}

func hammingMaxLengths() []int {
	var ns []int
	for n := 0; n <= 1100; n++ {
		if !testing.Short() || n < 80 || n%37 == 0 || n == 1100 {
			ns = append(ns, n)
		}
	}
	return append(ns, 4999, 5000, 5001, 70001)
}

func TestHammingMaxRandom(t *testing.T) {
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		rng := rand.New(rand.NewPCG(11, 12))
		for _, nb := range hammingMaxWidths {
			for _, n := range hammingMaxLengths() {
				for kind := 0; kind < 4; kind++ {
					probe := randProbe(rng, nb)
					c := randHmCodes(rng, nb, n, kind, probe)
					s.check(t, fmt.Sprintf("kind %d", kind), c, c.pack(rng.Uint64()), probe)
				}
			}
		}
	})
}

// The maximum (the complement of the probe) at every position of a table
// whose other codes equal the probe.
func TestHammingMaxPlanted(t *testing.T) {
	ns := []int{1, 2, 3, 9, 31, 64, 65, 100, 127, 255, 256, 257, 300, 555, 1024, 1100}
	if testing.Short() {
		ns = []int{1, 9, 65, 257, 555}
	}
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		rng := rand.New(rand.NewPCG(13, 14))
		for _, nb := range hammingMaxWidths {
			if s.unsupported(nb) {
				continue
			}
			for _, n := range ns {
				probe := randProbe(rng, nb)
				c := randHmCodes(rng, nb, n, 3, probe)
				w := c.words()
				for at := 0; at < n; at++ {
					for j := 0; j < w; j++ {
						c.c[at*w+j] = ^probe[j] & lowMask(nb)
					}
					table := c.pack(rng.Uint64())
					got, ok := s.f(table, nb, n, probe)
					if !ok || got != uint32(nb) {
						t.Fatalf("bits %d n %d: maximum at %d: %d (ok %v), want %d", nb, n, at, got, ok, nb)
					}
					for j := 0; j < w; j++ {
						c.c[at*w+j] = probe[j] & lowMask(nb)
					}
				}
			}
		}
	})
}

// Every code equals the probe and the words around the table (and the
// unused bits of a narrow table's last word) hold its complement: a kernel
// that read any of them would report more than 0.
func TestHammingMaxReadsOnlyTheTable(t *testing.T) {
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		rng := rand.New(rand.NewPCG(15, 16))
		for _, nb := range hammingMaxWidths {
			for _, n := range hammingMaxLengths() {
				probe := randProbe(rng, nb)
				c := randHmCodes(rng, nb, n, 3, probe)
				cw := CodeWords(nb, n)
				const guard = 16
				buf := make([]uint64, cw+2*guard)
				for i := range buf {
					buf[i] = ^probe[i%len(probe)]
				}
				fill := ^probe[0]
				if Narrow(nb) {
					fill = 0
					for sh := 0; sh < 64; sh += nb {
						fill |= (^probe[0] & lowMask(nb)) << uint(sh)
					}
				}
				table := buf[guard : guard+cw : guard+cw]
				c.packInto(table, fill)
				s.check(t, "guarded", c, table, probe)
			}
		}
	})
}

// Calls without a kernel give ok = false and never panic; n = 0 gives
// (0, true) whatever the table.
func TestHammingMaxOddCalls(t *testing.T) {
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		table := make([]uint64, 64)
		probe := make([]uint64, 4)
		for _, nb := range []int{0, 1, 7, 12, 24, 48, 96, 192, 512, -8} {
			if m, ok := s.f(table, nb, 4, probe); ok || m != 0 {
				t.Fatalf("bits %d: (%d, %v), want (0, false)", nb, m, ok)
			}
		}
		for _, nb := range hammingMaxWidths {
			if m, ok := s.f(nil, nb, 0, nil); !ok || m != 0 {
				t.Fatalf("bits %d n 0: (%d, %v), want (0, true)", nb, m, ok)
			}
			n := len(table) * 64 / nb
			bad := []struct {
				what         string
				table, probe []uint64
				n            int
			}{
				{"n < 0", table, probe, -1},
				{"table too short", table, probe, n + 1},
				{"table too short by far", table, probe, 1 << 62},
				{"no probe", table, nil, n},
				{"probe too short", table, probe[:max(1, nb/64)-1], n},
			}
			for _, b := range bad {
				if m, ok := s.f(b.table, nb, b.n, b.probe); ok || m != 0 {
					t.Fatalf("bits %d %s: (%d, %v), want (0, false)", nb, b.what, m, ok)
				}
			}
			if _, ok := s.f(table, nb, n, probe); ok == s.unsupported(nb) {
				t.Fatalf("bits %d: a whole table gives ok = %v", nb, ok)
			}
		}
	})
}

func TestHammingMaxAllocs(t *testing.T) {
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		table := make([]uint64, 1000)
		probe := make([]uint64, 4)
		for _, nb := range hammingMaxWidths {
			for _, n := range []int{3, 1000 * 64 / nb} {
				if a := testing.AllocsPerRun(10, func() { s.f(table, nb, n, probe) }); a != 0 {
					t.Fatalf("bits %d n %d: %v allocations per call", nb, n, a)
				}
			}
		}
	})
}

// hammingMaxBenchTable is shared by the benchmarks: 256 MiB take a while
// to fill.
var hammingMaxBenchTable []uint64

// BenchmarkHammingMax times the fused maximum on one table in the caches
// and one much larger than them; bytes are table bytes.
func BenchmarkHammingMax(b *testing.B) {
	sets := map[string]hammingMaxFunc{}
	var names []string
	if hasAVX512 {
		sets["avx512"] = hammingMaxAVX512Go
		names = append(names, "avx512")
	}
	if hasAVX2 {
		sets["avx2"] = hammingMaxAVX2Go
		names = append(names, "avx2")
	}
	for _, name := range names {
		f := sets[name]
		b.Run("set="+name, func(b *testing.B) {
			for _, nb := range hammingMaxWidths {
				for _, bytes := range []int{16 << 10, 256 << 20} {
					b.Run(fmt.Sprintf("bits=%d/table=%s", nb, sizeName(bytes)), func(b *testing.B) {
						if len(hammingMaxBenchTable) < bytes/8 {
							rng := rand.New(rand.NewPCG(17, 18))
							hammingMaxBenchTable = make([]uint64, bytes/8)
							for i := range hammingMaxBenchTable {
								hammingMaxBenchTable[i] = rng.Uint64()
							}
						}
						table := hammingMaxBenchTable[:bytes/8]
						probe := []uint64{1, 2, 3, 4}
						n := bytes * 8 / nb
						if _, ok := f(table, nb, n, probe); !ok {
							b.Skip("no fused kernel")
						}
						b.SetBytes(int64(bytes))
						for b.Loop() {
							f(table, nb, n, probe)
						}
					})
				}
			}
		})
	}
}
