package policy

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentSequences runs, at once: one goroutine per own sequence,
// several on one shared sequence, and one that forks, saves, loads and
// removes sequences and reads the counters. Run under -race (make test-go
// does) it checks the locking; without it, the invariants still hold.
func TestConcurrentSequences(t *testing.T) {
	p := smallParams()
	p.MaxSeqs = 32
	e := mustEngine(t, p)
	const own, shared, steps = 6, 3, 300
	for s := 0; s <= own; s++ {
		if err := e.AddSeq(s); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var sharedPos atomic.Int32
	var failures atomic.Int32
	stepOnce := func(rng *rand.Rand, seq int, pos int32) {
		for l := 0; l < p.Layers; l++ {
			slots := make([]int32, p.KVHeads)
			err := e.Place(seq, l, f32Rows(gauss(rng, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim),
				f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim), []int32{pos}, slots, nil)
			// On the shared sequence another goroutine may have placed a
			// later position first: that is a position error, not a race.
			if err != nil && CodeOf(err) != CodePosition {
				t.Error(err)
				failures.Add(1)
			}
		}
	}
	for g := 0; g < own; g++ {
		wg.Add(1)
		go func(seq int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seq), 1))
			for i := int32(0); i < steps; i++ {
				stepOnce(rng, seq, i)
			}
		}(g + 1)
	}
	for g := 0; g < shared; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for i := 0; i < steps; i++ {
				stepOnce(rng, 0, sharedPos.Add(1))
			}
		}(g)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < steps; i++ {
			dst := 20 + i%10
			if err := e.ForkSeq(1+i%own, dst); err != nil {
				t.Error(err)
			}
			if blob, err := e.SaveSeq(dst); err != nil {
				t.Error(err)
			} else if err := e.LoadSeq(dst, blob); err != nil {
				t.Error(err)
			}
			_ = e.EngineStats()
			if err := e.RemoveSeq(dst); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
	if failures.Load() > 0 {
		t.FailNow()
	}
	for s := 0; s <= own; s++ {
		for l := 0; l < p.Layers; l++ {
			for h := 0; h < p.KVHeads; h++ {
				got := make([]int32, p.Budget)
				if err := e.SlotPositions(s, l, h, got); err != nil {
					t.Fatal(err)
				}
				seen := map[int32]bool{}
				for _, q := range got {
					if q >= 0 && seen[q] {
						t.Fatalf("sequence %d holds position %d twice", s, q)
					}
					seen[q] = true
				}
			}
		}
	}
	st := e.EngineStats()
	if st.Sequences != own+1 {
		t.Fatalf("%d sequences, want %d", st.Sequences, own+1)
	}
}
