package policy

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// TestTokenWindowsMatchBruteForce checks every eviction of a token-mode
// engine with per-layer windows against scores recomputed in the test from
// the raw vectors: a position's score is the mean, over the (layer, KV
// head) pairs whose layer's window reaches it from the newest position, of
// the summed Hamming distance to that layer's newest probes (+Inf when no
// layer reaches it). Both the full and the fast step are checked, and the
// windows change half-way.
func TestTokenWindowsMatchBruteForce(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprint("full", full), func(t *testing.T) {
			noTokenFast = full
			defer func() { noTokenFast = false }()
			p := smallParams()
			p.Mode, p.Layers, p.Budget = ModeToken, 4, 30
			e := mustEngine(t, p)
			e.AddSeq(0)
			windows := []int{0, 6, 0, 15}
			for l, w := range windows {
				if err := e.SetLayerWindow(l, w); err != nil {
					t.Fatal(err)
				}
			}
			rng := rand.New(rand.NewPCG(5, 6))
			g := p.Group()
			keys := map[int32][][][]uint64{} // pos -> layer -> head -> code
			lastProbes := make([][][][]uint64, p.Layers)
			pos := int32(0)
			for step := 0; step < 150; step++ {
				if step == 75 {
					// All sliding: old positions are seen by no layer.
					windows = []int{9, 6, 4, 15}
					for l, w := range windows {
						e.SetLayerWindow(l, w)
					}
				}
				n := 1
				if step == 0 {
					n = 40
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
							keys[ps][l][h] = code(e, l, k[(tok*p.KVHeads+h)*p.HeadDim:][:p.HeadDim])
							for j := 0; j < g; j++ {
								lastProbes[l][h] = append(lastProbes[l][h], code(e, l, q[(tok*p.QHeads+h*g+j)*p.HeadDim:][:p.HeadDim]))
							}
						}
					}
				}
				newest := pos - 1
				type cand struct {
					pos   int32
					score float64
				}
				var cands []cand
				for ps := range keys {
					if ps < int32(p.Sinks) || ps >= newest-int32(p.Recent) {
						continue
					}
					var tot float64
					pairs := 0
					for l := 0; l < p.Layers; l++ {
						if w := windows[l]; w > 0 && ps <= newest-int32(w) {
							continue
						}
						for h := 0; h < p.KVHeads; h++ {
							d := 0
							for _, pr := range lastProbes[l][h] {
								d += ham(keys[ps][l][h], pr)
							}
							tot += float64(float32(d) * (1 / float32(n)))
							pairs++
						}
					}
					sc := math.Inf(1)
					if pairs > 0 {
						sc = tot / float64(pairs)
					}
					cands = append(cands, cand{ps, sc})
				}
				sort.Slice(cands, func(a, b int) bool {
					if cands[a].score != cands[b].score {
						return cands[a].score > cands[b].score
					}
					return cands[a].pos < cands[b].pos
				})
				var want []int32
				for i := 0; i < len(keys)-p.Budget && i < len(cands); i++ {
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
			}
		})
	}
}

// TestTokenWindowsOffIsNoWindows: windows set and then set back to 0 leave
// an engine that decides exactly as one that never had them.
func TestTokenWindowsOffIsNoWindows(t *testing.T) {
	p := smallParams()
	p.Mode, p.Layers, p.Budget = ModeToken, 3, 20
	a, b := mustEngine(t, p), mustEngine(t, p)
	for l := 0; l < p.Layers; l++ {
		if err := b.SetLayerWindow(l, 3+l); err != nil {
			t.Fatal(err)
		}
	}
	for l := 0; l < p.Layers; l++ {
		if err := b.SetLayerWindow(l, 0); err != nil {
			t.Fatal(err)
		}
		if w, err := b.LayerWindow(l); w != 0 || err != nil {
			t.Fatalf("layer %d: window %d, %v", l, w, err)
		}
	}
	a.AddSeq(0)
	b.AddSeq(0)
	rng := rand.New(rand.NewPCG(7, 8))
	for pos := int32(0); pos < 120; pos++ {
		for l := 0; l < p.Layers; l++ {
			q := f32Rows(gauss(rng, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim)
			k := f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim)
			for _, e := range []*Engine{a, b} {
				if err := e.Observe(0, l, q, k, []int32{pos}); err != nil {
					t.Fatal(err)
				}
			}
		}
		var got [2]string
		for i, e := range []*Engine{a, b} {
			out := make([]int32, 4)
			k, err := e.Evictions(0, out)
			if err != nil {
				t.Fatal(err)
			}
			got[i] = fmt.Sprint(out[:k])
		}
		if got[0] != got[1] {
			t.Fatalf("position %d: never windowed %s, windows cleared %s", pos, got[0], got[1])
		}
	}
}

func TestSetLayerWindowErrors(t *testing.T) {
	p := smallParams()
	slot := mustEngine(t, p)
	p.Mode = ModeToken
	tok := mustEngine(t, p)
	cases := []struct {
		e             *Engine
		layer, window int
		code          Code
	}{
		{slot, 0, 10, CodeWrongMode},
		{tok, -1, 10, CodeOutOfRange},
		{tok, p.Layers, 10, CodeOutOfRange},
		{tok, 0, -1, CodeInvalidArgument},
		{tok, 0, math.MaxInt32 + 1, CodeInvalidArgument},
	}
	for _, c := range cases {
		err := c.e.SetLayerWindow(c.layer, c.window)
		var pe *Error
		if !errors.As(err, &pe) || pe.Code != c.code {
			t.Errorf("SetLayerWindow(%d, %d) in mode %d: %v, want code %d", c.layer, c.window, c.e.P.Mode, err, c.code)
		}
	}
	if err := tok.SetLayerWindow(p.Layers-1, math.MaxInt32); err != nil {
		t.Fatal(err)
	}
}
