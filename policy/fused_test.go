package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/hashevict/hashevict/simd"
)

// placeBoth runs one Place on the engine pair and fails unless both chose
// the same slots and victims.
func placeBoth(t *testing.T, fused, plain *Engine, id, layer int, q, k *Rows, pos []int32, where string) {
	t.Helper()
	n := len(pos) * fused.P.KVHeads
	s1, v1 := make([]int32, n), make([]int32, n)
	s2, v2 := make([]int32, n), make([]int32, n)
	err1 := fused.Place(id, layer, q, k, pos, s1, v1)
	noFusedSteps = true
	err2 := plain.Place(id, layer, q, k, pos, s2, v2)
	noFusedSteps = false
	if CodeOf(err1) != CodeOf(err2) {
		t.Fatalf("%s: fused error %v, plain error %v", where, err1, err2)
	}
	if !slices.Equal(s1, s2) || !slices.Equal(v1, v2) {
		t.Fatalf("%s: fused slots %v evicted %v; plain slots %v evicted %v", where, s1, v1, s2, v2)
	}
}

// The fused decode steps (Farthest for the instant score, ScoreStep for the
// others) must choose exactly what the plain steps (rescore, then
// pickVictims over every slot's score and position) choose, through
// chunks, position gaps, forks, resets and save/load, for every code width
// (narrow and wide tables) and every protection setting, on every kernel
// set.
func TestFusedStepsMatchPlainSteps(t *testing.T) {
	for _, set := range simd.Available() {
		t.Run(set, func(t *testing.T) {
			if err := simd.Use(set); err != nil {
				t.Fatal(err)
			}
			defer simd.Use(simd.Available()[0])
			rng := rand.New(rand.NewPCG(5, 6))
			for trial := 0; trial < 60; trial++ {
				p := smallParams()
				p.Bits = SupportedBits[trial%len(SupportedBits)]
				p.Score = Score(trial / len(SupportedBits) % 3)
				p.Probe = Probe(rng.IntN(2))
				p.Sinks = rng.IntN(6)
				p.Recent = rng.IntN(20)
				p.Budget = p.Sinks + p.Recent + 1 + rng.IntN(40)
				p.MaxSeqs = 3
				fused, plain := mustEngine(t, p), mustEngine(t, p)
				for _, e := range []*Engine{fused, plain} {
					if err := e.AddSeq(0); err != nil {
						t.Fatal(err)
					}
				}
				id := 0
				next := int32(0)
				for step := 0; step < 150; step++ {
					where := fmt.Sprintf("trial %d (%+v) step %d", trial, p, step)
					switch r := rng.IntN(40); {
					case r == 0: // fork into another id and carry on there
						to := (id + 1) % p.MaxSeqs
						fused.RemoveSeq(to)
						plain.RemoveSeq(to)
						if err := fused.ForkSeq(id, to); err != nil {
							t.Fatal(err)
						}
						if err := plain.ForkSeq(id, to); err != nil {
							t.Fatal(err)
						}
						id = to
					case r == 1: // save and load into a fresh id
						blob, err := fused.SaveSeq(id)
						if err != nil {
							t.Fatal(err)
						}
						blob2, err := plain.SaveSeq(id)
						if err != nil {
							t.Fatal(err)
						}
						to := (id + 1) % p.MaxSeqs
						fused.RemoveSeq(to)
						plain.RemoveSeq(to)
						if err := fused.LoadSeq(to, blob); err != nil {
							t.Fatal(err)
						}
						if err := plain.LoadSeq(to, blob2); err != nil {
							t.Fatal(err)
						}
						id = to
					case r == 2:
						fused.ResetSeq(id)
						plain.ResetSeq(id)
						next = 0
					}
					n := 1
					if rng.IntN(6) == 0 {
						n = 1 + rng.IntN(6)
					}
					pos := make([]int32, n)
					for i := range pos {
						next += 1 + int32(rng.IntN(3)) // gaps too
						pos[i] = next
					}
					q := f32Rows(gauss(rng, n*p.QHeads*p.HeadDim), n, p.QHeads, p.HeadDim)
					k := f32Rows(gauss(rng, n*p.KVHeads*p.HeadDim), n, p.KVHeads, p.HeadDim)
					for layer := 0; layer < p.Layers; layer++ {
						placeBoth(t, fused, plain, id, layer, q, k, pos, where)
					}
				}
			}
		})
	}
}

// A slot-mode decode step allocates nothing: it runs for every layer of
// every token, and garbage there turns into collector work in the host.
// (Skipped under -short, which the race run uses: the race runtime counts
// differently.)
func TestDecodeStepDoesNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP under -short (race run)")
	}
	for _, score := range []Score{ScoreInstant, ScoreAccumulated} {
		p := smallParams()
		p.Score = score
		e := mustEngine(t, p)
		if err := e.AddSeq(0); err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(9, 9))
		q := f32Rows(gauss(rng, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim)
		k := f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim)
		slots := make([]int32, p.KVHeads)
		pos := []int32{0}
		step := func() {
			for l := 0; l < p.Layers; l++ {
				if err := e.Place(0, l, q, k, pos, slots, nil); err != nil {
					t.Fatal(err)
				}
			}
			pos[0]++
		}
		for i := 0; i < p.Budget+8; i++ {
			step() // fill the cache: every later step evicts
		}
		if a := testing.AllocsPerRun(50, step); a != 0 {
			t.Fatalf("score %d: %.1f allocations per decode step, want 0", score, a)
		}
	}
}
