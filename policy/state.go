package policy

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
)

// A saved sequence is a self-describing blob:
//
//	magic "HEVS" | format u32 | params fingerprint u64 | payload length u64 |
//	payload | CRC-32C (Castagnoli) u32 of everything before it
//
// all little-endian. The fingerprint covers every parameter that shapes
// the state, so a blob only loads into an engine that would have produced
// it. The payload is decoded with every length and invariant checked, so a
// truncated, corrupted or foreign blob is refused, never half-applied.
// Code tables are saved in their memory layout (simd.CodeWords words).
//
// Format 2: codes of 8, 16 and 32 bits are packed 64/bits to a word (format
// 1 held one word per code); a format 1 blob is refused as incompatible.
const (
	stateMagic   = "HEVS"
	stateFormat  = 2
	stateHeader  = 4 + 4 + 8 + 8
	stateTrailer = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fingerprint hashes the parameters that determine a sequence's layout
// and meaning (not max_seqs or the memory cap, which only limit how many).
func (p *Params) fingerprint() uint64 {
	fp := mix(uint64(p.Mode), uint64(p.Policy), uint64(p.Probe), uint64(p.Score),
		uint64(p.Layers), uint64(p.KVHeads), uint64(p.QHeads), uint64(p.HeadDim),
		uint64(p.Bits), uint64(p.Budget), uint64(p.Sinks), uint64(p.Recent),
		uint64(math.Float32bits(p.Decay)), p.Seed)
	if !p.streaming() {
		return fp // as before the streaming options: older blobs still load
	}
	return mix(fp, uint64(p.Estimate), uint64(math.Float32bits(p.Redundancy)))
}

type writer struct{ b []byte }

func (w *writer) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
func (w *writer) u64(v uint64) { w.b = binary.LittleEndian.AppendUint64(w.b, v) }
func (w *writer) i32s(v []int32) {
	w.u64(uint64(len(v)))
	for _, x := range v {
		w.u32(uint32(x))
	}
}
func (w *writer) u32s(v []uint32) {
	w.u64(uint64(len(v)))
	for _, x := range v {
		w.u32(x)
	}
}
func (w *writer) u64s(v []uint64) {
	w.u64(uint64(len(v)))
	for _, x := range v {
		w.u64(x)
	}
}
func (w *writer) f32s(v []float32) {
	w.u64(uint64(len(v)))
	for _, x := range v {
		w.u32(math.Float32bits(x))
	}
}

// SaveSeq serialises sequence id.
func (e *Engine) SaveSeq(id int) ([]byte, error) {
	s, err := e.seqAny(id)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	if s.dev != nil {
		// The same blob, from a host copy of the device tables (device.go).
		if s, err = e.hostCopy(s); err != nil {
			return nil, err
		}
	}
	e.flushTokenScores(s) // the blob holds every score, fast steps or not
	w := &writer{b: make([]byte, stateHeader, stateHeader+int(s.bytes)+1024)}
	copy(w.b, stateMagic)
	binary.LittleEndian.PutUint32(w.b[4:], stateFormat)
	binary.LittleEndian.PutUint64(w.b[8:], e.P.fingerprint())
	w.u64(s.steps)
	w.u64(s.tokens)
	w.u64(s.evictions)
	capacity := e.P.Budget
	if s.tok != nil {
		capacity = len(s.tok.pos)
	}
	w.u64(uint64(capacity))
	for _, ls := range s.layers {
		w.u32(uint32(ls.lastPos))
		w.u64(ls.steps)
		for _, t := range ls.heads {
			w.u64(uint64(t.used))
			w.i32s(t.pos)
			w.u64s(t.codes)
			w.f32s(t.score)
			w.u32s(t.count)
			w.f32s(t.keys)
		}
	}
	if ts := s.tok; ts != nil {
		w.i32s(ts.pos)
		w.i32s(ts.seen)
		w.i32s(ts.free)
		w.u32(uint32(ts.maxPos))
		for _, o := range ts.obs {
			packed := make([]uint64, (len(o)+63)/64)
			for i, b := range o {
				if b {
					packed[i/64] |= 1 << (i % 64)
				}
			}
			w.u64s(packed)
		}
	}
	binary.LittleEndian.PutUint64(w.b[16:], uint64(len(w.b)-stateHeader))
	w.u32(crc32.Checksum(w.b, castagnoli))
	return w.b, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = errf(CodeCorruptState, "state blob: "+format, args...)
	}
}

func (r *reader) take(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("truncated (need %d more bytes, have %d)", n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// count reads a length that must equal want.
func (r *reader) count(want int, what string) bool {
	n := r.u64()
	if r.err == nil && n != uint64(want) {
		r.fail("%s has %d entries, this engine expects %d", what, n, want)
	}
	return r.err == nil
}

func (r *reader) i32s(want int, what string) []int32 {
	if !r.count(want, what) {
		return nil
	}
	return r.ints(want)
}

// length reads a count that must not exceed limit.
func (r *reader) length(limit int, what string) int {
	n := r.u64()
	if r.err == nil && n > uint64(limit) {
		r.fail("%s has %d entries, at most %d allowed", what, n, limit)
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

// ints reads n int32 values (no length prefix).
func (r *reader) ints(n int) []int32 {
	b := r.take(uint64(n) * 4)
	if b == nil {
		return nil
	}
	v := make([]int32, n)
	for i := range v {
		v[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func (r *reader) u32s(want int, what string) []uint32 {
	if !r.count(want, what) {
		return nil
	}
	b := r.take(uint64(want) * 4)
	if b == nil {
		return nil
	}
	v := make([]uint32, want)
	for i := range v {
		v[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return v
}

func (r *reader) u64s(want int, what string) []uint64 {
	if !r.count(want, what) {
		return nil
	}
	b := r.take(uint64(want) * 8)
	if b == nil {
		return nil
	}
	v := make([]uint64, want)
	for i := range v {
		v[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return v
}

func (r *reader) f32s(want int, what string) []float32 {
	if !r.count(want, what) {
		return nil
	}
	b := r.take(uint64(want) * 4)
	if b == nil {
		return nil
	}
	v := make([]float32, want)
	for i := range v {
		f := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		// An infinite score turns into NaN at the next step (Inf - Inf),
		// and an infinite key into NaN attention: neither is ever saved.
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			r.fail("%s[%d] is %v", what, i, f)
			return nil
		}
		v[i] = f
	}
	return v
}

// decodeState checks a blob against this engine and rebuilds the sequence
// it describes, without touching the engine.
func (e *Engine) decodeState(id int, blob []byte) (*Sequence, error) {
	p := &e.P
	if len(blob) < stateHeader+stateTrailer {
		return nil, errf(CodeCorruptState, "state blob of %d bytes is shorter than its header", len(blob))
	}
	if string(blob[:4]) != stateMagic {
		return nil, errf(CodeCorruptState, "not a hashevict state blob (bad magic)")
	}
	if v := binary.LittleEndian.Uint32(blob[4:]); v != stateFormat {
		return nil, errf(CodeIncompatibleState, "state format %d, this library reads format %d", v, stateFormat)
	}
	body := blob[:len(blob)-stateTrailer]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(blob[len(body):]) {
		return nil, errf(CodeCorruptState, "state blob checksum mismatch (truncated or corrupted)")
	}
	if n := binary.LittleEndian.Uint64(blob[16:]); n != uint64(len(body)-stateHeader) {
		return nil, errf(CodeCorruptState, "state blob says %d payload bytes, holds %d", n, len(body)-stateHeader)
	}
	if binary.LittleEndian.Uint64(blob[8:]) != p.fingerprint() {
		return nil, errf(CodeIncompatibleState, "state blob was saved by an engine with different parameters (shape, policy, budget, protections, decay or seed)")
	}
	r := &reader{b: body[stateHeader:]}
	s := &Sequence{id: id, layers: make([]layerState, p.Layers)}
	s.steps, s.tokens, s.evictions = r.u64(), r.u64(), r.u64()
	capacity := r.length(MaxBudget, "slot tables")
	if r.err == nil && p.Mode == ModeSlot && capacity != p.Budget {
		r.fail("slot tables of %d slots, budget is %d", capacity, p.Budget)
	}
	if r.err == nil {
		release, err := e.holdDecoding(capacity)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	for l := range s.layers {
		ls := &s.layers[l]
		ls.lastPos = int32(r.u32())
		ls.steps = r.u64()
		if r.err == nil && ls.lastPos < -1 {
			r.fail("layer %d's last position is %d", l, ls.lastPos)
		}
		ls.heads = make([]table, p.KVHeads)
		for h := range ls.heads {
			t := &ls.heads[h]
			used := r.u64()
			if p.Mode == ModeSlot {
				t.pos = r.i32s(capacity, "slot positions")
			} else {
				r.count(0, "slot positions")
			}
			if r.err != nil {
				return nil, r.err
			}
			t.used = int(used)
			t.codes = r.u64s(p.codeWords(capacity), "codes")
			t.score = r.f32s(capacity, "scores")
			t.count = r.u32s(capacity, "counts")
			keys := capacity * p.keyFloats()
			t.keys = r.f32s(keys, "keys")
			if keys == 0 {
				t.keys = nil
			}
			if r.err != nil {
				return nil, r.err
			}
			if p.Estimate == EstimateLogit && p.Policy != PolicyOracle {
				// A key norm scales every logit of its slot: a negative
				// or non-finite one would rank it nonsensically.
				for i, x := range t.keys {
					if !(x >= 0 && x <= math.MaxFloat32) {
						r.fail("layer %d head %d slot %d has key norm %v", l, h, i, x)
						return nil, r.err
					}
				}
			}
			// Every step of the layer adds at most one to a slot's count,
			// and the accumulated score divides by count + 1.
			for i, c := range t.count {
				if uint64(c) > ls.steps || c == math.MaxUint32 {
					r.fail("layer %d head %d slot %d was scored %d times in %d steps", l, h, i, c, ls.steps)
					return nil, r.err
				}
			}
			if p.Mode == ModeSlot {
				if used > uint64(p.Budget) {
					r.fail("layer %d head %d uses %d slots of %d", l, h, used, p.Budget)
					return nil, r.err
				}
				seen := map[int32]bool{}
				for i, q := range t.pos {
					if (i < t.used) != (q >= 0) || q < -1 || q > ls.lastPos || (q >= 0 && seen[q]) {
						r.fail("layer %d head %d slot %d holds position %d (used %d, last %d)", l, h, i, q, t.used, ls.lastPos)
						return nil, r.err
					}
					seen[q] = true
				}
				t.rebuild(t.pos, t.used, p.Sinks, p.Recent)
				s.cached += int64(t.used)
			} else if used != 0 {
				r.fail("token-mode table claims %d used slots", used)
				return nil, r.err
			}
		}
	}
	if p.Mode == ModeToken {
		ts := newTokenState(p.Layers)
		ts.pos = r.i32s(capacity, "token positions")
		ts.seen = r.i32s(capacity, "token seen counts")
		ts.free = r.ints(r.length(capacity, "free list"))
		ts.maxPos = int32(r.u32())
		for l := range ts.obs {
			packed := r.u64s((capacity+63)/64, "observed flags")
			if r.err != nil {
				return nil, r.err
			}
			ts.obs[l] = make([]bool, capacity)
			for i := range ts.obs[l] {
				ts.obs[l][i] = packed[i/64]>>(i%64)&1 != 0
			}
		}
		if r.err != nil {
			return nil, r.err
		}
		if err := decodeTokenState(r, ts, s.layers, capacity); err != nil {
			return nil, err
		}
		s.tok = ts
		s.cached = int64(ts.live)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes left over after the state", len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	s.bytes = p.heldBytes(capacity)
	return s, nil
}

// decodeTokenState checks the values of a decoded token state against the
// rules Observe and Evictions keep (a position is observed by every layer
// up to that layer's last position and by no other, a free slot by none)
// and rebuilds the index and the pending list from them.
func decodeTokenState(r *reader, ts *tokenState, layers []layerState, capacity int) error {
	newest := int32(-1)
	for l := range layers {
		newest = max(newest, layers[l].lastPos)
	}
	if ts.maxPos != newest {
		r.fail("newest observed position %d, the layers' last is %d", ts.maxPos, newest)
		return r.err
	}
	isFree := make([]bool, capacity)
	for _, f := range ts.free {
		if f < 0 || int(f) >= capacity || isFree[f] || ts.pos[f] != -1 {
			r.fail("free list entry %d is not a free slot", f)
			return r.err
		}
		isFree[f] = true
	}
	for i, q := range ts.pos {
		switch {
		case q == -1 && !isFree[i]:
			r.fail("slot %d is empty but not on the free list", i)
		case q < -1 || q > ts.maxPos:
			r.fail("slot %d holds position %d (newest %d)", i, q, ts.maxPos)
		case q == -1:
			if ts.seen[i] != 0 {
				r.fail("free slot %d counts %d layers that observed it", i, ts.seen[i])
			}
			for l := range ts.obs {
				if ts.obs[l][i] {
					r.fail("free slot %d is flagged observed by layer %d", i, l)
					break
				}
			}
		default:
			if _, dup := ts.index[q]; dup {
				r.fail("position %d held twice", q)
			}
			n := int32(0)
			for l := range ts.obs {
				if ts.obs[l][i] != (q <= layers[l].lastPos) {
					r.fail("slot %d: layer %d (last position %d) observed position %d: %v", i, l, layers[l].lastPos, q, ts.obs[l][i])
					break
				}
				if ts.obs[l][i] {
					n++
				}
			}
			if n != ts.seen[i] {
				r.fail("slot %d seen by %d layers, flags say %d", i, ts.seen[i], n)
			}
			ts.index[q] = int32(i)
			ts.live++
		}
		if r.err != nil {
			return r.err
		}
	}
	// Positions not yet observed by every layer, ascending; each layer has
	// observed those up to its last position, a prefix.
	if len(layers) > 1 {
		for i, q := range ts.pos {
			if q >= 0 && int(ts.seen[i]) < len(layers) {
				ts.pending = append(ts.pending, int32(i))
			}
		}
		slices.SortFunc(ts.pending, func(a, b int32) int { return cmp.Compare(ts.pos[a], ts.pos[b]) })
		for l := range ts.ahead {
			for _, slot := range ts.pending {
				if ts.obs[l][slot] {
					ts.ahead[l]++
				}
			}
		}
	}
	return nil
}

// LoadSeq restores a saved sequence into id, replacing it if it exists. On
// any error the engine is unchanged.
func (e *Engine) LoadSeq(id int, blob []byte) error {
	if err := e.checkSeqID(id); err != nil {
		return err
	}
	fresh, err := e.decodeState(id, blob)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.seqs[id]
	var oldBytes int64
	if old != nil {
		old.mu.Lock()
		defer old.mu.Unlock()
		oldBytes = old.bytes
	}
	if err := e.reserveState(fresh.bytes-oldBytes, fmt.Sprintf("loading sequence %d", id)); err != nil {
		return err
	}
	if old != nil {
		old.dead = true
		old.dropDevice()
		e.dropScratch(old)
		e.cached.Add(-old.cached)
	} else {
		e.nSeqs.Add(1)
	}
	e.cached.Add(fresh.cached)
	e.seqs[id] = fresh
	return nil
}
