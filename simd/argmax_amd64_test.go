//go:build !noasm

package simd

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"testing"
)

// The argmax kernels (hammingArgmax128/256AVX512) through argmaxRange
// against a plain loop: every start offset in the first two passes, every
// length up to 1100, codes drawn from a few patterns so that the maximum
// is tied many times (the blocks must give the first index), the maximum
// alone at the first and the last code, at block edges and in the Go
// tail, all codes equal.
func TestArgmaxRange(t *testing.T) {
	if !hasAVX512 {
		t.Skip("SKIP: this CPU does not run the avx512 set")
	}
	for _, width := range []int{128, 256} {
		t.Run(fmt.Sprint(width), func(t *testing.T) { testArgmaxRange(t, width) })
	}
}

func testArgmaxRange(t *testing.T, width int) {
	k := &fusedAVX512
	if !k.hasArgmax(width) {
		t.Fatalf("no argmax kernel for %d-bit codes", width)
	}
	w := width / 64
	rng := rand.New(rand.NewPCG(7, uint64(width)))
	const most = 1100
	table := make([]uint64, w*(most+32))
	probe := make([]uint64, w)
	var planes [(maxPlanes + 1) * 4]uint64
	var ps probeSet
	ref := func(c0, c1 int) (uint32, int) {
		best, at := uint32(0), -1
		for i := c0; i < c1; i++ {
			d := 0
			for j := 0; j < w; j++ {
				d += bits.OnesCount64(table[w*i+j] ^ probe[j])
			}
			if at < 0 || uint32(d) > best {
				best, at = uint32(d), i
			}
		}
		return best, at
	}
	fill := func(kinds int) {
		pats := make([]uint64, w*kinds)
		for i := range pats {
			pats[i] = rng.Uint64()
		}
		for i := 0; i < len(table)/w; i++ {
			copy(table[w*i:w*i+w], pats[w*rng.IntN(kinds):])
		}
		for j := range probe {
			probe[j] = rng.Uint64()
		}
		ps = newProbeSet(&planes, width, probe, 1)
	}
	step := 1
	if testing.Short() {
		step = 7
	}
	var out [16]uint64
	for _, kinds := range []int{1, 3, 1000} {
		fill(kinds)
		for c0 := 0; c0 < 32; c0++ {
			for n := 1; n <= most; n += step {
				wantD, wantI := ref(c0, c0+n)
				d, i := k.argmaxRange(table, width, c0, c0+n, &ps, &out)
				if d != wantD || i != wantI {
					t.Fatalf("kinds %d, codes [%d, %d): (%d, %d), want (%d, %d)", kinds, c0, c0+n, d, i, wantD, wantI)
				}
			}
		}
	}
	// The farthest code alone: ends, block edges (64 or 128 codes), tail.
	fill(1000)
	perBlock := argmaxBlock / (width / 8)
	for _, pos := range []int{0, 7, 8, perBlock - 1, perBlock, 3*perBlock + 5, 1087, 1088, 1099} {
		save := append([]uint64(nil), table[w*pos:w*pos+w]...)
		for j := 0; j < w; j++ {
			table[w*pos+j] = ^probe[j]
		}
		d, i := k.argmaxRange(table, width, 0, most, &ps, &out)
		if int(d) != width || i != pos {
			t.Fatalf("the farthest code alone at %d: (%d, %d)", pos, d, i)
		}
		copy(table[w*pos:], save)
	}
}

// Farthest with one probe on 128/256-bit codes takes the runs without
// skipped entries through the argmax kernels and the others through the
// maximum and the search: the answer must be the generic one whichever
// kind of run holds the maximum, across runs of 32 KiB and with ties
// between the kinds.
func TestFarthestArgmaxMixedRuns(t *testing.T) {
	if !hasAVX512 {
		t.Skip("SKIP: this CPU does not run the avx512 set")
	}
	for _, width := range []int{128, 256} {
		w := width / 64
		rng := rand.New(rand.NewPCG(8, uint64(width)))
		const n = 9000
		table := make([]uint64, w*n)
		probe := make([]uint64, w)
		for trial := 0; trial < 300; trial++ {
			kinds := 2 + rng.IntN(6)
			pats := make([]uint64, w*kinds)
			for i := range pats {
				pats[i] = rng.Uint64()
			}
			for i := 0; i < n; i++ {
				copy(table[w*i:w*i+w], pats[w*rng.IntN(kinds):])
			}
			for j := range probe {
				probe[j] = rng.Uint64()
			}
			var skip []int32
			for j := rng.IntN(12); j > 0; j-- {
				skip = append(skip, int32(rng.IntN(n)))
			}
			m := 1 + rng.IntN(n)
			want := farthestGeneric(table, width, probe, m, skip)
			if got := farthestAVX512Go(table, width, probe, m, skip); got != want {
				t.Fatalf("%d bits, trial %d, n %d, skip %v: %d, want %d", width, trial, m, skip, got, want)
			}
		}
	}
}
