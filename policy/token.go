package policy

import (
	"fmt"
	"slices"
	"sort"

	"github.com/hashevict/hashevict/simd"
)

// tokenState is the token-mode bookkeeping of a sequence: positions live in
// slots shared by every (layer, KV head) table, so one decision drops a
// position everywhere.
//
// Every layer observes the same positions in the same increasing order (the
// runtime runs every layer on every token), so each layer has observed
// exactly the held positions up to its own last one. The positions some
// layers observed and others not yet are the slots of pending, ascending
// from pending[head]; layer l has observed the first ahead[l] of them.
// Observe checks each layer's positions against that list, which is what
// catches a layer that skips a position (it would otherwise stay held, never
// a candidate); an entry leaves the front once every layer observed it.
type tokenState struct {
	pos     []int32         // slot -> position, -1 when free
	seen    []int32         // slot -> number of layers that observed it
	obs     [][]bool        // layer -> slot -> observed by that layer
	free    []int32         // free slots (a stack)
	index   map[int32]int32 // position -> slot
	pending []int32         // slots, ascending by position, from head on
	head    int
	ahead   []int // layer -> entries of pending it observed
	maxPos  int32
	live    int

	// The fast decode step (tokenfast.go). hw is known only once computed:
	// a sequence decoded from a saved state starts without it.
	hw      int
	hwKnown bool
	run     tokenRun
	late    []lateScores // layer -> scores its last step did not write
	comb    [][]uint64   // layer -> combined codes (tokenfast.go), nil: rebuild
}

// newTokenState is an empty sequence: obs and ahead have an entry per layer
// from the start, so that a clone or a saved blob of a sequence that was
// never observed has the shape of any other.
func newTokenState(layers int) *tokenState {
	return &tokenState{
		obs:    make([][]bool, layers),
		index:  map[int32]int32{},
		ahead:  make([]int, layers),
		maxPos: -1,
	}
}

func (ts *tokenState) clone() *tokenState {
	c := &tokenState{
		pos:     clone(ts.pos),
		seen:    clone(ts.seen),
		obs:     make([][]bool, len(ts.obs)),
		free:    clone(ts.free),
		index:   make(map[int32]int32, len(ts.index)),
		pending: clone(ts.pending[ts.head:]),
		ahead:   clone(ts.ahead),
		maxPos:  ts.maxPos,
		live:    ts.live,
		hw:      ts.hw,
		hwKnown: ts.hwKnown,
		// run stays zero: the running total is in the source's scratch.
		late: make([]lateScores, len(ts.late)),
	}
	for l, x := range ts.late {
		c.late[l] = lateScores{on: x.on, m: x.m, probes: clone(x.probes)}
	}
	for l, o := range ts.obs {
		c.obs[l] = clone(o)
	}
	for k, v := range ts.index {
		c.index[k] = v
	}
	return c
}

// checkOrder verifies that layer may observe positions (already known to
// increase after the layer's last position): first the positions other
// layers observed and this one not yet, in order, then only positions newer
// than any observed. It returns how many of positions are already held.
func (e *Engine) checkOrder(s *Sequence, layer int, positions []int32) (int, error) {
	ts := s.tok
	want := ts.pending[ts.head+ts.ahead[layer]:]
	for i, q := range positions {
		if i < len(want) {
			w := ts.pos[want[i]]
			if q == w {
				continue
			}
			if q > w {
				return 0, errf(CodePosition, "layer %d skips position %d (positions[%d] = %d), which layer %d observed: every layer must observe the same positions",
					layer, w, i, q, e.firstLayerPast(s, w))
			}
		} else if q > ts.maxPos {
			continue
		}
		return 0, errf(CodePosition, "positions[%d] = %d comes too late for layer %d: layer %d already observed up to position %d without it, so not every layer could observe it",
			i, q, layer, e.firstLayerPast(s, q), s.layers[e.firstLayerPast(s, q)].lastPos)
	}
	return min(len(want), len(positions)), nil
}

// firstLayerPast returns the lowest layer whose last observed position is at
// least q (for messages).
func (e *Engine) firstLayerPast(s *Sequence, q int32) int {
	for l := range s.layers {
		if s.layers[l].lastPos >= q {
			return l
		}
	}
	return -1
}

// growTo enlarges every table of s to capacity slots.
func (e *Engine) growTo(s *Sequence, capacity int) error {
	ts := s.tok
	old := len(ts.pos)
	if capacity <= old {
		return nil
	}
	p := &e.P
	// Counted before anything is allocated; arrays are resized to exactly
	// the capacity counted.
	add := clampInt64(satMul(uint64(capacity-old), p.tokenSlotBytes()))
	if err := e.reserveState(add, fmt.Sprintf("growing the token-mode tables of sequence %d from %d to %d positions", s.id, old, capacity)); err != nil {
		return err
	}
	for l := range s.layers {
		for h := range s.layers[l].heads {
			t := &s.layers[l].heads[h]
			t.codes = resize(t.codes, p.codeWords(capacity))
			t.score = resize(t.score, capacity)
			t.count = resize(t.count, capacity)
			if f := p.keyFloats(); f > 0 {
				t.keys = resize(t.keys, capacity*f)
			}
		}
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
	// Pushed in descending order so that the lowest free slot is used first.
	for i := capacity - 1; i >= old; i-- {
		ts.free = append(ts.free, int32(i))
	}
	s.bytes += add
	return nil
}

// Observe runs one token-mode step for one layer (see hashevict_observe).
func (e *Engine) Observe(id, layer int, q, kr *Rows, positions []int32) error {
	s, k, err := e.beginStep(ModeToken, "hashevict_observe", id, layer, q, kr, positions)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	n, p := len(positions), &e.P
	ls := &s.layers[layer]
	ts := s.tok
	held, err := e.checkOrder(s, layer, positions)
	if err != nil {
		return err
	}
	fresh := n - held
	if fresh > len(ts.free) {
		// Grow geometrically, but settle for exactly what is needed when the
		// memory cap cannot hold the larger table.
		need := ts.live + fresh
		if err := e.growTo(s, max(2*len(ts.pos), need, 64)); err != nil {
			if err := e.growTo(s, need); err != nil {
				return err
			}
		}
	}
	// Entries this layer observed before the step: the oracle attends over
	// exactly those and the redundancy term counts their codes; the hash
	// scores are updated blindly over all slots (free or unobserved entries
	// are re-initialised when stored).
	var entries []int
	obs := ts.obs[layer]
	if p.Policy == PolicyOracle || p.Redundancy != 0 {
		s.sc.idx = entriesWhere(s.sc.idx, len(ts.pos), func(i int) bool { return obs[i] })
		entries = s.sc.idx
	}
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
	if e.fastStep(n) {
		e.observeFast(k, s, layer, slots[0], positions[0])
	} else {
		// The running total misses this step, whose scores are written;
		// the combined codes miss the codes it stores.
		ts.run.ok = false
		if layer < len(ts.late) {
			ts.late[layer].on = false
		}
		if layer < len(ts.comb) {
			ts.comb[layer] = nil
		}
		init := make([]float32, n)
		for h := range ls.heads {
			t := &ls.heads[h]
			e.rescore(k, s, layer, h, t, len(ts.pos), entries, positions, init)
			for tok := 0; tok < n; tok++ {
				e.store(s, t, slots[tok], tok, h, positions[tok], init[tok])
			}
		}
	}
	for _, slot := range slots {
		obs[slot] = true
		ts.seen[slot]++
	}
	ts.observed(layer, slots, held, p.Layers)
	ls.lastPos = positions[n-1]
	ls.steps++
	if ls.lastPos > ts.maxPos {
		ts.maxPos = ls.lastPos
	}
	e.countStep(s, n, 0, fresh)
	return nil
}

// observed records that layer observed slots, the first held of them its
// next pending entries, the others fresh, and drops from the front of
// pending what every layer has now observed.
func (ts *tokenState) observed(layer int, slots []int, held, layers int) {
	if layers == 1 {
		return // a position is complete as soon as it is observed
	}
	for _, slot := range slots[held:] {
		ts.pending = append(ts.pending, int32(slot))
	}
	ts.ahead[layer] += len(slots)
	done := 0
	for _, slot := range ts.pending[ts.head:] {
		if int(ts.seen[slot]) != layers {
			break
		}
		done++
	}
	if done == 0 {
		return
	}
	ts.head += done
	for l := range ts.ahead {
		ts.ahead[l] -= done
	}
	if ts.head == len(ts.pending) {
		ts.pending, ts.head = ts.pending[:0], 0
	} else if 2*ts.head > len(ts.pending) {
		ts.pending = ts.pending[:copy(ts.pending, ts.pending[ts.head:])]
		ts.head = 0
	}
}

// Evictions chooses up to len(out) positions to drop so that at most budget
// remain (see hashevict_evictions); it returns how many it wrote.
func (e *Engine) Evictions(id int, out []int32) (int, error) {
	if err := e.checkMode(ModeToken, "hashevict_evictions"); err != nil {
		return 0, err
	}
	if len(out) < 1 {
		return 0, errf(CodeInvalidArgument, "capacity %d, want at least 1", len(out))
	}
	s, err := e.seqAny(id)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	if s.dev != nil {
		return e.deviceEvictions(s, out) // device.go
	}
	p := &e.P
	ts := s.tok
	excess := ts.live - p.Budget
	if excess <= 0 {
		return 0, nil
	}
	lo, hi := e.window(ts.maxPos)
	sc := &s.sc
	// With a complete running total the per-head scores are neither
	// written nor summed: sc.run holds every slot's total.
	win := e.windows.Load()
	var w []int32
	if win != nil {
		w = *win
	}
	fast := ts.run.ok && ts.run.layers == p.Layers && ts.run.win == win && ts.run.maxPos == ts.maxPos
	if !fast {
		e.writeLateScores(simd.ActiveSet(), s)
	}
	sc.cand = sc.cand[:0]
	if fast && w == nil && p.Policy == PolicyHash && min(excess, len(out)) == 1 {
		if slot := e.evictOneFast(s, lo, hi); slot >= 0 { // tokenfast.go
			sc.cand = append(sc.cand, slot)
		}
	} else {
		for slot, q := range ts.pos {
			if q >= lo && q < hi && int(ts.seen[slot]) == p.Layers {
				sc.cand = append(sc.cand, slot)
			}
		}
	}
	c := sc.cand
	if p.Policy == PolicySinkRecent {
		sort.Slice(c, func(a, b int) bool { return ts.pos[c[a]] < ts.pos[c[b]] })
	} else {
		sc.acc = grow(sc.acc, len(ts.pos))
		total := sc.acc
		if fast {
			for _, slot := range c {
				total[slot] = float64(sc.run[slot])
			}
		} else {
			e.sumScores(s, c, total, w, ts.maxPos)
		}
		if w != nil {
			e.meanScores(w, ts.pos, ts.maxPos, c, total)
		}
		better := func(x, y int) bool {
			if total[x] != total[y] {
				return total[x] > total[y]
			}
			return ts.pos[x] < ts.pos[y]
		}
		if min(excess, len(out)) == 1 && len(c) > 0 {
			// A decode step drops one position: a scan, not a sort.
			best := 0
			for i := 1; i < len(c); i++ {
				if better(c[i], c[best]) {
					best = i
				}
			}
			c[0], c[best] = c[best], c[0]
		} else {
			sort.Slice(c, func(a, b int) bool { return better(c[a], c[b]) })
		}
	}
	k := min(excess, len(out), len(c))
	if k > 0 {
		ts.run.ok = false // the freed slots' totals go stale
	}
	e.dropSlots(s, c[:k], out)
	return k, nil
}

// dropSlots frees the chosen slots of token-mode sequence s (host and
// device sequences keep the same bookkeeping), writes their positions to
// out[:len(slots)] in ascending order and counts the evictions.
func (e *Engine) dropSlots(s *Sequence, slots []int, out []int32) {
	ts := s.tok
	k := len(slots)
	for i, slot := range slots {
		q := ts.pos[slot]
		out[i] = q
		delete(ts.index, q)
		ts.pos[slot] = -1
		ts.seen[slot] = 0
		for l := range ts.obs {
			ts.obs[l][slot] = false
		}
		ts.free = append(ts.free, int32(slot))
		ts.live--
	}
	// slices.Sort, not sort.Slice, which allocates on every call: a decode
	// step drops a position here.
	slices.Sort(out[:k])
	s.evictions += uint64(k)
	s.cached -= int64(k)
	e.evictions.Add(uint64(k))
	e.cached.Add(-int64(k))
}

// sumScores sets total[slot] for the slots of c to the float64 sum of their
// scores, layer by layer, head by head, leaving out the layers whose window
// (w, nil for none) does not reach the slot's position from t.
func (e *Engine) sumScores(s *Sequence, c []int, total []float64, w []int32, t int32) {
	for _, slot := range c {
		total[slot] = 0
	}
	pos := s.tok.pos
	for l := range s.layers {
		for h := range s.layers[l].heads {
			sc := s.layers[l].heads[h].score
			if w != nil && w[l] > 0 {
				for _, slot := range c {
					if sees(w[l], pos[slot], t) {
						total[slot] += float64(sc[slot])
					}
				}
				continue
			}
			for _, slot := range c {
				total[slot] += float64(sc[slot])
			}
		}
	}
}

// TokenPositions returns the positions a token-mode sequence holds,
// ascending.
func (e *Engine) TokenPositions(id int) ([]int32, error) {
	if err := e.checkMode(ModeToken, "hashevict_token_positions"); err != nil {
		return nil, err
	}
	s, err := e.seqAny(id) // a device sequence keeps its positions here too
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	out := make([]int32, 0, s.tok.live)
	for _, q := range s.tok.pos {
		if q >= 0 {
			out = append(out, q)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a] < out[b] })
	return out, nil
}
