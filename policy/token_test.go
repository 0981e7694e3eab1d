package policy

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
)

// TestTokenModeMatchesBruteForce drives token mode with instant scores and
// checks every eviction against totals recomputed in the test from the raw
// vectors: score of a position = sum over layers and KV heads of the summed
// Hamming distance between its key code and that layer's newest probes.
func TestTokenModeMatchesBruteForce(t *testing.T) {
	for _, probe := range []Probe{ProbeQuery, ProbeKey} {
		t.Run(fmt.Sprint("probe", probe), func(t *testing.T) {
			p := smallParams()
			p.Mode, p.Probe, p.Budget = ModeToken, probe, 30
			e := mustEngine(t, p)
			e.AddSeq(0)
			rng := rand.New(rand.NewPCG(9, uint64(probe)))
			g := p.Group()
			keys := map[int32][][][]uint64{} // pos -> layer -> head -> code
			lastProbes := make([][][][]uint64, p.Layers)
			pos := int32(0)
			for step := 0; step < 150; step++ {
				n := 1
				if step == 0 {
					n = 40 // a prefill larger than the budget
				}
				positions := make([]int32, n)
				for i := range positions {
					positions[i] = pos
					pos++
				}
				for l := 0; l < p.Layers; l++ {
					q := gauss(rng, n*p.QHeads*p.HeadDim)
					k := gauss(rng, n*p.KVHeads*p.HeadDim)
					if err := e.Observe(0, l, f32Rows(q, n, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), positions); err != nil {
						t.Fatal(err)
					}
					lastProbes[l] = make([][][]uint64, p.KVHeads)
					for tok, ps := range positions {
						if keys[ps] == nil {
							keys[ps] = make([][][]uint64, p.Layers)
						}
						keys[ps][l] = make([][]uint64, p.KVHeads)
						for h := 0; h < p.KVHeads; h++ {
							kc := code(e, l, k[(tok*p.KVHeads+h)*p.HeadDim:][:p.HeadDim])
							keys[ps][l][h] = kc
							if probe == ProbeKey {
								lastProbes[l][h] = append(lastProbes[l][h], kc)
							} else {
								for j := 0; j < g; j++ {
									lastProbes[l][h] = append(lastProbes[l][h], code(e, l, q[(tok*p.QHeads+h*g+j)*p.HeadDim:][:p.HeadDim]))
								}
							}
						}
					}
				}
				// Brute force: totals over evictable positions.
				newest := pos - 1
				type cand struct {
					pos   int32
					total float64
				}
				var cands []cand
				for ps := range keys {
					if ps < int32(p.Sinks) || ps >= newest-int32(p.Recent) {
						continue
					}
					var tot float64
					for l := 0; l < p.Layers; l++ {
						for h := 0; h < p.KVHeads; h++ {
							d := 0
							for _, pr := range lastProbes[l][h] {
								d += ham(keys[ps][l][h], pr)
							}
							tot += float64(float32(d) * (1 / float32(n)))
						}
					}
					cands = append(cands, cand{ps, tot})
				}
				sort.Slice(cands, func(a, b int) bool {
					if cands[a].total != cands[b].total {
						return cands[a].total > cands[b].total
					}
					return cands[a].pos < cands[b].pos
				})
				excess := len(keys) - p.Budget
				var want []int32
				for i := 0; i < excess && i < len(cands); i++ {
					want = append(want, cands[i].pos)
				}
				sort.Slice(want, func(a, b int) bool { return want[a] < want[b] })
				out := make([]int32, 100)
				got, err := e.Evictions(0, out)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(out[:got]) != fmt.Sprint(want) {
					t.Fatalf("step %d: evicted %v, brute force %v", step, out[:got], want)
				}
				for _, v := range want {
					delete(keys, v)
				}
				held, _ := e.TokenPositions(0)
				if len(held) != len(keys) || len(held) > p.Budget {
					t.Fatalf("holds %d positions, model %d, budget %d", len(held), len(keys), p.Budget)
				}
				for _, v := range held {
					if keys[v] == nil {
						t.Fatalf("holds %d which the model dropped", v)
					}
				}
			}
		})
	}
}

func TestTokenModeBaselinesAndLimits(t *testing.T) {
	for _, pol := range []Policy{PolicyHash, PolicySinkRecent, PolicyKnorm, PolicyRandom, PolicyOracle} {
		for _, sc := range []Score{ScoreInstant, ScoreAccumulated, ScoreDecayed} {
			t.Run(fmt.Sprintf("policy%d/score%d", pol, sc), func(t *testing.T) {
				p := smallParams()
				p.Mode, p.Policy, p.Score, p.Budget = ModeToken, pol, sc, 20
				e := mustEngine(t, p)
				e.AddSeq(1)
				rng := rand.New(rand.NewPCG(uint64(pol), uint64(sc)))
				pos := int32(0)
				for step := 0; step < 60; step++ {
					n := 1 + rng.IntN(3)
					positions := make([]int32, n)
					for i := range positions {
						positions[i] = pos
						pos++
					}
					for l := 0; l < p.Layers; l++ {
						err := e.Observe(1, l, f32Rows(gauss(rng, n*p.QHeads*p.HeadDim), n, p.QHeads, p.HeadDim),
							f32Rows(gauss(rng, n*p.KVHeads*p.HeadDim), n, p.KVHeads, p.HeadDim), positions)
						if err != nil {
							t.Fatal(err)
						}
					}
					out := make([]int32, 2) // small capacity: call until drained
					for {
						got, err := e.Evictions(1, out)
						if err != nil {
							t.Fatal(err)
						}
						for _, v := range out[:got] {
							if v < int32(p.Sinks) || v >= pos-1-int32(p.Recent) {
								t.Fatalf("evicted protected %d (newest %d)", v, pos-1)
							}
						}
						if got < len(out) {
							break
						}
					}
					held, _ := e.TokenPositions(1)
					if len(held) > p.Budget {
						t.Fatalf("holds %d > budget", len(held))
					}
					if pol == PolicySinkRecent && len(held) == p.Budget {
						for i, v := range held[p.Sinks:] {
							if v != pos-int32(p.Budget-p.Sinks)+int32(i) {
								t.Fatalf("sink+recent holds %v", held)
							}
						}
					}
				}
			})
		}
	}
}

func TestTokenModeWaitsForAllLayers(t *testing.T) {
	p := smallParams()
	p.Mode, p.Budget = ModeToken, 16
	e := mustEngine(t, p)
	e.AddSeq(0)
	rng := rand.New(rand.NewPCG(1, 1))
	positions := make([]int32, 40)
	for i := range positions {
		positions[i] = int32(i)
	}
	n := len(positions)
	// Only layer 0 observes: nothing may be evicted yet.
	if err := e.Observe(0, 0, f32Rows(gauss(rng, n*p.QHeads*p.HeadDim), n, p.QHeads, p.HeadDim),
		f32Rows(gauss(rng, n*p.KVHeads*p.HeadDim), n, p.KVHeads, p.HeadDim), positions); err != nil {
		t.Fatal(err)
	}
	out := make([]int32, 64)
	if got, _ := e.Evictions(0, out); got != 0 {
		t.Fatalf("evicted %d positions that layer 1 never observed", got)
	}
	if err := e.Observe(0, 1, f32Rows(gauss(rng, n*p.QHeads*p.HeadDim), n, p.QHeads, p.HeadDim),
		f32Rows(gauss(rng, n*p.KVHeads*p.HeadDim), n, p.KVHeads, p.HeadDim), positions); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.Evictions(0, out); got != 40-16 {
		t.Fatalf("evicted %d, want %d", got, 40-16)
	}
	// Re-observing an old position is a position error.
	err := e.Observe(0, 0, f32Rows(gauss(rng, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim),
		f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim), []int32{5})
	if CodeOf(err) != CodePosition {
		t.Fatalf("got %v", err)
	}
}
