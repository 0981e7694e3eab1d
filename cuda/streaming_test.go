package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/hashevict/hashevict/policy"
)

// TestStreamingOptionsRefused: the device kernels score the paper's distance
// only, so an engine with the logit estimate or a redundancy weight is
// refused (UNSUPPORTED) in both modes, before the sequence is bound to the
// device, instead of running without its option.
func TestStreamingOptionsRefused(t *testing.T) {
	useLibrary(t, buildEmu(t))
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(8, 9))
	base := policy.DefaultParams()
	base.Layers, base.KVHeads, base.QHeads, base.HeadDim, base.Budget = 1, 2, 4, 16, 20
	_, dq, fq := devRows(t, v, r, policy.F32, 1, base.QHeads, base.HeadDim)
	defer fq()
	_, dk, fk := devRows(t, v, r, policy.F32, 1, base.KVHeads, base.HeadDim)
	defer fk()
	for _, opt := range []func(*policy.Params){
		func(p *policy.Params) { p.Estimate = policy.EstimateLogit },
		func(p *policy.Params) { p.Redundancy = 0.5 },
	} {
		for _, mode := range []policy.Mode{policy.ModeSlot, policy.ModeToken} {
			p := base
			p.Mode = mode
			opt(&p)
			e, err := policy.NewEngine(p)
			if err != nil {
				t.Fatal(err)
			}
			e.AddSeq(0)
			in := StepInput{Dev: v, Q: dq, K: dk, Positions: []int32{0}}
			if mode == policy.ModeSlot {
				err = Place(e, 0, 0, in, make([]int32, p.KVHeads), nil)
			} else {
				err = Observe(e, 0, 0, in)
			}
			if err == nil || policy.CodeOf(err) != policy.CodeUnsupported || e.IsDevice(0) {
				t.Errorf("mode %d, estimate %d, redundancy %v: %v (device %v), want UNSUPPORTED", mode, p.Estimate, p.Redundancy, err, e.IsDevice(0))
			}
		}
	}
}
