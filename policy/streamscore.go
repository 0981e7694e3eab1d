package policy

import (
	"math"
	"math/bits"

	"github.com/hashevict/hashevict/simd"
)

// Streaming options of the hash policy (issue 11, item 3). When the cache is
// capped while a prompt is read, the paper's score (the distance to the
// current probe, largest evicted) drops whatever the current chunk does not
// look at, although a later question may. Two named options change what a
// step scores; both leave the paper's policy the default (zero values):
//
//   - EstimateLogit: a slot's step score is minus its estimated attention
//     logit, summed over the probes and divided by the chunk's tokens as
//     the distance is:  -Σ_p ‖q_p‖·‖k‖·cos(π·ham(p, k)/b) / (n·√d).
//     cos(π·ham/b) estimates the angle's cosine (SimHash), and the norms
//     restore what the angle alone ignores: a large key is attended even at
//     a wide angle. The smallest estimated logit is evicted.
//   - Redundancy λ > 0: a term that grows as a slot's code comes closer to
//     the majority code of the head's candidates (bit j is set when more
//     than half of the codes have it), so that repeated content goes first
//     and what is unlike the rest stays (KeyDiff's idea, with codes). With
//     the distance estimate the term is λ·G·(b − r), G the probes per token
//     and r the slot's distance to the majority: one bit closer to the
//     majority weighs as much as one bit farther from every probe of a
//     token. With the logit estimate it is λ·(Σ_p ‖q_p‖/n)·k̄·cos(π·r/b)/√d,
//     k̄ the candidates' mean key norm: the logit a typical key would get
//     from a query aimed at the majority with the probes' norm.
//
// The step score (estimate plus term) is folded over time as the score
// parameter says (instant, accumulated, decayed), on the float score, and
// token mode sums it over layers and heads as it sums the distances.

// The scratch of a streaming step, kept in the sequence's scratch.
type streamScratch struct {
	step  []float32 // the step score of each slot
	sum   []float64 // the logit sums of each slot
	hd    []uint32  // one probe's (or the majority's) distances
	pnorm []float32 // the norms of head h's probes, in sc.probes' order
	ones  []uint32  // bit counts over the candidates
	maj   []uint64  // the majority code
	cosb  []float64 // cos(π·d/b) for d = 0..b
	code  []uint64  // one code in its wide form
}

// streamRescore is rescore's hash case with a streaming option: it folds
// this step's score into the first m slots of t and writes the new tokens'
// initial scores (their step scores) into init. gatherProbes has filled
// sc.probes and sc.newc for head h. In token mode entries lists the slots
// holding a code this layer stored; slot mode holds codes in every slot
// below m.
func (e *Engine) streamRescore(k *simd.Kernels, sc *scratch, t *table, h, m int, entries []int, init []float32) {
	p := &e.P
	n := len(init)
	ss := &sc.stream
	codes := t.codes[:p.codeWords(m)]
	ss.step = grow(ss.step, m)
	if p.Estimate == EstimateLogit {
		e.probeNorms(sc, h, n)
		e.logitSteps(k, sc, ss.step, codes, true, t.keys[:m])
		e.logitSteps(k, sc, init, sc.newc, false, sc.knorm[h:])
	} else {
		sc.dist = grow(sc.dist, m)
		e.distances(k, sc, sc.dist, codes, true)
		for i, d := range sc.dist {
			ss.step[i] = stepDistance(d, n)
		}
		sc.ndist = grow(sc.ndist, n)
		e.distances(k, sc, sc.ndist, sc.newc, false)
		for i := range init {
			init[i] = stepDistance(sc.ndist[i], n)
		}
	}
	if p.Redundancy != 0 {
		e.addRedundancy(k, sc, t, h, m, entries, init)
	}
	fold(t.score[:m], t.count[:m], ss.step, p.Score, p.Decay)
}

// probeNorms fills sc.stream.pnorm with the norms of head h's probes, in
// the order gatherProbes put them: [token][query head of the group] for the
// query probe, [token] for the key probe.
func (e *Engine) probeNorms(sc *scratch, h, n int) {
	p := &e.P
	ss := &sc.stream
	if p.Probe == ProbeKey {
		ss.pnorm = grow(ss.pnorm, n)
		for t := 0; t < n; t++ {
			ss.pnorm[t] = sc.knorm[t*p.KVHeads+h]
		}
		return
	}
	g := p.Group()
	ss.pnorm = grow(ss.pnorm, n*g)
	for t := 0; t < n; t++ {
		copy(ss.pnorm[t*g:(t+1)*g], sc.qnorm[t*p.QHeads+h*g:t*p.QHeads+(h+1)*g])
	}
}

// cosines returns cos(π·d/b) for d = 0..b.
func (e *Engine) cosines(ss *streamScratch) []float64 {
	b := e.P.Bits
	if len(ss.cosb) != b+1 {
		ss.cosb = make([]float64, b+1)
		for d := range ss.cosb {
			ss.cosb[d] = math.Cos(math.Pi * float64(d) / float64(b))
		}
	}
	return ss.cosb
}

// logitSteps sets dst[i] to minus the estimated logit of code i of codes (a
// table when table is true, wide codes otherwise) against the probes, with
// key norm norms[i*stride] (stride 1 for a table's norms, n_kv_heads for the
// step's keys, whose head is norms' first element).
func (e *Engine) logitSteps(k *simd.Kernels, sc *scratch, dst []float32, codes []uint64, table bool, norms []float32) {
	p := &e.P
	ss := &sc.stream
	W := p.Words()
	m := len(dst)
	stride := 1
	if !table {
		stride = p.KVHeads
	}
	cosb := e.cosines(ss)
	ss.sum = grow(ss.sum, m)
	clear(ss.sum)
	ss.hd = grow(ss.hd, m)
	packed := table && simd.Narrow(p.Bits)
	for j, nu := range ss.pnorm {
		pr := sc.probes[j*W : (j+1)*W]
		if packed {
			k.HammingNarrow(ss.hd, codes, p.Bits, pr)
		} else {
			k.Hamming(ss.hd, codes, W, pr)
		}
		w := float64(nu)
		for i, d := range ss.hd {
			ss.sum[i] += w * cosb[d]
		}
	}
	// The chunk's tokens are averaged as the distance's 1/n averages them.
	n := len(ss.pnorm) / p.probesPerToken()
	scale := 1 / (float64(n) * math.Sqrt(float64(p.HeadDim)))
	for i := range dst {
		dst[i] = float32(-ss.sum[i] * float64(norms[i*stride]) * scale)
	}
}

// probesPerToken is G: the probes one token of the step gives a KV head.
func (p *Params) probesPerToken() int {
	if p.Probe == ProbeKey {
		return 1
	}
	return p.Group()
}

// addRedundancy adds the redundancy term to sc.stream.step (the m slots of
// t) and to init (the step's new tokens), from the majority code of the
// candidates: the entries (every slot below m in slot mode) and the new
// tokens.
func (e *Engine) addRedundancy(k *simd.Kernels, sc *scratch, t *table, h, m int, entries []int, init []float32) {
	p := &e.P
	ss := &sc.stream
	W, b, n := p.Words(), p.Bits, len(init)
	ss.ones = grow(ss.ones, b)
	clear(ss.ones)
	ss.code = grow(ss.code, W)
	count := func(c []uint64) {
		for w, x := range c {
			for x != 0 {
				ss.ones[w*64+bits.TrailingZeros64(x)]++
				x &= x - 1
			}
		}
	}
	total := n
	var normSum float64
	if p.Mode == ModeSlot {
		for i := 0; i < m; i++ {
			simd.GetCode(ss.code, t.codes, b, i)
			count(ss.code[:W])
		}
		total += m
		if p.Estimate == EstimateLogit {
			for _, x := range t.keys[:m] {
				normSum += float64(x)
			}
		}
	} else {
		for _, i := range entries {
			simd.GetCode(ss.code, t.codes, b, i)
			count(ss.code[:W])
		}
		total += len(entries)
		if p.Estimate == EstimateLogit {
			for _, i := range entries {
				normSum += float64(t.keys[i])
			}
		}
	}
	for tok := 0; tok < n; tok++ {
		count(sc.newc[tok*W : (tok+1)*W])
		if p.Estimate == EstimateLogit {
			normSum += float64(sc.knorm[tok*p.KVHeads+h])
		}
	}
	ss.maj = grow(ss.maj, W)
	clear(ss.maj)
	for j, c := range ss.ones {
		if 2*int(c) > total {
			ss.maj[j/64] |= 1 << (j % 64)
		}
	}
	// term(r) is the redundancy term of a code at distance r from the
	// majority; it decreases with r.
	lambda := float64(p.Redundancy)
	var term func(r uint32) float32
	if p.Estimate == EstimateLogit {
		var qsum float64
		for _, x := range ss.pnorm {
			qsum += float64(x)
		}
		cosb := e.cosines(ss)
		c := lambda * qsum / float64(n) * (normSum / float64(total)) / math.Sqrt(float64(p.HeadDim))
		term = func(r uint32) float32 { return float32(c * cosb[r]) }
	} else {
		c := lambda * float64(p.probesPerToken())
		term = func(r uint32) float32 { return float32(c * float64(b-int(r))) }
	}
	ss.hd = grow(ss.hd, max(m, n))
	if simd.Narrow(b) {
		k.HammingNarrow(ss.hd[:m], t.codes[:p.codeWords(m)], b, ss.maj)
	} else {
		k.Hamming(ss.hd[:m], t.codes[:p.codeWords(m)], W, ss.maj)
	}
	for i, r := range ss.hd[:m] {
		ss.step[i] += term(r)
	}
	k.Hamming(ss.hd[:n], sc.newc[:n*W], W, ss.maj)
	for i, r := range ss.hd[:n] {
		init[i] += term(r)
	}
}

// fold folds step scores into scores as updateGeneric folds step distances:
// instant replaces, accumulated keeps the running mean over count steps,
// decayed the exponential moving average.
func fold(score []float32, count []uint32, step []float32, mode Score, decay float32) {
	switch mode {
	case ScoreInstant:
		copy(score, step)
	case ScoreAccumulated:
		for i, x := range step {
			c := count[i] + 1
			count[i] = c
			score[i] += (x - score[i]) / float32(c)
		}
	case ScoreDecayed:
		keep := 1 - decay
		for i, x := range step {
			score[i] = decay*score[i] + keep*x
		}
	}
}
