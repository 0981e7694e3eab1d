package policy

import "math"

// The projection generator is part of the algorithm's specification, so
// that every backend and the Python reference derive the same matrices:
//
//	state  = seed + golden*(layer+1)                    (mod 2^64)
//	next() = splitmix64 step on state
//	u()    = ((next() >> 11) + 0.5) / 2^53              in (0, 1)
//	pairs  : u1 = u(), u2 = u(); r = sqrt(-2 ln u1);
//	         z0 = r cos(2π u2), z1 = r sin(2π u2)       (float64)
//	R^T    : rows j = 0..bits-1, columns i = 0..dim-1, filled row-major from
//	         z0, z1, z0, z1, ... each rounded to float32.
//
// Rounding to float32 absorbs the last-place differences between libm
// implementations of log/cos/sin in float64 for all but ~2^-29 of entries;
// the library also exports the matrices (hashevict_projection) so a
// reference can use them verbatim.
const golden = 0x9E3779B97F4A7C15

type splitmix struct{ s uint64 }

func (r *splitmix) next() uint64 {
	r.s += golden
	z := r.s
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

func (r *splitmix) uniform() float64 {
	return (float64(r.next()>>11) + 0.5) * (1.0 / (1 << 53))
}

// Projection returns layer's matrix R^T as bits rows of dim float32.
func Projection(seed uint64, layer, dim, bits int) []float32 {
	rng := splitmix{s: seed + golden*uint64(layer+1)}
	out := make([]float32, bits*dim)
	for i := 0; i < len(out); i += 2 {
		u1, u2 := rng.uniform(), rng.uniform()
		r := math.Sqrt(-2 * math.Log(u1))
		s, c := math.Sincos(2 * math.Pi * u2)
		out[i] = float32(r * c)
		if i+1 < len(out) {
			out[i+1] = float32(r * s)
		}
	}
	return out
}

// mix hashes several integers into one uniformly spread 64-bit value; the
// random policy draws its scores from it, so they depend only on
// (seed, seq, layer, head, step, slot) and not on call timing.
func mix(vals ...uint64) uint64 {
	r := splitmix{}
	for _, v := range vals {
		r.s ^= v
		r.s = r.next()
	}
	return r.s
}
