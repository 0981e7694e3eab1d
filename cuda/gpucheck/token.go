package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/hashevict/hashevict/cuda"
	"github.com/hashevict/hashevict/policy"
	"github.com/hashevict/hashevict/simd"
)

// wiredTokenChecks runs the C API's token-mode CUDA path (cuda.Observe,
// what hashevict_observe calls for DEVICE_CUDA tensors, and
// Engine.Evictions of a device sequence, what hashevict_evictions calls:
// the scores summed on the device by TokSeq.Totals) against a host engine
// fed the same rows, the 36 shapes, on a non-blocking stream of its own: a
// prefill chunk larger than the budget, then decode steps and chunks of 3,
// evictions of 1-3 positions after most steps (so the sequence sometimes
// stays above its budget and the tables grow), a sliding-window layer on
// every third shape; then remove, which must give back every device byte.
func (c *checker) wiredTokenChecks() {
	steps := 200
	if *quick {
		steps = 60
	}
	for i, s := range c.shapes() {
		window := 0
		if i%3 == 1 {
			window = s.budget / 2
		}
		t0 := time.Now()
		msg := c.wiredTokenCase(s, steps, window)
		report(msg == "", "C API token mode, %v, window %d: prefill + %d steps (observe, evictions), every eviction as Engine.Evictions (%.1f s)%s",
			s, window, steps, time.Since(t0).Seconds(), msg)
	}
}

func (c *checker) wiredTokenCase(s shape, steps, window int) string {
	host := engine(policy.ModeToken, s.layers, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	dev := engine(policy.ModeToken, s.layers, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	must(host.AddSeq(0), "AddSeq")
	must(dev.AddSeq(0), "AddSeq")
	if window > 0 {
		must(host.SetLayerWindow(0, window), "SetLayerWindow")
		must(dev.SetLayerWindow(0, window), "SetLayerWindow")
	}
	st, err := c.v.NewStream()
	must(err, "NewStream")
	defer c.v.DestroyStream(st)
	before := c.v.Allocated()
	per := 1
	if s.probe == policy.ProbeQuery {
		per = s.qh / s.kvh
	}
	prefill := min(s.budget+5, cuda.MaxProbeWords/(per*wordsOf(s.bits)))
	b := c.newStep(s, prefill, 1)
	defer c.free(b.all()...)
	next, evicted := int32(0), 0
	for step := 0; step <= steps; step++ {
		n := 1
		if step == 0 {
			n = prefill
		} else if step%7 == 3 {
			n = 3
		}
		positions := make([]int32, n)
		for i := range positions {
			positions[i] = next
			next += 1 + int32(c.r.IntN(2))
		}
		q, qhs, qts := c.randomRows(s.dt, s.dim, s.qh, n)
		k, khs, kts := c.randomRows(s.dt, s.dim, s.kvh, n)
		upload(c, b.q, q)
		upload(c, b.k, k)
		in := cuda.StepInput{Dev: c.v, Stream: st, Positions: positions,
			Q: &cuda.Rows{Data: b.q.p, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: n, HeadStride: qhs, TokenStride: qts},
			K: &cuda.Rows{Data: b.k.p, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: n, HeadStride: khs, TokenStride: kts}}
		for l := 0; l < s.layers; l++ {
			if err := host.Observe(0, l, &policy.Rows{Data: q, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: n, HeadStride: qhs, TokenStride: qts},
				&policy.Rows{Data: k, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: n, HeadStride: khs, TokenStride: kts}, positions); err != nil {
				return fmt.Sprintf(": step %d layer %d: Engine.Observe: %v", step, l, err)
			}
			if err := cuda.Observe(dev, 0, l, in); err != nil {
				return fmt.Sprintf(": step %d layer %d: cuda.Observe: %v", step, l, err)
			}
		}
		// The step's rows are overwritten by the next upload: the device
		// must have read them (Observe waits only for the hashes).
		must(c.v.Sync(st), "Sync")
		if step%5 == 4 {
			continue
		}
		limit := 1 + c.r.IntN(3)
		want, got := make([]int32, limit), make([]int32, limit)
		nw, err := host.Evictions(0, want)
		if err != nil {
			return fmt.Sprintf(": step %d: Engine.Evictions: %v", step, err)
		}
		ng, err := dev.Evictions(0, got)
		if err != nil {
			return fmt.Sprintf(": step %d: device Evictions: %v", step, err)
		}
		if !slices.Equal(got[:ng], want[:nw]) {
			return fmt.Sprintf(": step %d: device evicts %v, CPU %v", step, got[:ng], want[:nw])
		}
		evicted += nw
	}
	if evicted < steps/2 {
		return fmt.Sprintf(": only %d evictions", evicted)
	}
	hp, _ := host.TokenPositions(0)
	dp, err := dev.TokenPositions(0)
	if err != nil || !slices.Equal(dp, hp) {
		return fmt.Sprintf(": held positions differ (%v)", err)
	}
	hs, _ := host.SeqStats(0)
	ds, _ := dev.SeqStats(0)
	if hs.Steps != ds.Steps || hs.Tokens != ds.Tokens || hs.Evictions != ds.Evictions || hs.Cached != ds.Cached {
		return fmt.Sprintf(": stats: device %+v, CPU %+v", ds, hs)
	}
	must(dev.RemoveSeq(0), "RemoveSeq")
	mine := sumBytes(b.all())
	if _, d := dev.MemoryInUse(); d != 0 || c.v.Allocated() != before+mine {
		return fmt.Sprintf(": after remove: %d device bytes reserved, %d allocated beyond the check's buffers", d, c.v.Allocated()-before-mine)
	}
	return ""
}

// tokenLatency compares one token-mode decode step of one layer through
// the C API's path, Llama-3-8B-shaped (8 KV heads, 32 query heads,
// head_dim 128, bf16, 16-bit codes, instant score, query probe), holding
// budget positions: observe one token (the device waits for the hashes, to
// refuse NaN as the host does) then evictions (the totals summed on the
// device and brought back), in wall time, against the CPU engine's
// Observe + Evictions, in paired interleaved rounds. The rows are already
// in device memory; the fill is not timed: chunks of 256 tokens on the
// device (one scan's probe words), of 4096 on the host (its chunk steps
// rescore every slot: 16 times fewer of them), so the two hold different
// scores, which the timing does not depend on.
func (c *checker) tokenLatency(budget int) {
	s := shape{layers: 1, kvh: 8, qh: 32, dim: 128, bits: 16, budget: budget, probe: policy.ProbeQuery, score: policy.ScoreInstant, dt: policy.BF16}
	host := engine(policy.ModeToken, 1, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	dev := engine(policy.ModeToken, 1, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	must(host.AddSeq(0), "AddSeq")
	must(dev.AddSeq(0), "AddSeq")
	chunk := min(budget, cuda.MaxProbeWords/(s.qh/s.kvh))
	hostChunk := min(budget, 4096)
	q, qhs, qts := c.randomRows(s.dt, s.dim, s.qh, hostChunk)
	k, khs, kts := c.randomRows(s.dt, s.dim, s.kvh, hostChunk)
	b := c.newStep(s, chunk, 1)
	defer c.free(b.all()...)
	// The device's rows are the first chunk tokens of the host's.
	upload(c, b.q, q[:min(int64(len(q)), int64(chunk)*qts)])
	upload(c, b.k, k[:min(int64(len(k)), int64(chunk)*kts)])
	rows := func(n int) (*policy.Rows, *policy.Rows, cuda.StepInput) {
		return &policy.Rows{Data: q, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: n, HeadStride: qhs, TokenStride: qts},
			&policy.Rows{Data: k, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: n, HeadStride: khs, TokenStride: kts},
			cuda.StepInput{Dev: c.v, Q: &cuda.Rows{Data: b.q.p, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: n, HeadStride: qhs, TokenStride: qts},
				K: &cuda.Rows{Data: b.k.p, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: n, HeadStride: khs, TokenStride: kts}}
	}
	positions := make([]int32, budget)
	for i := range positions {
		positions[i] = int32(i)
	}
	next := int32(budget)
	for at := 0; at < budget; at += hostChunk {
		n := min(hostChunk, budget-at)
		hq, hk, _ := rows(n)
		must(host.Observe(0, 0, hq, hk, positions[at:at+n]), "Observe (fill)")
	}
	for at := 0; at < budget; at += chunk {
		n := min(chunk, budget-at)
		_, _, in := rows(n)
		in.Positions = positions[at : at+n]
		must(cuda.Observe(dev, 0, 0, in), "cuda.Observe (fill)")
	}
	hq, hk, in := rows(1)
	out := make([]int32, 1)
	const per = 50
	var devWall, cpu, ratio []float64
	for r := 0; r < *rounds; r++ {
		t0 := time.Now()
		for i := 0; i < per; i++ {
			in.Positions = []int32{next + int32(i)}
			must(cuda.Observe(dev, 0, 0, in), "cuda.Observe")
			_, err := dev.Evictions(0, out)
			must(err, "device Evictions")
		}
		devWall = append(devWall, float64(time.Since(t0).Microseconds())/per)
		t0 = time.Now()
		for i := 0; i < per; i++ {
			must(host.Observe(0, 0, hq, hk, []int32{next + int32(i)}), "Observe")
			_, err := host.Evictions(0, out)
			must(err, "Evictions")
		}
		cpu = append(cpu, float64(time.Since(t0).Microseconds())/per)
		ratio = append(ratio, cpu[r]/devWall[r])
		next += per
	}
	must(dev.RemoveSeq(0), "RemoveSeq")
	report(true, "bench token-mode step of one layer, %d positions held (8/32 heads, dim 128, bf16, 16 bits): device observe + evictions %s us (wall, two waits); CPU engine (%s) %s us; CPU/device %s",
		budget, spread(devWall), simd.Active().Name, spread(cpu), spread(ratio))
}
