package simd

import (
	"math"
	"math/bits"
)

// Lanes is the number of interleaved float32 accumulators that define the
// summation order of every projection dot product. Element i of a row is
// accumulated into lane i % Lanes with a separate multiply and add (never a
// fused multiply-add); the lanes are then folded pairwise, lane i += lane
// i+w for w = 8, 4, 2, 1. Every backend (Go, assembly, CUDA, the Python
// reference) follows this order, so the sign of each dot product, and hence
// every code bit, is bit-identical across them.
const Lanes = 16

// dotLanes is the reference dot product in the specified lane order.
func dotLanes(x, r []float32) float32 {
	var acc [Lanes]float32
	n := len(x)
	i := 0
	for ; i+Lanes <= n; i += Lanes {
		for l := 0; l < Lanes; l++ {
			// The explicit float32 conversion forbids the compiler from
			// fusing the multiply into the add.
			acc[l] = acc[l] + float32(x[i+l]*r[i+l])
		}
	}
	for l := 0; i+l < n; l++ {
		acc[l] = acc[l] + float32(x[i+l]*r[i+l])
	}
	for w := Lanes / 2; w >= 1; w /= 2 {
		for l := 0; l < w; l++ {
			acc[l] = acc[l] + acc[l+w]
		}
	}
	return acc[0]
}

// hashGeneric writes the code of x: bit j is set when x·rt[j] >= 0, where
// rt holds bits rows of len(x) floats. code must hold ceil(bits/64) words.
func hashGeneric(code []uint64, x, rt []float32) {
	dim := len(x)
	nbits := len(rt) / dim
	for w := range code {
		code[w] = 0
	}
	for j := 0; j < nbits; j++ {
		if dotLanes(x, rt[j*dim:(j+1)*dim]) >= 0 {
			code[j>>6] |= 1 << (uint(j) & 63)
		}
	}
}

// hammingGeneric sets dist[i] to the sum over probes of the Hamming distance
// between code i of table and the probe; codes are `words` uint64 long.
func hammingGeneric(dist []uint32, table []uint64, words int, probes []uint64) {
	if words == 1 {
		// Codes of up to 64 bits: one word each, no inner slicing.
		table = table[:len(dist)]
		for i, c := range table {
			var d int
			for _, pr := range probes {
				d += bits.OnesCount64(c ^ pr)
			}
			dist[i] = uint32(d)
		}
		return
	}
	np := len(probes) / words
	for i := range dist {
		c := table[i*words : (i+1)*words]
		var d int
		for p := 0; p < np; p++ {
			pr := probes[p*words : (p+1)*words]
			for w := 0; w < words; w++ {
				d += bits.OnesCount64(c[w] ^ pr[w])
			}
		}
		dist[i] = uint32(d)
	}
}

// bitCountDistGeneric gives the same sums as hammingGeneric from per-bit
// counts: ones[j] probes have bit j set out of total, so a code with bit j
// set differs from total-ones[j] of them, and with it clear from ones[j].
// It costs O(bits) per code instead of O(probes*words).
func bitCountDistGeneric(dist []uint32, table []uint64, words int, ones []uint32, total uint32) {
	nbits := len(ones)
	var base uint32
	for _, o := range ones {
		base += o
	}
	for i := range dist {
		c := table[i*words : (i+1)*words]
		d := base
		for j := 0; j < nbits; j++ {
			if c[j>>6]>>(uint(j)&63)&1 != 0 {
				d += total - 2*ones[j]
			}
		}
		dist[i] = d
	}
}

// argmaxRangeGeneric returns the index of the largest score among entries
// whose position p satisfies lo <= p < hi, the lowest index on ties, or -1
// when no entry qualifies. NaN scores never win.
func argmaxRangeGeneric(score []float32, pos []int32, lo, hi int32) int {
	best := -1
	var bestScore float32
	for i, p := range pos {
		if p < lo || p >= hi {
			continue
		}
		s := score[i]
		if best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// Score update modes, in the numbering of the C enum.
const (
	ScoreInstant     = 0
	ScoreAccumulated = 1
	ScoreDecayed     = 2
)

// updateGeneric folds a step's distance sums into the scores. The step
// distance is dist[i]/n (n: tokens in the step). Instant replaces the score,
// accumulated keeps a running mean over count[i] steps, decayed keeps an
// exponential moving average s = decay*s + (1-decay)*d.
func updateGeneric(score []float32, count []uint32, dist []uint32, n uint32, mode int, decay float32) {
	inv := 1 / float32(n)
	switch mode {
	case ScoreInstant:
		for i, d := range dist {
			score[i] = float32(d) * inv
		}
	case ScoreAccumulated:
		for i, d := range dist {
			c := count[i] + 1
			count[i] = c
			s := score[i]
			score[i] = s + float32(float32(float32(d)*inv)-s)/float32(c)
		}
	case ScoreDecayed:
		keep := 1 - decay
		for i, d := range dist {
			score[i] = float32(decay*score[i]) + float32(keep*float32(float32(d)*inv))
		}
	}
}

// f16ToF32Generic converts IEEE half floats and reports whether all of them
// are finite.
func f16ToF32Generic(dst []float32, src []uint16) bool {
	ok := true
	for i, h := range src {
		if h&0x7c00 == 0x7c00 {
			ok = false
		}
		dst[i] = HalfToFloat(h)
	}
	return ok
}

// bf16ToF32Generic converts bfloat16 values and reports whether all of them
// are finite.
func bf16ToF32Generic(dst []float32, src []uint16) bool {
	ok := true
	for i, h := range src {
		if h&0x7f80 == 0x7f80 {
			ok = false
		}
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
	return ok
}

// finiteGeneric reports whether no element of x is NaN or ±Inf.
func finiteGeneric(x []float32) bool {
	for _, v := range x {
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 {
			return false
		}
	}
	return true
}

// HalfToFloat converts one IEEE 754 binary16 value exactly.
func HalfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal half: normalise into a float32 exponent.
	e := uint32(113)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}
