package main

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

// TestPlaceAllocatesNothing pins that a steady decode step through the C
// ABI, as the llama.cpp fork makes it (SmolLM2-135M's shape: 30 layers, 9
// query / 3 KV heads, head_dim 64; one token per call, a full cache of
// 512 slots), allocates nothing on the Go heap: the fork makes 30 such calls
// per token, and each view of q and k returned by pointer had been two heap
// objects per call.
func TestPlaceAllocatesNothing(t *testing.T) {
	runtime.LockOSThread() // the last error is thread-local
	defer runtime.UnlockOSThread()
	for _, c := range []struct {
		policy, probe, score int32
	}{
		{0, 0, 0}, // hash, query probe, instant: the fork's default
		{0, 1, 0}, // key probe
		{0, 0, 1}, // accumulated
		{0, 0, 2}, // decayed
		{1, 0, 0}, // sink+recent
		{2, 0, 0}, // knorm
		{3, 0, 0}, // random
		{4, 0, 0}, // oracle
	} {
		t.Run(fmt.Sprintf("policy%d/probe%d/score%d", c.policy, c.probe, c.score), func(t *testing.T) {
			h := &harness{}
			defer h.free()
			p := defaultHarnessParams()
			p.Mode, p.Policy, p.Probe, p.Score = 0, c.policy, c.probe, c.score
			p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = 30, 3, 9, 64, 512
			step, st := h.decodeLoop(p, func(i int) float32 { return float32(i%7) - 3 })
			if st != 0 {
				t.Fatalf("setup: status %d: %s", st, h.lastError())
			}
			// Past the budget, so that every step evicts.
			for i := 0; i < int(p.Budget)+8; i++ {
				if st := step(); st != 0 {
					t.Fatalf("token %d: status %d: %s", i, st, h.lastError())
				}
			}
			failed := int32(0)
			allocs := testing.AllocsPerRun(50, func() {
				if st := step(); st != 0 && failed == 0 {
					failed = st
				}
			})
			if failed != 0 {
				t.Fatalf("status %d: %s", failed, h.lastError())
			}
			if allocs != 0 {
				t.Errorf("%v heap allocations per token (30 hashevict_place calls), want 0", allocs)
			}
		})
	}
}

func TestDueYield(t *testing.T) {
	var last atomic.Int64
	ms := int64(1e6)
	for _, c := range []struct {
		now  int64
		want bool
	}{
		{1 * ms, false}, // less than yieldEvery after the start
		{5 * ms, true},
		{9 * ms, false},
		{10*ms - 1, false},
		{10 * ms, true},
		{30 * ms, true}, // a long gap: one yield, not one per period missed
		{31 * ms, false},
	} {
		if got := dueYield(c.now, &last); got != c.want {
			t.Errorf("dueYield at %d ms = %v, want %v", c.now/ms, got, c.want)
		}
	}
}
