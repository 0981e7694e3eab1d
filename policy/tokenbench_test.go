package policy

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/hashevict/hashevict/bench"
)

// BenchmarkTokenStepPaired times the token-mode decode step (every layer's
// hashevict_observe of one token, then hashevict_evictions) on the full path
// (noTokenFast) against the fast path, in paired rounds on one thread
// (bench.Paired: a b, b a, …, each step timed by the thread's CPU time), so
// that a loaded machine slows both alike. Shape: SmolLM2-135M (30 layers,
// 9 query / 3 KV heads, head_dim 64, 16-bit codes), a full cache of
// `budget` positions, one eviction per step. "cold" runs each timed step
// after reading and writing 64 MiB (untimed), as a decode step inside a
// runtime follows the streaming of the model's weights. It reports the
// medians of each path and of the per-round ratio full / fast, with their
// ranges in the log:
//
//	go test ./policy -run '^$' -bench TokenStepPaired -benchtime 1x -v
func BenchmarkTokenStepPaired(b *testing.B) {
	flush := make([]uint64, 64<<20/8)
	for _, c := range []struct {
		budget int
		cold   bool
	}{{512, false}, {2048, false}, {4096, false}, {2048, true}} {
		budget := c.budget
		name := fmt.Sprint("budget", budget)
		if c.cold {
			name += "/cold"
		}
		b.Run(name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			p := DefaultParams()
			p.Mode, p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = ModeToken, 30, 3, 9, 64, budget
			type run struct {
				e    *Engine
				pos  int32
				full bool
			}
			rng := rand.New(rand.NewPCG(1, 1))
			// A pool of inputs, so that the distances vary from step to step.
			var qs, ks []*Rows
			for i := 0; i < 64; i++ {
				qs = append(qs, f32Rows(gauss(rng, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim))
				ks = append(ks, f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim))
			}
			out := make([]int32, 4)
			step := func(r *run) {
				noTokenFast = r.full
				defer func() { noTokenFast = false }()
				i := int(r.pos) % len(qs)
				for l := 0; l < p.Layers; l++ {
					if err := r.e.Observe(0, l, qs[(i+l)%len(qs)], ks[(i+2*l)%len(ks)], []int32{r.pos}); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := r.e.Evictions(0, out); err != nil {
					b.Fatal(err)
				}
				r.pos++
			}
			full, fast := &run{e: mustEngine(b, p), full: true}, &run{e: mustEngine(b, p)}
			for _, r := range []*run{full, fast} {
				r.e.AddSeq(0)
				for i := 0; i < budget+64; i++ {
					step(r)
				}
			}
			rounds := 41 * b.N
			b.ResetTimer()
			// bench.Paired's order (a b, b a, …), with the flush between
			// steps left out of the time.
			ta, tb := make([]time.Duration, rounds), make([]time.Duration, rounds)
			timed := func(r *run) time.Duration {
				if c.cold {
					for i := range flush {
						flush[i]++
					}
				}
				t0 := bench.ThreadTime()
				step(r)
				return bench.ThreadTime() - t0
			}
			for i := 0; i < rounds; i++ {
				if i%2 == 0 {
					ta[i], tb[i] = timed(full), timed(fast)
				} else {
					tb[i], ta[i] = timed(fast), timed(full)
				}
			}
			b.StopTimer()
			us := func(t []time.Duration) []float64 {
				x := make([]float64, len(t))
				for i, v := range t {
					x[i] = float64(v) / 1e3
				}
				return x
			}
			sa, sb := bench.SpreadOf(us(ta)), bench.SpreadOf(us(tb))
			ratio := bench.SpreadOf(bench.Ratios(ta, tb))
			b.ReportMetric(sa.Median, "full-µs/step")
			b.ReportMetric(sb.Median, "fast-µs/step")
			b.ReportMetric(ratio.Median, "full/fast")
			b.Logf("budget %d, cold %v, %d paired rounds, %s: full path %s µs, fast path %s µs, full/fast %s",
				budget, c.cold, rounds, bench.ClockName, sa.Format("%.1f"), sb.Format("%.1f"), ratio.Format("%.2f"))
		})
	}
}
