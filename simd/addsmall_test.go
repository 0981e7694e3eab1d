package simd

import (
	"math/rand/v2"
	"testing"
)

// TestAddSmallU32 compares AddSmallU32 with the plain loop for every
// length up to 300, aligned and misaligned, with sums up to 2^32 - 1.
func TestAddSmallU32(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 0; n <= 300; n++ {
		for off := 0; off < 2; off++ {
			dst := make([]uint32, n+off+1)[off:]
			src := make([]uint32, n+1)[:n]
			for i := range src {
				a := rng.Uint32()
				dst[i] = a
				src[i] = rng.Uint32()
				if a != 0 {
					src[i] = rng.Uint32N(^a + 1) // a + src[i] <= 2^32 - 1
				}
			}
			want := append([]uint32(nil), dst...)
			for i, v := range src {
				want[i] += v
			}
			AddSmallU32(dst, src)
			for i := range want {
				if dst[i] != want[i] {
					t.Fatalf("n %d offset %d: dst[%d] = %d, want %d", n, off, i, dst[i], want[i])
				}
			}
		}
	}
}
