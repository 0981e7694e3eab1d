//go:build !noasm

package bench

import (
	"math"
	"testing"

	"github.com/klauspost/cpuid/v2"
)

// TestExpAccuracy checks the vectorised exp of the softmax against math.Exp
// over the range the softmax feeds it (x - max <= 0).
func TestExpAccuracy(t *testing.T) {
	if !cpuid.CPU.Supports(cpuid.AVX512F, cpuid.FMA3) {
		t.Skip("CPU lacks AVX-512")
	}
	const n = 1 << 16
	x := make([]float32, n)
	for i := range x {
		x[i] = -float32(i) * 100 / n // 0 .. -100
	}
	want := make([]float64, n)
	for i, v := range x {
		want[i] = math.Exp(float64(v))
	}
	var m, sums [16]float32
	expSumAVX512(&x[0], n, &m, &sums)
	// The float32 argument reduction (t = x*log2(e) rounded) costs about
	// |t|·2^-24 of relative error: ~1e-7 near 0, a few 1e-6 near -87,
	// below which float32 results are denormal.
	worstNear, worst := 0.0, 0.0
	for i := range x {
		in := -float64(i) * 100 / n
		if in < -87 {
			continue
		}
		e := math.Abs(float64(x[i])-want[i]) / want[i]
		worst = max(worst, e)
		if in >= -10 {
			worstNear = max(worstNear, e)
		}
	}
	if worst > 1e-5 || worstNear > 1e-6 {
		t.Fatalf("relative error %g (%g on [-10, 0])", worst, worstNear)
	}
	t.Logf("worst relative error %.2g on [-87, 0], %.2g on [-10, 0]", worst, worstNear)
}
