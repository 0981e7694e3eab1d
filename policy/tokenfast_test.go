package policy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestTokenFastStepIsTheFullStep drives two engines with the same calls,
// one with every step on the full path (noTokenFast) and one with the fast
// decode step, through prefills, decode steps, layers running ahead,
// evictions asked mid-round and of several positions, save and load, and
// forks: every eviction must be the same, and so must every saved blob,
// byte for byte (scores included, which the fast step writes late).
func TestTokenFastStepIsTheFullStep(t *testing.T) {
	type cfg struct {
		bits    int
		probe   Probe
		score   Score
		windows bool
		kv      int // KV heads, 0: smallParams' 2
	}
	var cfgs []cfg
	for _, b := range []int{8, 16, 32, 64, 128, 256} {
		cfgs = append(cfgs, cfg{b, ProbeQuery, ScoreInstant, false, 0})
	}
	cfgs = append(cfgs, cfg{16, ProbeKey, ScoreInstant, false, 0}, cfg{16, ProbeQuery, ScoreAccumulated, false, 0}, cfg{16, ProbeQuery, ScoreInstant, true, 0})
	// Three KV heads (SmolLM2's), three query heads each: combined codes
	// that leave bits free (3 x 8, 3 x 16) or span words (3 x 32: head 2
	// in the second word), with either probe.
	for _, b := range []int{8, 16, 32} {
		cfgs = append(cfgs, cfg{b, ProbeQuery, ScoreInstant, false, 3}, cfg{b, ProbeKey, ScoreInstant, false, 3})
	}
	for _, c := range cfgs {
		t.Run(fmt.Sprintf("bits%d/probe%d/score%d/windows%v/kv%d", c.bits, c.probe, c.score, c.windows, c.kv), func(t *testing.T) {
			p := smallParams()
			if c.kv > 0 {
				p.KVHeads, p.QHeads = c.kv, 3*c.kv
			}
			p.Mode, p.Bits, p.Probe, p.Score = ModeToken, c.bits, c.probe, c.score
			p.Layers, p.Budget = 3, 40
			full, fast := mustEngine(t, p), mustEngine(t, p)
			onFull := func(f func() error) error {
				noTokenFast = true
				defer func() { noTokenFast = false }()
				return f()
			}
			both := func(what string, f func(e *Engine) error) {
				t.Helper()
				errA := onFull(func() error { return f(full) })
				errB := f(fast)
				if fmt.Sprint(errA) != fmt.Sprint(errB) {
					t.Fatalf("%s: full path %v, fast path %v", what, errA, errB)
				}
				if errA != nil {
					t.Fatalf("%s: %v", what, errA)
				}
			}
			sameBlobs := func(seq int, when string) {
				t.Helper()
				a, errA := full.SaveSeq(seq)
				b, errB := fast.SaveSeq(seq)
				if errA != nil || errB != nil {
					t.Fatal(errA, errB)
				}
				if !bytes.Equal(a, b) {
					t.Fatalf("%s: saved states differ (%d and %d bytes)", when, len(a), len(b))
				}
			}
			evictBoth := func(seq, max int, when string) {
				t.Helper()
				var got [2][]int32
				for i, e := range []*Engine{full, fast} {
					out := make([]int32, max)
					var k int
					f := func() (err error) { k, err = e.Evictions(seq, out); return }
					var err error
					if i == 0 {
						err = onFull(f)
					} else {
						err = f()
					}
					if err != nil {
						t.Fatal(err)
					}
					got[i] = out[:k]
				}
				if fmt.Sprint(got[0]) != fmt.Sprint(got[1]) {
					t.Fatalf("%s: full path evicted %v, fast path %v", when, got[0], got[1])
				}
			}
			both("add", func(e *Engine) error { return e.AddSeq(0) })
			rng := rand.New(rand.NewPCG(uint64(c.bits), uint64(c.probe)+10*uint64(c.score)))
			seq, pos := 0, int32(0)
			setWindows := func(w ...int) {
				for l, x := range w {
					both("window", func(e *Engine) error { return e.SetLayerWindow(l, x) })
				}
			}
			if c.windows {
				setWindows(0, 7, 13)
			}
			for round := 0; round < 400; round++ {
				if c.windows && round == 200 {
					setWindows(5, 30, 0)
				}
				// One or two steps per round, each one token or a chunk.
				var steps [][]int32
				for s := 0; s < 1+rng.IntN(2); s++ {
					n := 1
					if round == 0 || rng.IntN(25) == 0 {
						n = 1 + rng.IntN(30)
					}
					ps := make([]int32, n)
					for i := range ps {
						ps[i] = pos
						pos++
					}
					steps = append(steps, ps)
				}
				midRound := rng.IntN(10) == 0
				for l := 0; l < p.Layers; l++ {
					for _, ps := range steps {
						n := len(ps)
						q := f32Rows(gauss(rng, n*p.QHeads*p.HeadDim), n, p.QHeads, p.HeadDim)
						k := f32Rows(gauss(rng, n*p.KVHeads*p.HeadDim), n, p.KVHeads, p.HeadDim)
						both(fmt.Sprintf("round %d layer %d observe %v", round, l, ps), func(e *Engine) error {
							return e.Observe(seq, l, q, k, ps)
						})
					}
					if midRound && l == 0 {
						evictBoth(seq, 1+rng.IntN(3), fmt.Sprintf("round %d, mid-round", round))
					}
				}
				evictBoth(seq, []int{1, 1, 1, 3, 100}[rng.IntN(5)], fmt.Sprintf("round %d", round))
				switch rng.IntN(20) {
				case 0:
					sameBlobs(seq, fmt.Sprintf("round %d", round))
				case 1:
					// A loaded sequence does not know its highest slot.
					blob, err := fast.SaveSeq(seq)
					if err != nil {
						t.Fatal(err)
					}
					if err := fast.LoadSeq(seq, blob); err != nil {
						t.Fatal(err)
					}
				case 2:
					both("fork", func(e *Engine) error { return e.ForkSeq(seq, seq+1) })
					both("remove", func(e *Engine) error { return e.RemoveSeq(seq) })
					seq++
				}
			}
			sameBlobs(seq, "end")
		})
	}
}

// TestTokenFastEvictionWithLayersBehind asks for one eviction when every
// layer has added one fast step to the running total but one layer is
// behind the others, so positions the other layers observed are not yet
// candidates (no recent window to hide them): the fast step's eviction
// reads the layer counts then, and must choose as the full path does.
func TestTokenFastEvictionWithLayersBehind(t *testing.T) {
	p := smallParams()
	p.Mode, p.KVHeads, p.QHeads, p.Layers, p.Sinks, p.Recent, p.Budget = ModeToken, 3, 9, 2, 0, 0, 16
	full, fast := mustEngine(t, p), mustEngine(t, p)
	rng := rand.New(rand.NewPCG(3, 4))
	observe := func(layer int, pos int32) {
		t.Helper()
		q := f32Rows(gauss(rng, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim)
		k := f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim)
		noTokenFast = true
		errA := full.Observe(0, layer, q, k, []int32{pos})
		noTokenFast = false
		if err := fast.Observe(0, layer, q, k, []int32{pos}); errA != nil || err != nil {
			t.Fatal(errA, err)
		}
	}
	evict := func(when string) {
		t.Helper()
		var got [2][]int32
		for i, e := range []*Engine{full, fast} {
			out := make([]int32, 1)
			noTokenFast = i == 0
			k, err := e.Evictions(0, out)
			noTokenFast = false
			if err != nil {
				t.Fatal(err)
			}
			got[i] = out[:k]
		}
		if fmt.Sprint(got[0]) != fmt.Sprint(got[1]) {
			t.Fatalf("%s: full path evicted %v, fast path %v", when, got[0], got[1])
		}
	}
	for _, e := range []*Engine{full, fast} {
		must(t, e.AddSeq(0))
	}
	pos := int32(0)
	for round := 0; round < 300; round++ {
		// Layer 0 runs 2-4 positions ahead, each a step of its own; layer
		// 1 then observes the first of them, which completes the total.
		ahead := 2 + rng.IntN(3)
		for i := 0; i < ahead; i++ {
			observe(0, pos+int32(i))
		}
		observe(1, pos)
		evict(fmt.Sprintf("round %d, layer 1 %d behind", round, ahead-1))
		for i := 1; i < ahead; i++ {
			observe(1, pos+int32(i))
		}
		evict(fmt.Sprintf("round %d", round))
		pos += int32(ahead)
	}
}

// A token-mode decode step (every layer's observe of one token, then one
// eviction) allocates nothing on either path once the tables have grown:
// the fast step runs 30 observes a token inside llama.cpp, and the
// eviction's sort of its one position had allocated every step. (Skipped
// under -short, which the race run uses: the race runtime counts
// differently.)
func TestTokenDecodeStepDoesNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP under -short (race run)")
	}
	for _, full := range []bool{false, true} {
		p := smallParams()
		p.Mode, p.KVHeads, p.QHeads, p.Layers = ModeToken, 3, 9, 4
		e := mustEngine(t, p)
		must(t, e.AddSeq(0))
		rng := rand.New(rand.NewPCG(9, 10))
		q := f32Rows(gauss(rng, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim)
		k := f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim)
		pos, out := []int32{0}, make([]int32, 1)
		step := func() {
			noTokenFast = full
			defer func() { noTokenFast = false }()
			for l := 0; l < p.Layers; l++ {
				if err := e.Observe(0, l, q, k, pos); err != nil {
					t.Fatal(err)
				}
			}
			n, err := e.Evictions(0, out)
			if err != nil || n != max(0, min(1, int(pos[0])+1-p.Budget)) {
				t.Fatalf("position %d: %d evicted, %v", pos[0], n, err)
			}
			pos[0]++
		}
		for int(pos[0]) < p.Budget+8 {
			step() // fill the cache: every later step evicts one position
		}
		if a := testing.AllocsPerRun(50, step); a != 0 {
			t.Fatalf("full path %v: %.1f allocations per decode step, want 0", full, a)
		}
	}
}
