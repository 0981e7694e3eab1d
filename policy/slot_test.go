package policy

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// refSlot is the test's own model of one (layer, KV head) slot table.
type refSlot struct {
	pos   int32
	code  []uint64
	score float32
	count int
}

// refStep applies the documented step semantics to a model table and
// returns the slot chosen for each token, written independently of the
// engine's code paths (brute force, no kernels except hashing).
func refStep(p Params, tab []refSlot, keyCodes [][]uint64, probes [][]uint64, positions []int32) ([]refSlot, []int) {
	n := len(positions)
	dist := func(c []uint64) float32 {
		d := 0
		for _, pr := range probes {
			d += ham(c, pr)
		}
		return float32(d) * (1 / float32(n))
	}
	for i := range tab {
		if tab[i].pos < 0 {
			continue
		}
		d := dist(tab[i].code)
		switch p.Score {
		case ScoreInstant:
			tab[i].score = d
		case ScoreAccumulated:
			tab[i].count++
			s := tab[i].score
			tab[i].score = s + float32(d-s)/float32(tab[i].count)
		case ScoreDecayed:
			tab[i].score = float32(p.Decay*tab[i].score) + float32((1-p.Decay)*d)
		}
	}
	newest := positions[n-1]
	evictable := func(q int32) bool {
		return q >= int32(p.Sinks) && int64(q) < int64(newest)-int64(p.Recent)
	}
	taken := map[int]bool{}
	out := make([]int, n)
	for tok := 0; tok < n; tok++ {
		slot := -1
		for i := range tab {
			if tab[i].pos < 0 && !taken[i] {
				slot = i
				break
			}
		}
		if slot < 0 {
			for i := range tab {
				if taken[i] || !evictable(tab[i].pos) {
					continue
				}
				if slot < 0 || tab[i].score > tab[slot].score {
					slot = i
				}
			}
		}
		if slot < 0 {
			panic("reference: no slot")
		}
		taken[slot] = true
		out[tok] = slot
	}
	for tok, slot := range out {
		tab[slot] = refSlot{pos: positions[tok], code: keyCodes[tok], score: dist(keyCodes[tok]), count: 1}
	}
	return tab, out
}

func TestPlaceMatchesReference(t *testing.T) {
	for _, bitsN := range SupportedBits {
		for _, group := range []int{1, 2, 4} {
			for _, sc := range []Score{ScoreInstant, ScoreAccumulated, ScoreDecayed} {
				for _, probe := range []Probe{ProbeQuery, ProbeKey} {
					name := fmt.Sprintf("b%d/g%d/score%d/probe%d", bitsN, group, sc, probe)
					t.Run(name, func(t *testing.T) {
						p := DefaultParams()
						p.Layers, p.KVHeads, p.QHeads, p.HeadDim = 2, 2, 2*group, 24
						p.Bits, p.Score, p.Probe, p.Budget = bitsN, sc, probe, 20
						checkAgainstReference(t, p, 300, uint64(bitsN*100+group*10+int(sc)))
					})
				}
			}
		}
	}
}

func checkAgainstReference(t *testing.T, p Params, steps int, seed uint64) {
	e := mustEngine(t, p)
	if err := e.AddSeq(0); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	ref := make([][][]refSlot, p.Layers)
	for l := range ref {
		ref[l] = make([][]refSlot, p.KVHeads)
		for h := range ref[l] {
			ref[l][h] = make([]refSlot, p.Budget)
			for i := range ref[l][h] {
				ref[l][h][i].pos = -1
			}
		}
	}
	pos := int32(0)
	g := p.Group()
	for step := 0; step < steps; step++ {
		n := 1
		if step%7 == 3 {
			n = 1 + rng.IntN(4) // chunks too
		}
		positions := make([]int32, n)
		for i := range positions {
			positions[i] = pos
			pos += 1 + int32(rng.IntN(2)) // gaps are allowed
		}
		for l := 0; l < p.Layers; l++ {
			q := gauss(rng, n*p.QHeads*p.HeadDim)
			k := gauss(rng, n*p.KVHeads*p.HeadDim)
			slots := make([]int32, n*p.KVHeads)
			evicted := make([]int32, n*p.KVHeads)
			err := e.Place(0, l, f32Rows(q, n, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), positions, slots, evicted)
			if err != nil {
				t.Fatalf("step %d layer %d: %v", step, l, err)
			}
			for h := 0; h < p.KVHeads; h++ {
				var keyCodes, probes [][]uint64
				for tok := 0; tok < n; tok++ {
					kc := code(e, l, k[(tok*p.KVHeads+h)*p.HeadDim:][:p.HeadDim])
					keyCodes = append(keyCodes, kc)
					if p.Probe == ProbeKey {
						probes = append(probes, kc)
						continue
					}
					for j := 0; j < g; j++ {
						qh := h*g + j
						probes = append(probes, code(e, l, q[(tok*p.QHeads+qh)*p.HeadDim:][:p.HeadDim]))
					}
				}
				before := append([]refSlot(nil), ref[l][h]...)
				var want []int
				ref[l][h], want = refStep(p, ref[l][h], keyCodes, probes, positions)
				for tok := 0; tok < n; tok++ {
					got := int(slots[tok*p.KVHeads+h])
					if got != want[tok] {
						t.Fatalf("step %d layer %d head %d token %d: slot %d, reference %d", step, l, h, tok, got, want[tok])
					}
					if ev := evicted[tok*p.KVHeads+h]; ev != before[got].pos {
						t.Fatalf("step %d: evicted %d, reference %d", step, ev, before[got].pos)
					}
				}
			}
		}
	}
}

func TestPlaceInvariants(t *testing.T) {
	for _, pol := range []Policy{PolicyHash, PolicySinkRecent, PolicyKnorm, PolicyRandom, PolicyOracle} {
		t.Run(fmt.Sprint("policy", pol), func(t *testing.T) {
			p := smallParams()
			p.Policy = pol
			e := mustEngine(t, p)
			for s := 0; s < 2; s++ {
				if err := e.AddSeq(s); err != nil {
					t.Fatal(err)
				}
			}
			rng := rand.New(rand.NewPCG(1, uint64(pol)))
			held := make([][]map[int32]bool, p.Layers)
			for l := range held {
				held[l] = make([]map[int32]bool, p.KVHeads)
				for h := range held[l] {
					held[l][h] = map[int32]bool{}
				}
			}
			for step := int32(0); step < 400; step++ {
				for l := 0; l < p.Layers; l++ {
					q := gauss(rng, p.QHeads*p.HeadDim)
					k := gauss(rng, p.KVHeads*p.HeadDim)
					slots := make([]int32, p.KVHeads)
					ev := make([]int32, p.KVHeads)
					if err := e.Place(0, l, f32Rows(q, 1, p.QHeads, p.HeadDim), f32Rows(k, 1, p.KVHeads, p.HeadDim), []int32{step}, slots, ev); err != nil {
						t.Fatal(err)
					}
					for h := 0; h < p.KVHeads; h++ {
						if slots[h] < 0 || int(slots[h]) >= p.Budget {
							t.Fatalf("slot %d outside budget %d", slots[h], p.Budget)
						}
						if v := ev[h]; v >= 0 {
							if v < int32(p.Sinks) || v >= step-int32(p.Recent) {
								t.Fatalf("step %d evicted protected position %d", step, v)
							}
							if !held[l][h][v] {
								t.Fatalf("evicted position %d was not held", v)
							}
							delete(held[l][h], v)
						}
						held[l][h][step] = true
						got := make([]int32, p.Budget)
						if err := e.SlotPositions(0, l, h, got); err != nil {
							t.Fatal(err)
						}
						n := 0
						for _, q := range got {
							if q >= 0 {
								n++
								if !held[l][h][q] {
									t.Fatalf("slot holds %d, not in the model", q)
								}
							}
						}
						if n != len(held[l][h]) || n > p.Budget {
							t.Fatalf("holds %d, model %d, budget %d", n, len(held[l][h]), p.Budget)
						}
					}
				}
			}
			st := e.EngineStats()
			if st.Evictions == 0 || st.Cached != uint64(p.Layers*p.KVHeads*p.Budget) {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestSinkRecentEvictsOldest(t *testing.T) {
	p := smallParams()
	p.Policy = PolicySinkRecent
	e := mustEngine(t, p)
	e.AddSeq(3)
	rng := rand.New(rand.NewPCG(2, 2))
	for step := int32(0); step < 100; step++ {
		for l := 0; l < p.Layers; l++ {
			ev := make([]int32, p.KVHeads)
			slots := make([]int32, p.KVHeads)
			err := e.Place(3, l, nil, f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim), []int32{step}, slots, ev)
			if err != nil {
				t.Fatal(err)
			}
			// The cache holds sinks 0..3 and the newest budget-4 positions.
			if int(step) >= p.Budget {
				want := step - int32(p.Budget) + int32(p.Sinks)
				for h := range ev {
					if ev[h] != want {
						t.Fatalf("step %d evicted %d, want %d", step, ev[h], want)
					}
				}
			}
		}
	}
}

func TestDeterministicAndSeeded(t *testing.T) {
	run := func(seed uint64) []int32 {
		p := smallParams()
		p.Seed = seed
		e := mustEngine(t, p)
		e.AddSeq(0)
		rng := rand.New(rand.NewPCG(5, 5))
		var trace []int32
		for step := int32(0); step < 200; step++ {
			q := gauss(rng, p.QHeads*p.HeadDim)
			k := gauss(rng, p.KVHeads*p.HeadDim)
			slots := make([]int32, p.KVHeads)
			if err := e.Place(0, 0, f32Rows(q, 1, p.QHeads, p.HeadDim), f32Rows(k, 1, p.KVHeads, p.HeadDim), []int32{step}, slots, nil); err != nil {
				t.Fatal(err)
			}
			trace = append(trace, slots...)
		}
		return trace
	}
	a, b, c := run(11), run(11), run(12)
	same := func(x, y []int32) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Fatal("same seed gave different slots")
	}
	if same(a, c) {
		t.Fatal("different seeds gave identical slot traces over 200 steps")
	}
}

func TestChunkTooLargeLeavesStateUnchanged(t *testing.T) {
	p := smallParams() // budget 24, sinks 4, recent 10
	e := mustEngine(t, p)
	e.AddSeq(0)
	rng := rand.New(rand.NewPCG(3, 3))
	place := func(positions []int32) error {
		n := len(positions)
		slots := make([]int32, n*p.KVHeads)
		return e.Place(0, 0, f32Rows(gauss(rng, n*p.QHeads*p.HeadDim), n, p.QHeads, p.HeadDim),
			f32Rows(gauss(rng, n*p.KVHeads*p.HeadDim), n, p.KVHeads, p.HeadDim), positions, slots, nil)
	}
	var pos []int32
	for i := int32(0); i < 24; i++ {
		pos = append(pos, i)
	}
	if err := place(pos); err != nil {
		t.Fatal(err)
	}
	before := make([]int32, p.Budget)
	e.SlotPositions(0, 0, 0, before)
	// 21 new tokens at 24..44: the window protects >= 34, sinks 0..3, so
	// 4..23 (20 slots) are evictable: one too few.
	var chunk []int32
	for i := int32(24); i < 45; i++ {
		chunk = append(chunk, i)
	}
	err := place(chunk)
	if CodeOf(err) != CodeChunkTooLarge {
		t.Fatalf("got %v, want CHUNK_TOO_LARGE", err)
	}
	after := make([]int32, p.Budget)
	e.SlotPositions(0, 0, 0, after)
	for i := range before {
		if before[i] != after[i] {
			t.Fatal("a rejected chunk changed the slots")
		}
	}
	if err := place(chunk[:20]); err != nil {
		t.Fatalf("a fitting chunk: %v", err)
	}
}

func TestForkIsDeep(t *testing.T) {
	p := smallParams()
	e := mustEngine(t, p)
	e.AddSeq(0)
	rng := rand.New(rand.NewPCG(4, 4))
	step := func(seq int, pos int32) []int32 {
		slots := make([]int32, p.KVHeads)
		if err := e.Place(seq, 0, f32Rows(gauss(rng, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim),
			f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim), []int32{pos}, slots, nil); err != nil {
			t.Fatal(err)
		}
		return slots
	}
	for i := int32(0); i < 40; i++ {
		step(0, i)
	}
	if err := e.ForkSeq(0, 1); err != nil {
		t.Fatal(err)
	}
	a := make([]int32, p.Budget)
	b := make([]int32, p.Budget)
	e.SlotPositions(0, 0, 0, a)
	e.SlotPositions(1, 0, 0, b)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("fork differs from its source")
	}
	for i := int32(40); i < 60; i++ {
		step(1, i)
	}
	e.SlotPositions(0, 0, 0, b)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("stepping the fork changed the source")
	}
	if err := e.ForkSeq(0, 1); CodeOf(err) != CodeSequenceExists {
		t.Fatalf("fork onto existing: %v", err)
	}
	if err := e.ResetSeq(1); err != nil {
		t.Fatal(err)
	}
	step(1, 0) // a reset sequence starts again at any position
	if err := e.RemoveSeq(1); err != nil {
		t.Fatal(err)
	}
	if err := e.RemoveSeq(1); CodeOf(err) != CodeUnknownSequence {
		t.Fatalf("remove twice: %v", err)
	}
	if st := e.EngineStats(); st.Sequences != 1 {
		t.Fatalf("sequences %d", st.Sequences)
	}
}
