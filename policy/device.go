package policy

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
