package cuda

import (
	"fmt"
	"unsafe"

	"github.com/hashevict/hashevict/policy"
)

// Seq is a slot-mode sequence whose state lives on a device: what the C
// API's CUDA path keeps per sequence (policy.DeviceState). Each layer's
// tables, positions and guards are a Layer, made on the layer's first step;
// one Scratch serves the decode steps of every layer; the projections are
// uploaded once per layer. Every byte is reserved with the engine
// (policy.MemDevice) before it is allocated, so memory_cap_bytes bounds
// host and device memory together, and released when freed.
//
// The engine holds the sequence's lock around every method (WithDevice),
// so a Seq is never used by two calls at once.
type Seq struct {
	eng      *policy.Engine
	dev      *Device
	layers   []*Layer
	rts      []Ptr    // per layer: R^T, bits rows of head_dim float32
	lastPos  []int32  // per layer: the last position placed, -1 before
	steps    []uint64 // per layer: calls that placed tokens (a state save's)
	sc       *Scratch
	out      Ptr // 2*heads int32: the synchronous path's slots and evicted positions
	stream   Stream
	reserved int64 // device bytes reserved with the engine and held
}

func newSeq(e *policy.Engine, dev *Device) *Seq {
	q := &Seq{eng: e, dev: dev, layers: make([]*Layer, e.P.Layers), rts: make([]Ptr, e.P.Layers), lastPos: make([]int32, e.P.Layers),
		steps: make([]uint64, e.P.Layers)}
	for l := range q.lastPos {
		q.lastPos[l] = -1
	}
	return q
}

// Free releases everything the sequence holds on the device.
func (q *Seq) Free() {
	for l, ly := range q.layers {
		if ly != nil {
			ly.Free()
			q.layers[l] = nil
		}
	}
	for l, p := range q.rts {
		q.dev.Free(p, q.rtBytes())
		q.rts[l] = 0
	}
	if q.sc != nil {
		q.sc.Free(q.dev)
		q.sc = nil
	}
	q.dev.Free(q.out, q.outBytes())
	q.out = 0
	q.eng.Release(policy.MemDevice, uint64(q.reserved))
	q.reserved = 0
}

// Clone copies the sequence's device state for a fork, in stream order on
// the stream of its last step, and waits for the copies. Each layer is
// copied whole (tables, scores, positions, guards); the projections and the
// scratch are made again on the clone's first step.
func (q *Seq) Clone() (policy.DeviceState, error) {
	c := newSeq(q.eng, q.dev)
	c.stream = q.stream
	copy(c.lastPos, q.lastPos)
	copy(c.steps, q.steps)
	for l, ly := range q.layers {
		if ly == nil {
			continue
		}
		undo, err := c.reserve(ly.bytes, fmt.Sprintf("layer %d's tables of a forked sequence on the CUDA device", l))
		if err != nil {
			c.Free()
			return nil, err
		}
		base, err := q.dev.Alloc(ly.bytes)
		if err == nil {
			if err = q.dev.CopyAsync(q.stream, base, ly.base, ly.bytes); err != nil {
				q.dev.Free(base, ly.bytes)
			}
		}
		if err != nil {
			undo()
			c.Free()
			return nil, err
		}
		n := *ly
		n.base = base
		n.Tables.Codes = base + (ly.Tables.Codes - ly.base)
		n.Tables.Score = base + (ly.Tables.Score - ly.base)
		n.Tables.Count = base + (ly.Tables.Count - ly.base)
		n.Positions = base + (ly.Positions - ly.base)
		n.Guards = base + (ly.Guards - ly.base)
		c.layers[l] = &n
	}
	if err := q.dev.Sync(q.stream); err != nil {
		c.Free()
		return nil, err
	}
	return c, nil
}

// SlotPositions copies the device's record of the positions in (layer,
// head)'s slots, after the work queued on the stream of the last step.
func (q *Seq) SlotPositions(layer, head int, out []int32) error {
	ly := q.layers[layer]
	if ly == nil {
		for i := range out {
			out[i] = -1
		}
		return nil
	}
	return q.dev.Download(q.stream, unsafe.Pointer(&out[0]), ly.Positions+Ptr(4*head*ly.Budget), int64(4*ly.Budget))
}

// HostTable implements policy.DeviceTables: (layer, head)'s codes,
// scores, counts and positions, after the work queued on the stream of
// the last step (a layer never stepped is empty: every slot free).
func (q *Seq) HostTable(layer, head int, codes []uint64, score []float32, count []uint32, pos []int32) (int, error) {
	ly := q.layers[layer]
	if ly == nil {
		clear(codes)
		clear(score)
		clear(count)
		for i := range pos {
			pos[i] = -1
		}
		return 0, nil
	}
	if len(score) != ly.Budget || len(count) != ly.Budget || len(pos) != ly.Budget || len(codes) != codeWords(ly.Bits, ly.Budget) {
		return 0, fail(policy.CodeInternal, "host table of %d slots for a layer of %d", len(score), ly.Budget)
	}
	return ly.Used, downloadTable(q.dev, q.stream, ly.Tables, head, codes, score, count, pos, ly.Positions)
}

// Progress implements policy.DeviceProgress.
func (q *Seq) Progress(layer int) (int32, uint64) { return q.lastPos[layer], q.steps[layer] }

// downloadTable copies head's first len(score) slots of t (and of the
// positions at pos, when pos is not nil) to the host, waiting for s.
func downloadTable(v *Device, s Stream, t Tables, head int, codes []uint64, score []float32, count []uint32, pos []int32, positions Ptr) error {
	if len(codes) > 0 {
		if err := v.Download(s, unsafe.Pointer(&codes[0]), t.Codes+Ptr(8*int64(head)*t.Stride), int64(8*len(codes))); err != nil {
			return err
		}
	}
	if len(score) == 0 {
		return nil
	}
	off := Ptr(4 * int64(head) * t.ScoreStride)
	if err := v.Download(s, unsafe.Pointer(&score[0]), t.Score+off, int64(4*len(score))); err != nil {
		return err
	}
	if err := v.Download(s, unsafe.Pointer(&count[0]), t.Count+off, int64(4*len(count))); err != nil {
		return err
	}
	if pos != nil {
		return v.Download(s, unsafe.Pointer(&pos[0]), positions+off, int64(4*len(pos)))
	}
	return nil
}

func (q *Seq) rtBytes() int64  { return 4 * int64(q.eng.P.Bits) * int64(q.eng.P.HeadDim) }
func (q *Seq) outBytes() int64 { return 8 * int64(q.eng.P.KVHeads) }

// reserve counts n device bytes against the engine's cap before they are
// allocated; undo returns them when the allocation failed.
func (q *Seq) reserve(n int64, what string) (undo func(), err error) {
	if err := q.eng.Reserve(policy.MemDevice, uint64(n), what); err != nil {
		return nil, err
	}
	q.reserved += n
	return func() { q.eng.Release(policy.MemDevice, uint64(n)); q.reserved -= n }, nil
}

// ready makes layer's device state, its projection, the scratch and the
// output words, whichever do not exist yet. NewLayer and the uploads wait
// for stream s: a layer's first step is synchronous.
func (q *Seq) ready(s Stream, layer int) (*Layer, error) {
	p := &q.eng.P
	if q.sc == nil {
		n := ScratchBytes(p.KVHeads, p.QHeads, p.Bits, p.Sinks, p.Recent) + q.outBytes()
		undo, err := q.reserve(n, "the CUDA step scratch of a sequence")
		if err != nil {
			return nil, err
		}
		sc, err := q.dev.NewScratch(p.KVHeads, p.QHeads, p.Bits, p.Sinks, p.Recent)
		if err != nil {
			undo()
			return nil, err
		}
		out, err := q.dev.Alloc(q.outBytes())
		if err != nil {
			sc.Free(q.dev)
			undo()
			return nil, err
		}
		q.sc, q.out = sc, out
	}
	if q.rts[layer] == 0 {
		undo, err := q.reserve(q.rtBytes(), fmt.Sprintf("the projection of layer %d on the CUDA device", layer))
		if err != nil {
			return nil, err
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
			return nil, err
		}
		q.rts[layer] = d
	}
	if q.layers[layer] == nil {
		n := LayerBytes(p.KVHeads, p.Bits, p.Budget, p.Sinks, p.Recent)
		undo, err := q.reserve(n, fmt.Sprintf("layer %d's tables on the CUDA device (%d KV heads x %d slots)", layer, p.KVHeads, p.Budget))
		if err != nil {
			return nil, err
		}
		ly, err := q.dev.NewLayer(s, p.KVHeads, p.Bits, p.Budget, p.Sinks, p.Recent)
		if err != nil {
			undo()
			return nil, err
		}
		q.layers[layer] = ly
	}
	return q.layers[layer], nil
}

// useStream makes s the stream the sequence's work goes on. The device
// state is written in stream order, so work queued earlier on another
// stream must be finished before s may touch it: a change of stream waits
// for the previous one (which must still exist).
func (q *Seq) useStream(s Stream) error {
	if s != q.stream && q.reserved > 0 {
		if err := q.dev.Sync(q.stream); err != nil {
			return err
		}
	}
	q.stream = s
	return nil
}

// StepInput is a place call's input on the device.
type StepInput struct {
	Dev       *Device
	Stream    Stream
	Q, K      *Rows // Q may be nil with key probes
	Positions []int32
}

// checkEngine refuses what has no device path, before any state is touched.
func checkEngine(e *policy.Engine, fn string, layer int, mode policy.Mode) error {
	p := &e.P
	if p.Mode != mode {
		// The host engine's message: the mode is checked before the memory.
		names := map[policy.Mode]string{policy.ModeSlot: "slot", policy.ModeToken: "token"}
		return &policy.Error{Code: policy.CodeWrongMode, Msg: fmt.Sprintf("%s needs a %s-mode engine; this one is in %s mode", fn, names[mode], names[p.Mode])}
	}
	if p.Policy != policy.PolicyHash {
		return fail(policy.CodeUnsupported, "%s: policy %d has no device path (only HASHEVICT_POLICY_HASH runs on CUDA): copy q and k to host memory", fn, p.Policy)
	}
	if p.Estimate != policy.EstimateDistance || p.Redundancy != 0 {
		// The kernels score distances only; running them would silently
		// drop the option.
		return fail(policy.CodeUnsupported, "%s: estimate = %d and redundancy = %v have no device path (the CUDA kernels score the paper's distance): copy q and k to host memory", fn, p.Estimate, p.Redundancy)
	}
	if layer < 0 || layer >= p.Layers {
		return &policy.Error{Code: policy.CodeOutOfRange, Msg: fmt.Sprintf("layer %d is outside [0, n_layers = %d)", layer, p.Layers)}
	}
	return nil
}

func checkRows(r *Rows, what string, dim, heads, tokens int) error {
	if r.Dim != dim || r.Heads != heads || r.Tokens != tokens {
		return fail(policy.CodeShape, "%s has shape [%d tokens][%d heads][%d], want [%d][%d][%d]", what, r.Tokens, r.Heads, r.Dim, tokens, heads, dim)
	}
	return nil
}

func (in *StepInput) check(e *policy.Engine) error {
	p := &e.P
	n := len(in.Positions)
	if in.K == nil {
		return fail(policy.CodeInvalidArgument, "k is NULL: every call needs the new keys")
	}
	if err := checkRows(in.K, "k", p.HeadDim, p.KVHeads, n); err != nil {
		return err
	}
	if in.Q == nil && p.Probe == policy.ProbeQuery {
		return fail(policy.CodeInvalidArgument, "q is NULL but the probe is the query (HASHEVICT_PROBE_QUERY)")
	}
	if in.Q != nil {
		return checkRows(in.Q, "q", p.HeadDim, p.QHeads, n)
	}
	return nil
}

// deviceSeq returns the sequence's Seq, made (not yet attached) on its first
// device call; attach makes it the sequence's once a step succeeded, so a
// first call that fails leaves the sequence as it was.
func deviceSeq(e *policy.Engine, d *policy.DeviceSeq, dev *Device) (q *Seq, attach func(), err error) {
	if st := d.State(); st != nil {
		q, ok := st.(*Seq)
		if !ok {
			return nil, nil, fail(policy.CodeInternal, "sequence %d holds device state of another kind", d.ID())
		}
		if q.dev != dev {
			return nil, nil, fail(policy.CodeInvalidArgument, "sequence %d lives on CUDA context %#x (device %d), these tensors on context %#x (device %d): a sequence stays on the context of its first tensors", d.ID(), q.dev.ctx, q.dev.ordinal, dev.ctx, dev.ordinal)
		}
		return q, func() {}, nil
	}
	q = newSeq(e, dev)
	return q, func() { d.SetState(q) }, nil
}

// Place is hashevict_place on CUDA tensors: the step runs on the device on
// in.Stream, and the slots (and evicted positions) come back to host
// memory, so it waits for the stream. A one-token step is the engine's
// decode step; a chunk works while it fits in the free slots (a prefill
// into an empty cache), as Engine.Place does it; a chunk that would evict
// has no device path (UNSUPPORTED, nothing changed). A NaN or Inf row is
// refused (NONFINITE) with nothing changed, as on the host.
func Place(e *policy.Engine, id, layer int, in StepInput, outSlots, outEvicted []int32) error {
	const fn = "hashevict_place"
	if err := checkEngine(e, fn, layer, policy.ModeSlot); err != nil {
		return err
	}
	if err := in.check(e); err != nil {
		return err
	}
	p := &e.P
	n := len(in.Positions)
	if len(outSlots) < n*p.KVHeads || (outEvicted != nil && len(outEvicted) < n*p.KVHeads) {
		return fail(policy.CodeInvalidArgument, "output arrays must hold n_tokens*n_kv_heads = %d entries", n*p.KVHeads)
	}
	return e.WithDevice(id, func(d *policy.DeviceSeq) error {
		q, attach, err := deviceSeq(e, d, in.Dev)
		if err != nil {
			return err
		}
		err = q.place(d, layer, in, outSlots, outEvicted)
		if err == nil {
			attach()
		} else if d.State() == nil {
			q.Free()
		}
		return err
	})
}

func (q *Seq) place(d *policy.DeviceSeq, layer int, in StepInput, outSlots, outEvicted []int32) error {
	p := &q.eng.P
	n := len(in.Positions)
	if err := policy.CheckPositions(in.Positions, q.lastPos[layer], "placed in"); err != nil {
		return err
	}
	if err := q.useStream(in.Stream); err != nil {
		return err
	}
	ly, err := q.ready(in.Stream, layer)
	if err != nil {
		return err
	}
	if n > 1 && n > p.Budget-ly.Used {
		return fail(policy.CodeUnsupported, "a chunk of %d tokens with %d free slots would evict: chunks that evict have no device path (place the tokens one at a time, or run the sequence on the host)", n, p.Budget-ly.Used)
	}
	sp := StepParams{Probe: p.Probe, Score: p.Score, Decay: p.Decay}
	s := in.Stream
	H := p.KVHeads
	if n == 1 {
		if err := ly.HashStep(s, in.Q, in.K, q.rts[layer], sp, q.sc); err != nil {
			return err
		}
		if err := q.refuseBad(s, q.sc.BadK, H, p.QHeads); err != nil {
			return err
		}
		full := ly.Used >= ly.Budget
		if err := ly.PlaceStep(s, in.Positions[0], sp, q.sc, q.out, q.out+Ptr(4*H)); err != nil {
			return err
		}
		res := make([]int32, 2*H)
		if err := q.dev.Download(s, unsafe.Pointer(&res[0]), q.out, int64(4*len(res))); err != nil {
			return err
		}
		copy(outSlots, res[:H])
		if outEvicted != nil {
			copy(outEvicted, res[H:])
		}
		q.lastPos[layer] = in.Positions[0]
		q.steps[layer]++
		if full {
			d.Count(1, H, 0)
		} else {
			d.Count(1, 0, H)
		}
		return nil
	}
	return q.prefill(d, ly, layer, in, sp, outSlots, outEvicted)
}

// refuseBad reads the hash's bad-row words (k's at bad, q's right after
// it, as in Scratch and the chunk buffers: one copy, one wait) and refuses
// a step whose rows hold NaN or Inf, as the host engine does.
func (q *Seq) refuseBad(s Stream, bad2 Ptr, heads, qHeads int) error {
	var bad [2]uint32
	if err := q.dev.Download(s, unsafe.Pointer(&bad[0]), bad2, 8); err != nil {
		return err
	}
	if r := bad[0]; r != 0xffffffff {
		return &policy.Error{Code: policy.CodeNonFinite, Msg: fmt.Sprintf("k row of token %d, head %d holds NaN or Inf", int(r)/heads, int(r)%heads)}
	}
	if r := bad[1]; r != 0xffffffff {
		return &policy.Error{Code: policy.CodeNonFinite, Msg: fmt.Sprintf("q row of token %d, head %d holds NaN or Inf", int(r)/qHeads, int(r)%qHeads)}
	}
	return nil
}

// prefill places a chunk into free slots: the cached slots' scores take
// the step with the chunk's probes (accumulated and decayed scores), then
// each token takes the next free slot, in every head — Engine.Place's
// order. Its buffers are the call's own (reserved, freed on return).
func (q *Seq) prefill(d *policy.DeviceSeq, ly *Layer, layer int, in StepInput, sp StepParams, outSlots, outEvicted []int32) error {
	p := &q.eng.P
	n, H, s := len(in.Positions), p.KVHeads, in.Stream
	W := int64(words(p.Bits))
	per := 1
	if sp.Probe == policy.ProbeQuery {
		per = p.QHeads / H
	}
	if w := n * per * int(W); w > MaxProbeWords {
		return fail(policy.CodeUnsupported, "a chunk of %d tokens has %d probe words, more than the %d a device scan holds: place it in chunks of at most %d tokens", n, w, MaxProbeWords, MaxProbeWords/(per*int(W)))
	}
	kc := int64(n*H) * W * 8
	qc := int64(n*p.QHeads) * W * 8
	outs := int64(8 * n * H)
	total := kc + qc + 8 + outs
	undo, err := q.reserve(total, fmt.Sprintf("the CUDA buffers of a chunk of %d tokens", n))
	if err != nil {
		return err
	}
	defer undo()
	base, err := q.dev.Alloc(total)
	if err != nil {
		return err
	}
	defer q.dev.Free(base, total)
	kcodes, qcodes, bad, out := base, base+Ptr(kc), base+Ptr(kc+qc), base+Ptr(kc+qc+8)
	if err := q.dev.Hash(s, *in.K, q.rts[layer], p.Bits, kcodes, bad); err != nil {
		return err
	}
	probes := Probes{Codes: kcodes, HeadStride: W, TokenStride: int64(H) * W, PerToken: 1, Tokens: n}
	if in.Q != nil && sp.Probe == policy.ProbeQuery {
		if err := q.dev.Hash(s, *in.Q, q.rts[layer], p.Bits, qcodes, bad+4); err != nil {
			return err
		}
		probes = Probes{Codes: qcodes, HeadStride: int64(per) * W, TokenStride: int64(p.QHeads) * W, PerToken: per, Tokens: n}
	} else if err := q.dev.Fill32(s, bad+4, 0xffffffff, 1); err != nil {
		return err
	}
	if err := q.refuseBad(s, bad, H, p.QHeads); err != nil {
		return err
	}
	if ly.Used > 0 && sp.Score != policy.ScoreInstant {
		cached := ly.Tables
		cached.Slots = ly.Used
		if err := q.dev.ScoreStep(s, cached, probes, Skip{}, sp.Score, sp.Decay, 0, 0); err != nil {
			return err
		}
	}
	nc := NewCodes{Codes: kcodes, HeadStride: W, TokenStride: int64(H) * W}
	for tok := 0; tok < n; tok++ {
		pl := Placement{Token: tok, FixedSlot: ly.Used, OutSlots: out + Ptr(4*tok*H), Positions: ly.Positions,
			PositionStride: int64(ly.Budget), Position: in.Positions[tok], OutEvicted: out + Ptr(4*(n+tok)*H),
			Guard: ly.Guards, Sinks: ly.Sinks, Recent: ly.Recent}
		if err := q.dev.Store(s, ly.Tables, probes, nc, pl); err != nil {
			return err
		}
		ly.Used++
	}
	res := make([]int32, 2*n*H)
	if err := q.dev.Download(s, unsafe.Pointer(&res[0]), out, int64(4*len(res))); err != nil {
		return err
	}
	copy(outSlots, res[:n*H])
	if outEvicted != nil {
		copy(outEvicted, res[n*H:])
	}
	q.lastPos[layer] = in.Positions[n-1]
	q.steps[layer]++
	d.Count(n, 0, n*H)
	return nil
}

// PlaceAsync is hashevict_place_async: one decode step (one token at
// position t) queued on in.Stream, its slots and evicted positions written
// to device memory (outSlots, outEvicted: int32 per KV head; outEvicted may
// be 0) in stream order, without waiting for the device. The layer's first
// step also allocates and initialises its state, and waits for that. A NaN
// or Inf row cannot be refused before the device has run the step: its code
// is zero and it is placed as such.
func PlaceAsync(e *policy.Engine, id, layer int, in StepInput, outSlots, outEvicted Ptr) error {
	const fn = "hashevict_place_async"
	if err := checkEngine(e, fn, layer, policy.ModeSlot); err != nil {
		return err
	}
	if len(in.Positions) != 1 {
		return fail(policy.CodeUnsupported, "%s: n_tokens = %d: the asynchronous path takes one decode token; place chunks with hashevict_place", fn, len(in.Positions))
	}
	if err := in.check(e); err != nil {
		return err
	}
	if outSlots == 0 {
		return fail(policy.CodeInvalidArgument, "%s: out_slots is NULL", fn)
	}
	if err := aligned(4, fn+": out_slots or out_evicted", outSlots, outEvicted); err != nil {
		return err
	}
	return e.WithDevice(id, func(d *policy.DeviceSeq) error {
		q, attach, err := deviceSeq(e, d, in.Dev)
		if err != nil {
			return err
		}
		err = q.placeAsync(d, layer, in, outSlots, outEvicted)
		if err == nil {
			attach()
		} else if d.State() == nil {
			q.Free()
		}
		return err
	})
}

func (q *Seq) placeAsync(d *policy.DeviceSeq, layer int, in StepInput, outSlots, outEvicted Ptr) error {
	p := &q.eng.P
	t := in.Positions[0]
	if err := policy.CheckPositions(in.Positions, q.lastPos[layer], "placed in"); err != nil {
		return err
	}
	if err := q.useStream(in.Stream); err != nil {
		return err
	}
	ly, err := q.ready(in.Stream, layer)
	if err != nil {
		return err
	}
	full := ly.Used >= ly.Budget
	sp := StepParams{Probe: p.Probe, Score: p.Score, Decay: p.Decay}
	if err := ly.DecodeStep(in.Stream, in.Q, in.K, q.rts[layer], t, sp, q.sc, outSlots, outEvicted); err != nil {
		return err
	}
	q.lastPos[layer] = t
	q.steps[layer]++
	if full {
		d.Count(1, p.KVHeads, 0)
	} else {
		d.Count(1, 0, p.KVHeads)
	}
	return nil
}

// HashRows is hashevict_hash on a CUDA tensor: the codes are computed on
// the device (on s) and copied to out in host memory, so it waits for s.
// Its buffers are the call's own, reserved and freed before it returns.
func HashRows(e *policy.Engine, dev *Device, s Stream, layer int, x *Rows, out []uint64) error {
	p := &e.P
	if layer < 0 || layer >= p.Layers {
		return &policy.Error{Code: policy.CodeOutOfRange, Msg: fmt.Sprintf("layer %d is outside [0, n_layers = %d)", layer, p.Layers)}
	}
	if x.Dim != p.HeadDim {
		return fail(policy.CodeShape, "x has head_dim %d, want %d", x.Dim, p.HeadDim)
	}
	W := p.Words()
	rows := int64(x.Tokens) * int64(x.Heads)
	if need := rows * int64(W); int64(len(out)) < need {
		return &policy.Error{Code: policy.CodeBufferTooSmall, Msg: fmt.Sprintf("capacity %d words is below the %d needed", len(out), need)}
	}
	rtBytes := 4 * int64(p.Bits) * int64(p.HeadDim)
	codes := rows * int64(W) * 8
	total := codes + rtBytes + 8
	if err := e.Reserve(policy.MemDevice, uint64(total), fmt.Sprintf("hashing %d rows on the CUDA device", rows)); err != nil {
		return err
	}
	defer e.Release(policy.MemDevice, uint64(total))
	base, err := dev.Alloc(total)
	if err != nil {
		return err
	}
	defer dev.Free(base, total)
	rt, _ := e.ProjectionOf(layer)
	dcodes, drt, bad := base, base+Ptr(codes), base+Ptr(codes+rtBytes)
	if err := dev.Upload(s, drt, unsafe.Pointer(&rt[0]), rtBytes); err != nil {
		return err
	}
	if err := dev.Hash(s, *x, drt, p.Bits, dcodes, bad); err != nil {
		return err
	}
	var b uint32
	if err := dev.Download(s, unsafe.Pointer(&b), bad, 4); err != nil {
		return err
	}
	if b != 0xffffffff {
		return &policy.Error{Code: policy.CodeNonFinite, Msg: fmt.Sprintf("x row of token %d, head %d holds NaN or Inf", int(b)/x.Heads, int(b)%x.Heads)}
	}
	return dev.Download(s, unsafe.Pointer(&out[0]), dcodes, codes)
}
