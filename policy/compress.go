package policy

import (
	"fmt"
	"math"
	"slices"

	"github.com/hashevict/hashevict/simd"
)

// Compress after prefill (SnapKV's setting): the whole prompt is read
// without eviction, then every prompt position is scored once from the hash
// codes of the prompt's last queries (the "window", which ends with the
// question), the scores are pooled along the positions, and the budget is
// kept. Decode steps then evict per step as usual.

// CompressForm is how a window probe's Hamming distance d to a key becomes
// an estimate of the attention the key receives.
type CompressForm int32

const (
	// CompressCosine estimates the probe-key cosine as cos(pi*d/b) (the
	// expectation of d is b*angle/pi) and averages it over the probes.
	CompressCosine CompressForm = 0
	// CompressDistance averages -d over the probes: the decode step's own
	// score, applied to the window.
	CompressDistance CompressForm = 1
	// CompressSoftmax estimates each probe's attention over the keys it
	// scores: a softmax of tau*cos(pi*d/b) over those keys (tau: the
	// engine's compress temperature), averaged over the probes, as SnapKV
	// averages the window's exact attention. Unlike the mean cosine, a key
	// that one probe attends to sharply stays, however far it is from the
	// others.
	CompressSoftmax CompressForm = 2

	// Flags OR'ed into a form (since 0.6.0).

	// CompressLocal replaces each estimate, before the pool, by its excess
	// over the mean estimate of the candidates within compressLocalRadius
	// of it on either side (in position order, itself included). Where
	// post-RoPE keys near the window resemble its queries more than older
	// keys do, whatever they say, a compression keeps mostly the newest
	// part of the prompt (SmolLM2: 90 % of the last quarter and 27 % of
	// the first at keep 0.5; not Gemma 3, docs/eval/README.md); with it a
	// position counts by how much it stands out from its neighbourhood.
	CompressLocal CompressForm = 0x100
	// CompressTrailing makes the max pool reach pool-1 candidates back and
	// pool/2 forward instead of pool/2 either way: what follows the words
	// the window repeats (a fact's value after its subject) is kept with
	// them.
	CompressTrailing CompressForm = 0x200

	compressBaseMask = 0xff
	compressFlags    = CompressLocal | CompressTrailing
)

// compressLocalRadius is CompressLocal's neighbourhood on either side,
// chosen on the development text (docs/eval/README.md).
const compressLocalRadius = 64

// base is the form without its flags.
func (f CompressForm) base() CompressForm { return f & compressBaseMask }

// compressTau is the softmax temperature of CompressSoftmax: hash codes
// carry no norms to scale the estimated cosine by, so it is one constant,
// chosen on the development text (docs/eval/README.md).
const compressTau = 8.0

// compressWeights is the value of each distance 0..b under form: the
// estimate adds weights[d] per probe (for the softmax, divided by the sum of
// the probe's weights over the keys).
func compressWeights(form CompressForm, bits int) []float64 {
	w := make([]float64, bits+1)
	for d := range w {
		c := math.Cos(math.Pi * float64(d) / float64(bits))
		switch form.base() {
		case CompressCosine:
			w[d] = c
		case CompressDistance:
			w[d] = -float64(d)
		case CompressSoftmax:
			// The unnormalised softmax term; exp(tau*(c - 1)) <= 1 cannot
			// overflow, and the largest logit any key can have is the
			// reference.
			w[d] = math.Exp(compressTau * (c - 1))
		}
	}
	return w
}

// toDistance maps a pooled estimate back to the distance scale of the
// decode step's scores (larger: evicted first), so that scores stored by a
// compression and by later steps compare: b*acos(a)/pi for the cosine,
// -a for the distance.
// For the softmax, -a: the estimated attention, negated.
func toDistance(form CompressForm, bits int, a float64) float32 {
	if form.base() == CompressCosine {
		return float32(float64(bits) * math.Acos(max(-1, min(1, a))) / math.Pi)
	}
	return float32(-a)
}

// windowScore is the score of the window's own positions: the least any
// position can have under form, so that they are dropped last.
func windowScore(form CompressForm) float32 {
	if form.base() == CompressSoftmax {
		return -1
	}
	return 0
}

// shapeEstimates applies form's flags and the max pool to one head's
// estimates est; order lists the candidates by position.
func shapeEstimates(est []float64, order []int, pool int, form CompressForm, tmp []float64) {
	tmp = tmp[:len(order)]
	if form&CompressLocal != 0 {
		// A plain sum per neighbourhood, in position order, which the Go
		// and C references (compress_test.go, tests/c/test_compress.c)
		// repeat operation for operation.
		for i := range order {
			lo, hi := max(0, i-compressLocalRadius), min(len(order)-1, i+compressLocalRadius)
			var sum float64
			for j := lo; j <= hi; j++ {
				sum += est[order[j]]
			}
			tmp[i] = est[order[i]] - sum/float64(hi-lo+1)
		}
		for i, c := range order {
			est[c] = tmp[i]
		}
	}
	back, fwd := pool/2, pool/2
	if form&CompressTrailing != 0 && pool > 1 {
		back = pool - 1
	}
	maxPool(est, order, back, fwd, tmp)
}

// maxPool replaces est[order[i]] by the maximum over order[i-back..i+fwd]:
// a key next to an attended one is kept with it (SnapKV keeps whole
// phrases, not isolated tokens). order lists the candidates by position.
func maxPool(est []float64, order []int, back, fwd int, tmp []float64) {
	if back <= 0 && fwd <= 0 {
		return
	}
	tmp = tmp[:len(order)]
	for i := range order {
		m := math.Inf(-1)
		for j := max(0, i-back); j <= min(len(order)-1, i+fwd); j++ {
			m = max(m, est[order[j]])
		}
		tmp[i] = m
	}
	for i, c := range order {
		est[c] = tmp[i]
	}
}

func checkCompressArgs(form CompressForm, pool int) error {
	if b := form.base(); b != CompressCosine && b != CompressDistance && b != CompressSoftmax || form&^(compressBaseMask|compressFlags) != 0 {
		return errf(CodeInvalidArgument, "score form %#x is not COSINE (0), DISTANCE (1) or SOFTMAX (2), with or without the flags LOCAL (0x100) and TRAILING (0x200)", int32(form))
	}
	if pool < 0 || pool > 1024 {
		return errf(CodeInvalidArgument, "pool kernel %d is outside [0, 1024]", pool)
	}
	return nil
}

// hashRows hashes rows [tokens][heads] of x for layer into dst (wide codes,
// [token][head][words]); what names x in errors.
func (e *Engine) hashRows(k *simd.Kernels, layer int, x *Rows, what string, dst []uint64, buf []float32) error {
	W := e.P.Words()
	for t := 0; t < x.Tokens; t++ {
		for h := 0; h < x.Heads; h++ {
			row, ok := x.row(k, t, h, buf)
			if !ok {
				return errf(CodeNonFinite, "%s row of token %d, head %d holds NaN or Inf", what, t, h)
			}
			i := t*x.Heads + h
			k.Hash(dst[i*W:(i+1)*W], row, e.proj[layer])
		}
	}
	return nil
}

// codeSet is one run of codes a window probe is compared with: a table
// (packed when narrow) or wide codes, scored into est[off:off+n]. live,
// when not nil, lists the entries that hold a key (a token-mode table has
// free slots): the softmax runs over them only.
type codeSet struct {
	codes []uint64
	n     int
	table bool
	off   int
	live  []int
}

// windowEstimate adds, for every code of sets, each probe's estimate of
// the code's key (see CompressForm) into est; probes holds wide codes, W
// words each. With the softmax form a probe's estimates are normalised over
// all the sets together.
func (e *Engine) windowEstimate(k *simd.Kernels, sc *scratch, est []float64, sets []codeSet, probes []uint64, form CompressForm) {
	W := e.P.Words()
	m := 0
	for _, cs := range sets {
		m = max(m, cs.off+cs.n)
	}
	if m == 0 {
		return
	}
	weights := compressWeights(form, e.P.Bits)
	sc.dist = grow(sc.dist, m)
	for p := 0; p+W <= len(probes); p += W {
		sc.probes = append(sc.probes[:0], probes[p:p+W]...)
		for _, cs := range sets {
			if cs.n > 0 {
				e.distances(k, sc, sc.dist[cs.off:cs.off+cs.n], cs.codes, cs.table)
			}
		}
		if form.base() == CompressSoftmax {
			var z float64
			for _, cs := range sets {
				if cs.live != nil {
					for _, i := range cs.live {
						z += weights[sc.dist[cs.off+i]]
					}
					continue
				}
				for _, d := range sc.dist[cs.off : cs.off+cs.n] {
					z += weights[d]
				}
			}
			for _, cs := range sets {
				for i, d := range sc.dist[cs.off : cs.off+cs.n] {
					est[cs.off+i] += weights[d] / z
				}
			}
			continue
		}
		for _, cs := range sets {
			for i, d := range sc.dist[cs.off : cs.off+cs.n] {
				est[cs.off+i] += weights[d]
			}
		}
	}
}

// Compress places a chunk of n tokens (the prompt, or its rest) into layer
// `layer` of slot-mode sequence id, keeping per KV head at most budget of
// the slots already held and the chunk's tokens together: those with the
// best window score, and every position below n_sink, at or after
// newest - n_recent, or among the chunk's last nWindow (see
// hashevict_compress). outSlots ([token][kv head]) receives each token's
// slot, or -1 when the token is not kept. qwin holds the queries of the
// chunk's last nWindow tokens (unused, and may be nil, with the key probe or
// a policy other than hash).
func (e *Engine) Compress(id, layer int, qwin, kr *Rows, positions []int32, nWindow, pool int, form CompressForm, outSlots []int32) error {
	p := &e.P
	n := len(positions)
	if err := e.checkMode(ModeSlot, "hashevict_compress"); err != nil {
		return err
	}
	if err := e.checkLayer(layer); err != nil {
		return err
	}
	if err := checkCompressArgs(form, pool); err != nil {
		return err
	}
	if p.Policy == PolicyOracle {
		return errf(CodeUnsupported, "hashevict_compress does not run the oracle policy (its scores are exact attention over the cached keys; use hashevict_place)")
	}
	if p.Estimate == EstimateLogit {
		return errf(CodeUnsupported, "hashevict_compress keeps no key norms, which later steps of the logit estimate read (use hashevict_place, or the distance estimate)")
	}
	if n < 1 {
		return errf(CodeInvalidArgument, "n_tokens = %d, want at least 1", n)
	}
	if nWindow < 1 || nWindow > n {
		return errf(CodeInvalidArgument, "n_window = %d is outside [1, n_tokens = %d]", nWindow, n)
	}
	if len(outSlots) < n*p.KVHeads {
		return errf(CodeInvalidArgument, "out_slots must hold n_tokens*n_kv_heads = %d entries", n*p.KVHeads)
	}
	if kr == nil {
		return errf(CodeInvalidArgument, "k is NULL: the chunk's keys are needed")
	}
	if err := kr.check("k", p.HeadDim, p.KVHeads, n); err != nil {
		return err
	}
	useQ := p.Policy == PolicyHash && p.Probe == ProbeQuery
	if useQ {
		if qwin == nil {
			return errf(CodeInvalidArgument, "q_window is NULL but the hash policy with the query probe scores from the window's queries")
		}
		if err := qwin.check("q_window", p.HeadDim, p.QHeads, nWindow); err != nil {
			return err
		}
	}
	s, err := e.seq(id)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	ls := &s.layers[layer]
	if err := checkPositions(positions, ls.lastPos, "placed in"); err != nil {
		return err
	}
	if err := e.fitScratch(s, n); err != nil {
		return err
	}
	// The decisions of every head are made before any is applied, so that a
	// head that cannot keep its protected positions changes nothing.
	c := p.Budget + n
	need := satMul(uint64(c), uint64(p.KVHeads), 8+8+1)
	need = satAdd(need, satMul(uint64(c), 8+8+8+4), satMul(uint64(nWindow), uint64(p.Group()), uint64(p.Words()), 8))
	if err := e.mem.reserve(MemHost, need, fmt.Sprintf("the compression of a chunk of %d tokens (sequence %d, layer %d)", n, id, layer)); err != nil {
		return err
	}
	defer e.mem.release(MemHost, need)

	k := simd.ActiveSet()
	sc := &s.sc
	W := p.Words()
	sc.row = grow(sc.row, p.HeadDim)
	sc.kcodes = grow(sc.kcodes, n*p.KVHeads*W)
	if p.Policy == PolicyHash {
		if err := e.hashRows(k, layer, kr, "k", sc.kcodes, sc.row); err != nil {
			return err
		}
	}
	if p.Policy == PolicyKnorm {
		sc.knorm = grow(sc.knorm, n*p.KVHeads)
		for t := 0; t < n; t++ {
			for h := 0; h < p.KVHeads; h++ {
				x, ok := kr.row(k, t, h, sc.row)
				if !ok {
					return errf(CodeNonFinite, "k row of token %d, head %d holds NaN or Inf", t, h)
				}
				var ss float64
				for _, v := range x {
					ss += float64(v) * float64(v)
				}
				sc.knorm[t*p.KVHeads+h] = float32(math.Sqrt(ss))
			}
		}
	} else if p.Policy != PolicyHash {
		// The keys are not read, but a chunk's NaN is refused as place
		// refuses it for every policy that reads nothing else.
		for t := 0; t < n; t++ {
			for h := 0; h < p.KVHeads; h++ {
				if _, ok := kr.row(k, t, h, sc.row); !ok {
					return errf(CodeNonFinite, "k row of token %d, head %d holds NaN or Inf", t, h)
				}
			}
		}
	}
	if useQ {
		sc.qcodes = grow(sc.qcodes, nWindow*p.QHeads*W)
		if err := e.hashRows(k, layer, qwin, "q_window", sc.qcodes, sc.row); err != nil {
			return err
		}
	}

	newest := positions[n-1]
	lo, hi := e.window(newest)
	winFrom := positions[n-nWindow]
	g := p.Group()
	score := make([]float32, p.KVHeads*c) // the evict score of each candidate
	drop := make([]bool, p.KVHeads*c)
	est := make([]float64, c)
	tmp := make([]float64, c)
	order := make([]int, c)
	probes := make([]uint64, 0, nWindow*g*W)
	posOf := func(t *table, i int) int32 {
		if i < t.used {
			return t.pos[i]
		}
		return positions[i-t.used]
	}
	for h := range ls.heads {
		t := &ls.heads[h]
		m := t.used + n
		sh, dh := score[h*c:h*c+m], drop[h*c:h*c+m]
		switch p.Policy {
		case PolicyHash:
			e2 := est[:m]
			clear(e2)
			sc.newc = grow(sc.newc, n*W)
			newc := sc.newc
			for tok := 0; tok < n; tok++ {
				i := tok*p.KVHeads + h
				copy(newc[tok*W:(tok+1)*W], sc.kcodes[i*W:(i+1)*W])
			}
			if useQ {
				probes = probes[:0]
				for tok := 0; tok < nWindow; tok++ {
					src := (tok*p.QHeads + h*g) * W
					probes = append(probes, sc.qcodes[src:src+g*W]...)
				}
			} else {
				probes = newc[(n-nWindow)*W:]
			}
			e.windowEstimate(k, sc, e2, []codeSet{{t.codes[:p.codeWords(t.used)], t.used, true, 0, nil}, {newc, n, false, t.used, nil}}, probes, form)
			np := float64(len(probes) / W)
			for i := range e2 {
				e2[i] /= np
			}
			o := order[:m]
			for i := range o {
				o[i] = i
			}
			// Held positions all precede the chunk's; only they need sorting.
			slices.SortFunc(o[:t.used], func(a, b int) int { return int(t.pos[a]) - int(t.pos[b]) })
			shapeEstimates(e2, o, pool, form, tmp)
			for i := range sh {
				sh[i] = toDistance(form, p.Bits, e2[i])
			}
		case PolicyKnorm:
			copy(sh, t.score[:t.used])
			for tok := 0; tok < n; tok++ {
				sh[t.used+tok] = sc.knorm[tok*p.KVHeads+h]
			}
		case PolicySinkRecent:
			for i := range sh {
				sh[i] = -float32(posOf(t, i))
			}
		case PolicyRandom:
			for i := range sh {
				sh[i] = randomScore(p.Seed, s.id, layer, h, ls.steps, i)
			}
		}
		excess := m - p.Budget
		clear(dh)
		if excess <= 0 {
			continue
		}
		cand := order[:0]
		for i := 0; i < m; i++ {
			if q := posOf(t, i); q >= lo && q < hi && q < winFrom {
				cand = append(cand, i)
			}
		}
		if len(cand) < excess {
			return errf(CodeChunkTooLarge, "kv head %d of layer %d cannot keep the budget %d: %d held slots and %d new tokens, but only %d positions are neither sinks (n_sink %d), recent (n_recent %d) nor in the window (n_window %d)",
				h, layer, p.Budget, t.used, n, len(cand), p.Sinks, p.Recent, nWindow)
		}
		// The largest scores go; ties: the oldest position.
		slices.SortFunc(cand, func(a, b int) int {
			if sh[a] != sh[b] {
				if sh[a] > sh[b] {
					return -1
				}
				return 1
			}
			return int(posOf(t, a)) - int(posOf(t, b))
		})
		for _, i := range cand[:excess] {
			dh[i] = true
		}
	}

	evicted, filled := 0, 0
	for h := range ls.heads {
		t := &ls.heads[h]
		used := t.used
		m := used + n
		sh, dh := score[h*c:h*c+m], drop[h*c:h*c+m]
		// Kept held entries restart from the compression's score, as if
		// stored by it (the knorm keeps its norms; the others never read it).
		if p.Policy == PolicyHash {
			for i := 0; i < used; i++ {
				if !dh[i] {
					t.score[i], t.count[i] = sh[i], 1
				}
			}
		}
		// Dropped held slots are refilled first (there are never more of
		// them than kept tokens: both sides of the budget), in slot order,
		// then free slots; tokens go in position order, so that the guard's
		// ring ends with the newest.
		freed := order[:0]
		for i := 0; i < used; i++ {
			if dh[i] {
				freed = append(freed, i)
			}
		}
		next := 0
		for tok := 0; tok < n; tok++ {
			if dh[used+tok] {
				outSlots[tok*p.KVHeads+h] = -1
				evicted++
				continue
			}
			var slot int
			if next < len(freed) {
				slot = freed[next]
				next++
				evicted++
			} else {
				slot = t.used
				t.used++
				filled++
			}
			init := sh[used+tok]
			e.store(s, t, slot, tok, h, positions[tok], init)
			outSlots[tok*p.KVHeads+h] = int32(slot)
		}
		if next != len(freed) {
			panic(fmt.Sprintf("compress: %d dropped slots of kv head %d were not refilled", len(freed)-next, h))
		}
	}
	ls.lastPos = newest
	ls.steps++
	e.countStep(s, n, evicted, filled)
	return nil
}

// CompressScores scores every position that layer `layer` of token-mode
// sequence id has observed from the window's queries, as Compress does
// per head, and stores the score as the position's per-head score of that
// layer; the window's own positions get score 0 (kept first). The caller
// then asks Evictions for the positions to drop (see
// hashevict_compress_score).
func (e *Engine) CompressScores(id, layer int, qwin *Rows, wpos []int32, pool int, form CompressForm) error {
	p := &e.P
	if err := e.checkMode(ModeToken, "hashevict_compress_score"); err != nil {
		return err
	}
	if err := e.checkLayer(layer); err != nil {
		return err
	}
	if err := checkCompressArgs(form, pool); err != nil {
		return err
	}
	if p.Policy != PolicyHash {
		return errf(CodeUnsupported, "hashevict_compress_score scores from hash codes; with policy %d the scores hashevict_evictions reads are the policy's own (call it directly)", p.Policy)
	}
	nw := len(wpos)
	if nw < 1 {
		return errf(CodeInvalidArgument, "n_window = %d, want at least 1", nw)
	}
	useQ := p.Probe == ProbeQuery
	if useQ {
		if qwin == nil {
			return errf(CodeInvalidArgument, "q_window is NULL but the query probe scores from the window's queries")
		}
		if err := qwin.check("q_window", p.HeadDim, p.QHeads, nw); err != nil {
			return err
		}
	}
	s, err := e.seq(id)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	ts := s.tok
	obs := ts.obs[layer]
	wslots := make([]int32, nw)
	for i, q := range wpos {
		slot, ok := ts.index[q]
		if !ok || !obs[slot] {
			return errf(CodePosition, "window position %d (window_positions[%d]) is not held and observed by layer %d", q, i, layer)
		}
		if i > 0 && q <= wpos[i-1] {
			return errf(CodePosition, "window_positions[%d] = %d is not after %d: window positions must strictly increase", i, q, wpos[i-1])
		}
		wslots[i] = slot
	}
	m := len(ts.pos)
	need := satAdd(satMul(uint64(m), 8+8+8+4), satMul(uint64(nw), uint64(p.QHeads+p.KVHeads), uint64(p.Words()), 8))
	if err := e.mem.reserve(MemHost, need, fmt.Sprintf("the compression scores of sequence %d, layer %d (%d slots)", id, layer, m)); err != nil {
		return err
	}
	defer e.mem.release(MemHost, need)

	k := simd.ActiveSet()
	sc := &s.sc
	W := p.Words()
	g := p.Group()
	var qcodes []uint64
	if useQ {
		qcodes = make([]uint64, nw*p.QHeads*W)
		buf := make([]float32, p.HeadDim)
		if err := e.hashRows(k, layer, qwin, "q_window", qcodes, buf); err != nil {
			return err
		}
	}
	// Fast one-token steps (tokenfast.go) left scores unwritten and a
	// running total that Evictions would rank by: the unwritten scores are
	// written now, so that no later write replaces these, and the total is
	// dropped, so that Evictions sums the scores written here.
	e.writeLateScores(k, s)
	ts.run.ok = false
	order := make([]int, 0, m)
	for slot, q := range ts.pos {
		if q >= 0 && obs[slot] {
			order = append(order, slot)
		}
	}
	slices.SortFunc(order, func(a, b int) int { return int(ts.pos[a]) - int(ts.pos[b]) })
	est := make([]float64, m)
	tmp := make([]float64, m)
	probes := make([]uint64, 0, nw*g*W)
	for h := range s.layers[layer].heads {
		t := &s.layers[layer].heads[h]
		probes = probes[:0]
		for i := 0; i < nw; i++ {
			if useQ {
				src := (i*p.QHeads + h*g) * W
				probes = append(probes, qcodes[src:src+g*W]...)
			} else {
				probes = append(probes, make([]uint64, W)...)
				simd.GetCode(probes[i*W:(i+1)*W], t.codes, p.Bits, int(wslots[i]))
			}
		}
		clear(est)
		e.windowEstimate(k, sc, est, []codeSet{{t.codes[:p.codeWords(m)], m, true, 0, order}}, probes, form)
		np := float64(len(probes) / W)
		for _, slot := range order {
			est[slot] /= np
		}
		shapeEstimates(est, order, pool, form, tmp)
		for _, slot := range order {
			t.score[slot], t.count[slot] = toDistance(form, p.Bits, est[slot]), 1
		}
		for _, slot := range wslots {
			t.score[slot] = windowScore(form)
		}
	}
	return nil
}
