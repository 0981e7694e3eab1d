//go:build !noasm

package simd

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The maximum kernels against slices.Max, for every length up to 1024 and
// the maximum at every position, with values across the whole uint32 range
// (VPMAXUD compares unsigned: values with the top bit set must win).
func TestMaxU32(t *testing.T) {
	kernels := map[string]func([]uint32) uint32{}
	if hasAVX512 {
		kernels["avx512"] = maxU32AVX512Go
	}
	if hasAVX2 {
		kernels["avx2"] = maxU32AVX2Go
	}
	if len(kernels) == 0 {
		t.Skip("SKIP: this CPU has neither AVX2 nor AVX-512")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for name, k := range kernels {
		for n := 1; n <= 1024; n++ {
			x := make([]uint32, n+1)
			for i := range x {
				x[i] = rng.Uint32() >> (rng.IntN(4) * 8)
			}
			x[n] = ^uint32(0) // a guard past the end: must not be read
			want := slices.Max(x[:n])
			if got := k(x[:n]); got != want {
				t.Fatalf("%s n %d: %d, want %d", name, n, got, want)
			}
			if n%61 == 0 || n <= 128 {
				for at := 0; at < n; at++ {
					y := make([]uint32, n)
					y[at] = 0x80000000 | uint32(at)
					if got := k(y); got != y[at] {
						t.Fatalf("%s n %d: max at %d: %d, want %d", name, n, at, got, y[at])
					}
				}
			}
		}
		if got := k(nil); got != 0 {
			t.Fatalf("%s: empty gives %d, want 0", name, got)
		}
	}
}
