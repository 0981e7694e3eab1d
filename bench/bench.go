// Package bench holds the measuring sticks of cmd/hashevict-bench, outside
// the library: a single-core memory-read loop and one decode step of f32
// attention. On amd64 with AVX-512 both run generated assembly
// (kernels_amd64.s, from _gen); elsewhere they run the Go loops below.
package bench

import "math"

// HeadDim is the head dimension the attention kernels are written for.
const HeadDim = 128

// Group is the number of query heads per KV head the attention handles at
// once (GQA).
const Group = 4

// A ReadLoop reads a buffer (returning the wrapping sum of its words, so
// that the reads cannot be skipped). The memory-read bandwidth is that of
// the fastest loop.
type ReadLoop struct {
	Name string
	Sum  func(x []uint64) uint64
}

var (
	// ReadLoops lists the read loops of this machine.
	ReadLoops = []ReadLoop{{"Go loop, 8 independent uint64 sums per iteration", readSumGo}}

	attendImpl = attendGo
	// AttendMethod describes the attention implementation in use.
	AttendMethod = "Go loops: q·K per key for the 4 heads of the group, float64 exp, p·V per key"
)

func readSumGo(x []uint64) uint64 {
	var s [8]uint64
	n := len(x) &^ 7
	for i := 0; i < n; i += 8 {
		v := x[i : i+8 : i+8]
		s[0] += v[0]
		s[1] += v[1]
		s[2] += v[2]
		s[3] += v[3]
		s[4] += v[4]
		s[5] += v[5]
		s[6] += v[6]
		s[7] += v[7]
	}
	for _, v := range x[n:] {
		s[0] += v
	}
	return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7]
}

// Attend runs one decode step of attention for one KV head: the Group query
// heads q ([Group][HeadDim]) attend over n cached keys and values (k, v:
// [n][HeadDim]); out receives [Group][HeadDim]. Scores are scaled by
// 1/sqrt(HeadDim) and softmax-normalised per head; everything is float32
// except where noted. scratch must hold Group*n floats.
func Attend(out, q, k, v []float32, n int, scratch []float32) {
	_ = out[Group*HeadDim-1]
	_ = q[Group*HeadDim-1]
	if n == 0 {
		clear(out[:Group*HeadDim])
		return
	}
	_ = k[n*HeadDim-1]
	_ = v[n*HeadDim-1]
	_ = scratch[Group*n-1]
	attendImpl(out, q, k, v, n, scratch)
}

func attendGo(out, q, k, v []float32, n int, p []float32) {
	scale := float32(1 / math.Sqrt(HeadDim))
	q0, q1, q2, q3 := q[0:HeadDim], q[HeadDim:2*HeadDim], q[2*HeadDim:3*HeadDim], q[3*HeadDim:4*HeadDim]
	var mx [Group]float32
	for h := range mx {
		mx[h] = float32(math.Inf(-1))
	}
	for i := 0; i < n; i++ {
		kr := k[i*HeadDim : (i+1)*HeadDim]
		var s0, s1, s2, s3 float32
		for d, kv := range kr {
			s0 += q0[d] * kv
			s1 += q1[d] * kv
			s2 += q2[d] * kv
			s3 += q3[d] * kv
		}
		l := p[4*i : 4*i+4]
		l[0], l[1], l[2], l[3] = s0*scale, s1*scale, s2*scale, s3*scale
		for h := range mx {
			mx[h] = max(mx[h], l[h])
		}
	}
	var z [Group]float32
	for i := 0; i < 4*n; i++ {
		e := float32(math.Exp(float64(p[i] - mx[i%4])))
		p[i] = e
		z[i%4] += e
	}
	clear(out[:Group*HeadDim])
	o0, o1, o2, o3 := out[0:HeadDim], out[HeadDim:2*HeadDim], out[2*HeadDim:3*HeadDim], out[3*HeadDim:4*HeadDim]
	for i := 0; i < n; i++ {
		vr := v[i*HeadDim : (i+1)*HeadDim]
		w0, w1, w2, w3 := p[4*i], p[4*i+1], p[4*i+2], p[4*i+3]
		for d, vv := range vr {
			o0[d] += w0 * vv
			o1[d] += w1 * vv
			o2[d] += w2 * vv
			o3[d] += w3 * vv
		}
	}
	normalise(out, z)
}

func normalise(out []float32, z [Group]float32) {
	for h := 0; h < Group; h++ {
		inv := 1 / z[h]
		o := out[h*HeadDim : (h+1)*HeadDim]
		for d := range o {
			o[d] *= inv
		}
	}
}
