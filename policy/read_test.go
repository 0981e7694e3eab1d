package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestNonFiniteRowIsNamed puts a NaN or an Inf in one row of q or k, with
// the heads back to back (checked a token at a time) and apart (row by
// row), in both modes: the step is refused with the row named, and the
// sequence takes the same step with finite rows afterwards.
func TestNonFiniteRowIsNamed(t *testing.T) {
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		for _, gap := range []int{0, 8} { // floats between heads
			for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
				for _, which := range []string{"q", "k"} {
					t.Run(fmt.Sprintf("mode%d/gap%d/%v/%s", mode, gap, bad, which), func(t *testing.T) {
						p := smallParams()
						p.Mode = mode
						e := mustEngine(t, p)
						must(t, e.AddSeq(0))
						rng := rand.New(rand.NewPCG(5, 6))
						n := 3
						rows := func(heads int) *Rows {
							stride := p.HeadDim + gap
							x := make([]float32, n*heads*stride)
							copy(x, gauss(rng, len(x)))
							r := f32Rows(x, n, heads, p.HeadDim)
							r.HeadStride = int64(stride) * 4
							r.TokenStride = int64(heads*stride) * 4
							return r
						}
						q, k := rows(p.QHeads), rows(p.KVHeads)
						r, heads := q, p.QHeads
						if which == "k" {
							r, heads = k, p.KVHeads
						}
						tok, head := 1, heads-1
						off := int64(tok)*r.TokenStride + int64(head)*r.HeadStride + 4*int64(p.HeadDim/2)
						good := math.Float32bits(1)
						put := func(v uint32) {
							r.Data[off], r.Data[off+1], r.Data[off+2], r.Data[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
						}
						put(math.Float32bits(bad))
						pos := []int32{0, 1, 2}
						step := func() error {
							if mode == ModeToken {
								return e.Observe(0, 0, q, k, pos)
							}
							return e.Place(0, 0, q, k, pos, make([]int32, n*p.KVHeads), nil)
						}
						err := step()
						want := fmt.Sprintf("%s row of token %d, head %d holds NaN or Inf", which, tok, head)
						if CodeOf(err) != CodeNonFinite || !strings.Contains(err.Error(), want) {
							t.Fatalf("got %v, want %q", err, want)
						}
						put(good)
						must(t, step())
					})
				}
			}
		}
	}
}
