package policy

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkDecodeStep measures one decode step of every layer (n = 1) with
// SmolLM2-135M's shape (30 layers, 9 query / 3 KV heads, head_dim 64) and a
// full cache of `budget` tokens, in both modes.
func BenchmarkDecodeStep(b *testing.B) {
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		for _, budget := range []int{512, 4096} {
			b.Run(fmt.Sprintf("mode%d/budget%d", mode, budget), func(b *testing.B) {
				p := DefaultParams()
				p.Mode, p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = mode, 30, 3, 9, 64, budget
				e := mustEngine(b, p)
				e.AddSeq(0)
				rng := rand.New(rand.NewPCG(1, 1))
				q := f32Rows(gauss(rng, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim)
				k := f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim)
				slots := make([]int32, p.KVHeads)
				out := make([]int32, 16)
				pos := int32(0)
				step := func() {
					for l := 0; l < p.Layers; l++ {
						var err error
						if mode == ModeSlot {
							err = e.Place(0, l, q, k, []int32{pos}, slots, nil)
						} else {
							err = e.Observe(0, l, q, k, []int32{pos})
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					if mode == ModeToken {
						if _, err := e.Evictions(0, out); err != nil {
							b.Fatal(err)
						}
					}
					pos++
				}
				for i := 0; i < budget+16; i++ {
					step()
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					step()
				}
			})
		}
	}
}
