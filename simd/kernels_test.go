package simd

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"
)

// forEachSet runs f once per kernel set this CPU can run.
func forEachSet(t *testing.T, f func(t *testing.T, k Kernels)) {
	for _, name := range Available() {
		t.Run(name, func(t *testing.T) { f(t, *available[name]) })
	}
}

func randCodes(rng *rand.Rand, n int) []uint64 {
	c := make([]uint64, n)
	for i := range c {
		switch rng.IntN(8) {
		case 0:
			c[i] = 0
		case 1:
			c[i] = ^uint64(0)
		default:
			c[i] = rng.Uint64()
		}
	}
	return c
}

func TestHammingAndBitCountAgree(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		rng := rand.New(rand.NewPCG(1, 2))
		for _, nb := range []int{8, 16, 32, 64, 128, 256} {
			words := (nb + 63) / 64
			mask := ^uint64(0)
			if nb < 64 {
				mask = 1<<nb - 1
			}
			for n := 0; n <= 1024; n += 1 + n/8 {
				table := randCodes(rng, n*words)
				np := 1 + rng.IntN(12)
				probes := randCodes(rng, np*words)
				for i := range table {
					table[i] &= mask
				}
				for i := range probes {
					probes[i] &= mask
				}
				got := make([]uint32, n)
				k.Hamming(got, table, words, probes)
				ones := make([]uint32, nb)
				for p := 0; p < np; p++ {
					for j := 0; j < nb; j++ {
						ones[j] += uint32(probes[p*words+j/64] >> (j % 64) & 1)
					}
				}
				viaCounts := make([]uint32, n)
				k.BitCount(viaCounts, table, words, ones, uint32(np))
				for i := 0; i < n; i++ {
					want := 0
					for p := 0; p < np; p++ {
						for w := 0; w < words; w++ {
							want += bits.OnesCount64(table[i*words+w] ^ probes[p*words+w])
						}
					}
					if int(got[i]) != want || int(viaCounts[i]) != want {
						t.Fatalf("bits %d n %d i %d: hamming %d, bitcount %d, want %d", nb, n, i, got[i], viaCounts[i], want)
					}
				}
			}
		}
	})
}

func TestArgmaxIn(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		rng := rand.New(rand.NewPCG(3, 4))
		for n := 0; n <= 1024; n++ {
			score := make([]float32, n)
			pos := make([]int32, n)
			for i := range score {
				score[i] = float32(rng.IntN(5)) // many ties
				pos[i] = int32(rng.IntN(100)) - 1
			}
			lo, hi := int32(4), int32(80)
			want := -1
			for i := range score {
				if pos[i] >= lo && pos[i] < hi && (want < 0 || score[i] > score[want]) {
					want = i
				}
			}
			if got := k.ArgmaxIn(score, pos, lo, hi); got != want {
				t.Fatalf("n %d: got %d, want %d", n, got, want)
			}
		}
	})
}

func TestHalfToFloatExhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		sign := 1.0
		if h&0x8000 != 0 {
			sign = -1
		}
		exp := h >> 10 & 0x1f
		mant := float64(h & 0x3ff)
		var want float64
		switch {
		case exp == 0x1f && mant == 0:
			want = math.Inf(int(sign))
		case exp == 0x1f:
			if got := HalfToFloat(uint16(h)); !math.IsNaN(float64(got)) {
				t.Fatalf("%#x: got %v, want NaN", h, got)
			}
			continue
		case exp == 0:
			want = sign * mant * math.Pow(2, -24)
		default:
			want = sign * (1 + mant/1024) * math.Pow(2, float64(exp-15))
		}
		got := HalfToFloat(uint16(h))
		if float64(got) != want || math.Signbit(float64(got)) != (sign < 0) {
			t.Fatalf("%#x: got %v, want %v", h, got, want)
		}
	}
}

func TestConversionsFlagNonFinite(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		dst := make([]float32, 4)
		if !k.F16ToF32(dst, []uint16{0x3c00, 0x0001, 0x8000, 0x7bff}) {
			t.Fatal("finite f16 flagged")
		}
		for _, bad := range []uint16{0x7c00, 0xfc00, 0x7e00} {
			if k.F16ToF32(dst, []uint16{0, bad, 0, 0}) {
				t.Fatalf("f16 %#x not flagged", bad)
			}
		}
		if !k.BF16ToF32(dst, []uint16{0x3f80, 0x0001, 0x8000, 0x7f7f}) {
			t.Fatal("finite bf16 flagged")
		}
		for _, bad := range []uint16{0x7f80, 0xff80, 0x7fc0} {
			if k.BF16ToF32(dst, []uint16{bad, 0, 0, 0}) {
				t.Fatalf("bf16 %#x not flagged", bad)
			}
		}
		inf := float32(math.Inf(1))
		nan := float32(math.NaN())
		if !k.FiniteF32([]float32{0, -0, 1e-45, 3.4e38}) || k.FiniteF32([]float32{0, inf}) || k.FiniteF32([]float32{nan}) || k.FiniteF32([]float32{-inf}) {
			t.Fatal("FiniteF32 wrong")
		}
	})
}

func TestHashLaneOrder(t *testing.T) {
	// 17 elements: element 16 lands in lane 0 after element 0, so lane 0
	// cancels exactly and lane 1 keeps x[1]. A sequential float32 sum would
	// absorb x[1] into 1e8 and give 0 (bit set) for x[1] = -1; the
	// specified order gives -1 (bit clear).
	x := make([]float32, 17)
	r := make([]float32, 17)
	x[0], r[0] = 1e8, 1
	x[1], r[1] = 1, 1
	x[16], r[16] = -1e8, 1
	code := make([]uint64, 1)
	Generic.Hash(code, x, r)
	if code[0]&1 != 1 {
		t.Fatal("lane order not followed")
	}
	x[1] = -1
	Generic.Hash(code, x, r)
	if code[0]&1 != 0 {
		t.Fatal("negative dot hashed as 1")
	}
}
