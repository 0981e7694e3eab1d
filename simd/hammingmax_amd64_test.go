//go:build !noasm

package simd

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
)

// The fused Hamming-maximum kernels against a reference on unpacked codes,
// for every set this CPU runs (and AVX-512 without BITALG), every code
// width, every length up to 1100 and 1 to 32 probes (and the documented
// probe limits).

type hammingMaxFunc func(table []uint64, bits, n int, probes []uint64) (uint32, bool)

// hammingMaxSet is one way to call the fused kernels; unsupported says
// which widths it may decline.
type hammingMaxSet struct {
	name        string
	f           hammingMaxFunc
	unsupported func(bits int) bool
	setup       func(t *testing.T)
	farthest    func(table []uint64, bits int, probes []uint64, n int, skip []int32) int // the Farthest that calls f
}

func hammingMaxSets(t *testing.T) []hammingMaxSet {
	none := func(int) bool { return false }
	var sets []hammingMaxSet
	if hasAVX512 {
		sets = append(sets, hammingMaxSet{"avx512", hammingMaxAVX512Go, none, nil, farthestAVX512Go})
		sets = append(sets, hammingMaxSet{"avx512-nobitalg", hammingMaxAVX512Go, none,
			func(t *testing.T) {
				old := hasBITALG
				hasBITALG = false
				t.Cleanup(func() { hasBITALG = old })
			}, farthestAVX512Go})
	}
	if hasAVX2 {
		sets = append(sets, hammingMaxSet{"avx2", hammingMaxAVX2Go, none, nil, farthestAVX2Go})
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

// hammingMaxLimits are the probe counts documented at
// hammingMaxProbeLimit: np*bits fits a byte, a word or a uint32.
var hammingMaxLimits = map[int]int{8: 31, 16: 4095, 32: 134217727, 64: 67108863, 128: 33554431, 256: 16777215}

// hammingMaxProbeCounts are the probe counts every test runs for bits-bit
// codes: those up to the limit (the limit itself where it is small) and
// the limit+1 where that is small enough to allocate.
func hammingMaxProbeCounts(nb int) []int {
	var nps []int
	for _, np := range []int{1, 2, 3, 4, 8, 31, 32} {
		if np <= hammingMaxLimits[nb]+1 {
			nps = append(nps, np)
		}
	}
	return nps
}

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

// refDist is the distance of code i to the probes (np probes of words()
// words each): the sum over the probes of the Hamming distance, from
// math/bits, of the code and the probe's low bits bits.
func (c hmCodes) refDist(i int, probes []uint64) int {
	w := c.words()
	d := 0
	for p := 0; p+w <= len(probes); p += w {
		for j, x := range c.code(i) {
			d += bits.OnesCount64((x ^ probes[p+j]) & lowMask(c.bits))
		}
	}
	return d
}

// refMax is the largest distance.
func (c hmCodes) refMax(probes []uint64) uint32 {
	m := 0
	for i := 0; i < c.n; i++ {
		m = max(m, c.refDist(i, probes))
	}
	return uint32(m)
}

// randProbes returns np probes of max(1, bits/64) words; a narrow probe
// has random bits above its width, which the kernels must ignore.
func randProbes(rng *rand.Rand, nb, np int) []uint64 {
	p := make([]uint64, np*max(1, nb/64))
	for i := range p {
		p[i] = rng.Uint64()
	}
	return p
}

// sameProbes returns np probes with the low bits bits of one random
// probe, a narrow probe's high bits random.
func sameProbes(rng *rand.Rand, nb, np int) []uint64 {
	w := max(1, nb/64)
	p := randProbes(rng, nb, np)
	for i := w; i < len(p); i++ {
		p[i] = p[i-w]&lowMask(nb) | p[i]&^lowMask(nb)
	}
	return p
}

// nearProbes returns np probes that differ from a random first probe in
// a few bits each, so that a code far from the first is far from all.
func nearProbes(rng *rand.Rand, nb, np int) []uint64 {
	w := max(1, nb/64)
	p := randProbes(rng, nb, np)
	for i := w; i < len(p); i++ {
		p[i] = p[i%w] ^ (rng.Uint64() & rng.Uint64() & rng.Uint64() & rng.Uint64())
	}
	return p
}

// randHmCodes draws n codes. kind 0: uniformly random; kind 1: near the
// first probe (few differing bits) with one farther code at a random
// position, so that the maximum is usually unique; kind 2: all equal to
// one random code; kind 3: all equal to the first probe (maximum 0 with
// one probe: a kernel that counted zero codes past the end would report
// popcount(probe)).
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

// declines reports whether s must give ok = false for np bits-bit probes
// (n > 0, a table that holds the codes).
func (s hammingMaxSet) declines(nb, np int) bool {
	return s.unsupported(nb) || np < 1 || np > hammingMaxLimits[nb]
}

func (s hammingMaxSet) check(t *testing.T, what string, c hmCodes, table, probes []uint64) {
	t.Helper()
	np := len(probes) / c.words()
	got, ok := s.f(table, c.bits, c.n, probes)
	if !ok {
		if c.n == 0 || !s.declines(c.bits, np) {
			t.Fatalf("%s bits %d n %d np %d: ok = false", what, c.bits, c.n, np)
		}
		if got != 0 {
			t.Fatalf("%s bits %d n %d np %d: ok = false with %d", what, c.bits, c.n, np, got)
		}
		return
	}
	if c.n > 0 && s.declines(c.bits, np) {
		t.Fatalf("%s bits %d n %d np %d: ok = true where the set has no kernel", what, c.bits, c.n, np)
	}
	if want := c.refMax(probes); got != want {
		t.Fatalf("%s bits %d n %d np %d: max %d, want %d", what, c.bits, c.n, np, got, want)
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

// hammingMaxFewLengths are fewer lengths, for several probes: every tail
// of every width's loops up to 160, then a spread.
func hammingMaxFewLengths() []int {
	var ns []int
	for n := 0; n <= 1100; n++ {
		if n <= 160 || n%(37+54*btoi(testing.Short())) == 0 || n == 1100 {
			ns = append(ns, n)
		}
	}
	return append(ns, 4999, 5001, 70001)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestHammingMaxRandom(t *testing.T) {
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		rng := rand.New(rand.NewPCG(11, 12))
		for _, nb := range hammingMaxWidths {
			for _, np := range hammingMaxProbeCounts(nb) {
				ns := hammingMaxLengths()
				if np > 1 {
					ns = hammingMaxFewLengths()
				}
				for _, n := range ns {
					for kind := 0; kind < 4; kind++ {
						probes := randProbes(rng, nb, np)
						if kind == 1 && rng.IntN(2) == 0 {
							probes = nearProbes(rng, nb, np)
						}
						c := randHmCodes(rng, nb, n, kind, probes)
						s.check(t, fmt.Sprintf("kind %d", kind), c, c.pack(rng.Uint64()), probes)
					}
				}
			}
		}
	})
}

// The maximum (the complement of the first probe, the others near it) at
// every position of a table whose other codes equal the first probe.
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
			for _, np := range []int{1, 3, 31} {
				for _, n := range ns {
					if np > 1 && n > 300 && n != 555 {
						continue
					}
					probes := nearProbes(rng, nb, np)
					c := randHmCodes(rng, nb, n, 3, probes)
					w := c.words()
					for at := 0; at < n; at++ {
						for j := 0; j < w; j++ {
							c.c[at*w+j] = ^probes[j] & lowMask(nb)
						}
						want := c.refDist(at, probes)
						if np == 1 && want != nb {
							t.Fatalf("bits %d: the planted code is at %d", nb, want)
						}
						table := c.pack(rng.Uint64())
						got, ok := s.f(table, nb, n, probes)
						if !ok || got != uint32(want) || got != c.refMax(probes) {
							t.Fatalf("bits %d n %d np %d: maximum at %d: %d (ok %v), want %d (max %d)", nb, n, np, at, got, ok, want, c.refMax(probes))
						}
						for j := 0; j < w; j++ {
							c.c[at*w+j] = probes[j] & lowMask(nb)
						}
					}
				}
			}
		}
	})
}

// Every code equals the probes (np probes with the same low bits) and the
// words around the table (and the unused bits of a narrow table's last
// word) hold their complement: a kernel that read any of them would report
// more than 0.
func TestHammingMaxReadsOnlyTheTable(t *testing.T) {
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		rng := rand.New(rand.NewPCG(15, 16))
		for _, nb := range hammingMaxWidths {
			for _, np := range []int{1, 3, 8} {
				ns := hammingMaxLengths()
				if np > 1 {
					ns = hammingMaxFewLengths()
				}
				for _, n := range ns {
					probes := sameProbes(rng, nb, np)
					c := randHmCodes(rng, nb, n, 3, probes)
					w := c.words()
					cw := CodeWords(nb, n)
					const guard = 16
					buf := make([]uint64, cw+2*guard)
					for i := range buf {
						buf[i] = ^probes[i%w]
					}
					fill := ^probes[0]
					if Narrow(nb) {
						fill = 0
						for sh := 0; sh < 64; sh += nb {
							fill |= (^probes[0] & lowMask(nb)) << uint(sh)
						}
					}
					table := buf[guard : guard+cw : guard+cw]
					c.packInto(table, fill)
					if c.refMax(probes) != 0 {
						t.Fatalf("bits %d np %d: the codes are not the probes", nb, np)
					}
					s.check(t, "guarded", c, table, probes)
				}
			}
		}
	})
}

// The documented probe limits: at the limit the largest possible sum,
// np*bits, comes back exactly (no lane overflows), one more probe gives
// ok = false; for 32 bits and more, 4097 probes give sums that need more
// than 16 bits.
func TestHammingMaxProbeLimits(t *testing.T) {
	for _, nb := range hammingMaxWidths {
		if got := hammingMaxProbeLimit(nb); got != hammingMaxLimits[nb] {
			t.Fatalf("bits %d: hammingMaxProbeLimit %d, documented %d", nb, got, hammingMaxLimits[nb])
		}
		lane := uint64(1<<32 - 1) // the largest sum a lane holds
		if nb <= 16 {
			lane = 1<<uint(nb) - 1
		}
		if top := uint64(hammingMaxLimits[nb]) * uint64(nb); top > lane || top+uint64(nb) <= lane {
			t.Fatalf("bits %d: the limit is not the largest that fits", nb)
		}
	}
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		rng := rand.New(rand.NewPCG(19, 20))
		for _, nb := range hammingMaxWidths {
			nps := []int{hammingMaxLimits[nb], hammingMaxLimits[nb] + 1}
			if nb > 16 {
				nps = []int{4097}
			}
			for _, np := range nps {
				for _, n := range []int{1, 7, 100, 333, 1000, 5001} {
					probes := sameProbes(rng, nb, np)
					c := randHmCodes(rng, nb, n, 3, probes)
					w := c.words()
					at := rng.IntN(n)
					for j := 0; j < w; j++ {
						c.c[at*w+j] = ^probes[j] & lowMask(nb)
					}
					if c.refMax(probes) != uint32(np*nb) {
						t.Fatalf("bits %d np %d: the reference is not np*bits", nb, np)
					}
					s.check(t, "limit", c, c.pack(rng.Uint64()), probes)
					s.check(t, "limit random", c, c.pack(rng.Uint64()), randProbes(rng, nb, np))
				}
			}
		}
	})
}

// Farthest through the fused kernels with several probes: few skipped
// entries, so that most blocks take the fused path (the Farthest tests
// skip entries in nearly every block), against farthestGeneric.
func TestHammingMaxFarthest(t *testing.T) {
	ns := []int{1, 100, 1023, 1024, 1025, 2049, 5000}
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		rng := rand.New(rand.NewPCG(21, 22))
		for _, nb := range hammingMaxWidths {
			for _, np := range hammingMaxProbeCounts(nb) {
				for _, n := range ns {
					for kind := 0; kind < 4; kind++ {
						probes := randProbes(rng, nb, np)
						if kind == 1 {
							probes = nearProbes(rng, nb, np)
						}
						c := randHmCodes(rng, nb, n, kind, probes)
						table := c.pack(rng.Uint64())
						var skip []int32
						switch rng.IntN(3) {
						case 1:
							skip = []int32{0, int32(n - 1)}
						case 2:
							skip = []int32{int32(rng.IntN(n)), int32(n + 3), -1}
						}
						want := farthestGeneric(table, nb, probes, n, skip)
						if got := s.farthest(table, nb, probes, n, skip); got != want {
							t.Fatalf("kind %d bits %d n %d np %d skip %v: %d, want %d", kind, nb, n, np, skip, got, want)
						}
					}
				}
			}
		}
	})
}

// Calls without a kernel give ok = false and never panic; n = 0 gives
// (0, true) whatever the table and probes.
func TestHammingMaxOddCalls(t *testing.T) {
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		table := make([]uint64, 64)
		probe := make([]uint64, 4)
		many := make([]uint64, 4096)
		for _, nb := range []int{0, 1, 7, 12, 24, 48, 96, 192, 512, -8} {
			if m, ok := s.f(table, nb, 4, probe); ok || m != 0 {
				t.Fatalf("bits %d: (%d, %v), want (0, false)", nb, m, ok)
			}
		}
		for _, nb := range hammingMaxWidths {
			if m, ok := s.f(nil, nb, 0, nil); !ok || m != 0 {
				t.Fatalf("bits %d n 0: (%d, %v), want (0, true)", nb, m, ok)
			}
			w := max(1, nb/64)
			n := len(table) * 64 / nb
			bad := []struct {
				what          string
				table, probes []uint64
				n             int
			}{
				{"n < 0", table, probe, -1},
				{"table too short", table, probe, n + 1},
				{"table too short by far", table, probe, 1 << 62},
				{"no probe", table, nil, n},
				{"empty probes", table, probe[:0], n},
				{"probe too short", table, probe[:w-1], n},
				{"probes not whole", table, many[:3*w-1], n},
				{"probes not whole by one", table, many[:w+1], n},
			}
			if nb <= 16 {
				bad = append(bad, struct {
					what          string
					table, probes []uint64
					n             int
				}{"too many probes", table, many[:(hammingMaxLimits[nb]+1)*w], n})
			}
			for _, b := range bad {
				if strings.HasPrefix(b.what, "probes not whole") && w == 1 {
					continue // any number of one-word probes is whole
				}
				if m, ok := s.f(b.table, nb, b.n, b.probes); ok || m != 0 {
					t.Fatalf("bits %d %s: (%d, %v), want (0, false)", nb, b.what, m, ok)
				}
			}
			for _, np := range []int{1, 2, 31} {
				if _, ok := s.f(table, nb, n, many[:np*w]); ok == s.unsupported(nb) {
					t.Fatalf("bits %d np %d: a whole table gives ok = %v", nb, np, ok)
				}
			}
		}
	})
}

func TestHammingMaxAllocs(t *testing.T) {
	forEachHammingMaxSet(t, func(t *testing.T, s hammingMaxSet) {
		table := make([]uint64, 1000)
		probes := make([]uint64, 32)
		for _, nb := range hammingMaxWidths {
			for _, np := range []int{1, 4} {
				for _, n := range []int{3, 1000 * 64 / nb} {
					p := probes[:np*max(1, nb/64)]
					if a := testing.AllocsPerRun(10, func() { s.f(table, nb, n, p) }); a != 0 {
						t.Fatalf("bits %d n %d np %d: %v allocations per call", nb, n, np, a)
					}
				}
			}
		}
	})
}

// hammingMaxBenchTable is shared by the benchmarks: 256 MiB take a while
// to fill.
var hammingMaxBenchTable []uint64

// BenchmarkHammingMax times the fused maximum with 1 and 4 probes on one
// table in the caches and one much larger than them; bytes are table
// bytes.
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
				for _, np := range []int{1, 4} {
					for _, bytes := range []int{16 << 10, 256 << 20} {
						b.Run(fmt.Sprintf("bits=%d/probes=%d/table=%s", nb, np, sizeName(bytes)), func(b *testing.B) {
							if len(hammingMaxBenchTable) < bytes/8 {
								rng := rand.New(rand.NewPCG(17, 18))
								hammingMaxBenchTable = make([]uint64, bytes/8)
								for i := range hammingMaxBenchTable {
									hammingMaxBenchTable[i] = rng.Uint64()
								}
							}
							table := hammingMaxBenchTable[:bytes/8]
							probes := make([]uint64, np*max(1, nb/64))
							for i := range probes {
								probes[i] = uint64(i+1) * 0x9e3779b97f4a7c15
							}
							n := bytes * 8 / nb
							if _, ok := f(table, nb, n, probes); !ok {
								b.Skip("no fused kernel")
							}
							b.SetBytes(int64(bytes))
							for b.Loop() {
								f(table, nb, n, probes)
							}
						})
					}
				}
			}
		})
	}
}
