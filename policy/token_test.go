package policy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
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

// observeAll runs one token-mode step over every layer of seq.
func observeAll(t testing.TB, e *Engine, rng *rand.Rand, seq int, positions []int32) {
	t.Helper()
	for l := 0; l < e.P.Layers; l++ {
		if err := observeLayer(e, rng, seq, l, positions); err != nil {
			t.Fatalf("layer %d, positions %v: %v", l, positions, err)
		}
	}
}

func observeLayer(e *Engine, rng *rand.Rand, seq, layer int, positions []int32) error {
	p := &e.P
	n := len(positions)
	return e.Observe(seq, layer, f32Rows(gauss(rng, n*p.QHeads*p.HeadDim), n, p.QHeads, p.HeadDim),
		f32Rows(gauss(rng, n*p.KVHeads*p.HeadDim), n, p.KVHeads, p.HeadDim), positions)
}

func span(from, n int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = from + int32(i)
	}
	return out
}

// Issue 10, item 1: a fork of a sequence that was never observed had no
// per-layer observed flags, and its first observe indexed past them (a
// panic, HASHEVICT_ERR_INTERNAL through the C ABI, the engine poisoned).
func TestTokenForkOfUnobservedSequence(t *testing.T) {
	for _, pol := range []Policy{PolicyHash, PolicyOracle, PolicySinkRecent} {
		t.Run(fmt.Sprint("policy", pol), func(t *testing.T) {
			p := smallParams()
			p.Mode, p.Policy, p.Budget = ModeToken, pol, 20
			e := mustEngine(t, p)
			rng := rand.New(rand.NewPCG(3, 3))
			if err := e.AddSeq(0); err != nil {
				t.Fatal(err)
			}
			// A fork of a new sequence, a fork of that fork, and a fork of
			// a sequence reset after use.
			must(t, e.ForkSeq(0, 1))
			must(t, e.ForkSeq(1, 2))
			must(t, e.AddSeq(3))
			observeAll(t, e, rng, 3, span(0, 30))
			must(t, e.ResetSeq(3))
			must(t, e.ForkSeq(3, 4))
			for _, id := range []int{0, 1, 2, 3, 4} {
				observeAll(t, e, rng, id, span(0, 30))
				for step := int32(30); step < 60; step++ {
					observeAll(t, e, rng, id, []int32{step})
					out := make([]int32, 16)
					if _, err := e.Evictions(id, out); err != nil {
						t.Fatal(err)
					}
				}
				held, _ := e.TokenPositions(id)
				if len(held) != p.Budget {
					t.Fatalf("sequence %d holds %d positions, budget %d", id, len(held), p.Budget)
				}
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Issue 10, item 4: a layer that skipped a position was accepted, and the
// position, never observed by every layer, was held forever. Every way of
// skipping is refused with a position error naming the layer and the
// position, and changes nothing; the right call then succeeds.
func TestTokenLayerSkipsArePositionErrors(t *testing.T) {
	p := smallParams()
	p.Mode, p.Budget, p.Layers = ModeToken, 16, 3
	cases := []struct {
		name string
		// steps run before the refused call, as (layer, positions).
		before []struct {
			layer int
			pos   []int32
		}
		layer int
		bad   []int32
		want  string
		fix   []int32
	}{
		{"later layer skips one", steps(0, span(0, 3)), 1, []int32{0, 2}, "layer 1 skips position 1", span(0, 3)},
		{"later layer skips the first", steps(0, span(5, 3)), 2, []int32{6, 7}, "layer 2 skips position 5", span(5, 3)},
		{"later layer jumps past all", steps(0, span(0, 2)), 1, []int32{4}, "layer 1 skips position 0", []int32{0, 1, 4}},
		{"earlier layer never observes it", append(steps(0, []int32{0, 2}), steps(1, []int32{0})...), 1, []int32{1}, "positions[0] = 1 comes too late for layer 1: layer 0", []int32{2}},
		{"observes a position others passed", steps(0, []int32{0, 2, 4}), 1, []int32{0, 1, 2}, "positions[1] = 1 comes too late for layer 1: layer 0 already observed up to position 4", []int32{0, 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := mustEngine(t, p)
			rng := rand.New(rand.NewPCG(4, 4))
			must(t, e.AddSeq(0))
			for _, st := range c.before {
				must(t, observeLayer(e, rng, 0, st.layer, st.pos))
			}
			before, err := e.SaveSeq(0)
			must(t, err)
			err = observeLayer(e, rng, 0, c.layer, c.bad)
			if CodeOf(err) != CodePosition || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a position error containing %q", err, c.want)
			}
			if after, _ := e.SaveSeq(0); !bytes.Equal(before, after) {
				t.Fatal("the refused observe changed the sequence")
			}
			must(t, observeLayer(e, rng, 0, c.layer, c.fix))
		})
	}
}

func steps(layer int, pos []int32) []struct {
	layer int
	pos   []int32
} {
	return []struct {
		layer int
		pos   []int32
	}{{layer, pos}}
}

// Layers may lag each other by whole chunks, as long as each observes the
// same positions in the same order: every position then becomes a
// candidate, so the budget holds.
func TestTokenLayersInAnyInterleaving(t *testing.T) {
	p := smallParams()
	p.Mode, p.Budget, p.Layers = ModeToken, 16, 3
	e := mustEngine(t, p)
	rng := rand.New(rand.NewPCG(5, 5))
	must(t, e.AddSeq(0))
	var all []int32 // every position, in order (with gaps)
	for q := int32(0); len(all) < 400; q += 1 + int32(rng.IntN(3)) {
		all = append(all, q)
	}
	idx := make([]int, p.Layers) // how far each layer is in all
	for idx[0] < len(all) || idx[1] < len(all) || idx[2] < len(all) {
		l := rng.IntN(p.Layers)
		n := min(1+rng.IntN(6), len(all)-idx[l])
		if n == 0 {
			continue
		}
		must(t, observeLayer(e, rng, 0, l, all[idx[l]:idx[l]+n]))
		idx[l] += n
		out := make([]int32, 64)
		if _, err := e.Evictions(0, out); err != nil {
			t.Fatal(err)
		}
	}
	held, _ := e.TokenPositions(0)
	if len(held) != p.Budget {
		t.Fatalf("holds %d positions after every layer observed all, budget %d", len(held), p.Budget)
	}
	if len(e.seqs[0].tok.pending[e.seqs[0].tok.head:]) != 0 {
		t.Fatal("positions still pending after every layer observed them")
	}
}
