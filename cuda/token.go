package cuda

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/hashevict/hashevict/policy"
)

// TokSeq is a token-mode sequence whose tables live on a device: what the
// C API's CUDA path keeps per sequence for hashevict_observe. The host
// keeps the bookkeeping (which slot holds which position, the order
// checks: policy.DeviceSeq's Token* methods), exactly as for a host
// sequence, so the slots, checks and errors are the host engine's; the
// device holds, per (layer, KV head), the codes, scores and counts of
// every slot, updated on the caller's stream by the kernels slot mode uses
// (ScoreStep without argmax, Store at the slot the host chose).
// hashevict_evictions sums the scores on the device (TokenTotals) and
// chooses on the host from the downloaded totals.
//
// The tables of every layer are one allocation of capacity slots per
// table, grown geometrically like the host's; the engine holds the
// sequence's lock around every method (WithDevice), so a TokSeq is never
// used by two calls at once.
type TokSeq struct {
	eng      *policy.Engine
	dev      *Device
	rts      []Ptr // per layer: R^T, bits rows of head_dim float32
	stream   Stream
	reserved int64 // device bytes reserved with the engine and held

	capacity int   // slots per table
	base     Ptr   // the tables, the totals' table list and the totals
	bytes    int64 // of base

	step      Ptr // a step's codes of k and q and the bad-row words
	stepN     int // tokens the step buffers hold
	stepBytes int64
}

// tokLayout returns the byte offsets, in one allocation, of the codes
// ([layer][head] tables of cw words), scores and counts ([layer][head]
// arrays of capacity), the device list of score tables TokenTotals reads
// and the float64 totals.
func tokLayout(layers, heads, bits, capacity int) (cw, score, count, list, totals, total int64) {
	t := int64(layers) * int64(heads)
	cw = int64(codeWords(bits, capacity))
	score = 8 * cw * t
	count = score + 4*int64(capacity)*t
	list = count + 4*int64(capacity)*t
	list = (list + 7) &^ 7
	totals = list + 8*t
	total = totals + 8*int64(capacity)
	return
}

// TokSeqBytes is the device memory of a token-mode sequence's tables at
// capacity slots (for a memory cap to reserve before they are made).
func TokSeqBytes(layers, heads, bits, capacity int) int64 {
	_, _, _, _, _, total := tokLayout(layers, heads, bits, capacity)
	return total
}

func newTokSeq(e *policy.Engine, dev *Device) *TokSeq {
	return &TokSeq{eng: e, dev: dev, rts: make([]Ptr, e.P.Layers)}
}

// Free releases everything the sequence holds on the device.
func (q *TokSeq) Free() {
	for l, p := range q.rts {
		q.dev.Free(p, q.rtBytes())
		q.rts[l] = 0
	}
	q.dev.Free(q.base, q.bytes)
	q.dev.Free(q.step, q.stepBytes)
	q.base, q.bytes, q.capacity, q.step, q.stepBytes, q.stepN = 0, 0, 0, 0, 0, 0
	q.eng.Release(policy.MemDevice, uint64(q.reserved))
	q.reserved = 0
}

func (q *TokSeq) rtBytes() int64 { return 4 * int64(q.eng.P.Bits) * int64(q.eng.P.HeadDim) }

// reserve counts n device bytes against the engine's cap before they are
// allocated; undo returns them when the allocation failed.
func (q *TokSeq) reserve(n int64, what string) (undo func(), err error) {
	if err := q.eng.Reserve(policy.MemDevice, uint64(n), what); err != nil {
		return nil, err
	}
	q.reserved += n
	return func() { q.eng.Release(policy.MemDevice, uint64(n)); q.reserved -= n }, nil
}

// Clone copies the tables for a fork, on the stream of the last step, and
// waits; the projections and the step buffers are made again on the
// clone's first step.
func (q *TokSeq) Clone() (policy.DeviceState, error) {
	c := newTokSeq(q.eng, q.dev)
	c.stream = q.stream
	if q.base == 0 {
		return c, nil
	}
	undo, err := c.reserve(q.bytes, "the token-mode tables of a forked sequence on the CUDA device")
	if err != nil {
		return nil, err
	}
	base, err := q.dev.Alloc(q.bytes)
	if err == nil {
		if err = q.dev.CopyAsync(q.stream, base, q.base, q.bytes); err == nil {
			err = q.dev.Sync(q.stream)
		}
		if err != nil {
			q.dev.Free(base, q.bytes)
		}
	}
	if err != nil {
		undo()
		return nil, err
	}
	c.base, c.bytes, c.capacity = base, q.bytes, q.capacity
	return c, nil
}

// SlotPositions is slot mode's; the engine refuses it in token mode
// before it gets here.
func (q *TokSeq) SlotPositions(layer, head int, out []int32) error {
	return fail(policy.CodeWrongMode, "hashevict_slot_positions needs a slot-mode engine")
}

// HostTable implements policy.DeviceTables: (layer, head)'s first
// len(score) slots (the host's capacity, at most the device's), after the
// work queued on the stream of the last step.
func (q *TokSeq) HostTable(layer, head int, codes []uint64, score []float32, count []uint32, pos []int32) (int, error) {
	if len(score) > q.capacity || len(codes) != codeWords(q.eng.P.Bits, len(score)) {
		return 0, fail(policy.CodeInternal, "host table of %d slots for device tables of %d", len(score), q.capacity)
	}
	if len(score) == 0 {
		return 0, nil
	}
	return 0, downloadTable(q.dev, q.stream, q.tables(layer), head, codes, score, count, nil, 0)
}

// tables describes layer's tables at the current capacity.
func (q *TokSeq) tables(layer int) Tables {
	p := &q.eng.P
	cw, score, count, _, _, _ := tokLayout(p.Layers, p.KVHeads, p.Bits, q.capacity)
	first := int64(layer) * int64(p.KVHeads)
	return Tables{Codes: q.base + Ptr(8*cw*first), Stride: cw, Bits: p.Bits, Slots: q.capacity, Heads: p.KVHeads,
		Score: q.base + Ptr(score+4*int64(q.capacity)*first), Count: q.base + Ptr(count+4*int64(q.capacity)*first),
		ScoreStride: int64(q.capacity)}
}

// grow makes the tables hold capacity slots: a new allocation, every
// table's codes, scores and counts copied into it on stream s (the codes
// of a table are one run of words at any capacity, its slots first), the
// old one freed after the copies.
func (q *TokSeq) grow(s Stream, capacity int) error {
	if capacity <= q.capacity {
		return nil
	}
	p := &q.eng.P
	if capacity >= 1<<31-1 {
		return fail(policy.CodeShape, "a token-mode table of %d slots: the device scans take at most 2^31-2", capacity)
	}
	bytes := TokSeqBytes(p.Layers, p.KVHeads, p.Bits, capacity)
	undo, err := q.reserve(bytes, fmt.Sprintf("the token-mode tables of a sequence on the CUDA device (%d layers x %d KV heads x %d positions)", p.Layers, p.KVHeads, capacity))
	if err != nil {
		return err
	}
	base, err := q.dev.Alloc(bytes)
	if err != nil {
		undo()
		return err
	}
	ncw, nscore, ncount, _, _, _ := tokLayout(p.Layers, p.KVHeads, p.Bits, capacity)
	// Free slots are re-initialised by Store; zeroing keeps the tables
	// deterministic (a fork or a future save copies them whole).
	err = q.dev.Fill32(s, base, 0, int(bytes/4))
	if q.base != 0 && err == nil {
		ocw, oscore, ocount, _, _, _ := tokLayout(p.Layers, p.KVHeads, p.Bits, q.capacity)
		used := int64(codeWords(p.Bits, q.capacity))
		for t := int64(0); t < int64(p.Layers*p.KVHeads) && err == nil; t++ {
			err = q.dev.CopyAsync(s, base+Ptr(8*ncw*t), q.base+Ptr(8*ocw*t), 8*used)
			if err == nil {
				err = q.dev.CopyAsync(s, base+Ptr(nscore+4*int64(capacity)*t), q.base+Ptr(oscore+4*int64(q.capacity)*t), 4*int64(q.capacity))
			}
			if err == nil {
				err = q.dev.CopyAsync(s, base+Ptr(ncount+4*int64(capacity)*t), q.base+Ptr(ocount+4*int64(q.capacity)*t), 4*int64(q.capacity))
			}
		}
	}
	if err == nil {
		// The old tables are freed only once the copies have run.
		err = q.dev.Sync(s)
	}
	if err != nil {
		q.dev.Free(base, bytes)
		undo()
		return err
	}
	if q.base != 0 {
		q.dev.Free(q.base, q.bytes)
		q.eng.Release(policy.MemDevice, uint64(q.bytes))
		q.reserved -= q.bytes
	}
	q.base, q.bytes, q.capacity = base, bytes, capacity
	return nil
}

// projection uploads layer's projection on its first step (waits for s).
func (q *TokSeq) projection(s Stream, layer int) (Ptr, error) {
	if q.rts[layer] != 0 {
		return q.rts[layer], nil
	}
	undo, err := q.reserve(q.rtBytes(), fmt.Sprintf("the projection of layer %d on the CUDA device", layer))
	if err != nil {
		return 0, err
	}
	rt, _ := q.eng.ProjectionOf(layer)
	d, err := q.dev.Alloc(q.rtBytes())
	if err == nil {
		if err = q.dev.Upload(s, d, unsafe.Pointer(&rt[0]), q.rtBytes()); err != nil {
			q.dev.Free(d, q.rtBytes())
		}
	}
	if err != nil {
		undo()
		return 0, err
	}
	q.rts[layer] = d
	return d, nil
}

// stepBufs returns buffers for the codes of a step of n tokens (k's, then
// q's, then the two bad-row words), kept for the sequence's largest step.
func (q *TokSeq) stepBufs(n int) (kcodes, qcodes, bad Ptr, err error) {
	p := &q.eng.P
	W := int64(words(p.Bits))
	kc, qc := int64(n*p.KVHeads)*W*8, int64(n*p.QHeads)*W*8
	if n > q.stepN {
		// The old buffers may still be read by queued work.
		if q.step != 0 {
			if err := q.dev.Sync(q.stream); err != nil {
				return 0, 0, 0, err
			}
		}
		bytes := kc + qc + 8
		undo, err := q.reserve(bytes, fmt.Sprintf("the CUDA buffers of a token-mode step of %d tokens", n))
		if err != nil {
			return 0, 0, 0, err
		}
		b, err := q.dev.Alloc(bytes)
		if err != nil {
			undo()
			return 0, 0, 0, err
		}
		if q.step != 0 {
			q.dev.Free(q.step, q.stepBytes)
			q.eng.Release(policy.MemDevice, uint64(q.stepBytes))
			q.reserved -= q.stepBytes
		}
		q.step, q.stepN, q.stepBytes = b, n, bytes
	}
	return q.step, q.step + Ptr(kc), q.step + Ptr(kc+qc), nil
}

// useStream makes s the stream of the sequence's work; a change of stream
// first waits for the previous one (see Seq.useStream).
func (q *TokSeq) useStream(s Stream) error {
	if s != q.stream && q.reserved > 0 {
		if err := q.dev.Sync(q.stream); err != nil {
			return err
		}
	}
	q.stream = s
	return nil
}

// refuseBad is Seq.refuseBad.
func (q *TokSeq) refuseBad(s Stream, bad2 Ptr) error {
	p := &q.eng.P
	var bad [2]uint32
	if err := q.dev.Download(s, unsafe.Pointer(&bad[0]), bad2, 8); err != nil {
		return err
	}
	if r := bad[0]; r != 0xffffffff {
		return &policy.Error{Code: policy.CodeNonFinite, Msg: fmt.Sprintf("k row of token %d, head %d holds NaN or Inf", int(r)/p.KVHeads, int(r)%p.KVHeads)}
	}
	if r := bad[1]; r != 0xffffffff {
		return &policy.Error{Code: policy.CodeNonFinite, Msg: fmt.Sprintf("q row of token %d, head %d holds NaN or Inf", int(r)/p.QHeads, int(r)%p.QHeads)}
	}
	return nil
}

// Totals implements policy.TokenDeviceState: the score tables of the
// layers in use, layer-major, go to the device list, TokenTotals sums
// them per slot, and the totals come back (waits for the stream).
func (q *TokSeq) Totals(use []bool, total []float64) error {
	p := &q.eng.P
	if len(total) > q.capacity || len(use) != p.Layers {
		return fail(policy.CodeInternal, "token totals: %d slots of %d, %d layers", len(total), q.capacity, len(use))
	}
	if len(total) == 0 {
		return nil
	}
	_, score, _, list, totals, _ := tokLayout(p.Layers, p.KVHeads, p.Bits, q.capacity)
	var ptrs []uint64
	for l, u := range use {
		if !u {
			continue
		}
		for h := 0; h < p.KVHeads; h++ {
			ptrs = append(ptrs, uint64(q.base)+uint64(score)+4*uint64(q.capacity)*uint64(l*p.KVHeads+h))
		}
	}
	if len(ptrs) == 0 {
		clear(total)
		return nil
	}
	if err := q.dev.Upload(q.stream, q.base+Ptr(list), unsafe.Pointer(&ptrs[0]), int64(8*len(ptrs))); err != nil {
		return err
	}
	if err := q.dev.TokenTotals(q.stream, q.base+Ptr(list), len(ptrs), len(total), q.base+Ptr(totals)); err != nil {
		return err
	}
	return q.dev.Download(q.stream, unsafe.Pointer(&total[0]), q.base+Ptr(totals), int64(8*len(total)))
}

// Observe is hashevict_observe on CUDA tensors (token mode): the host
// checks the step and picks the slots as Engine.Observe does; the device
// hashes k (and q), refuses NaN and Inf rows (reading two words back: the
// call waits for the hashes), updates every slot's score of each KV head
// with the step's probes, then stores each new token's code at its slot.
// The updates and stores are queued on in.Stream without a wait. A chunk
// is one step, as on the host, so its probes (n_tokens x group x words)
// must fit in one device scan (MaxProbeWords).
func Observe(e *policy.Engine, id, layer int, in StepInput) error {
	const fn = "hashevict_observe"
	if err := checkEngine(e, fn, layer, policy.ModeToken); err != nil {
		return err
	}
	if err := in.check(e); err != nil {
		return err
	}
	p := &e.P
	n := len(in.Positions)
	per := 1
	if p.Probe == policy.ProbeQuery {
		per = p.Group()
	}
	if w := n * per * words(p.Bits); w > MaxProbeWords {
		return fail(policy.CodeUnsupported, "%s: a chunk of %d tokens has %d probe words, more than the %d a device scan holds: observe it in chunks of at most %d tokens (a chunk is one step: the decisions then differ from one large chunk's), or on the host", fn, n, w, MaxProbeWords, MaxProbeWords/(per*words(p.Bits)))
	}
	return e.WithDevice(id, func(d *policy.DeviceSeq) error {
		var q *TokSeq
		fresh := false
		if st := d.State(); st != nil {
			var ok bool
			if q, ok = st.(*TokSeq); !ok {
				return fail(policy.CodeInternal, "sequence %d holds device state of another kind", d.ID())
			}
			if q.dev != in.Dev {
				return fail(policy.CodeInvalidArgument, "sequence %d lives on CUDA context %#x (device %d), these tensors on context %#x (device %d): a sequence stays on the context of its first tensors", d.ID(), q.dev.ctx, q.dev.ordinal, in.Dev.ctx, in.Dev.ordinal)
			}
		} else {
			q, fresh = newTokSeq(e, in.Dev), true
		}
		recorded, err := q.observe(d, layer, in, fresh)
		// A first step that failed before the host recorded it leaves the
		// sequence undecided, as it was. Once recorded, the sequence stays
		// a device one whatever fails later: its bookkeeping has no host
		// tables behind it.
		if err != nil && fresh && !recorded {
			if d.State() == policy.DeviceState(q) {
				d.SetState(nil)
			}
			q.Free()
		}
		return err
	})
}

func (q *TokSeq) observe(d *policy.DeviceSeq, layer int, in StepInput, fresh bool) (recorded bool, err error) {
	p := &q.eng.P
	n, H, s := len(in.Positions), p.KVHeads, in.Stream
	capacity, need, err := d.TokenPlan(layer, in.Positions)
	if err != nil {
		return false, err
	}
	if err := q.useStream(s); err != nil {
		return false, err
	}
	if need > q.capacity {
		// As the host grows its tables: doubled, or exactly what is needed
		// when the memory cap cannot hold more.
		if err := q.grow(s, max(2*q.capacity, need, 64)); err != nil {
			var pe *policy.Error
			if !errors.As(err, &pe) || pe.Code != policy.CodeMemoryCap {
				return false, err
			}
			if err := q.grow(s, need); err != nil {
				return false, err
			}
		}
	}
	rt, err := q.projection(s, layer)
	if err != nil {
		return false, err
	}
	kcodes, qcodes, bad, err := q.stepBufs(n)
	if err != nil {
		return false, err
	}
	W := int64(words(p.Bits))
	if err := q.dev.Hash(s, *in.K, rt, p.Bits, kcodes, bad); err != nil {
		return false, err
	}
	probes := Probes{Codes: kcodes, HeadStride: W, TokenStride: int64(H) * W, PerToken: 1, Tokens: n}
	if p.Probe == policy.ProbeQuery {
		g := p.Group()
		if err := q.dev.Hash(s, *in.Q, rt, p.Bits, qcodes, bad+4); err != nil {
			return false, err
		}
		probes = Probes{Codes: qcodes, HeadStride: int64(g) * W, TokenStride: int64(p.QHeads) * W, PerToken: g, Tokens: n}
	} else if err := q.dev.Fill32(s, bad+4, 0xffffffff, 1); err != nil {
		return false, err
	}
	if err := q.refuseBad(s, bad); err != nil {
		return false, err
	}
	// From here the step is recorded: the sequence is a device one.
	if fresh {
		d.SetState(q)
	}
	// The bookkeeping takes the device's capacity, or only what the step
	// needs (nothing more when it fits) if the cap cannot hold that.
	if capacity < q.capacity && d.TokenGrow(q.capacity) != nil {
		if err := d.TokenGrow(need); err != nil {
			return false, err
		}
	}
	slots := d.TokenObserve(layer, in.Positions)
	// Engine.Observe's order: every slot's score takes the step (free
	// slots too: Store re-initialises them), then each new token is
	// stored in every KV head.
	t := q.tables(layer)
	if err := q.dev.ScoreStep(s, t, probes, Skip{}, p.Score, p.Decay, 0, 0); err != nil {
		return true, err
	}
	nc := NewCodes{Codes: kcodes, HeadStride: W, TokenStride: int64(H) * W}
	for tok, slot := range slots {
		if err := q.dev.Store(s, t, probes, nc, Placement{Token: tok, FixedSlot: slot}); err != nil {
			return true, err
		}
	}
	return true, nil
}
