package main

import (
	"fmt"
	"slices"
	"time"
	"unsafe"

	"github.com/hashevict/hashevict/cuda"
	"github.com/hashevict/hashevict/policy"
)

// wiredChecks runs the C API's CUDA path (cuda.Place, cuda.PlaceAsync,
// cuda.HashRows: what hashevict_place, hashevict_place_async and
// hashevict_hash call for DEVICE_CUDA tensors) against a host engine fed
// the same rows, every width x probe x score, on a non-blocking stream of
// its own: a prefill chunk into free slots, then decode steps alternating
// the synchronous and the asynchronous call; then remove, which must give
// back every device byte.
func (c *checker) wiredChecks() {
	steps := 200
	if *quick {
		steps = 60
	}
	for _, s := range c.shapes() {
		t0 := time.Now()
		msg := c.wiredCase(s, steps)
		report(msg == "", "C API path, %v: prefill %d + %d steps (place and place_async), every slot as Engine.Place (%.1f s)%s", s, s.budget/2, steps, time.Since(t0).Seconds(), msg)
	}
}

func (c *checker) wiredCase(s shape, steps int) string {
	host := engine(policy.ModeSlot, s.layers, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	dev := engine(policy.ModeSlot, s.layers, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	must(host.AddSeq(0), "AddSeq")
	must(dev.AddSeq(0), "AddSeq")
	st, err := c.v.NewStream()
	must(err, "NewStream")
	defer c.v.DestroyStream(st)
	before := c.v.Allocated()
	prefill := s.budget / 2
	b := c.newStep(s, prefill, 1)
	defer c.free(b.all()...)
	outs := c.alloc(8 * int64(s.kvh))
	defer c.free(outs)
	next := int32(0)
	for step := 0; step <= steps; step++ {
		n := 1
		if step == 0 {
			n = prefill
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
			want := make([]int32, 2*n*s.kvh)
			if err := host.Place(0, l, &policy.Rows{Data: q, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: n, HeadStride: qhs, TokenStride: qts},
				&policy.Rows{Data: k, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: n, HeadStride: khs, TokenStride: kts}, positions, want[:n*s.kvh], want[n*s.kvh:]); err != nil {
				return fmt.Sprintf(": step %d layer %d: Engine.Place: %v", step, l, err)
			}
			got := make([]int32, 2*n*s.kvh)
			if n == 1 && step%2 == 1 {
				if err := cuda.PlaceAsync(dev, 0, l, in, outs.p, outs.p+cuda.Ptr(4*s.kvh)); err != nil {
					return fmt.Sprintf(": step %d layer %d: PlaceAsync: %v", step, l, err)
				}
				must(c.v.Download(st, unsafe.Pointer(&got[0]), outs.p, int64(4*len(got))), "download")
			} else if err := cuda.Place(dev, 0, l, in, got[:n*s.kvh], got[n*s.kvh:]); err != nil {
				return fmt.Sprintf(": step %d layer %d: Place: %v", step, l, err)
			}
			if !slices.Equal(got, want) {
				return fmt.Sprintf(": step %d layer %d: device slots/evicted %v, CPU %v", step, l, got, want)
			}
		}
		if step == steps {
			codes := make([]uint64, n*s.kvh*wordsOf(s.bits))
			wantCodes := make([]uint64, len(codes))
			must(host.Hash(1, &policy.Rows{Data: k, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: n, HeadStride: khs, TokenStride: kts}, wantCodes), "Engine.Hash")
			if err := cuda.HashRows(dev, c.v, st, 1, in.K, codes); err != nil {
				return fmt.Sprintf(": HashRows: %v", err)
			}
			if !slices.Equal(codes, wantCodes) {
				return ": HashRows: codes differ from Engine.Hash"
			}
		}
	}
	must(dev.RemoveSeq(0), "RemoveSeq")
	mine := outs.n + sumBytes(b.all())
	if _, d := dev.MemoryInUse(); d != 0 || c.v.Allocated() != before+mine {
		return fmt.Sprintf(": after remove: %d device bytes reserved, %d allocated beyond the check's buffers", d, c.v.Allocated()-before-mine)
	}
	return ""
}

func sumBytes(bs []buf) int64 {
	var n int64
	for _, b := range bs {
		n += b.n
	}
	return n
}
