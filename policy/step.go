package policy

import (
	"cmp"
	"math"
	"slices"
	"unsafe"

	"github.com/hashevict/hashevict/simd"
)

// scratch holds per-sequence buffers reused across steps.
type scratch struct {
	row    []float32
	kcodes []uint64  // [token][kv head][words]
	wide   []uint64  // a narrow table's codes, one word each
	skip   []int32   // the slots a decode step must not evict
	qcodes []uint64  // [token][q head][words]
	knorm  []float32 // [token][kv head]: Knorm, and the logit estimate's key norms
	qnorm  []float32 // the logit estimate with the query probe: [token][q head]
	kvec   []float32 // oracle: [token][kv head][dim]
	qvec   []float32 // oracle: [token][q head][dim]
	probes []uint64
	newc   []uint64
	ones   []uint32
	dist   []uint32
	ndist  []uint32
	cand   []int
	acc    []float64
	idx    []int
	run    []uint32 // token mode: the running total of the fast steps
	stream streamScratch
}

func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}

// input is one step's decoded input.
type input struct {
	n         int
	positions []int32
	needQ     bool
}

func (e *Engine) needsQuery() bool {
	return e.P.Policy == PolicyOracle || (e.P.Policy == PolicyHash && e.P.Probe == ProbeQuery)
}

// read validates q and k and decodes what the policy needs into the
// sequence's scratch. It changes no state, so a failure leaves the sequence
// as it was.
func (e *Engine) read(k *simd.Kernels, s *Sequence, layer int, q, kr *Rows, n int) error {
	p := &e.P
	if kr == nil {
		return errf(CodeInvalidArgument, "k is NULL: every call needs the new keys")
	}
	if err := kr.check("k", p.HeadDim, p.KVHeads, n); err != nil {
		return err
	}
	if q == nil && e.needsQuery() {
		return errf(CodeInvalidArgument, "q is NULL but policy %d with probe %d needs the queries", p.Policy, p.Probe)
	}
	if q != nil {
		if err := q.check("q", p.HeadDim, p.QHeads, n); err != nil {
			return err
		}
	}
	sc := &s.sc
	sc.row = grow(sc.row, p.HeadDim)
	W := p.Words()
	rt := e.proj[layer]
	hashK := p.Policy == PolicyHash
	hashQ := hashK && p.Probe == ProbeQuery
	sc.kcodes = grow(sc.kcodes, n*p.KVHeads*W)
	norms := p.Policy == PolicyKnorm || p.Estimate == EstimateLogit
	if norms {
		sc.knorm = grow(sc.knorm, n*p.KVHeads)
	}
	if p.Policy == PolicyOracle {
		sc.kvec = grow(sc.kvec, n*p.KVHeads*p.HeadDim)
		sc.qvec = grow(sc.qvec, n*p.QHeads*p.HeadDim)
	}
	for t := 0; t < n; t++ {
		all := finiteHeads(k, kr, t)
		if all != nil && hashK && !norms {
			hashHeads(k, sc.kcodes[t*p.KVHeads*W:(t+1)*p.KVHeads*W], all, rt, W)
			continue
		}
		for h := 0; h < p.KVHeads; h++ {
			var x []float32
			if all != nil {
				x = all[h*p.HeadDim : (h+1)*p.HeadDim]
			} else {
				var ok bool
				if x, ok = kr.row(k, t, h, sc.row); !ok {
					return errf(CodeNonFinite, "k row of token %d, head %d holds NaN or Inf", t, h)
				}
			}
			i := t*p.KVHeads + h
			if hashK {
				k.Hash(sc.kcodes[i*W:(i+1)*W], x, rt)
			}
			if norms {
				sc.knorm[i] = l2norm(x)
			}
			if p.Policy == PolicyOracle {
				copy(sc.kvec[i*p.HeadDim:(i+1)*p.HeadDim], x)
			}
		}
	}
	// A q the policy never reads is not input: refusing a NaN in it would
	// fail a caller for memory that has no effect (its shape was checked).
	if q == nil || !e.needsQuery() {
		return nil
	}
	qnorms := hashQ && p.Estimate == EstimateLogit
	if hashQ {
		sc.qcodes = grow(sc.qcodes, n*p.QHeads*W)
	}
	if qnorms {
		sc.qnorm = grow(sc.qnorm, n*p.QHeads)
	}
	for t := 0; t < n; t++ {
		all := finiteHeads(k, q, t)
		if all != nil && hashQ && !qnorms {
			hashHeads(k, sc.qcodes[t*p.QHeads*W:(t+1)*p.QHeads*W], all, rt, W)
			continue
		}
		for h := 0; h < p.QHeads; h++ {
			var x []float32
			if all != nil {
				x = all[h*p.HeadDim : (h+1)*p.HeadDim]
			} else {
				var ok bool
				if x, ok = q.row(k, t, h, sc.row); !ok {
					return errf(CodeNonFinite, "q row of token %d, head %d holds NaN or Inf", t, h)
				}
			}
			i := t*p.QHeads + h
			if hashQ {
				k.Hash(sc.qcodes[i*W:(i+1)*W], x, rt)
			}
			if qnorms {
				sc.qnorm[i] = l2norm(x)
			}
			if p.Policy == PolicyOracle {
				copy(sc.qvec[i*p.HeadDim:(i+1)*p.HeadDim], x)
			}
		}
	}
	return nil
}

// finiteHeads returns token t's rows of r as one slice [head][dim] when
// they are aligned float32 rows back to back (the usual layout of a
// runtime's q and k) and all finite, so that the step checks the token
// with one kernel call instead of one per head (a token-mode decode step
// reads 12 rows per layer for SmolLM2, 360 a step); nil otherwise, and
// the caller takes the rows one by one, which also names the row that is
// not finite. r was checked against its buffer (Rows.check).
func finiteHeads(k *simd.Kernels, r *Rows, t int) []float32 {
	if r.DType != F32 || r.HeadStride != int64(r.Dim)*4 {
		return nil
	}
	ptr := unsafe.Pointer(&r.Data[int64(t)*r.TokenStride])
	if uintptr(ptr)%4 != 0 {
		return nil
	}
	all := unsafe.Slice((*float32)(ptr), r.Heads*r.Dim)
	if !k.FiniteF32(all) {
		return nil
	}
	return all
}

// hashHeads hashes the rows of all ([head][dim]) into codes ([head][w]),
// when the codes are all a step needs of them: a loop that keeps nothing
// else live across the calls (a decode step makes 360 of them).
func hashHeads(k *simd.Kernels, codes []uint64, all, rt []float32, w int) {
	heads := len(codes) / w
	d := len(all) / heads
	hash := k.Hash
	for h := 0; h < heads; h++ {
		hash(codes[h*w:(h+1)*w], all[h*d:(h+1)*d], rt)
	}
}

// beginStep validates a place or observe call and decodes its input into
// the sequence's scratch. On success the sequence is returned locked (the
// caller unlocks it) with the kernels to use; on failure nothing changed.
func (e *Engine) beginStep(mode Mode, fn string, id, layer int, q, kr *Rows, positions []int32) (*Sequence, *simd.Kernels, error) {
	if err := e.checkMode(mode, fn); err != nil {
		return nil, nil, err
	}
	if err := e.checkLayer(layer); err != nil {
		return nil, nil, err
	}
	n := len(positions)
	if n < 1 {
		return nil, nil, errf(CodeInvalidArgument, "n_tokens = %d, want at least 1", n)
	}
	s, err := e.seq(id)
	if err != nil {
		return nil, nil, err
	}
	verb := "placed in"
	if mode == ModeToken {
		verb = "observed by"
	}
	if err := checkPositions(positions, s.layers[layer].lastPos, verb); err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	if err := e.fitScratch(s, n); err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	k := simd.ActiveSet()
	if err := e.read(k, s, layer, q, kr, n); err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	return s, k, nil
}

// gatherProbes collects KV head h's probe codes for the step into sc.probes
// and the new tokens' key codes into sc.newc.
func (e *Engine) gatherProbes(sc *scratch, h, n int) {
	p := &e.P
	W := p.Words()
	sc.newc = grow(sc.newc, n*W)
	for t := 0; t < n; t++ {
		i := t*p.KVHeads + h
		copy(sc.newc[t*W:(t+1)*W], sc.kcodes[i*W:(i+1)*W])
	}
	if p.Probe == ProbeKey {
		sc.probes = append(sc.probes[:0], sc.newc...)
		return
	}
	g := p.Group()
	sc.probes = grow(sc.probes, n*g*W)
	for t := 0; t < n; t++ {
		src := (t*p.QHeads + h*g) * W
		copy(sc.probes[t*g*W:(t+1)*g*W], sc.qcodes[src:src+g*W])
	}
}

// distances sets dst[i] to the summed Hamming distance between code i of
// codes and every probe in sc.probes. codes are a table (the layout of
// simd.CodeWords: packed below 64 bits) when table is true, and wide codes
// (one word or more each, as the hash writes them) otherwise.
func (e *Engine) distances(k *simd.Kernels, sc *scratch, dst []uint32, codes []uint64, table bool) {
	W := e.P.Words()
	np := len(sc.probes) / W
	packed := table && simd.Narrow(e.P.Bits)
	if np*W <= e.P.Bits {
		if packed {
			k.HammingNarrow(dst, codes, e.P.Bits, sc.probes)
		} else {
			k.Hamming(dst, codes, W, sc.probes)
		}
		return
	}
	if packed {
		// BitCount takes wide codes only; this route serves chunks of
		// many tokens, where one unpacking is spread over the chunk.
		sc.wide = grow(sc.wide, len(dst))
		for i := range dst {
			simd.GetCode(sc.wide[i:i+1], codes, e.P.Bits, i)
		}
		codes = sc.wide
	}
	// Many probes: count each bit once over the probes instead.
	sc.ones = grow(sc.ones, e.P.Bits)
	for j := range sc.ones {
		sc.ones[j] = 0
	}
	for p := 0; p < np; p++ {
		pr := sc.probes[p*W : (p+1)*W]
		for j := range sc.ones {
			sc.ones[j] += uint32(pr[j>>6] >> (uint(j) & 63) & 1)
		}
	}
	k.BitCount(dst, codes, W, sc.ones, uint32(np))
}

// l2norm is the Euclidean norm of x, summed in float64 (as Knorm's).
func l2norm(x []float32) float32 {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	return float32(math.Sqrt(ss))
}

// stepDistance turns a distance sum into the step distance of one token.
func stepDistance(d uint32, n int) float32 {
	return float32(d) * (1 / float32(n))
}

// randomScore is the random policy's score of slot i at a given step.
func randomScore(seed uint64, seq, layer, head int, step uint64, i int) float32 {
	return float32(mix(seed, uint64(seq), uint64(layer), uint64(head), step, uint64(i))>>40) / (1 << 24)
}

// rescore folds this step into the scores of entries `entries` of t (all
// entries [0, m) when entries is nil) and computes the new tokens' initial
// scores into init. For the oracle, entries must list exactly the cached
// keys the queries attend over.
func (e *Engine) rescore(k *simd.Kernels, s *Sequence, layer, h int, t *table, m int, entries []int, positions []int32, init []float32) {
	p := &e.P
	sc := &s.sc
	n := len(positions)
	switch p.Policy {
	case PolicyHash:
		e.gatherProbes(sc, h, n)
		if p.streaming() {
			e.streamRescore(k, sc, t, h, m, entries, init) // streamscore.go
			return
		}
		sc.dist = grow(sc.dist, m)
		e.distances(k, sc, sc.dist, t.codes[:p.codeWords(m)], true)
		k.Update(t.score[:m], t.count[:m], sc.dist, uint32(n), int(p.Score), p.Decay)
		sc.ndist = grow(sc.ndist, n)
		e.distances(k, sc, sc.ndist, sc.newc, false)
		for i := range init {
			init[i] = stepDistance(sc.ndist[i], n)
		}
	case PolicyKnorm:
		for i := range init {
			init[i] = sc.knorm[i*p.KVHeads+h]
		}
	case PolicyRandom:
		step := s.layers[layer].steps
		for i := 0; i < m; i++ {
			t.score[i] = randomScore(p.Seed, s.id, layer, h, step, i)
		}
	case PolicyOracle:
		e.oracle(sc, t, h, entries, positions, init)
	}
}

// oracle adds this step's exact softmax attention (scale 1/sqrt(dim), causal
// inside the chunk, summed over the group's query heads) to the cached
// entries; scores hold minus the accumulated mass so that the largest score
// is the least attended entry.
func (e *Engine) oracle(sc *scratch, t *table, h int, entries []int, positions []int32, init []float32) {
	p := &e.P
	d, g, n := p.HeadDim, p.Group(), len(positions)
	scale := 1 / math.Sqrt(float64(d))
	m := len(entries)
	// One scratch buffer for both, so that a decode step allocates nothing.
	sc.acc = grow(sc.acc, 2*(m+n))
	gained, logits := sc.acc[:m+n], sc.acc[m+n:]
	for i := range gained {
		gained[i] = 0
	}
	dot := func(a, b []float32) float64 {
		var s float64
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return s
	}
	for tok := 0; tok < n; tok++ {
		for j := 0; j < g; j++ {
			qi := tok*p.QHeads + h*g + j
			qv := sc.qvec[qi*d : (qi+1)*d]
			mx := math.Inf(-1)
			cnt := m + tok + 1
			for i, slot := range entries {
				logits[i] = dot(qv, t.keys[slot*d:(slot+1)*d]) * scale
			}
			for u := 0; u <= tok; u++ {
				ki := u*p.KVHeads + h
				logits[m+u] = dot(qv, sc.kvec[ki*d:(ki+1)*d]) * scale
			}
			for i := 0; i < cnt; i++ {
				mx = math.Max(mx, logits[i])
			}
			var z float64
			for i := 0; i < cnt; i++ {
				logits[i] = math.Exp(logits[i] - mx)
				z += logits[i]
			}
			for i := 0; i < cnt; i++ {
				gained[i] += logits[i] / z
			}
		}
	}
	for i, slot := range entries {
		t.score[slot] -= float32(gained[i])
	}
	for u := range init {
		init[u] = -float32(gained[m+u])
	}
}

// pickVictims returns up to need indices of entries with positions in
// [lo, hi): the largest scores first, ties to the lowest index; for the
// sink+recent policy, the lowest positions.
func (e *Engine) pickVictims(k *simd.Kernels, sc *scratch, score []float32, pos []int32, lo, hi int32, need int) []int {
	if need <= 0 {
		return nil
	}
	if need == 1 && e.P.Policy != PolicySinkRecent {
		v := k.ArgmaxIn(score, pos, lo, hi)
		if v < 0 {
			return nil
		}
		sc.cand = append(sc.cand[:0], v)
		return sc.cand
	}
	sc.cand = sc.cand[:0]
	for i, q := range pos {
		if q >= lo && q < hi {
			sc.cand = append(sc.cand, i)
		}
	}
	c := sc.cand
	// slices.SortFunc, not sort.Slice: sort.Slice allocates on every call,
	// and a sink+recent decode step comes here for every KV head. Both
	// orders are total (positions are distinct; equal scores go to the lower
	// index), so the result is the same.
	if e.P.Policy == PolicySinkRecent {
		slices.SortFunc(c, func(a, b int) int { return cmp.Compare(pos[a], pos[b]) })
	} else {
		slices.SortFunc(c, func(a, b int) int {
			if sa, sb := score[a], score[b]; sa != sb {
				if sa > sb {
					return -1
				}
				return 1
			}
			return cmp.Compare(a, b)
		})
	}
	if len(c) > need {
		c = c[:need]
	}
	return c
}

// countInUpTo counts positions in [lo, hi), stopping at limit: the
// chunk-fits check only needs to know whether enough entries are
// evictable, and in a decode step one is enough.
func countInUpTo(pos []int32, lo, hi int32, limit int) int {
	n := 0
	for _, q := range pos {
		if q >= lo && q < hi {
			if n++; n >= limit {
				break
			}
		}
	}
	return n
}

// noFusedSteps makes every step take rescore and pickVictims: the tests
// compare the fused steps against them.
var noFusedSteps = false

// fusedVictim runs rescore and pickVictims of a hash-policy step that
// evicts exactly one entry of t as one kernel: simd Farthest for the
// instant score (the codes are read once, nothing is written), simd
// ScoreStep for the others (Hamming, Update and ArgmaxIn in L1-sized
// blocks: the codes, scores and counts are read once). Neither reads the
// positions: the guard names the protected slots. It returns
// ok = false, having changed no state, when the step does not qualify: another
// policy, free slots or several victims, or more probe words than code
// bits (distances then counts bits).
func (e *Engine) fusedVictim(k *simd.Kernels, s *Sequence, h int, t *table, n, free int, positions []int32, init []float32, hi int32) (victim int, ok bool) {
	p := &e.P
	if p.Policy != PolicyHash || p.streaming() || n-free != 1 || noFusedSteps {
		return 0, false
	}
	sc := &s.sc
	e.gatherProbes(sc, h, n)
	if len(sc.probes) > p.Bits {
		return 0, false
	}
	m := t.used
	codes := t.codes[:p.codeWords(m)]
	// One victim means some position is in [lo, hi), so hi > lo as the
	// guard's skip list needs; the slots outside are named by the guard.
	sc.skip = t.skip(sc.skip, hi)
	if p.Score == ScoreInstant {
		// An instant score is this step's distance times 1/n, so the
		// farthest code is the victim and no score needs writing: the
		// stored scores of an instant table are rewritten by every step
		// that reads them (rescore), and read by nothing else.
		victim = k.Farthest(codes, p.Bits, sc.probes, m, sc.skip)
	} else {
		victim = k.ScoreStep(t.score[:m], t.count[:m], codes, p.Bits, sc.probes, uint32(n), int(p.Score), p.Decay, sc.skip)
	}
	sc.ndist = grow(sc.ndist, n)
	e.distances(k, sc, sc.ndist, sc.newc, false)
	for i := range init {
		init[i] = stepDistance(sc.ndist[i], n)
	}
	return victim, true
}

// window returns the evictable position range [lo, hi) when t is the newest
// position: positions below n_sink and at or after t - n_recent are kept.
func (e *Engine) window(t int32) (lo, hi int32) {
	lo = int32(e.P.Sinks)
	h := int64(t) - int64(e.P.Recent)
	if h < int64(lo) {
		h = int64(lo)
	}
	return lo, int32(h)
}

// checkPositions verifies that positions are >= 0, strictly increasing and
// after last, the last one `verb` this layer (the message is built only on
// failure: this runs on every step).
func checkPositions(positions []int32, last int32, verb string) error {
	prev := last
	for i, q := range positions {
		if q < 0 {
			return errf(CodePosition, "positions[%d] = %d is negative", i, q)
		}
		if q <= prev {
			if i == 0 {
				return errf(CodePosition, "positions[0] = %d is not after position %d, the last one %s this layer", q, last, verb)
			}
			return errf(CodePosition, "positions[%d] = %d is not after positions[%d] = %d: positions must strictly increase", i, q, i-1, prev)
		}
		prev = q
	}
	return nil
}

// gather fills dst with the positions-per-slot array when the oracle needs a
// list of entries.
func entriesWhere(dst []int, n int, ok func(i int) bool) []int {
	dst = dst[:0]
	for i := 0; i < n; i++ {
		if ok(i) {
			dst = append(dst, i)
		}
	}
	return dst
}
