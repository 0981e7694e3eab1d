//go:build !noasm

package simd

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// setFeatures pretends the CPU lacks AVX2 and/or AVX-512 (it never
// enables what the CPU lacks) and re-registers the kernel sets; everything
// is restored when the test ends.
func setFeatures(t *testing.T, avx2, avx512 bool) {
	oldAVX2, oldAVX512 := hasAVX2, hasAVX512
	oldAvail, oldOrder, oldActive := available, order, ActiveSet()
	t.Cleanup(func() {
		hasAVX2, hasAVX512 = oldAVX2, oldAVX512
		available, order = oldAvail, oldOrder
		mu.Lock()
		active = oldActive
		mu.Unlock()
	})
	hasAVX2, hasAVX512 = avx2 && oldAVX2, avx512 && oldAVX512
	available, order = map[string]*Kernels{"generic": &Generic}, nil
	registerCPUSets()
}

func TestFeatureOverride(t *testing.T) {
	cpuAVX2, cpuAVX512 := hasAVX2, hasAVX512
	t.Run("none", func(t *testing.T) {
		setFeatures(t, false, false)
		if got := Available(); !slices.Equal(got, []string{"generic"}) {
			t.Fatalf("Available() = %v, want [generic]", got)
		}
		if err := Use("avx2"); err == nil {
			t.Fatal("Use(avx2) succeeded without AVX2")
		}
	})
	t.Run("avx2 only", func(t *testing.T) {
		if !cpuAVX2 {
			t.Skip("CPU lacks AVX2/F16C/BMI2")
		}
		setFeatures(t, true, false)
		if got := Available(); !slices.Equal(got, []string{"avx2", "generic"}) {
			t.Fatalf("Available() = %v, want [avx2 generic]", got)
		}
	})
	t.Run("all", func(t *testing.T) {
		if !cpuAVX512 {
			t.Skip("CPU lacks AVX-512 F/BW/VL/VPOPCNTDQ")
		}
		setFeatures(t, true, true)
		if got := Available(); !slices.Equal(got, []string{"avx512", "avx2", "generic"}) {
			t.Fatalf("Available() = %v, want [avx512 avx2 generic]", got)
		}
	})
}

func TestAVX512Registered(t *testing.T) {
	if !hasAVX512 {
		t.Skip("CPU lacks AVX-512 F/BW/VL/VPOPCNTDQ: the avx512 set is not tested here")
	}
	if Available()[0] != "avx512" {
		t.Fatalf("Available() = %v, want avx512 first", Available())
	}
}

func TestAVX2Registered(t *testing.T) {
	if !hasAVX2 {
		t.Skip("CPU lacks AVX2/F16C/BMI2: the avx2 set is not tested here")
	}
	if !slices.Contains(Available(), "avx2") {
		t.Fatalf("Available() = %v, want avx2", Available())
	}
}

// The scalar POPCNT Hamming kernel is not in a set (the nibble table won
// the measurement, see docs/kernels.md) but stays correct.
func TestHammingPopcntMatchesGeneric(t *testing.T) {
	if !hasAVX2 {
		t.Skip("CPU lacks POPCNT/AVX2")
	}
	testHamming(t, hammingPopcntGo)
}

// BenchmarkHammingAVX2Variants compares the two ways to count bits without
// a vector popcount: the nibble table (VPSHUFB, the avx2 set) and scalar
// POPCNT.
func BenchmarkHammingAVX2Variants(b *testing.B) {
	if !hasAVX2 {
		b.Skip("CPU lacks AVX2")
	}
	b.Run("variant=lut", func(b *testing.B) { benchHamming(b, available["avx2"].Hamming) })
	b.Run("variant=popcnt", func(b *testing.B) { benchHamming(b, hammingPopcntGo) })
}

// TestHammingStreaming covers the non-temporal path of the AVX-512 Hamming
// kernel (outputs of at least streamBytes), at every alignment of dist.
func TestHammingStreaming(t *testing.T) {
	if !hasAVX512 {
		t.Skip("CPU lacks AVX-512")
	}
	if testing.Short() {
		t.Skip("large tables")
	}
	rng := rand.New(rand.NewPCG(81, 82))
	for _, words := range []int{1, 2, 4} {
		n := streamBytes/4 + 37
		table := randCodes(rng, (n+8)*words)
		probes := randCodes(rng, 3*words)
		want := make([]uint32, n+8)
		got := make([]uint32, n+8)
		for off := 0; off < 8; off++ {
			hammingGeneric(want[:n], table[off*words:(off+n)*words], words, probes)
			hammingAVX512Go(got[off:off+n], table[off*words:(off+n)*words], words, probes)
			for i := 0; i < n; i++ {
				if got[off+i] != want[i] {
					t.Fatalf("words %d offset %d i %d: %d, want %d", words, off, i, got[off+i], want[i])
				}
			}
		}
	}
}
