package policy

import "sort"

// tokenState is the token-mode bookkeeping of a sequence: positions live in
// slots shared by every (layer, KV head) table, so one decision drops a
// position everywhere.
type tokenState struct {
	pos    []int32         // slot -> position, -1 when free
	seen   []int32         // slot -> number of layers that observed it
	obs    [][]bool        // layer -> slot -> observed by that layer
	free   []int32         // free slots (a stack)
	index  map[int32]int32 // position -> slot
	maxPos int32
	live   int
}

func (ts *tokenState) clone() *tokenState {
	c := &tokenState{
		pos:    clone(ts.pos),
		seen:   clone(ts.seen),
		obs:    make([][]bool, len(ts.obs)),
		free:   clone(ts.free),
		index:  make(map[int32]int32, len(ts.index)),
		maxPos: ts.maxPos,
		live:   ts.live,
	}
	for l, o := range ts.obs {
		c.obs[l] = clone(o)
	}
	for k, v := range ts.index {
		c.index[k] = v
	}
	return c
}

// growTo enlarges every table of s to capacity slots.
func (e *Engine) growTo(s *Sequence, capacity int) error {
	ts := s.tok
	old := len(ts.pos)
	if capacity <= old {
		return nil
	}
	p := &e.P
	add := int64(capacity-old) * int64(p.tokenSlotBytes())
	if err := e.reserve(add); err != nil {
		return err
	}
	for l := range s.layers {
		for h := range s.layers[l].heads {
			t := &s.layers[l].heads[h]
			t.codes = append(t.codes, make([]uint64, p.codeWords(capacity)-len(t.codes))...)
			t.score = append(t.score, make([]float32, capacity-old)...)
			t.count = append(t.count, make([]uint32, capacity-old)...)
			if p.Policy == PolicyOracle {
				t.keys = append(t.keys, make([]float32, (capacity-old)*p.HeadDim)...)
			}
		}
	}
	if ts.obs == nil {
		ts.obs = make([][]bool, p.Layers)
	}
	for l := range ts.obs {
		ts.obs[l] = append(ts.obs[l], make([]bool, capacity-old)...)
	}
	ts.seen = append(ts.seen, make([]int32, capacity-old)...)
	for i := old; i < capacity; i++ {
		ts.pos = append(ts.pos, -1)
	}
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
	fresh := 0
	for _, q := range positions {
		if _, ok := ts.index[q]; !ok {
			fresh++
		}
	}
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
	// exactly those; the hash scores are updated blindly over all slots
	// (free or unobserved entries are re-initialised when stored).
	var entries []int
	obs := ts.obs[layer]
	if p.Policy == PolicyOracle {
		s.sc.idx = entriesWhere(s.sc.idx, len(ts.pos), func(i int) bool { return obs[i] })
		entries = s.sc.idx
	}
	slots := make([]int, n)
	for i, q := range positions {
		slot, ok := ts.index[q]
		if !ok {
			slot = ts.free[len(ts.free)-1]
			ts.free = ts.free[:len(ts.free)-1]
			ts.index[q] = slot
			ts.pos[slot] = q
			ts.live++
		}
		slots[i] = int(slot)
	}
	init := make([]float32, n)
	for h := range ls.heads {
		t := &ls.heads[h]
		e.rescore(k, s, layer, h, t, len(ts.pos), entries, positions, init)
		for tok := 0; tok < n; tok++ {
			e.store(s, t, slots[tok], tok, h, positions[tok], init[tok])
		}
	}
	for _, slot := range slots {
		obs[slot] = true
		ts.seen[slot]++
	}
	ls.lastPos = positions[n-1]
	ls.steps++
	if ls.lastPos > ts.maxPos {
		ts.maxPos = ls.lastPos
	}
	e.countStep(s, n, 0, fresh)
	return nil
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
	s, err := e.seq(id)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	p := &e.P
	ts := s.tok
	excess := ts.live - p.Budget
	if excess <= 0 {
		return 0, nil
	}
	lo, hi := e.window(ts.maxPos)
	sc := &s.sc
	sc.cand = sc.cand[:0]
	for slot, q := range ts.pos {
		if q >= lo && q < hi && int(ts.seen[slot]) == p.Layers {
			sc.cand = append(sc.cand, slot)
		}
	}
	c := sc.cand
	if p.Policy == PolicySinkRecent {
		sort.Slice(c, func(a, b int) bool { return ts.pos[c[a]] < ts.pos[c[b]] })
	} else {
		sc.acc = grow(sc.acc, len(ts.pos))
		total := sc.acc
		for _, slot := range c {
			total[slot] = 0
		}
		for l := range s.layers {
			for h := range s.layers[l].heads {
				sc := s.layers[l].heads[h].score
				for _, slot := range c {
					total[slot] += float64(sc[slot])
				}
			}
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
	for i := 0; i < k; i++ {
		slot := c[i]
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
	sort.Slice(out[:k], func(a, b int) bool { return out[a] < out[b] })
	s.evictions += uint64(k)
	s.cached -= int64(k)
	e.evictions.Add(uint64(k))
	e.cached.Add(-int64(k))
	return k, nil
}

// TokenPositions returns the positions a token-mode sequence holds,
// ascending.
func (e *Engine) TokenPositions(id int) ([]int32, error) {
	if err := e.checkMode(ModeToken, "hashevict_token_positions"); err != nil {
		return nil, err
	}
	s, err := e.seq(id)
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
