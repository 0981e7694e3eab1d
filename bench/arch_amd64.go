//go:build !noasm

package bench

import (
	"math"

	"github.com/klauspost/cpuid/v2"
)

func init() {
	if !cpuid.CPU.Supports(cpuid.AVX512F, cpuid.FMA3) {
		return
	}
	ReadLoops = append(ReadLoops,
		ReadLoop{"AVX-512 assembly: 8 × 64-byte loads per iteration into 4 ZMM accumulators (readSumAVX512)",
			func(x []uint64) uint64 { return readSumAsm(x, readSumAVX512) }},
		ReadLoop{"the same with a PREFETCHT0 1 KiB ahead of every line (readSumT0AVX512)",
			func(x []uint64) uint64 { return readSumAsm(x, readSumT0AVX512) }},
		ReadLoop{"the same with a PREFETCHT1 4 KiB ahead of every line (readSumT1AVX512)",
			func(x []uint64) uint64 { return readSumAsm(x, readSumT1AVX512) }})
	attendImpl = attendAsm
	AttendMethod = "AVX-512 assembly: q·K for 4 keys × 4 heads per pass with FMA (qk4AVX512), " +
		"vectorised exp (2^k·poly, expSumAVX512), p·V for 2 heads per pass over 64-key tiles that stay in L1 (pv2AVX512); " +
		"K and V are each read from memory once"
}

func readSumAsm(x []uint64, f func(*uint64, int) uint64) uint64 {
	n := len(x) &^ 63
	var s uint64
	if n > 0 {
		s = f(&x[0], n)
	}
	for _, v := range x[n:] {
		s += v
	}
	return s
}

// pvTile is the number of keys whose values are reused from L1 by the
// second head pair.
const pvTile = 64

func attendAsm(out, q, k, v []float32, n int, p []float32) {
	n4 := n &^ 3
	scale := float32(1 / math.Sqrt(HeadDim))
	if n4 > 0 {
		qk4AVX512(&p[0], &q[0], &k[0], n4, scale)
	}
	for i := n4; i < n; i++ { // up to 3 keys left
		for h := 0; h < Group; h++ {
			var s float32
			for d := 0; d < HeadDim; d++ {
				s += q[h*HeadDim+d] * k[i*HeadDim+d]
			}
			p[4*i+h] = s * scale
		}
	}
	// Row maxima per head: lane l of a 16-lane pass holds head l%4.
	m := 4 * n
	m16 := m &^ 15
	var lanes [16]float32
	for l := range lanes {
		lanes[l] = float32(math.Inf(-1))
	}
	if m16 > 0 {
		maxLanesAVX512(&p[0], m16, &lanes)
	}
	var mx [Group]float32
	for h := range mx {
		mx[h] = float32(math.Inf(-1))
	}
	for l, x := range lanes {
		mx[l%4] = max(mx[l%4], x)
	}
	for i := m16; i < m; i++ {
		mx[i%4] = max(mx[i%4], p[i])
	}
	var mb, sums [16]float32
	for l := range mb {
		mb[l] = mx[l%4]
	}
	if m16 > 0 {
		expSumAVX512(&p[0], m16, &mb, &sums)
	}
	var z [Group]float32
	for l, s := range sums {
		z[l%4] += s
	}
	for i := m16; i < m; i++ {
		e := float32(math.Exp(float64(p[i] - mx[i%4])))
		p[i] = e
		z[i%4] += e
	}
	clear(out[:Group*HeadDim])
	for t := 0; t < n; t += pvTile {
		c := min(pvTile, n-t)
		pv2AVX512(&out[0], &p[4*t], &v[t*HeadDim], c)
		pv2AVX512(&out[2*HeadDim], &p[4*t+2], &v[t*HeadDim], c)
	}
	normalise(out, z)
}
