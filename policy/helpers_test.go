package policy

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/hashevict/hashevict/simd"
)

// f32Rows wraps a contiguous [tokens][heads][dim] float32 array.
func f32Rows(x []float32, tokens, heads, dim int) *Rows {
	return &Rows{
		Data:        unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), len(x)*4),
		DType:       F32,
		Dim:         dim,
		Heads:       heads,
		Tokens:      tokens,
		HeadStride:  int64(dim) * 4,
		TokenStride: int64(heads*dim) * 4,
	}
}

func gauss(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

func mustEngine(t testing.TB, p Params) *Engine {
	t.Helper()
	e, err := NewEngine(p)
	if err != nil {
		t.Fatalf("NewEngine(%+v): %v", p, err)
	}
	return e
}

func smallParams() Params {
	p := DefaultParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim = 2, 2, 4, 32
	p.Budget = 24
	return p
}

// naiveCode hashes x against rt with float64 dot products; it agrees with
// the lane-ordered float32 kernel except where a dot product is within
// rounding of zero.
func naiveCode(x, rt []float32, nbits int) []uint64 {
	dim := len(x)
	code := make([]uint64, (nbits+63)/64)
	for j := 0; j < nbits; j++ {
		var s float64
		for i := 0; i < dim; i++ {
			s += float64(x[i]) * float64(rt[j*dim+i])
		}
		if s >= 0 {
			code[j/64] |= 1 << (j % 64)
		}
	}
	return code
}

func ham(a, b []uint64) int {
	d := 0
	for i := range a {
		d += bits.OnesCount64(a[i] ^ b[i])
	}
	return d
}

func code(e *Engine, layer int, x []float32) []uint64 {
	c := make([]uint64, e.P.Words())
	simd.Generic.Hash(c, x, e.proj[layer])
	return c
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
