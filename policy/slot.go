package policy

import "github.com/hashevict/hashevict/simd"

func (e *Engine) checkLayer(layer int) error {
	if layer < 0 || layer >= e.P.Layers {
		return errf(CodeOutOfRange, "layer %d is outside [0, n_layers = %d)", layer, e.P.Layers)
	}
	return nil
}

func (e *Engine) checkMode(want Mode, fn string) error {
	if e.P.Mode != want {
		names := map[Mode]string{ModeSlot: "slot", ModeToken: "token"}
		return errf(CodeWrongMode, "%s needs a %s-mode engine; this one is in %s mode", fn, names[want], names[e.P.Mode])
	}
	return nil
}

// Place runs one slot-mode step for one layer of sequence id (see
// hashevict_place). outSlots and outEvicted (optional) receive
// len(positions)*KVHeads entries, [token][kv head].
func (e *Engine) Place(id, layer int, q, kr *Rows, positions []int32, outSlots, outEvicted []int32) error {
	n, p := len(positions), &e.P
	if len(outSlots) < n*p.KVHeads || (outEvicted != nil && len(outEvicted) < n*p.KVHeads) {
		return errf(CodeInvalidArgument, "output arrays must hold n_tokens*n_kv_heads = %d entries", n*p.KVHeads)
	}
	s, k, err := e.beginStep(ModeSlot, "hashevict_place", id, layer, q, kr, positions)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	ls := &s.layers[layer]
	newest := positions[n-1]
	lo, hi := e.window(newest)
	for h := range ls.heads {
		t := &ls.heads[h]
		free := p.Budget - t.used
		if n > free {
			if ev := countInUpTo(t.pos[:t.used], lo, hi, n-free); n > free+ev {
				return errf(CodeChunkTooLarge, "chunk of %d tokens does not fit kv head %d of layer %d: %d free and %d evictable slots (budget %d, n_sink %d, n_recent %d)", n, h, layer, free, ev, p.Budget, p.Sinks, p.Recent)
			}
		}
	}

	sc := &s.sc
	init := make([]float32, n)
	evicted, filled := 0, 0
	for h := range ls.heads {
		t := &ls.heads[h]
		var entries []int
		if p.Policy == PolicyOracle {
			sc.idx = entriesWhere(sc.idx, t.used, func(int) bool { return true })
			entries = sc.idx
		}
		free := p.Budget - t.used
		var victims []int
		if v, ok := e.fusedVictim(k, s, h, t, n, free, positions, init, hi); ok {
			sc.cand = append(sc.cand[:0], v)
			victims = sc.cand
		} else {
			e.rescore(k, s, layer, h, t, t.used, entries, positions, init)
			if n > free {
				victims = e.pickVictims(k, sc, t.score[:t.used], t.pos[:t.used], lo, hi, n-free)
			}
		}
		for tok := 0; tok < n; tok++ {
			var slot int
			old := int32(-1)
			if tok < free {
				slot = t.used
				t.used++
				filled++
			} else {
				slot = victims[tok-free]
				old = t.pos[slot]
				evicted++
			}
			e.store(s, t, slot, tok, h, positions[tok], init[tok])
			outSlots[tok*p.KVHeads+h] = int32(slot)
			if outEvicted != nil {
				outEvicted[tok*p.KVHeads+h] = old
			}
		}
	}
	ls.lastPos = newest
	ls.steps++
	e.countStep(s, n, evicted, filled)
	return nil
}

// store writes new token tok (of the current step, KV head h) into slot.
func (e *Engine) store(s *Sequence, t *table, slot, tok, h int, pos int32, score float32) {
	p := &e.P
	W := p.Words()
	i := tok*p.KVHeads + h
	if t.pos != nil {
		t.pos[slot] = pos
		t.stored(slot, pos, p.Sinks)
	}
	simd.PutCode(t.codes, s.sc.kcodes[i*W:(i+1)*W], p.Bits, slot)
	t.score[slot] = score
	t.count[slot] = 1
	switch {
	case p.Policy == PolicyOracle:
		d := p.HeadDim
		copy(t.keys[slot*d:(slot+1)*d], s.sc.kvec[i*d:(i+1)*d])
	case p.Estimate == EstimateLogit:
		t.keys[slot] = s.sc.knorm[i]
	}
}

// SlotPositions copies the positions held by (id, layer, head)'s slots.
func (e *Engine) SlotPositions(id, layer, head int, out []int32) error {
	if err := e.checkMode(ModeSlot, "hashevict_slot_positions"); err != nil {
		return err
	}
	if err := e.checkLayer(layer); err != nil {
		return err
	}
	if head < 0 || head >= e.P.KVHeads {
		return errf(CodeOutOfRange, "kv head %d is outside [0, n_kv_heads = %d)", head, e.P.KVHeads)
	}
	if len(out) < e.P.Budget {
		return errf(CodeBufferTooSmall, "capacity %d is below the budget %d", len(out), e.P.Budget)
	}
	s, err := e.seqAny(id)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if s.dev != nil {
		return s.dev.SlotPositions(layer, head, out[:e.P.Budget])
	}
	copy(out, s.layers[layer].heads[head].pos)
	return nil
}

// Hash writes the codes of rows x for layer (see hashevict_hash).
func (e *Engine) Hash(layer int, x *Rows, out []uint64) error {
	if err := e.checkLayer(layer); err != nil {
		return err
	}
	if x == nil {
		return errf(CodeInvalidArgument, "x is NULL")
	}
	if err := x.check("x", e.P.HeadDim, x.Heads, x.Tokens); err != nil {
		return err
	}
	W := e.P.Words()
	if need := x.Tokens * x.Heads * W; len(out) < need {
		return errf(CodeBufferTooSmall, "capacity %d words is below the %d needed", len(out), need)
	}
	k := simd.ActiveSet()
	buf := make([]float32, e.P.HeadDim)
	for t := 0; t < x.Tokens; t++ {
		for h := 0; h < x.Heads; h++ {
			row, ok := x.row(k, t, h, buf)
			if !ok {
				return errf(CodeNonFinite, "x row of token %d, head %d holds NaN or Inf", t, h)
			}
			i := t*x.Heads + h
			k.Hash(out[i*W:(i+1)*W], row, e.proj[layer])
		}
	}
	return nil
}
