package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/hashevict/hashevict/policy"
)

// devRows uploads host rows into a fresh device buffer and describes both.
func devRows(t *testing.T, v *Device, r *rand.Rand, dt policy.DType, tokens, heads, dim int) (*policy.Rows, *Rows, func()) {
	t.Helper()
	es := int(dt.Size())
	raw := make([]byte, tokens*heads*dim*es)
	randomRow(r, dt, raw, tokens*heads*dim)
	d, err := v.Alloc(int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Upload(0, d, unsafe.Pointer(&raw[0]), int64(len(raw))); err != nil {
		t.Fatal(err)
	}
	hs, ts := int64(dim*es), int64(heads*dim*es)
	return &policy.Rows{Data: raw, DType: dt, Dim: dim, Heads: heads, Tokens: tokens, HeadStride: hs, TokenStride: ts},
		&Rows{Data: d, DType: dt, Dim: dim, Heads: heads, Tokens: tokens, HeadStride: hs, TokenStride: ts},
		func() { v.Free(d, int64(len(raw))) }
}

// TestSeqPlaceMatchesEngine drives the C API's CUDA path (Place with a
// prefill chunk into free slots, then synchronous and asynchronous decode
// steps) on the host-emulated driver against a host engine fed the same
// rows: every slot and evicted position agrees, the counters agree, and
// removing the sequence frees every device byte and its reservation.
func TestSeqPlaceMatchesEngine(t *testing.T) {
	useLibrary(t, buildEmu(t))
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	i := 0
	for _, bits := range []int{8, 16, 64, 256} {
		for _, probe := range []policy.Probe{policy.ProbeQuery, policy.ProbeKey} {
			for _, score := range []policy.Score{policy.ScoreInstant, policy.ScoreAccumulated, policy.ScoreDecayed} {
				i++
				p := policy.DefaultParams()
				p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Bits, p.Budget = 2, 1+i%3, (1+i%3)*(1+i%2), []int{3, 32, 64}[i%3], bits, 24+i%5
				p.Probe, p.Score, p.Seed = probe, score, uint64(i)
				seqCase(t, v, r, p, []policy.DType{policy.F32, policy.F16, policy.BF16}[i%3])
			}
		}
	}
}

func seqCase(t *testing.T, v *Device, r *rand.Rand, p policy.Params, dt policy.DType) {
	t.Helper()
	host, err := policy.NewEngine(p)
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := policy.NewEngine(p)
	host.AddSeq(0)
	dev.AddSeq(0)
	before := v.Allocated()
	outs, _ := v.Alloc(int64(8 * p.KVHeads))
	defer v.Free(outs, int64(8*p.KVHeads))
	pos := int32(0)
	for step := 0; step < 3*p.Budget; step++ {
		n := 1
		if step == 0 {
			n = p.Budget / 2
		}
		positions := make([]int32, n)
		for j := range positions {
			positions[j] = pos
			pos += 1 + int32(r.IntN(2))
		}
		hq, dq, fq := devRows(t, v, r, dt, n, p.QHeads, p.HeadDim)
		hk, dk, fk := devRows(t, v, r, dt, n, p.KVHeads, p.HeadDim)
		for l := 0; l < p.Layers; l++ {
			want := make([]int32, 2*n*p.KVHeads)
			if err := host.Place(0, l, hq, hk, positions, want[:n*p.KVHeads], want[n*p.KVHeads:]); err != nil {
				t.Fatal(err)
			}
			got := make([]int32, 2*n*p.KVHeads)
			in := StepInput{Dev: v, Q: dq, K: dk, Positions: positions}
			if n == 1 && step%2 == 1 {
				// The asynchronous path, read back here.
				if err := PlaceAsync(dev, 0, l, in, outs, outs+Ptr(4*p.KVHeads)); err != nil {
					t.Fatal(err)
				}
				v.Download(0, unsafe.Pointer(&got[0]), outs, int64(4*len(got)))
			} else if err := Place(dev, 0, l, in, got[:n*p.KVHeads], got[n*p.KVHeads:]); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%d-bit probe %d score %d %s: step %d layer %d: device slots/evicted %v, host %v", p.Bits, p.Probe, p.Score, dt, step, l, got, want)
			}
		}
		fq()
		fk()
	}
	for l := 0; l < p.Layers; l++ {
		for h := 0; h < p.KVHeads; h++ {
			want, got := make([]int32, p.Budget), make([]int32, p.Budget)
			host.SlotPositions(0, l, h, want)
			if err := dev.SlotPositions(0, l, h, got); err != nil || !slices.Equal(got, want) {
				t.Fatalf("slot positions of layer %d head %d: device %v (%v), host %v", l, h, got, err, want)
			}
		}
	}
	hs, _ := host.SeqStats(0)
	ds, _ := dev.SeqStats(0)
	if hs.Steps != ds.Steps || hs.Tokens != ds.Tokens || hs.Evictions != ds.Evictions || hs.Cached != ds.Cached {
		t.Errorf("stats: host %+v, device %+v", hs, ds)
	}
	if _, d := dev.MemoryInUse(); d == 0 || int64(d) != v.Allocated()-before-int64(8*p.KVHeads) {
		t.Errorf("reserved %d device bytes, allocated %d", d, v.Allocated()-before-int64(8*p.KVHeads))
	}
	if err := dev.RemoveSeq(0); err != nil {
		t.Fatal(err)
	}
	if _, d := dev.MemoryInUse(); d != 0 || v.Allocated() != before+int64(8*p.KVHeads) {
		t.Errorf("after remove: %d device bytes reserved, %d allocated", d, v.Allocated()-before-int64(8*p.KVHeads))
	}
}

// TestSeqRefusals: what has no device path, NaN rows, a memory cap too
// small for the device state, and a chunk that would evict are refused
// with their codes, the sequence unchanged (it still steps like the host
// engine afterwards), and a failed first call does not bind the sequence
// to the device.
func TestSeqRefusals(t *testing.T) {
	useLibrary(t, buildEmu(t))
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	p := policy.DefaultParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = 1, 2, 4, 16, 20
	p.Score = policy.ScoreDecayed // a chunk after cached slots updates their scores first
	code := func(err error) policy.Code {
		if err == nil {
			return 0
		}
		return policy.CodeOf(err)
	}

	tp := p
	tp.Mode = policy.ModeToken
	tok, _ := policy.NewEngine(tp)
	tok.AddSeq(0)
	_, dq, _ := devRows(t, v, r, policy.F32, 1, p.QHeads, p.HeadDim)
	hk, dk, _ := devRows(t, v, r, policy.F32, 1, p.KVHeads, p.HeadDim)
	if err := Place(tok, 0, 0, StepInput{Dev: v, Q: dq, K: dk, Positions: []int32{0}}, make([]int32, 2), nil); code(err) != policy.CodeWrongMode {
		t.Errorf("token mode: %v", err)
	}
	slot, _ := policy.NewEngine(p)
	slot.AddSeq(0)
	if err := Observe(slot, 0, 0, StepInput{Dev: v, Q: dq, K: dk, Positions: []int32{0}}); code(err) != policy.CodeWrongMode || slot.IsDevice(0) {
		t.Errorf("observe on a slot-mode engine: %v", err)
	}

	capped := p
	capped.MemoryCapBytes = 1 << 20
	ce, err := policy.NewEngine(capped)
	if err != nil {
		t.Fatal(err)
	}
	ce.AddSeq(0)
	h, _ := ce.MemoryInUse()
	ce.Reserve(policy.MemHost, capped.MemoryCapBytes-h-16, "test filler")
	allocated := v.Allocated()
	if err := Place(ce, 0, 0, StepInput{Dev: v, Q: dq, K: dk, Positions: []int32{0}}, make([]int32, 2), nil); code(err) != policy.CodeMemoryCap {
		t.Errorf("cap: %v", err)
	}
	if _, d := ce.MemoryInUse(); d != 0 || v.Allocated() != allocated || ce.IsDevice(0) {
		t.Errorf("after a refused first call: %d reserved, %d allocated, device %v", d, v.Allocated()-allocated, ce.IsDevice(0))
	}

	host, _ := policy.NewEngine(p)
	dev, _ := policy.NewEngine(p)
	host.AddSeq(0)
	dev.AddSeq(0)
	// NaN in k on the first step: refused, nothing placed.
	nan := make([]byte, p.KVHeads*p.HeadDim*4)
	copy(nan, hk.Data)
	*(*uint32)(unsafe.Pointer(&nan[4*(p.HeadDim+3)])) = 0x7fc00000
	v.Upload(0, dk.Data, unsafe.Pointer(&nan[0]), int64(len(nan)))
	err = Place(dev, 0, 0, StepInput{Dev: v, Q: dq, K: dk, Positions: []int32{0}}, make([]int32, 2), nil)
	if code(err) != policy.CodeNonFinite || err.Error() != "k row of token 0, head 1 holds NaN or Inf" {
		t.Errorf("NaN: %v", err)
	}
	v.Upload(0, dk.Data, unsafe.Pointer(&hk.Data[0]), int64(len(hk.Data)))
	nanQ := make([]float32, p.QHeads*p.HeadDim)
	nanQ[2*p.HeadDim+1] = float32(math.Inf(-1))
	v.Upload(0, dq.Data, unsafe.Pointer(&nanQ[0]), int64(4*len(nanQ)))
	err = Place(dev, 0, 0, StepInput{Dev: v, Q: dq, K: dk, Positions: []int32{0}}, make([]int32, 2), nil)
	if code(err) != policy.CodeNonFinite || err.Error() != "q row of token 0, head 2 holds NaN or Inf" {
		t.Errorf("Inf in q: %v", err)
	}
	if st, _ := dev.SeqStats(0); st.Steps != 0 {
		t.Errorf("a refused step counted: %+v", st)
	}
	pos := int32(0)
	step := func(n int, wantCode policy.Code) {
		t.Helper()
		positions := make([]int32, n)
		for j := range positions {
			positions[j] = pos + int32(j)
		}
		hq, dq, fq := devRows(t, v, r, policy.BF16, n, p.QHeads, p.HeadDim)
		hk, dk, fk := devRows(t, v, r, policy.BF16, n, p.KVHeads, p.HeadDim)
		defer fq()
		defer fk()
		got := make([]int32, n*p.KVHeads)
		err := Place(dev, 0, 0, StepInput{Dev: v, Q: dq, K: dk, Positions: positions}, got, nil)
		if code(err) != wantCode {
			t.Fatalf("chunk of %d: %v, want code %d", n, err, wantCode)
		}
		if err != nil {
			return
		}
		want := make([]int32, n*p.KVHeads)
		if err := host.Place(0, 0, hq, hk, positions, want, nil); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("chunk of %d at %d: device %v, host %v", n, pos, got, want)
		}
		pos += int32(n)
	}
	step(15, policy.Code(0))
	step(6, policy.CodeUnsupported) // 5 free slots: this chunk would evict
	step(5, policy.Code(0))
	for range 30 {
		step(1, policy.Code(0))
	}
	// Positions that go back are refused as on the host.
	pos--
	step(1, policy.CodePosition)
}

// TestSeqConcurrentSequences: sequences stepped from their own goroutines
// at once (run with -race) each agree with a host engine's sequence fed
// the same rows.
func TestSeqConcurrentSequences(t *testing.T) {
	useLibrary(t, buildEmu(t))
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	p := policy.DefaultParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget, p.MaxSeqs = 2, 2, 4, 24, 20, 4
	p.Score = policy.ScoreAccumulated
	host, _ := policy.NewEngine(p)
	dev, _ := policy.NewEngine(p)
	errs := make(chan error, p.MaxSeqs)
	for id := 0; id < p.MaxSeqs; id++ {
		host.AddSeq(id)
		dev.AddSeq(id)
		go func(id int) {
			r := rand.New(rand.NewPCG(uint64(id), 77))
			for step := 0; step < 50; step++ {
				hq, dq, fq := devRows(t, v, r, policy.F16, 1, p.QHeads, p.HeadDim)
				hk, dk, fk := devRows(t, v, r, policy.F16, 1, p.KVHeads, p.HeadDim)
				for l := 0; l < p.Layers; l++ {
					want, got := make([]int32, p.KVHeads), make([]int32, p.KVHeads)
					if err := host.Place(id, l, hq, hk, []int32{int32(step)}, want, nil); err != nil {
						errs <- err
						return
					}
					if err := Place(dev, id, l, StepInput{Dev: v, Q: dq, K: dk, Positions: []int32{int32(step)}}, got, nil); err != nil {
						errs <- err
						return
					}
					if !slices.Equal(got, want) {
						errs <- fmt.Errorf("sequence %d step %d layer %d: device %v, host %v", id, step, l, got, want)
						return
					}
				}
				fq()
				fk()
			}
			errs <- nil
		}(id)
	}
	for range p.MaxSeqs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	dev.FreeDevice()
	if _, d := dev.MemoryInUse(); d != 0 {
		t.Errorf("after FreeDevice: %d device bytes reserved", d)
	}
}

// TestSeqFork: a fork of a CUDA sequence continues exactly as a fork of
// the host engine's sequence, and so does its source; the fork's device
// memory is reserved and given back on remove.
func TestSeqFork(t *testing.T) {
	useLibrary(t, buildEmu(t))
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(8, 9))
	p := policy.DefaultParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = 2, 2, 4, 16, 20
	p.Score = policy.ScoreDecayed
	host, _ := policy.NewEngine(p)
	dev, _ := policy.NewEngine(p)
	host.AddSeq(0)
	dev.AddSeq(0)
	step := func(id int, pos int32) {
		t.Helper()
		hq, dq, fq := devRows(t, v, r, policy.F32, 1, p.QHeads, p.HeadDim)
		hk, dk, fk := devRows(t, v, r, policy.F32, 1, p.KVHeads, p.HeadDim)
		defer fq()
		defer fk()
		for l := 0; l < p.Layers; l++ {
			want, got := make([]int32, 2*p.KVHeads), make([]int32, 2*p.KVHeads)
			if err := host.Place(id, l, hq, hk, []int32{pos}, want[:p.KVHeads], want[p.KVHeads:]); err != nil {
				t.Fatal(err)
			}
			if err := Place(dev, id, l, StepInput{Dev: v, Q: dq, K: dk, Positions: []int32{pos}}, got[:p.KVHeads], got[p.KVHeads:]); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("sequence %d position %d layer %d: device %v, host %v", id, pos, l, got, want)
			}
		}
	}
	for pos := int32(0); pos < 30; pos++ {
		step(0, pos)
	}
	_, held := dev.MemoryInUse()
	if err := host.ForkSeq(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := dev.ForkSeq(0, 1); err != nil {
		t.Fatal(err)
	}
	if _, d := dev.MemoryInUse(); d <= held {
		t.Errorf("the fork reserved nothing: %d then %d device bytes", held, d)
	}
	for pos := int32(30); pos < 60; pos++ {
		step(1, pos)
		step(0, pos)
	}
	if err := dev.RemoveSeq(1); err != nil {
		t.Fatal(err)
	}
	if _, d := dev.MemoryInUse(); d != held {
		t.Errorf("after removing the fork: %d device bytes reserved, want %d", d, held)
	}
}
