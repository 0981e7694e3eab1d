package policy

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// Engine holds the parameters, the projections and the sequences.
//
// Concurrency: the sequence directory is guarded by mu; each sequence has
// its own mutex, so calls on different sequences run in parallel and calls
// on one sequence are serialised.
type Engine struct {
	P    Params
	proj [][]float32 // per layer, R^T as [bits][dim]
	mem  *memAccount

	mu   sync.RWMutex
	seqs []*Sequence

	nSeqs      atomic.Int64
	stateBytes atomic.Int64
	steps      atomic.Uint64
	tokens     atomic.Uint64
	evictions  atomic.Uint64
	cached     atomic.Int64

	windows atomic.Pointer[[]int32] // token mode: per-layer attention windows (window.go)
}

// Sequence is the eviction state of one sequence across all layers.
type Sequence struct {
	mu     sync.Mutex
	id     int
	dead   bool
	layers []layerState
	tok    *tokenState // token mode only

	bytes int64 // state as accounted (heldBytes of its tables)
	// The step scratch of chunks beyond one token, accounted apart: the
	// largest chunk so far (0: one token) and its bytes.
	scratchN     int
	scratchBytes uint64
	steps        uint64
	tokens       uint64
	evictions    uint64
	cached       int64

	sc scratch

	dev DeviceState // set when the sequence lives on a device (device.go)
}

// layerState is one layer's tables, one per KV head.
type layerState struct {
	lastPos int32 // last position placed or observed, -1 when none
	steps   uint64
	heads   []table
}

// table holds, per slot, a code, a score and the number of steps scored.
// In slot mode it also holds the slot's position (-1: free); in token mode
// positions live in tokenState and are shared by every table.
type table struct {
	used  int // slot mode: slots [0, used) are occupied
	pos   []int32
	codes []uint64
	score []float32
	count []uint32
	keys  []float32 // oracle: the cached keys, [slot][dim]; logit estimate: the key norms, [slot]
	guard
}

// guard names the slots that can hold protected positions (slot mode), so
// that a decode step passes a few slots to the kernel instead of reading
// every slot's position: the slots of the positions below n_sink, which
// are never evicted, and a ring of the slots of the last n_recent tokens
// stored. Positions strictly increase, so the at most n_recent cached
// positions at or after t - n_recent are among those last n_recent.
type guard struct {
	sinks  []int32 // capacity n_sink
	recent []int32 // ring of n_recent slots, -1 when unset
	next   int     // recent[next] is the oldest
}

func newGuard(sinks, recent int) guard {
	g := guard{sinks: make([]int32, 0, sinks), recent: make([]int32, recent)}
	for i := range g.recent {
		g.recent[i] = -1
	}
	return g
}

// stored records that slot now holds pos.
func (g *guard) stored(slot int, pos int32, sinks int) {
	if int(pos) < sinks {
		g.sinks = append(g.sinks, int32(slot))
	}
	if len(g.recent) > 0 {
		g.recent[g.next] = int32(slot)
		g.next = (g.next + 1) % len(g.recent)
	}
}

// rebuild derives the guard from the positions of slots [0, used), as
// stored in order: after a load.
func (g *guard) rebuild(pos []int32, used, sinks, recent int) {
	order := make([]int32, used)
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return cmp.Compare(pos[a], pos[b]) })
	*g = newGuard(sinks, recent)
	for _, slot := range order[max(0, used-len(g.recent)):] {
		g.stored(int(slot), pos[slot], -1)
	}
	for _, slot := range order {
		if int(pos[slot]) >= sinks {
			break
		}
		g.sinks = append(g.sinks, slot)
	}
}

// skip lists the slots of t that hold positions outside [lo, hi), where
// lo = n_sink < hi; every other slot of [0, used) is evictable. The list is
// sorted here, in the caller's scratch, because the kernels would
// otherwise sort a copy of it on every step.
func (t *table) skip(dst []int32, hi int32) []int32 {
	dst = append(dst[:0], t.sinks...)
	for _, slot := range t.recent {
		if slot >= 0 && t.pos[slot] >= hi {
			dst = append(dst, slot)
		}
	}
	slices.Sort(dst)
	return dst
}

func (g guard) clone() guard {
	return guard{sinks: append(make([]int32, 0, cap(g.sinks)), g.sinks...), recent: clone(g.recent), next: g.next}
}

// NewEngine validates p (after defaults are resolved by the caller) and
// derives the projections.
func NewEngine(p Params) (*Engine, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{P: p, mem: newMemAccount(p.MemoryCapBytes)}
	// Refused here is what could never run: the engine with one sequence at
	// full budget. Then the engine's own arrays are counted and made.
	fixed := p.engineBytes()
	e.mem.lock()
	err := e.mem.fits(MemHost, p.budgetBytes(), fmt.Sprintf("the engine (projections and sequence directory: %d bytes) with one sequence at full budget", fixed))
	if err == nil {
		e.mem.add(fixed)
	}
	e.mem.unlock()
	if err != nil {
		return nil, err
	}
	// The account is its own object, so the cleanup does not keep e alive.
	runtime.AddCleanup(e, (*memAccount).close, e.mem)
	e.seqs = make([]*Sequence, p.MaxSeqs)
	e.proj = make([][]float32, p.Layers)
	for l := range e.proj {
		e.proj[l] = Projection(p.Seed, l, p.HeadDim, p.Bits)
	}
	return e, nil
}

// ProjectionOf returns layer's R^T (shared; do not modify).
func (e *Engine) ProjectionOf(layer int) ([]float32, error) {
	if layer < 0 || layer >= e.P.Layers {
		return nil, errf(CodeOutOfRange, "layer %d is outside [0, %d)", layer, e.P.Layers)
	}
	return e.proj[layer], nil
}

func (e *Engine) checkSeqID(id int) error {
	if id < 0 || id >= e.P.MaxSeqs {
		return errf(CodeOutOfRange, "sequence %d is outside [0, max_seqs = %d)", id, e.P.MaxSeqs)
	}
	return nil
}

// seq returns the live host sequence id, locked. The caller must unlock it.
// A sequence on a device is refused: every caller reads host state.
func (e *Engine) seq(id int) (*Sequence, error) {
	s, err := e.seqAny(id)
	if err == nil && s.dev != nil {
		s.mu.Unlock()
		return nil, errDeviceSeq(id)
	}
	return s, err
}

// seqAny is seq for the calls that also serve device sequences.
func (e *Engine) seqAny(id int) (*Sequence, error) {
	if err := e.checkSeqID(id); err != nil {
		return nil, err
	}
	e.mu.RLock()
	s := e.seqs[id]
	e.mu.RUnlock()
	if s == nil {
		return nil, errf(CodeUnknownSequence, "sequence %d does not exist (add it first)", id)
	}
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return nil, errf(CodeUnknownSequence, "sequence %d was removed", id)
	}
	return s, nil
}

func (e *Engine) newSequence(id int) *Sequence {
	s := &Sequence{id: id, layers: make([]layerState, e.P.Layers)}
	for l := range s.layers {
		s.layers[l].lastPos = -1
		s.layers[l].heads = make([]table, e.P.KVHeads)
	}
	if e.P.Mode == ModeSlot {
		for l := range s.layers {
			for h := range s.layers[l].heads {
				s.layers[l].heads[h] = e.newTable(e.P.Budget, true)
			}
		}
	} else {
		s.tok = newTokenState(e.P.Layers)
	}
	s.bytes = e.P.heldBytes(e.P.initialSlots())
	return s
}

func (e *Engine) newTable(slots int, withPos bool) table {
	t := table{
		codes: make([]uint64, e.P.codeWords(slots)),
		score: make([]float32, slots),
		count: make([]uint32, slots),
	}
	if withPos {
		t.pos = make([]int32, slots)
		for i := range t.pos {
			t.pos[i] = -1
		}
		t.guard = newGuard(e.P.Sinks, e.P.Recent)
	}
	if f := e.P.keyFloats(); f > 0 {
		t.keys = make([]float32, slots*f)
	}
	return t
}

// AddSeq creates an empty sequence.
func (e *Engine) AddSeq(id int) error {
	if err := e.checkSeqID(id); err != nil {
		return err
	}
	if e.exists(id) {
		return errf(CodeSequenceExists, "sequence %d already exists", id)
	}
	capacity := e.P.initialSlots()
	bytes := e.P.heldBytes(capacity)
	if err := e.reserveState(bytes, fmt.Sprintf("sequence %d (%d layers x %d KV heads, tables of %d slots)", id, e.P.Layers, e.P.KVHeads, capacity)); err != nil {
		return err
	}
	s := e.newSequence(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.seqs[id] != nil {
		e.reserveState(-bytes, "")
		return errf(CodeSequenceExists, "sequence %d already exists", id)
	}
	e.seqs[id] = s
	e.nSeqs.Add(1)
	return nil
}

// detach removes id from the directory and marks it dead.
func (e *Engine) detach(id int) (*Sequence, error) {
	if err := e.checkSeqID(id); err != nil {
		return nil, err
	}
	e.mu.Lock()
	s := e.seqs[id]
	if s == nil {
		e.mu.Unlock()
		return nil, errf(CodeUnknownSequence, "sequence %d does not exist", id)
	}
	e.seqs[id] = nil
	e.mu.Unlock()
	s.mu.Lock()
	s.dead = true
	s.dropDevice()
	e.reserveState(-s.bytes, "")
	e.dropScratch(s)
	e.cached.Add(-s.cached)
	e.nSeqs.Add(-1)
	s.mu.Unlock()
	return s, nil
}

// RemoveSeq frees a sequence.
func (e *Engine) RemoveSeq(id int) error {
	_, err := e.detach(id)
	return err
}

// ResetSeq empties a sequence.
func (e *Engine) ResetSeq(id int) error {
	s, err := e.seqAny(id)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.dropDevice() // reset, it may start over on the host or a device
	// Cleared in place: a fresh copy would need the room of a second
	// sequence for a moment, which a cap that holds one does not have. Token
	// mode's tables are dropped (they grow again with the positions);
	// the scratch stays, as accounted.
	p := &e.P
	if p.Mode == ModeSlot {
		for l := range s.layers {
			ls := &s.layers[l]
			ls.lastPos, ls.steps = -1, 0
			for h := range ls.heads {
				ls.heads[h].clear(p.Sinks, p.Recent)
			}
		}
	} else {
		fresh := e.newSequence(id)
		s.layers, s.tok = fresh.layers, fresh.tok
		e.reserveState(fresh.bytes-s.bytes, "")
		s.bytes = fresh.bytes
	}
	e.cached.Add(-s.cached)
	// As if removed and added again: the sequence's own counters restart;
	// the engine's cumulative counters keep what happened.
	s.cached = 0
	s.steps, s.tokens, s.evictions = 0, 0, 0
	return nil
}

// clear empties a slot table as newTable makes it.
func (t *table) clear(sinks, recent int) {
	t.used = 0
	for i := range t.pos {
		t.pos[i] = -1
	}
	clear(t.codes)
	clear(t.score)
	clear(t.count)
	clear(t.keys)
	t.sinks = t.sinks[:0]
	for i := range t.recent {
		t.recent[i] = -1
	}
	t.next = 0
}

// exists reports whether id is live now, so that add and fork refuse an
// existing id before they allocate; they check again under the lock.
func (e *Engine) exists(id int) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.seqs[id] != nil
}

// ForkSeq deep-copies src into a new sequence dst.
func (e *Engine) ForkSeq(src, dst int) error {
	if err := e.checkSeqID(dst); err != nil {
		return err
	}
	// An existing dst is refused before anything is allocated, and before
	// src is locked: the directory lock is never taken under a sequence's
	// (LoadSeq takes them in the other order).
	if src != dst && e.checkSeqID(src) == nil && e.exists(src) && e.exists(dst) {
		return errf(CodeSequenceExists, "sequence %d already exists", dst)
	}
	s, err := e.seqAny(src)
	if err != nil {
		return err
	}
	if src == dst {
		s.mu.Unlock()
		return errf(CodeSequenceExists, "cannot fork sequence %d onto itself", src)
	}
	if err := e.reserveState(s.bytes, fmt.Sprintf("the fork of sequence %d into %d", src, dst)); err != nil {
		s.mu.Unlock()
		return err
	}
	c := s.clone(dst)
	if s.dev != nil {
		if c.dev, err = s.dev.Clone(); err != nil {
			e.reserveState(-c.bytes, "")
			s.mu.Unlock()
			return err
		}
	}
	s.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.seqs[dst] != nil {
		e.reserveState(-c.bytes, "")
		c.dropDevice()
		return errf(CodeSequenceExists, "sequence %d already exists", dst)
	}
	e.seqs[dst] = c
	e.nSeqs.Add(1)
	e.cached.Add(c.cached)
	return nil
}

func (s *Sequence) clone(id int) *Sequence {
	c := &Sequence{id: id, layers: make([]layerState, len(s.layers)), bytes: s.bytes, cached: s.cached}
	for l, ls := range s.layers {
		c.layers[l] = layerState{lastPos: ls.lastPos, steps: ls.steps, heads: make([]table, len(ls.heads))}
		for h, t := range ls.heads {
			c.layers[l].heads[h] = table{
				used:  t.used,
				pos:   clone(t.pos),
				codes: clone(t.codes),
				score: clone(t.score),
				count: clone(t.count),
				keys:  clone(t.keys),
				guard: t.guard.clone(),
			}
		}
	}
	if s.tok != nil {
		c.tok = s.tok.clone()
	}
	return c
}

func clone[T any](x []T) []T {
	if x == nil {
		return nil
	}
	return append(make([]T, 0, len(x)), x...)
}

// Stats are the counters of hashevict_stats.
type Stats struct {
	Sequences  int
	StateBytes uint64
	Steps      uint64
	Tokens     uint64
	Evictions  uint64
	Cached     uint64
}

// EngineStats sums over every sequence, including removed ones for the
// cumulative counters.
func (e *Engine) EngineStats() Stats {
	return Stats{
		Sequences:  int(e.nSeqs.Load()),
		StateBytes: uint64(e.stateBytes.Load()),
		Steps:      e.steps.Load(),
		Tokens:     e.tokens.Load(),
		Evictions:  e.evictions.Load(),
		Cached:     uint64(e.cached.Load()),
	}
}

// SeqStats returns one sequence's counters.
func (e *Engine) SeqStats(id int) (Stats, error) {
	s, err := e.seqAny(id)
	if err != nil {
		return Stats{}, err
	}
	defer s.mu.Unlock()
	return Stats{
		Sequences:  1,
		StateBytes: uint64(s.bytes),
		Steps:      s.steps,
		Tokens:     s.tokens,
		Evictions:  s.evictions,
		Cached:     uint64(s.cached),
	}, nil
}

// SeqIDs lists the live sequences, ascending.
func (e *Engine) SeqIDs() []int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var ids []int
	for i, s := range e.seqs {
		if s != nil {
			ids = append(ids, i)
		}
	}
	return ids
}

func (e *Engine) countStep(s *Sequence, tokens, evicted, cachedDelta int) {
	s.steps++
	s.tokens += uint64(tokens)
	s.evictions += uint64(evicted)
	s.cached += int64(cachedDelta)
	e.steps.Add(1)
	e.tokens.Add(uint64(tokens))
	// Each atomic add is a locked instruction; a token-mode decode step
	// counts 30 layers with nothing evicted and one new position.
	if evicted != 0 {
		e.evictions.Add(uint64(evicted))
	}
	if cachedDelta != 0 {
		e.cached.Add(int64(cachedDelta))
	}
}
