//go:build !noasm

package simd

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
)

// The range kernels of Farthest (maxRange with skipped entries masked in
// the kernel, findRange) against a reference on unpacked codes, on every
// range [c0, c1) of a table up to a few vectors past its end, so that
// every start offset, every tail and every overlap of the last vector
// with skipped entries is covered. The codes outside the range and the
// skipped codes are the complement of the probes (the largest distance):
// a kernel that read past the range, or counted a skipped code, would
// report it.

type fusedSet struct {
	name  string
	k     func(bits int) *fusedKerns
	setup func(t *testing.T)
}

func fusedSets(t *testing.T) []fusedSet {
	var sets []fusedSet
	if hasAVX512 {
		sets = append(sets, fusedSet{"avx512", fusedAVX512For, nil},
			fusedSet{"avx512-nobitalg", fusedAVX512For, func(t *testing.T) {
				old := hasBITALG
				hasBITALG = false
				t.Cleanup(func() { hasBITALG = old })
			}})
	}
	if hasAVX2 {
		sets = append(sets, fusedSet{"avx2", func(int) *fusedKerns { return &fusedAVX2 }, nil})
	}
	if len(sets) == 0 {
		t.Skip("SKIP: this CPU has neither AVX2 nor AVX-512")
	}
	return sets
}

func forEachFusedSet(t *testing.T, f func(t *testing.T, s fusedSet)) {
	for _, s := range fusedSets(t) {
		t.Run(s.name, func(t *testing.T) {
			if s.setup != nil {
				s.setup(t)
			}
			f(t, s)
		})
	}
}

// fusedCase is a table of n codes near the probes, a range and a skip
// list (sorted, from c0 on, with repeats and entries past c1).
type fusedCase struct {
	c      hmCodes
	table  []uint64
	probes []uint64
	c0, c1 int
	skip   []int32
}

func newFusedCase(rng *rand.Rand, nb, np, n, c0, c1 int) fusedCase {
	probes := nearProbes(rng, nb, np)
	c := randHmCodes(rng, nb, n, 1, probes)
	w := c.words()
	far := func(i int) {
		for j := 0; j < w; j++ {
			c.c[i*w+j] = ^probes[j] & lowMask(nb)
		}
	}
	for i := 0; i < n; i++ {
		if i < c0 || i >= c1 {
			far(i)
		}
	}
	var skip []int32
	for i := c0; i < min(c1+3, n+3); i++ {
		if rng.IntN(6) == 0 {
			skip = append(skip, int32(i))
			if rng.IntN(4) == 0 {
				skip = append(skip, int32(i)) // a repeat
			}
			if i < n {
				far(i)
			}
		}
	}
	// Sometimes a long run of skipped entries, a whole vector and more.
	if c1 > c0 && rng.IntN(4) == 0 {
		a := c0 + rng.IntN(c1-c0)
		for i := a; i < min(a+70, c1); i++ {
			skip = append(skip, int32(i))
			far(i)
		}
		slices.Sort(skip)
	}
	fill := rng.Uint64()
	return fusedCase{c: c, table: c.pack(fill), probes: probes, c0: c0, c1: c1, skip: skip}
}

// refMax is the largest level of a kept code, 0 when none is kept.
func (f fusedCase) refMax(ps *probeSet) uint32 {
	var m uint32
	for i := f.c0; i < f.c1; i++ {
		if !slices.Contains(f.skip, int32(i)) {
			m = max(m, ps.level(f.table, f.c.bits, i))
		}
	}
	return m
}

func (f fusedCase) refFind(ps *probeSet, target uint32) int {
	for i := f.c0; i < f.c1; i++ {
		if ps.level(f.table, f.c.bits, i) == target {
			return i
		}
	}
	return -1
}

// The levels of a probeSet give back the summed distances, for every code
// width and 1 to 40 probes (random, near each other, all equal, pairs of
// complements), and take fewer planes than probes.
func TestProbeSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	var buf [(maxPlanes + 1) * 4]uint64
	for _, nb := range hammingMaxWidths {
		for np := 1; np <= 40; np++ {
			if np > hammingMaxLimits[nb] {
				continue
			}
			for kind := 0; kind < 4; kind++ {
				probes := randProbes(rng, nb, np)
				switch kind {
				case 1:
					probes = nearProbes(rng, nb, np)
				case 2:
					probes = sameProbes(rng, nb, np)
				case 3:
					w := max(1, nb/64)
					for i := w; i+w <= len(probes); i += 2 * w {
						for j := 0; j < w; j++ {
							probes[i+j] = ^probes[i-w+j]
						}
					}
				}
				c := randHmCodes(rng, nb, 300, rng.IntN(3), probes)
				table := c.pack(rng.Uint64())
				ps := newProbeSet(&buf, nb, probes, np)
				if np > 1 && ps.nplanes > bits.Len(uint(np)) {
					t.Fatalf("bits %d np %d: %d planes", nb, np, ps.nplanes)
				}
				for i := 0; i < c.n; i++ {
					if got, want := ps.dist(ps.level(table, nb, i)), uint32(c.refDist(i, probes)); got != want {
						t.Fatalf("bits %d np %d kind %d code %d: distance %d, want %d", nb, np, kind, i, got, want)
					}
				}
			}
		}
	}
}

// fusedRanges are the ranges of a table of n codes of cb bytes tested:
// every start in the first two vectors (and a few more), with every
// length up to five vectors and a few longer ones.
func fusedRanges(rng *rand.Rand, cb, n int) [][2]int {
	perVec := 64 / cb
	var r [][2]int
	for c0 := 0; c0 <= min(n, 2*perVec+3); c0++ {
		for l := 0; c0+l <= n && l <= 5*perVec+3; l++ {
			if testing.Short() && l > perVec+2 && rng.IntN(8) != 0 {
				continue
			}
			r = append(r, [2]int{c0, c0 + l})
		}
	}
	for i := 0; i < 20; i++ {
		a := rng.IntN(n)
		r = append(r, [2]int{a, a + rng.IntN(n-a+1)})
	}
	return append(r, [2]int{0, n})
}

func TestFusedMaxRange(t *testing.T) {
	forEachFusedSet(t, func(t *testing.T, s fusedSet) {
		rng := rand.New(rand.NewPCG(31, 32))
		var buf [(maxPlanes + 1) * 4]uint64
		for _, nb := range hammingMaxWidths {
			k := s.k(nb)
			for _, np := range []int{1, 2, 4, 5, 8} {
				n := 12 * 64 / (nb / 8)
				for _, r := range fusedRanges(rng, nb/8, n) {
					f := newFusedCase(rng, nb, np, n, r[0], r[1])
					before := slices.Clone(f.skip)
					ps := newProbeSet(&buf, nb, f.probes, np)
					got := k.maxRange(f.table, nb, f.c0, f.c1, &ps, f.skip)
					if want := f.refMax(&ps); got != want {
						t.Fatalf("bits %d np %d [%d, %d) skip %v: max %d, want %d", nb, np, f.c0, f.c1, f.skip, got, want)
					}
					if !slices.Equal(f.skip, before) {
						t.Fatalf("bits %d: maxRange changed skip", nb)
					}
				}
			}
		}
	})
}

func TestFusedFindRange(t *testing.T) {
	forEachFusedSet(t, func(t *testing.T, s fusedSet) {
		rng := rand.New(rand.NewPCG(33, 34))
		var buf [(maxPlanes + 1) * 4]uint64
		for _, nb := range hammingMaxWidths {
			k := s.k(nb)
			for _, np := range []int{1, 3} {
				n := 12 * 64 / (nb / 8)
				for _, r := range fusedRanges(rng, nb/8, n) {
					f := newFusedCase(rng, nb, np, n, r[0], r[1])
					ps := newProbeSet(&buf, nb, f.probes, np)
					// The level of a random code of the table (in the
					// range or not), the largest one, one no code has,
					// and one whose low 16 bits are a code's.
					lv := func(i int) uint32 { return ps.level(f.table, nb, i) }
					targets := []uint32{lv(rng.IntN(n)), uint32(np * nb), uint32(np*nb + 1), 1<<16 + lv(rng.IntN(n))}
					if f.c1 > f.c0 {
						targets = append(targets, lv(f.c0+rng.IntN(f.c1-f.c0)))
					}
					for _, target := range targets {
						got := k.findRange(f.table, nb, f.c0, f.c1, &ps, target)
						if want := f.refFind(&ps, target); got != want {
							t.Fatalf("bits %d np %d [%d, %d) target %d: %d, want %d", nb, np, f.c0, f.c1, target, got, want)
						}
					}
				}
			}
		}
	})
}

// Farthest over tables of several runs (farthestRun bytes each) against
// the generic one: the maximum in the first, a middle or the last run,
// at a run's first or last entry, held by skipped entries before a kept
// one (the search must step over them), ties across runs.
func TestFarthestRuns(t *testing.T) {
	forEachFusedSet(t, func(t *testing.T, s fusedSet) {
		rng := rand.New(rand.NewPCG(35, 36))
		for _, nb := range hammingMaxWidths {
			run := farthestRun / (nb / 8)
			for _, np := range []int{1, 4} {
				for _, n := range []int{run - 1, run, run + 1, 3*run + 17} {
					for trial := 0; trial < 12; trial++ {
						probes := nearProbes(rng, nb, np)
						c := randHmCodes(rng, nb, n, 1, probes)
						w := c.words()
						plant := func(i int) {
							for j := 0; j < w; j++ {
								c.c[i*w+j] = ^probes[j] & lowMask(nb)
							}
						}
						var skip []int32
						at := min(n-1, []int{0, run - 1, run, n - 1, n / 2, rng.IntN(n)}[trial%6])
						plant(at)
						if trial >= 6 { // skipped entries at the maximum before (and around) a kept one
							for i := max(0, at-3); i < at; i++ {
								plant(i)
								skip = append(skip, int32(i))
							}
							skip = append(skip, int32(n+5), int32(at+1))
							if trial%2 == 0 {
								plant(min(n-1, at+run)) // a tie in a later run
							}
						}
						table := c.pack(rng.Uint64())
						k := Kernels{Farthest: func(table []uint64, bits int, probes []uint64, n int, skip []int32) int {
							return farthestWith(s.k, table, bits, probes, n, skip)
						}}
						want := farthestGeneric(table, nb, probes, n, skip)
						if got := k.Farthest(table, nb, probes, n, skip); got != want {
							t.Fatalf("bits %d np %d n %d at %d skip %v: %d, want %d", nb, np, n, at, skip, got, want)
						}
					}
				}
			}
		}
	})
}

func TestFarthestAllocs(t *testing.T) {
	forEachFusedSet(t, func(t *testing.T, s fusedSet) {
		for _, nb := range hammingMaxWidths {
			n := 3 * farthestRun / (nb / 8)
			table := make([]uint64, CodeWords(nb, n))
			for i := range table {
				table[i] = uint64(i) * 0x9e3779b97f4a7c15
			}
			probes := make([]uint64, 4*max(1, nb/64))
			skip := []int32{0, 1, 2, 3, int32(n - 1)}
			for _, np := range []int{1, 4} {
				p := probes[:np*max(1, nb/64)]
				if a := testing.AllocsPerRun(10, func() { farthestWith(s.k, table, nb, p, n, skip) }); a != 0 {
					t.Fatal(fmt.Sprintf("bits %d np %d: %v allocations", nb, np, a))
				}
			}
		}
	})
}
