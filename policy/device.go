package policy

import (
	"fmt"
	"sort"
)

// A sequence whose first tensors were in CUDA memory keeps its tables on
// that device. The device code lives in package cuda, which imports this
// one for its types and errors, so the engine reaches it only through
// DeviceState: the engine decides nothing about device sequences beyond
// their lifetime (freed with the sequence) and refusing every host-state
// call on them (seq), so that the host tables of such a sequence, left
// empty, are never read as if they were its state.

// DeviceState is a sequence's state in device memory.
type DeviceState interface {
	// Free releases the device memory and its reservation. The engine calls
	// it once, with the sequence locked, when the sequence is removed,
	// reset, replaced by a load, or the engine is freed.
	Free()
	// Clone copies the state for a fork (with the source sequence locked),
	// reserving what it allocates; on error nothing is held.
	Clone() (DeviceState, error)
	// SlotPositions copies the position held by each of the budget slots of
	// (layer, head), -1 for a free slot (hashevict_slot_positions).
	SlotPositions(layer, head int, out []int32) error
}

// DeviceSeq is what a device call sees of a locked sequence.
type DeviceSeq struct {
	e *Engine
	s *Sequence
}

// ID is the sequence's id.
func (d *DeviceSeq) ID() int { return d.s.id }

// State is the sequence's device state, nil before its first device call.
func (d *DeviceSeq) State() DeviceState { return d.s.dev }

// SetState makes st the sequence's device state, which the engine frees.
func (d *DeviceSeq) SetState(st DeviceState) { d.s.dev = st }

// Count records a step in the sequence's and the engine's counters, as a
// host step does: tokens placed, how many (token, head) entries evicted a
// cached one and how many filled a free slot.
func (d *DeviceSeq) Count(tokens, evicted, filled int) {
	d.e.countStep(d.s, tokens, evicted, filled)
}

// WithDevice runs fn with sequence id locked. A sequence that has taken
// host steps (or was loaded with some) is refused: its state is on the
// host, and the two are never mixed.
func (e *Engine) WithDevice(id int, fn func(d *DeviceSeq) error) error {
	s, err := e.seqAny(id)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if s.dev == nil && s.hostUsed() {
		return errf(CodeInvalidArgument, "sequence %d keeps its state on the host (its earlier steps had host tensors): pass host tensors, or reset it to start it over on a CUDA device", id)
	}
	return fn(&DeviceSeq{e: e, s: s})
}

// IsDevice reports whether sequence id keeps its state on a device.
func (e *Engine) IsDevice(id int) bool {
	s, err := e.seqAny(id)
	if err != nil {
		return false
	}
	defer s.mu.Unlock()
	return s.dev != nil
}

// hostUsed reports whether the sequence holds host state: a step placed or
// observed in any layer.
func (s *Sequence) hostUsed() bool {
	if s.steps > 0 {
		return true
	}
	for l := range s.layers {
		if s.layers[l].lastPos >= 0 {
			return true
		}
	}
	return false
}

// dropDevice frees the sequence's device state, if any (s locked).
func (s *Sequence) dropDevice() {
	if s.dev != nil {
		s.dev.Free()
		s.dev = nil
	}
}

// FreeDevice frees the device state of every live sequence, before the
// engine itself is freed: device memory is not the collector's to reclaim.
func (e *Engine) FreeDevice() {
	e.mu.RLock()
	seqs := append([]*Sequence(nil), e.seqs...)
	e.mu.RUnlock()
	for _, s := range seqs {
		if s == nil {
			continue
		}
		s.mu.Lock()
		s.dropDevice()
		s.mu.Unlock()
	}
}

func errDeviceSeq(id int) error {
	return errf(CodeUnsupported, "sequence %d keeps its state on a CUDA device (its first tensors were CUDA memory); this call works on host state only (host tensors, state save, compress are refused for it): pass CUDA tensors, or reset or remove the sequence", id)
}

// CheckPositions is the host's check of a step's positions (each
// non-negative, strictly increasing, after last), for a device path that
// keeps its own last position per layer.
func CheckPositions(positions []int32, last int32, verb string) error {
	return checkPositions(positions, last, verb)
}

// Token mode on a device. The slots, positions and order checks of a
// token-mode sequence are host bookkeeping (tokenState) whichever memory
// holds its tables: a device sequence keeps them in s.tok exactly as a
// host one does, without host tables, so that its slot choice, its
// checks and its errors are the host engine's. Only the scores live on the
// device; Evictions asks the device state for their totals.

// TokenDeviceState is the device state of a token-mode sequence.
type TokenDeviceState interface {
	DeviceState
	// Totals sets total[i], for every slot i < len(total), to the float64
	// sum of slot i's score over the tables of the layers l with use[l],
	// layer by layer and KV head by KV head from 0.0 (sumScores' order).
	Totals(use []bool, total []float64) error
}

// tokenBookBytes is what a device sequence's bookkeeping holds per slot:
// the per-layer observed flags, the position, the seen count, the index
// entry, the pending list entry and the free list entry (tokenSlotBytes
// without the host tables and scratch).
func (p *Params) tokenBookBytes() uint64 {
	return satAdd(uint64(p.Layers), 4+4+16+8, 4)
}

// TokenPlan checks a token-mode step of layer on positions as Observe
// does (order, positions after the layer's last one) and returns the
// sequence's slot capacity and the capacity the step needs (more than
// capacity when its new positions do not fit in the free slots). Nothing
// changes.
func (d *DeviceSeq) TokenPlan(layer int, positions []int32) (capacity, need int, err error) {
	s, ts := d.s, d.s.tok
	if ts == nil {
		return 0, 0, errf(CodeInternal, "sequence %d has no token-mode state", s.id)
	}
	if err := checkPositions(positions, s.layers[layer].lastPos, "observed by"); err != nil {
		return 0, 0, err
	}
	held, err := d.e.checkOrder(s, layer, positions)
	if err != nil {
		return 0, 0, err
	}
	capacity, need = len(ts.pos), len(ts.pos)
	if fresh := len(positions) - held; fresh > len(ts.free) {
		need = ts.live + fresh
	}
	return capacity, need, nil
}

// TokenGrow extends the bookkeeping to capacity slots (the device tables
// must hold as many), reserving its host bytes; on error nothing changed.
func (d *DeviceSeq) TokenGrow(capacity int) error {
	e, s, ts := d.e, d.s, d.s.tok
	old := len(ts.pos)
	if capacity <= old {
		return nil
	}
	add := clampInt64(satMul(uint64(capacity-old), e.P.tokenBookBytes()))
	if err := e.reserveState(add, fmt.Sprintf("growing the token-mode bookkeeping of sequence %d from %d to %d positions", s.id, old, capacity)); err != nil {
		return err
	}
	for l := range ts.obs {
		ts.obs[l] = resize(ts.obs[l], capacity)
	}
	ts.seen = resize(ts.seen, capacity)
	ts.pos = resize(ts.pos, capacity)
	for i := old; i < capacity; i++ {
		ts.pos[i] = -1
	}
	ts.free = resize(ts.free, len(ts.free)+capacity-old)[:len(ts.free)]
	// Descending, so that the lowest free slot is used first (growTo).
	for i := capacity - 1; i >= old; i-- {
		ts.free = append(ts.free, int32(i))
	}
	s.bytes += add
	return nil
}

// TokenObserve records the step TokenPlan accepted (the capacity grown
// with TokenGrow) as Observe does, and returns each position's slot: the
// slot a layer that observed the position before chose, else the next
// free one. The device then updates and stores the layer's tables.
func (d *DeviceSeq) TokenObserve(layer int, positions []int32) []int {
	e, s, ts := d.e, d.s, d.s.tok
	held, _ := e.checkOrder(s, layer, positions)
	n := len(positions)
	slots := make([]int, n)
	mine := ts.head + ts.ahead[layer]
	for i, q := range positions {
		if i < held {
			slots[i] = int(ts.pending[mine+i])
			continue
		}
		slot := ts.free[len(ts.free)-1]
		ts.free = ts.free[:len(ts.free)-1]
		ts.index[q] = slot
		ts.pos[slot] = q
		ts.live++
		ts.handedOut(slot)
		slots[i] = int(slot)
	}
	obs := ts.obs[layer]
	for _, slot := range slots {
		obs[slot] = true
		ts.seen[slot]++
	}
	ts.observed(layer, slots, held, e.P.Layers)
	ls := &s.layers[layer]
	ls.lastPos = positions[n-1]
	ls.steps++
	ts.maxPos = max(ts.maxPos, ls.lastPos)
	e.countStep(s, n, 0, n-held)
	return slots
}

// deviceEvictions is Evictions for a token-mode sequence on a device (s
// locked, excess > 0 checked by the caller): the same candidates, totals
// and choice, the totals summed on the device.
func (e *Engine) deviceEvictions(s *Sequence, out []int32) (int, error) {
	p := &e.P
	ts := s.tok
	st, ok := s.dev.(TokenDeviceState)
	if !ok || p.Policy != PolicyHash {
		return 0, errf(CodeInternal, "sequence %d: its device state has no token-mode totals", s.id)
	}
	excess := ts.live - p.Budget
	if excess <= 0 {
		return 0, nil
	}
	lo, hi := e.window(ts.maxPos)
	var c []int
	for slot, q := range ts.pos {
		if q >= lo && q < hi && int(ts.seen[slot]) == p.Layers {
			c = append(c, slot)
		}
	}
	total := make([]float64, len(ts.pos))
	var w []int32
	if win := e.windows.Load(); win != nil {
		w = *win
	}
	use := make([]bool, p.Layers)
	if w == nil {
		for l := range use {
			use[l] = true
		}
		if len(c) > 0 {
			if err := st.Totals(use, total); err != nil {
				return 0, err
			}
		}
	} else {
		// The layers that see a candidate depend on its position: one sum
		// per distinct set of layers (a handful: the distinct windows).
		done := map[string]bool{}
		part := make([]float64, len(ts.pos))
		for _, first := range c {
			key := make([]byte, p.Layers)
			some := false
			for l := range use {
				use[l] = sees(w[l], ts.pos[first], ts.maxPos)
				if use[l] {
					key[l], some = 1, true
				}
			}
			if done[string(key)] {
				continue
			}
			done[string(key)] = true
			if !some {
				continue // meanScores makes it +Inf
			}
			if err := st.Totals(use, part); err != nil {
				return 0, err
			}
			for _, slot := range c {
				same := true
				for l := range use {
					if sees(w[l], ts.pos[slot], ts.maxPos) != use[l] {
						same = false
						break
					}
				}
				if same {
					total[slot] = part[slot]
				}
			}
		}
		e.meanScores(w, ts.pos, ts.maxPos, c, total)
	}
	better := func(x, y int) bool {
		if total[x] != total[y] {
			return total[x] > total[y]
		}
		return ts.pos[x] < ts.pos[y]
	}
	sort.Slice(c, func(a, b int) bool { return better(c[a], c[b]) })
	k := min(excess, len(out), len(c))
	e.dropSlots(s, c[:k], out)
	return k, nil
}

// DeviceTables is a device state that copies its tables to the host for
// a state save: the blob of a device sequence is the host format, so it
// loads into any engine of the same parameters as a host sequence.
type DeviceTables interface {
	// HostTable copies (layer, head)'s first len(score) slots: codes (in
	// the layout of simd.CodeWords), scores, counts and, in slot mode,
	// positions (pos is nil in token mode); used is the number of slots
	// filled (slot mode). It waits for the work queued on the device.
	HostTable(layer, head int, codes []uint64, score []float32, count []uint32, pos []int32) (used int, err error)
}

// DeviceProgress is what a slot-mode device state keeps per layer that
// the host does not: the layer's last position and its steps.
type DeviceProgress interface {
	Progress(layer int) (lastPos int32, steps uint64)
}

// hostCopy returns a host sequence holding s's state (s locked, on a
// device), for SaveSeq: the device's tables, the host's counters and, in
// token mode, the host's bookkeeping. The copy is transient (the blob is
// built from it) and not counted against the memory cap, as the blob is
// not.
func (e *Engine) hostCopy(s *Sequence) (*Sequence, error) {
	st, ok := s.dev.(DeviceTables)
	if !ok {
		return nil, errDeviceSeq(s.id)
	}
	p := &e.P
	c := &Sequence{id: s.id, layers: make([]layerState, len(s.layers)), bytes: s.bytes, cached: s.cached,
		steps: s.steps, tokens: s.tokens, evictions: s.evictions}
	capacity := p.Budget
	if s.tok != nil {
		c.tok = s.tok.clone()
		capacity = len(s.tok.pos)
	}
	prog, _ := s.dev.(DeviceProgress)
	for l := range c.layers {
		ls := layerState{lastPos: s.layers[l].lastPos, steps: s.layers[l].steps, heads: make([]table, p.KVHeads)}
		if s.tok == nil && prog != nil {
			ls.lastPos, ls.steps = prog.Progress(l)
		}
		for h := range ls.heads {
			t := table{codes: make([]uint64, p.codeWords(capacity)), score: make([]float32, capacity), count: make([]uint32, capacity)}
			if s.tok == nil {
				t.pos = make([]int32, capacity)
			}
			used, err := st.HostTable(l, h, t.codes, t.score, t.count, t.pos)
			if err != nil {
				return nil, err
			}
			t.used = used
			ls.heads[h] = t
		}
		c.layers[l] = ls
	}
	return c, nil
}
