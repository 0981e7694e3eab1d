package policy

import "github.com/hashevict/hashevict/simd"

// The token-mode decode step without per-head scores.
//
// With the instant score and one token per step, the score a layer's step
// leaves in a slot is float32(S) for an integer S (the summed Hamming
// distance: step distance times 1/1), and the total Evictions ranks by is
// the float64 sum of those integers. Integers below 2^53 add exactly in
// float64 in any order, so a running per-slot total, added to by each
// layer's Hamming pass as it runs, is bit-identical to Evictions' sum over
// the stored scores, layer by layer and head by head. The fast step
// therefore writes no score: it scans the slots ever used (not the table's
// doubled capacity), adds each layer's distances into the running total,
// and records the layer's probes so that its scores can be written later,
// exactly as the full step would have written them, when something reads
// them (Evictions without a complete total, SaveSeq).
//
// The running total is a uint32 per slot in the sequence's scratch
// (sc.run); Evictions turns the candidates' into the float64 totals it
// ranks. It is valid when every layer
// has added exactly one fast step since it was zeroed, nothing was evicted
// since and no other step ran: that is run.layers == Layers with run.ok.

// noTokenFast makes every token-mode step take the full path: tests and
// the paired benchmark compare the two.
var noTokenFast = false

// tokenRun is the bookkeeping of the running total.
type tokenRun struct {
	win    *[]int32 // the windows the total was added with
	maxPos int32    // the newest position it was added for
	ok     bool     // sc.run holds the sum over the layers in added
	added  []bool   // layer -> added its distances since the total was zeroed
	layers int      // number of true entries of added
}

// lateScores is a layer whose scores were not written by its last step:
// they are the instant scores of the step with these probes, over the
// first m slots (the table's capacity at that step).
type lateScores struct {
	on     bool
	m      int
	probes []uint64 // the step's probe codes, KV head by KV head, as many each
}

// headProbes returns KV head h's part of the step's probes.
func (l *lateScores) headProbes(h, heads int) []uint64 {
	per := len(l.probes) / heads
	return l.probes[h*per : (h+1)*per]
}

// fastStep reports whether an observe of n tokens can run without scores.
func (e *Engine) fastStep(n int) bool {
	p := &e.P
	// The total of a slot is at most bits per probe, summed over every
	// layer's query heads (the key probe has fewer): it must stay below
	// 2^32 for the uint32 total and its paired adds.
	bound := uint64(p.Layers) * uint64(p.QHeads) * uint64(p.Bits)
	// The streaming options score with more than the distances it sums.
	return n == 1 && p.Policy == PolicyHash && p.Score == ScoreInstant && !p.streaming() && bound < 1<<32 && !noTokenFast
}

// observeFast is Observe's per-head work for a fast step: store the new
// token in every head's table, then add every head's distances over the
// slots ever used into the running total (the new token's own distance is
// its initial score, float32(S)·1, so storing first counts it the same).
func (e *Engine) observeFast(k *simd.Kernels, s *Sequence, layer int, slot int, pos int32) {
	p := &e.P
	ts, sc := s.tok, &s.sc
	ls := &s.layers[layer]
	run := &ts.run
	if len(run.added) != p.Layers {
		run.added = make([]bool, p.Layers)
	}
	hw := ts.highWater()
	// A layer with a window adds only the slots it sees from the newest
	// position, so the total holds for that position and those windows.
	win := e.windows.Load()
	t := max(ts.maxPos, pos)
	if !run.ok || run.added[layer] || run.win != win || run.maxPos != t {
		run.win, run.maxPos = win, t
		sc.run = grow(sc.run, len(ts.pos))
		clear(sc.run)
		clear(run.added)
		run.ok, run.layers = true, 0
	} else if len(sc.run) < len(ts.pos) {
		// The tables grew since the total was zeroed: new slots add from 0.
		sc.run = resize(sc.run, len(ts.pos))
	}
	if len(ts.late) != p.Layers {
		ts.late = make([]lateScores, p.Layers)
	}
	late := &ts.late[layer]
	late.on, late.m = true, len(ts.pos)
	// Every head's probes in one copy: head h's are the key's code (the
	// key probe) or its query group's codes, and both lie head by head.
	if W := p.Words(); p.Probe == ProbeKey {
		late.probes = append(late.probes[:0], sc.kcodes[:p.KVHeads*W]...)
	} else {
		late.probes = append(late.probes[:0], sc.qcodes[:p.QHeads*W]...)
	}

	sc.dist = grow(sc.dist, len(ts.pos))
	dist := sc.dist[:hw]
	if cw := p.combWords(); cw > 0 {
		e.observeCombined(k, s, layer, slot, hw, cw, late, win, t)
		run.added[layer] = true
		run.layers++
		return
	}
	for h := range ls.heads {
		tb := &ls.heads[h]
		e.storeFast(s, tb, slot, h)
		e.gatherProbes(sc, h, 1)
		e.distances(k, sc, dist, tb.codes[:p.codeWords(hw)], true)
		if win != nil && (*win)[layer] > 0 {
			wl, held := (*win)[layer], ts.pos[:hw]
			for i, d := range dist {
				if sees(wl, held[i], t) {
					sc.run[i] += d
				}
			}
			continue
		}
		simd.AddSmallU32(sc.run, dist)
	}
	run.added[layer] = true
	run.layers++
}

// combWords is the number of words of a layer's combined code (every KV
// head's code side by side, as simd.PutCode packs H codes into a table),
// or 0 when the fast step does not keep combined codes: one KV head (no
// gain), or a width the Hamming kernels do not take at full speed.
func (p *Params) combWords() int {
	if p.Mode != ModeToken || p.Policy != PolicyHash || p.Score != ScoreInstant || p.streaming() || p.KVHeads < 2 {
		return 0
	}
	switch w := simd.CodeWords(p.Bits, p.KVHeads); w {
	case 1, 2, 4:
		return w
	}
	return 0
}

// observeCombined is observeFast's per-head work with combined codes: the
// distance of a combined code to the combined probe j (probe j of every
// head, side by side) is the sum over heads of their distances to their
// probe j, and the zero padding adds nothing, so one Hamming pass over the
// layer's combined table gives the layer's per-slot sum: one kernel call
// and one add per layer instead of one of each per head. The combined
// table copies the heads' tables; it is rebuilt from them when a step of
// another kind stored codes (comb[layer] == nil).
func (e *Engine) observeCombined(k *simd.Kernels, s *Sequence, layer, slot, hw, cw int, late *lateScores, win *[]int32, t int32) {
	p := &e.P
	ts, sc := s.tok, &s.sc
	ls := &s.layers[layer]
	W := p.Words()
	if len(ts.comb) != p.Layers {
		ts.comb = make([][]uint64, p.Layers)
	}
	for h := range ls.heads {
		e.storeFast(s, &ls.heads[h], slot, h)
	}
	comb := ts.comb[layer]
	if comb == nil || len(comb) < len(ts.pos)*cw {
		fresh := make([]uint64, len(ts.pos)*cw)
		if comb != nil {
			copy(fresh, comb)
		} else {
			var c [4]uint64
			for i := 0; i < hw; i++ {
				row := fresh[i*cw : (i+1)*cw]
				for h := range ls.heads {
					simd.GetCode(c[:W], ls.heads[h].codes, p.Bits, i)
					simd.PutCode(row, c[:W], p.Bits, h)
				}
			}
		}
		comb = fresh
		ts.comb[layer] = comb
	}
	row := comb[slot*cw : (slot+1)*cw]
	np := len(late.probes) / (p.KVHeads * W) // probes per head
	sc.wide = grow(sc.wide, np*cw)
	probes := sc.wide
	if simd.Narrow(p.Bits) {
		// A narrow code is one word, the code in its low bits: head h
		// goes to bits (h%k)*Bits of word h/k, k = 64/Bits (simd.PutCode's
		// layout), the word and shift stepped from head to head rather
		// than divided. The row is built in registers and stored once (it
		// is a random slot: a read of its word would wait for the line);
		// the probes go to L1 scratch.
		mask := uint64(1)<<uint(p.Bits) - 1
		if cw == 1 {
			// Every head in one word (SmolLM2: 3 x 16 bits): each
			// combined code and probe is built in a register.
			var c uint64
			for h, sh := 0, uint(0); h < len(ls.heads); h, sh = h+1, sh+uint(p.Bits) {
				c |= sc.kcodes[h] & mask << sh
			}
			row[0] = c
			for j := range probes {
				c = 0
				for h, sh := 0, uint(0); h < len(ls.heads); h, sh = h+1, sh+uint(p.Bits) {
					c |= late.probes[h*np+j] & mask << sh
				}
				probes[j] = c
			}
		} else {
			var c [4]uint64 // cw <= 4 (combWords)
			clear(probes)
			w, sh := 0, uint(0)
			for h := range ls.heads {
				c[w] |= sc.kcodes[h] & mask << sh
				for j, pr := range late.probes[h*np : (h+1)*np] {
					probes[j*cw+w] |= pr & mask << sh
				}
				if sh += uint(p.Bits); sh == 64 {
					w, sh = w+1, 0
				}
			}
			for i := range row {
				row[i] = c[i]
			}
		}
	} else {
		clear(row)
		for h := range ls.heads {
			simd.PutCode(row, sc.kcodes[h*W:(h+1)*W], p.Bits, h)
		}
		clear(probes)
		for h := range ls.heads {
			for j := 0; j < np; j++ {
				i := h*np + j
				simd.PutCode(probes[j*cw:(j+1)*cw], late.probes[i*W:(i+1)*W], p.Bits, h)
			}
		}
	}
	if win != nil && (*win)[layer] > 0 {
		dist := sc.dist[:hw]
		k.Hamming(dist, comb[:hw*cw], cw, probes)
		wl, held := (*win)[layer], ts.pos[:hw]
		for i, d := range dist {
			if sees(wl, held[i], t) {
				sc.run[i] += d
			}
		}
		return
	}
	// The distances go into the total without being stored (the totals
	// stay below 2^32: see fastStep).
	k.HammingAdd(sc.run[:hw], comb[:hw*cw], cw, probes)
}

// storeFast is store for a fast step's new token (KV head h) in slot:
// the code and the count, not the score, which the layer's late scores
// (late.m covers every slot) overwrite before anything reads it, as the
// full step's Update overwrites it. A step stores 90 of them for SmolLM2,
// each in a random slot of another table.
func (e *Engine) storeFast(s *Sequence, t *table, slot, h int) {
	W := e.P.Words()
	simd.PutCode(t.codes, s.sc.kcodes[h*W:(h+1)*W], e.P.Bits, slot)
	t.count[slot] = 1
}

// highWater returns one past the highest slot ever handed out (every slot
// at or above it is free and was never stored to), computing it from the
// positions when it is not known (a loaded sequence).
func (ts *tokenState) highWater() int {
	if !ts.hwKnown || ts.hw > len(ts.pos) {
		ts.hw = 0
		for i, q := range ts.pos {
			if q >= 0 {
				ts.hw = i + 1
			}
		}
		ts.hwKnown = true
	}
	return ts.hw
}

// handedOut records that slot now holds a position.
func (ts *tokenState) handedOut(slot int32) {
	if ts.hwKnown && int(slot) >= ts.hw {
		ts.hw = int(slot) + 1
	}
}

// writeLateScores writes the scores the fast steps left unwritten, exactly
// as the full step would have: distances to the step's probes over the
// first m slots, through Update with n = 1.
func (e *Engine) writeLateScores(k *simd.Kernels, s *Sequence) {
	ts, sc := s.tok, &s.sc
	p := &e.P
	for l := range ts.late {
		late := &ts.late[l]
		if !late.on {
			continue
		}
		m := late.m
		sc.dist = grow(sc.dist, m)
		for h := range s.layers[l].heads {
			t := &s.layers[l].heads[h]
			sc.probes = append(sc.probes[:0], late.headProbes(h, p.KVHeads)...)
			e.distances(k, sc, sc.dist[:m], t.codes[:p.codeWords(m)], true)
			k.Update(t.score[:m], t.count[:m], sc.dist[:m], 1, int(ScoreInstant), p.Decay)
		}
		late.on = false
	}
}

// flushTokenScores writes the scores fast steps left unwritten (SaveSeq
// serialises them). The caller holds the sequence's lock.
func (e *Engine) flushTokenScores(s *Sequence) {
	if s.tok != nil {
		e.writeLateScores(simd.ActiveSet(), s)
	}
}

// evictOneFast is Evictions' choice when it drops one position after fast
// steps with no windows: the candidate (a position in [lo, hi) that every
// layer observed) with the largest running total, ties to the lowest
// position, which is the order Evictions ranks by (the float64 totals it
// would compare are these integers, exactly); -1 when there is none. One
// pass over the slots ever handed out, with no candidate list and no
// float64 totals.
func (e *Engine) evictOneFast(s *Sequence, lo, hi int32) int {
	ts := s.tok
	if hi <= lo {
		return -1
	}
	pos := ts.pos[:ts.highWater()]
	run := s.sc.run[:len(pos)]
	// q in [lo, hi) as one unsigned compare (lo >= 0, so a free slot's -1
	// and every q < lo wrap above the span).
	span := uint32(hi - lo)
	// The order as one key: the total above the complement of the
	// position (positions are >= 0 and distinct), so the largest key is
	// the largest total at its lowest position, and 0 is no candidate.
	best, bk := -1, uint64(0)
	if ts.head == len(ts.pending) {
		// Every held position was observed by every layer (pending holds
		// the slots some layer has not observed), so the layer counts need
		// not be read: a third fewer loads in the one loop over the slots.
		for i, q := range pos {
			if uint32(q-lo) >= span {
				continue
			}
			if key := uint64(run[i])<<32 | uint64(^uint32(q)); key > bk {
				best, bk = i, key
			}
		}
		return best
	}
	seen, layers := ts.seen[:len(pos)], int32(e.P.Layers)
	for i, q := range pos {
		if uint32(q-lo) >= span || seen[i] != layers {
			continue
		}
		if key := uint64(run[i])<<32 | uint64(^uint32(q)); key > bk {
			best, bk = i, key
		}
	}
	return best
}
