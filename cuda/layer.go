package cuda

import (
	"unsafe"

	"github.com/hashevict/hashevict/policy"
)

// Layer is the device state of one layer of one slot-mode sequence: per KV
// head a code table of Budget slots, their scores, counts and positions, and
// the guard (the protected slots). It is what the C API's wiring keeps per
// (sequence, layer) for CUDA tensors; a decode step (DecodeStep) reads and
// writes it on the caller's stream without any host round trip. A Layer
// is not safe for concurrent use: a sequence's steps are serialised (the
// engine holds the sequence's lock) and queued on one stream.
type Layer struct {
	dev                                *Device
	Heads, Bits, Budget, Sinks, Recent int
	Tables                             Tables
	Positions, Guards                  Ptr
	// Used is the number of slots filled, the same in every head (free
	// slots are taken in order); the host keeps it as it queues steps.
	Used  int
	base  Ptr
	bytes int64
}

// layerLayout returns the byte offsets of a layer's arrays in its one
// allocation, and the total: codes (8-byte words) first, then the 4-byte
// arrays.
func layerLayout(heads, bits, budget, sinks, recent int) (score, count, pos, guards, total int64) {
	h := int64(heads)
	codes := 8 * int64(codeWords(bits, budget)) * h
	score = codes
	count = score + 4*int64(budget)*h
	pos = count + 4*int64(budget)*h
	guards = pos + 4*int64(budget)*h
	total = guards + 4*int64(GuardWords(sinks, recent))*h
	return
}

// LayerBytes is the device memory a Layer of these parameters takes, for a
// memory cap to reserve before NewLayer allocates it.
func LayerBytes(heads, bits, budget, sinks, recent int) int64 {
	_, _, _, _, total := layerLayout(heads, bits, budget, sinks, recent)
	return total
}

// NewLayer allocates and initialises (every slot free, nothing guarded) a
// layer's device state. It waits for the initialisation on stream s.
func (v *Device) NewLayer(s Stream, heads, bits, budget, sinks, recent int) (*Layer, error) {
	if err := checkBits(bits); err != nil {
		return nil, err
	}
	if heads < 1 || heads > 65535 || budget < 1 || budget > policy.MaxBudget || sinks < 0 || recent < 0 || budget <= sinks+recent {
		return nil, fail(policy.CodeInvalidArgument, "layer: %d heads, budget %d, n_sink %d, n_recent %d", heads, budget, sinks, recent)
	}
	score, count, pos, guards, total := layerLayout(heads, bits, budget, sinks, recent)
	base, err := v.Alloc(total)
	if err != nil {
		return nil, err
	}
	l := &Layer{dev: v, Heads: heads, Bits: bits, Budget: budget, Sinks: sinks, Recent: recent, base: base, bytes: total,
		Positions: base + Ptr(pos), Guards: base + Ptr(guards)}
	l.Tables = Tables{Codes: base, Stride: int64(codeWords(bits, budget)), Bits: bits, Slots: budget, Heads: heads,
		Score: base + Ptr(score), Count: base + Ptr(count), ScoreStride: int64(budget)}
	g := NewGuards(heads, sinks, recent)
	err = v.Fill32(s, base, 0, int(pos/4))
	if err == nil {
		err = v.Fill32(s, l.Positions, 0xffffffff, budget*heads)
	}
	if err == nil {
		err = v.Upload(s, l.Guards, unsafe.Pointer(&g[0]), int64(4*len(g)))
	}
	if err != nil {
		v.Free(base, total)
		return nil, err
	}
	return l, nil
}

// Bytes is the device memory the layer holds.
func (l *Layer) Bytes() int64 { return l.bytes }

// Free releases the layer's device memory (after the work queued on it).
func (l *Layer) Free() error {
	if l == nil || l.base == 0 {
		return nil
	}
	err := l.dev.Free(l.base, l.bytes)
	l.base = 0
	return err
}

// Scratch holds a decode step's device buffers: the codes of k and q, the
// skip lists, the scans' keys and victims, and the words in which the hash
// reports the first row holding NaN or Inf (BadK, BadQ: 0xffffffff when
// every row is finite). One Scratch serves every layer of a sequence whose
// steps are queued on one stream.
type Scratch struct {
	KCodes, QCodes, BadK, BadQ, Skip, SkipCount, Keys, Victims Ptr
	heads, qHeads, bits, skipStride                            int
	base                                                       Ptr
	bytes                                                      int64
}

// NewScratch allocates the buffers of a decode step for heads KV heads,
// qHeads query heads, bits-bit codes and the guard of sinks + recent slots.
func (v *Device) NewScratch(heads, qHeads, bits, sinks, recent int) (*Scratch, error) {
	if err := checkBits(bits); err != nil {
		return nil, err
	}
	if heads < 1 || qHeads < heads || qHeads%heads != 0 || sinks < 0 || recent < 0 {
		return nil, fail(policy.CodeInvalidArgument, "scratch: %d KV heads, %d query heads", heads, qHeads)
	}
	kc, qc, keys, bad, skip, count, victims, total := scratchLayout(heads, qHeads, bits, sinks, recent)
	base, err := v.Alloc(total)
	if err != nil {
		return nil, err
	}
	return &Scratch{KCodes: base + Ptr(kc), QCodes: base + Ptr(qc), Keys: base + Ptr(keys), BadK: base + Ptr(bad),
		BadQ: base + Ptr(bad+4), Skip: base + Ptr(skip), SkipCount: base + Ptr(count), Victims: base + Ptr(victims),
		heads: heads, qHeads: qHeads, bits: bits, skipStride: sinks + recent, base: base, bytes: total}, nil
}

// scratchLayout returns the byte offsets of a scratch's arrays in its one
// allocation, and the total: 8-byte arrays first, then the 4-byte ones.
func scratchLayout(heads, qHeads, bits, sinks, recent int) (kc, qc, keys, bad, skip, count, victims, total int64) {
	W := int64(words(bits))
	h, qh, sk := int64(heads), int64(qHeads), int64(sinks+recent)
	qc = kc + 8*W*h
	keys = qc + 8*W*qh
	bad = keys + 8*h
	skip = bad + 8
	count = skip + 4*sk*h
	victims = count + 4*h
	total = victims + 4*h
	return
}

// ScratchBytes is the device memory NewScratch allocates, for a memory cap
// to reserve first.
func ScratchBytes(heads, qHeads, bits, sinks, recent int) int64 {
	_, _, _, _, _, _, _, total := scratchLayout(heads, qHeads, bits, sinks, recent)
	return total
}

// Bytes is the device memory the scratch holds.
func (sc *Scratch) Bytes() int64 { return sc.bytes }

// Free releases the scratch.
func (sc *Scratch) Free(v *Device) error {
	if sc == nil || sc.base == 0 {
		return nil
	}
	err := v.Free(sc.base, sc.bytes)
	sc.base = 0
	return err
}

// StepParams are the engine parameters a decode step needs.
type StepParams struct {
	Probe policy.Probe
	Score policy.Score
	Decay float32
}

// DecodeStep queues one decode step (one token, position t) of the layer on
// stream s, for every KV head, exactly as Engine.Place does it: hash k (and
// q for query probes) with the layer's projection rt (device, bits rows of
// head_dim float32); then either the next free slot takes the token (the
// cached scores take the step first, for the accumulated and decayed
// scores), or the guard names the protected slots, the scan picks the
// victim (Farthest for the instant score, ScoreStep otherwise) and the token
// takes its place. outSlots and outEvicted (device int32 per head; either
// may be 0) receive each head's slot and the position it held (-1 for a
// free slot). Nothing waits for the device.
//
// A row holding NaN or Inf is not refused here (the device cannot refuse
// before the step runs): its code is zero and the first such row's index
// is in sc.BadK / sc.BadQ. A synchronous caller that must refuse it, as
// the host engine does, queues HashStep, reads those words, and only then
// queues PlaceStep.
func (l *Layer) DecodeStep(s Stream, q, k *Rows, rt Ptr, t int32, sp StepParams, sc *Scratch, outSlots, outEvicted Ptr) error {
	if err := l.HashStep(s, q, k, rt, sp, sc); err != nil {
		return err
	}
	return l.PlaceStep(s, t, sp, sc, outSlots, outEvicted)
}

// HashStep is DecodeStep's first half: the codes of k and q into sc.
func (l *Layer) HashStep(s Stream, q, k *Rows, rt Ptr, sp StepParams, sc *Scratch) error {
	if err := l.checkStep(k, sp, sc); err != nil {
		return err
	}
	if err := l.dev.Hash(s, *k, rt, l.Bits, sc.KCodes, sc.BadK); err != nil {
		return err
	}
	if sp.Probe != policy.ProbeQuery {
		return l.dev.Fill32(s, sc.BadQ, 0xffffffff, 1)
	}
	if q == nil || q.Tokens != 1 || q.Heads != sc.qHeads || q.Dim != k.Dim {
		return fail(policy.CodeShape, "decode step: q must be one token of %d heads of %d", sc.qHeads, k.Dim)
	}
	return l.dev.Hash(s, *q, rt, l.Bits, sc.QCodes, sc.BadQ)
}

func (l *Layer) checkStep(k *Rows, sp StepParams, sc *Scratch) error {
	if l.base == 0 || sc == nil || sc.base == 0 {
		return fail(policy.CodeInvalidArgument, "decode step on a freed layer or scratch")
	}
	if k == nil || k.Tokens != 1 || k.Heads != l.Heads {
		return fail(policy.CodeShape, "decode step: k must be one token of %d heads", l.Heads)
	}
	if sc.heads != l.Heads || sc.bits != l.Bits || sc.skipStride != l.Sinks+l.Recent {
		return fail(policy.CodeInvalidArgument, "decode step: the scratch was made for other parameters")
	}
	if sp.Probe != policy.ProbeQuery && sp.Probe != policy.ProbeKey {
		return fail(policy.CodeInvalidArgument, "decode step: probe %d", sp.Probe)
	}
	return nil
}

// PlaceStep is DecodeStep's second half, from the codes in sc.
func (l *Layer) PlaceStep(s Stream, t int32, sp StepParams, sc *Scratch, outSlots, outEvicted Ptr) error {
	W := int64(words(l.Bits))
	pr := Probes{Codes: sc.KCodes, HeadStride: W, TokenStride: int64(l.Heads) * W, PerToken: 1, Tokens: 1}
	if sp.Probe == policy.ProbeQuery {
		g := sc.qHeads / l.Heads
		pr = Probes{Codes: sc.QCodes, HeadStride: int64(g) * W, TokenStride: int64(sc.qHeads) * W, PerToken: g, Tokens: 1}
	}
	nc := NewCodes{Codes: sc.KCodes, HeadStride: W, TokenStride: int64(l.Heads) * W}
	pl := Placement{OutSlots: outSlots, Positions: l.Positions, PositionStride: int64(l.Budget), Position: t,
		OutEvicted: outEvicted, Guard: l.Guards, Sinks: l.Sinks, Recent: l.Recent}
	if l.Used < l.Budget {
		if l.Used > 0 && sp.Score != policy.ScoreInstant {
			cached := l.Tables
			cached.Slots = l.Used
			if err := l.dev.ScoreStep(s, cached, pr, Skip{}, sp.Score, sp.Decay, 0, 0); err != nil {
				return err
			}
		}
		pl.FixedSlot = l.Used
		if err := l.dev.Store(s, l.Tables, pr, nc, pl); err != nil {
			return err
		}
		l.Used++
		return nil
	}
	hi := max(t-int32(l.Recent), int32(l.Sinks))
	sk := Skip{Slots: sc.Skip, Stride: sc.skipStride, Count: sc.SkipCount}
	if err := l.dev.Guard(s, l.Guards, l.Sinks, l.Recent, l.Heads, l.Positions, int64(l.Budget), hi, sk); err != nil {
		return err
	}
	var err error
	if sp.Score == policy.ScoreInstant {
		err = l.dev.Farthest(s, l.Tables, pr, sk, sc.Keys, sc.Victims)
	} else {
		err = l.dev.ScoreStep(s, l.Tables, pr, sk, sp.Score, sp.Decay, sc.Keys, sc.Victims)
	}
	if err != nil {
		return err
	}
	pl.FixedSlot, pl.Victims, pl.VictimStride = -1, sc.Victims, 1
	return l.dev.Store(s, l.Tables, pr, nc, pl)
}
