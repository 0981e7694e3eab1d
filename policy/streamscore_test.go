package policy

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
)

// The streaming options are checked against a float64 model that computes
// every step score from the codes and the raw vectors' norms, straight from
// the definitions in streamscore.go, folds them in float64, and chooses
// victims from the float64 totals. The engine's choice must be optimal
// under the model up to rounding, and its stored scores must equal the
// model's up to rounding.

type refKey struct {
	code []uint64
	norm float64
}

// refStepScores returns the step score of every cached key, then of every
// fresh key, against probes (n tokens' worth).
func refStepScores(p *Params, cached, fresh []refKey, probes []refKey, n int) []float64 {
	all := append(append([]refKey{}, cached...), fresh...)
	b := float64(p.Bits)
	logit := p.Estimate == EstimateLogit
	out := make([]float64, len(all))
	for i, k := range all {
		var s float64
		for _, pr := range probes {
			d := float64(ham(k.code, pr.code))
			if logit {
				s -= pr.norm * k.norm * math.Cos(math.Pi*d/b)
			} else {
				s += d
			}
		}
		s /= float64(n)
		if logit {
			s /= math.Sqrt(float64(p.HeadDim))
		}
		out[i] = s
	}
	if p.Redundancy == 0 {
		return out
	}
	maj := make([]uint64, p.Words())
	for j := 0; j < p.Bits; j++ {
		c := 0
		for _, k := range all {
			c += int(k.code[j/64] >> (j % 64) & 1)
		}
		if 2*c > len(all) {
			maj[j/64] |= 1 << (j % 64)
		}
	}
	var qs, ks float64
	for _, pr := range probes {
		qs += pr.norm
	}
	for _, k := range all {
		ks += k.norm
	}
	lambda := float64(p.Redundancy)
	G := float64(len(probes) / n)
	for i, k := range all {
		r := float64(ham(k.code, maj))
		if logit {
			out[i] += lambda * qs / float64(n) * ks / float64(len(all)) / math.Sqrt(float64(p.HeadDim)) * math.Cos(math.Pi*r/b)
		} else {
			out[i] += lambda * G * (b - r)
		}
	}
	return out
}

// refFold folds step score x into (s, c) as the score mode says.
func refFold(mode Score, decay float64, s float64, c int, x float64) (float64, int) {
	switch mode {
	case ScoreAccumulated:
		c++
		return s + (x-s)/float64(c), c
	case ScoreDecayed:
		return decay*s + (1-decay)*x, c
	}
	return x, c
}

// scaledGauss is gauss with each row of dim scaled by a factor in [0.3, 3),
// so that the norms vary as much as the directions.
func scaledGauss(rng *rand.Rand, rows, dim int) []float32 {
	x := gauss(rng, rows*dim)
	for r := 0; r < rows; r++ {
		f := float32(0.3 + 2.7*rng.Float64())
		for i := r * dim; i < (r+1)*dim; i++ {
			x[i] *= f
		}
	}
	return x
}

// refChunk is KV head h's part of a chunk of n tokens in layer l: the new
// keys and the probes (the group's queries, or the keys with the key
// probe), each with its code and norm.
func refChunk(e *Engine, p *Params, l, h int, q, k []float32, n int) (newk, probes []refKey) {
	d, g := p.HeadDim, p.Group()
	for tok := 0; tok < n; tok++ {
		kx := k[(tok*p.KVHeads+h)*d:][:d]
		kk := refKey{code(e, l, kx), rowNorm(kx)}
		newk = append(newk, kk)
		if p.Probe == ProbeKey {
			probes = append(probes, kk)
			continue
		}
		for j := 0; j < g; j++ {
			qx := q[(tok*p.QHeads+h*g+j)*d:][:d]
			probes = append(probes, refKey{code(e, l, qx), rowNorm(qx)})
		}
	}
	return newk, probes
}

func rowNorm(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s)
}

// closeTo reports whether a and b agree up to float32 rounding of sums of
// terms as large as scale.
func closeTo(a, b, scale float64) bool { return math.Abs(a-b) <= 1e-4*(1+scale) }

// streamingVariants are the option combinations the model checks.
func streamingVariants() []Params {
	var out []Params
	for _, est := range []Estimate{EstimateDistance, EstimateLogit} {
		for _, red := range []float32{0, 0.5, 3} {
			if est == EstimateDistance && red == 0 {
				continue // the paper's policy: token_test and slot_test
			}
			for _, sc := range []Score{ScoreInstant, ScoreAccumulated, ScoreDecayed} {
				for _, probe := range []Probe{ProbeQuery, ProbeKey} {
					p := smallParams()
					p.Estimate, p.Redundancy, p.Score, p.Probe = est, red, sc, probe
					out = append(out, p)
				}
			}
		}
	}
	return out
}

func variantName(p Params) string {
	return fmt.Sprintf("est%d_red%v_score%d_probe%d_bits%d", p.Estimate, p.Redundancy, p.Score, p.Probe, p.Bits)
}

// TestStreamingTokenModeMatchesReference runs prefill chunks that evict and
// decode steps (which would take the fast step with the paper's policy) in
// token mode and compares every decision and every stored score with the
// float64 model.
func TestStreamingTokenModeMatchesReference(t *testing.T) {
	for _, base := range streamingVariants() {
		for _, bits := range []int{16, 64} {
			p := base
			p.Mode, p.Budget, p.Bits = ModeToken, 30, bits
			t.Run(variantName(p), func(t *testing.T) {
				evicted := runTokenReference(t, p, 40)
				if evicted < 40 {
					t.Fatalf("only %d evictions: the check is too weak", evicted)
				}
			})
		}
	}
}

type refPos struct {
	keys  [][]refKey  // layer -> head
	score [][]float64 // layer -> head
	count [][]int
}

func runTokenReference(t *testing.T, p Params, steps int) int {
	e := mustEngine(t, p)
	if err := e.AddSeq(0); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(p.Estimate)*7+uint64(p.Score), uint64(p.Bits)+uint64(p.Probe)))
	d := p.HeadDim
	held := map[int32]*refPos{}
	pos := int32(0)
	total := 0
	for step := 0; step < steps; step++ {
		n := 1
		if step < 8 {
			n = 8 // chunks that evict: every chunk after the fourth
		}
		positions := make([]int32, n)
		for i := range positions {
			positions[i] = pos
			pos++
		}
		cached := make([]int32, 0, len(held))
		for q := range held {
			cached = append(cached, q)
		}
		sort.Slice(cached, func(a, b int) bool { return cached[a] < cached[b] })
		fresh := make([]*refPos, n)
		for i := range fresh {
			fresh[i] = &refPos{keys: make([][]refKey, p.Layers), score: make([][]float64, p.Layers), count: make([][]int, p.Layers)}
		}
		for l := 0; l < p.Layers; l++ {
			q := scaledGauss(rng, n*p.QHeads, d)
			k := scaledGauss(rng, n*p.KVHeads, d)
			if err := e.Observe(0, l, f32Rows(q, n, p.QHeads, d), f32Rows(k, n, p.KVHeads, d), positions); err != nil {
				t.Fatal(err)
			}
			for i := range fresh {
				fresh[i].keys[l] = make([]refKey, p.KVHeads)
				fresh[i].score[l] = make([]float64, p.KVHeads)
				fresh[i].count[l] = make([]int, p.KVHeads)
			}
			for h := 0; h < p.KVHeads; h++ {
				var old []refKey
				newk, probes := refChunk(e, &p, l, h, q, k, n)
				for _, c := range cached {
					old = append(old, held[c].keys[l][h])
				}
				x := refStepScores(&p, old, newk, probes, n)
				for i, c := range cached {
					r := held[c]
					r.score[l][h], r.count[l][h] = refFold(p.Score, float64(p.Decay), r.score[l][h], r.count[l][h], x[i])
				}
				for i := range fresh {
					fresh[i].keys[l][h] = newk[i]
					fresh[i].score[l][h], fresh[i].count[l][h] = x[len(cached)+i], 1
				}
			}
		}
		for i, q := range positions {
			held[q] = fresh[i]
		}
		// The engine's scores before the evictions.
		s, err := e.seq(0)
		if err != nil {
			t.Fatal(err)
		}
		scale := 0.0
		for _, r := range held {
			for l := range r.score {
				for _, v := range r.score[l] {
					scale = max(scale, math.Abs(v))
				}
			}
		}
		for q, r := range held {
			slot := s.tok.index[q]
			for l := range r.score {
				for h, want := range r.score[l] {
					if got := float64(s.layers[l].heads[h].score[slot]); !closeTo(got, want, scale) {
						s.mu.Unlock()
						t.Fatalf("step %d: position %d layer %d head %d: score %v, model %v", step, q, l, h, got, want)
					}
				}
			}
		}
		s.mu.Unlock()
		// Candidates and their float64 totals.
		newest := pos - 1
		tot := map[int32]float64{}
		for q, r := range held {
			if q < int32(p.Sinks) || q >= newest-int32(p.Recent) {
				continue
			}
			var sum float64
			for l := range r.score {
				for _, v := range r.score[l] {
					sum += v
				}
			}
			tot[q] = sum
		}
		excess := len(held) - p.Budget
		out := make([]int32, 64)
		got, err := e.Evictions(0, out)
		if err != nil {
			t.Fatal(err)
		}
		if want := max(0, min(excess, len(tot))); got != want {
			t.Fatalf("step %d: %d evictions, want %d", step, got, want)
		}
		gone := map[int32]bool{}
		for _, q := range out[:got] {
			if _, ok := tot[q]; !ok {
				t.Fatalf("step %d: evicted %d, not a candidate", step, q)
			}
			gone[q] = true
		}
		tscale := scale * float64(p.Layers*p.KVHeads)
		for q := range gone {
			for c, v := range tot {
				if !gone[c] && v > tot[q] && !closeTo(v, tot[q], tscale) {
					t.Fatalf("step %d: evicted %d (model total %v) and kept %d (%v, larger)", step, q, tot[q], c, v)
				}
			}
			delete(held, q)
		}
		total += got
	}
	return total
}

// TestStreamingSlotModeMatchesReference is the same check per KV head in
// slot mode (hashevict_place): every victim is a largest model score among
// the unprotected slots, and every stored score is the model's.
func TestStreamingSlotModeMatchesReference(t *testing.T) {
	for _, base := range streamingVariants() {
		p := base
		p.Budget = 24
		t.Run(variantName(p), func(t *testing.T) {
			e := mustEngine(t, p)
			if err := e.AddSeq(0); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(uint64(p.Estimate)*5+uint64(p.Score), uint64(p.Probe)))
			d := p.HeadDim
			type slotRef struct {
				key   refKey
				pos   int32
				score float64
				count int
			}
			tables := make([][][]slotRef, p.Layers) // layer -> head -> slot
			for l := range tables {
				tables[l] = make([][]slotRef, p.KVHeads)
			}
			pos, victims := int32(0), 0
			for step := 0; step < 40; step++ {
				n := 1
				if step < 6 {
					n = 8
				}
				positions := make([]int32, n)
				for i := range positions {
					positions[i] = pos
					pos++
				}
				lo, hi := e.window(positions[n-1])
				for l := 0; l < p.Layers; l++ {
					q := scaledGauss(rng, n*p.QHeads, d)
					k := scaledGauss(rng, n*p.KVHeads, d)
					slots := make([]int32, n*p.KVHeads)
					ev := make([]int32, n*p.KVHeads)
					if err := e.Place(0, l, f32Rows(q, n, p.QHeads, d), f32Rows(k, n, p.KVHeads, d), positions, slots, ev); err != nil {
						t.Fatal(err)
					}
					for h := 0; h < p.KVHeads; h++ {
						tb := tables[l][h]
						var old []refKey
						newk, probes := refChunk(e, &p, l, h, q, k, n)
						for _, r := range tb {
							old = append(old, r.key)
						}
						x := refStepScores(&p, old, newk, probes, n)
						scale := 0.0
						for i := range tb {
							tb[i].score, tb[i].count = refFold(p.Score, float64(p.Decay), tb[i].score, tb[i].count, x[i])
							scale = max(scale, math.Abs(tb[i].score))
						}
						// The victims, before the new tokens take their slots.
						gone := map[int]bool{}
						for tok := 0; tok < n; tok++ {
							if slot := int(slots[tok*p.KVHeads+h]); slot < len(tb) {
								gone[slot] = true
							}
						}
						for slot := range gone {
							victims++
							v := tb[slot]
							if v.pos < lo || v.pos >= hi {
								t.Fatalf("step %d layer %d head %d: evicted protected position %d", step, l, h, v.pos)
							}
							for i, c := range tb {
								if !gone[i] && c.pos >= lo && c.pos < hi && c.score > v.score && !closeTo(c.score, v.score, scale) {
									t.Fatalf("step %d layer %d head %d: evicted %d (model %v) and kept %d (%v, larger)", step, l, h, v.pos, v.score, c.pos, c.score)
								}
							}
						}
						for tok := 0; tok < n; tok++ {
							if slot := int(slots[tok*p.KVHeads+h]); slot >= len(tb) {
								tb = append(tb, slotRef{})
							}
						}
						for tok := 0; tok < n; tok++ {
							slot := int(slots[tok*p.KVHeads+h])
							tb[slot] = slotRef{key: newk[tok], pos: positions[tok], score: x[len(old)+tok], count: 1}
						}
						tables[l][h] = tb
					}
				}
				s, err := e.seq(0)
				if err != nil {
					t.Fatal(err)
				}
				for l := range tables {
					for h, tb := range tables[l] {
						scale := 0.0
						for _, r := range tb {
							scale = max(scale, math.Abs(r.score))
						}
						for i, r := range tb {
							got := float64(s.layers[l].heads[h].score[i])
							if s.layers[l].heads[h].pos[i] != r.pos || !closeTo(got, r.score, scale) {
								s.mu.Unlock()
								t.Fatalf("step %d layer %d head %d slot %d: position %d score %v, model %d %v", step, l, h, i, s.layers[l].heads[h].pos[i], got, r.pos, r.score)
							}
						}
					}
				}
				s.mu.Unlock()
			}
			if victims < 100 {
				t.Fatalf("only %d victims: the check is too weak", victims)
			}
		})
	}
}

// TestStreamingParamsRefused: every bad value of the new fields, and a
// streaming option with a policy whose score is not the hash's, is
// INVALID_PARAMS naming the field.
func TestStreamingParamsRefused(t *testing.T) {
	cases := []struct {
		name string
		set  func(p *Params)
		want string
	}{
		{"estimate 2", func(p *Params) { p.Estimate = 2 }, "estimate"},
		{"estimate -1", func(p *Params) { p.Estimate = -1 }, "estimate"},
		{"redundancy -1", func(p *Params) { p.Redundancy = -1 }, "redundancy"},
		{"redundancy NaN", func(p *Params) { p.Redundancy = float32(math.NaN()) }, "redundancy"},
		{"redundancy Inf", func(p *Params) { p.Redundancy = float32(math.Inf(1)) }, "redundancy"},
		{"redundancy too large", func(p *Params) { p.Redundancy = MaxRedundancy + 1 }, "redundancy"},
		{"logit with knorm", func(p *Params) { p.Policy, p.Estimate = PolicyKnorm, EstimateLogit }, "policy 2"},
		{"redundancy with sink+recent", func(p *Params) { p.Policy, p.Redundancy = PolicySinkRecent, 1 }, "policy 1"},
		{"logit with the oracle", func(p *Params) { p.Policy, p.Estimate = PolicyOracle, EstimateLogit }, "policy 4"},
	}
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		for _, c := range cases {
			p := smallParams()
			p.Mode = mode
			c.set(&p)
			_, err := NewEngine(p)
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != CodeInvalidParams || !strings.Contains(pe.Msg, c.want) {
				t.Errorf("mode %d, %s: %v, want INVALID_PARAMS naming %q", mode, c.name, err, c.want)
			}
		}
	}
	// The bounds themselves are accepted.
	for _, red := range []float32{0, MaxRedundancy} {
		p := smallParams()
		p.Estimate, p.Redundancy = EstimateLogit, red
		mustEngine(t, p)
	}
}

// placeOne places one token (query q, key k) at pos in layer 0 of sequence 0
// of a one-head engine and returns the position it evicted (-1: none).
func placeOne(t *testing.T, e *Engine, q, k []float32, pos int32) int32 {
	t.Helper()
	d := e.P.HeadDim
	slots, ev := make([]int32, 1), make([]int32, 1)
	if err := e.Place(0, 0, f32Rows(q, 1, 1, d), f32Rows(k, 1, 1, d), []int32{pos}, slots, ev); err != nil {
		t.Fatal(err)
	}
	return ev[0]
}

// direction returns norm·(cos(deg)·e0 + sin(deg)·e_axis) in dim d.
func direction(d, axis int, deg, norm float64) []float32 {
	x := make([]float32, d)
	r := deg * math.Pi / 180
	x[0] = float32(norm * math.Cos(r))
	x[axis] = float32(norm * math.Sin(r))
	return x
}

func oneHeadParams() Params {
	p := DefaultParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Bits = 1, 1, 1, 64, 256
	p.Sinks, p.Recent = 0, 0
	return p
}

// TestLogitKeepsLargeKeys: a key of norm 10 at 60 degrees from the query
// has the larger logit (5 against 0.87) than a key of norm 1 at 30 degrees,
// but the larger distance. The paper evicts it; the logit estimate keeps it.
func TestLogitKeepsLargeKeys(t *testing.T) {
	q := direction(64, 1, 0, 1)
	for _, c := range []struct {
		est  Estimate
		want int32
	}{{EstimateDistance, 0}, {EstimateLogit, 1}} {
		p := oneHeadParams()
		p.Budget, p.Estimate = 2, c.est
		e := mustEngine(t, p)
		e.AddSeq(0)
		placeOne(t, e, q, direction(64, 1, 60, 10), 0)
		placeOne(t, e, q, direction(64, 2, 30, 1), 1)
		if got := placeOne(t, e, q, direction(64, 3, 45, 1), 2); got != c.want {
			t.Errorf("estimate %d evicted position %d, want %d", c.est, got, c.want)
		}
	}
}

// TestRedundancyKeepsUniqueKeys: six near copies of one key (repeated
// filler, 80 degrees from the query) and one unlike them (100 degrees,
// farther from the query). The paper evicts the unique key; a redundancy
// weight of 2 evicts a copy instead, with either estimate.
func TestRedundancyKeepsUniqueKeys(t *testing.T) {
	q := direction(64, 1, 0, 1)
	rng := rand.New(rand.NewPCG(3, 4))
	filler := func() []float32 {
		x := direction(64, 1, 80, 1)
		for i := range x {
			x[i] += float32(0.01 * rng.NormFloat64())
		}
		return x
	}
	for _, c := range []struct {
		est    Estimate
		red    float32
		unique bool // the unique key is the victim
	}{{EstimateDistance, 0, true}, {EstimateLogit, 0, true}, {EstimateDistance, 2, false}, {EstimateLogit, 2, false}} {
		p := oneHeadParams()
		p.Budget, p.Estimate, p.Redundancy = 7, c.est, c.red
		e := mustEngine(t, p)
		e.AddSeq(0)
		for i := int32(0); i < 6; i++ {
			placeOne(t, e, q, filler(), i)
		}
		placeOne(t, e, q, direction(64, 2, 100, 1), 6)
		got := placeOne(t, e, q, filler(), 7)
		if (got == 6) != c.unique {
			t.Errorf("estimate %d, redundancy %v: evicted position %d (the unique key is 6)", c.est, c.red, got)
		}
	}
}

// TestStreamingRefusals: slot-mode compression keeps no key norms, so the
// logit estimate refuses it (UNSUPPORTED, nothing changed); the redundancy
// term needs no per-slot state and compresses.
func TestStreamingRefusals(t *testing.T) {
	for _, c := range []struct {
		est  Estimate
		red  float32
		code Code
	}{{EstimateLogit, 0, CodeUnsupported}, {EstimateLogit, 1, CodeUnsupported}, {EstimateDistance, 1, 0}} {
		p := smallParams()
		p.Estimate, p.Redundancy = c.est, c.red
		e := mustEngine(t, p)
		e.AddSeq(0)
		rng := rand.New(rand.NewPCG(1, 2))
		n := 40
		q := gauss(rng, 4*p.QHeads*p.HeadDim)
		k := gauss(rng, n*p.KVHeads*p.HeadDim)
		positions := make([]int32, n)
		for i := range positions {
			positions[i] = int32(i)
		}
		out := make([]int32, n*p.KVHeads)
		err := e.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), positions, 4, 5, CompressCosine, out)
		var pe *Error
		if c.code == 0 {
			if err != nil {
				t.Errorf("estimate %d redundancy %v: %v", c.est, c.red, err)
			}
			continue
		}
		if !errors.As(err, &pe) || pe.Code != c.code {
			t.Errorf("estimate %d redundancy %v: %v, want code %d", c.est, c.red, err, c.code)
		}
		if st, _ := e.SeqStats(0); st.Tokens != 0 {
			t.Errorf("the refused compression placed %d tokens", st.Tokens)
		}
	}
}

// TestStreamingStateRoundTrip: a saved sequence carries the key norms and
// loads only into an engine with the same options; the loaded copy decides
// as the original does. A blob of the paper's policy still has the
// fingerprint it had before the options existed.
func TestStreamingStateRoundTrip(t *testing.T) {
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		p := smallParams()
		p.Mode, p.Estimate, p.Redundancy, p.Score = mode, EstimateLogit, 0.5, ScoreDecayed
		e := mustEngine(t, p)
		e.AddSeq(0)
		rng := rand.New(rand.NewPCG(5, uint64(mode)))
		step := func(e *Engine, rng *rand.Rand, pos int32, out []int32) int {
			d := p.HeadDim
			ev := 0
			for l := 0; l < p.Layers; l++ {
				q := scaledGauss(rng, p.QHeads, d)
				k := scaledGauss(rng, p.KVHeads, d)
				if mode == ModeToken {
					if err := e.Observe(0, l, f32Rows(q, 1, p.QHeads, d), f32Rows(k, 1, p.KVHeads, d), []int32{pos}); err != nil {
						t.Fatal(err)
					}
					continue
				}
				slots, evs := make([]int32, p.KVHeads), make([]int32, p.KVHeads)
				if err := e.Place(0, l, f32Rows(q, 1, p.QHeads, d), f32Rows(k, 1, p.KVHeads, d), []int32{pos}, slots, evs); err != nil {
					t.Fatal(err)
				}
				for _, v := range evs {
					out[ev] = v
					ev++
				}
			}
			if mode == ModeToken {
				n, err := e.Evictions(0, out)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			return ev
		}
		out := make([]int32, 64)
		for pos := int32(0); pos < 40; pos++ {
			step(e, rng, pos, out)
		}
		blob, err := e.SaveSeq(0)
		if err != nil {
			t.Fatal(err)
		}
		e2 := mustEngine(t, p)
		if err := e2.LoadSeq(0, blob); err != nil {
			t.Fatal(err)
		}
		out2 := make([]int32, 64)
		r1, r2 := rand.New(rand.NewPCG(7, 8)), rand.New(rand.NewPCG(7, 8))
		for pos := int32(40); pos < 60; pos++ {
			n1, n2 := step(e, r1, pos, out), step(e2, r2, pos, out2)
			if fmt.Sprint(out[:n1]) != fmt.Sprint(out2[:n2]) {
				t.Fatalf("mode %d position %d: original evicted %v, loaded copy %v", mode, pos, out[:n1], out2[:n2])
			}
		}
		for _, other := range []func(*Params){
			func(q *Params) { q.Estimate = EstimateDistance },
			func(q *Params) { q.Redundancy = 1 },
		} {
			q := p
			other(&q)
			e3 := mustEngine(t, q)
			var pe *Error
			if err := e3.LoadSeq(0, blob); !errors.As(err, &pe) || pe.Code != CodeIncompatibleState {
				t.Errorf("mode %d: loading into estimate %d redundancy %v: %v, want INCOMPATIBLE_STATE", mode, q.Estimate, q.Redundancy, err)
			}
		}
	}
	p := smallParams()
	old := mix(uint64(p.Mode), uint64(p.Policy), uint64(p.Probe), uint64(p.Score),
		uint64(p.Layers), uint64(p.KVHeads), uint64(p.QHeads), uint64(p.HeadDim),
		uint64(p.Bits), uint64(p.Budget), uint64(p.Sinks), uint64(p.Recent),
		uint64(math.Float32bits(p.Decay)), p.Seed)
	if p.fingerprint() != old {
		t.Errorf("the paper's fingerprint changed: saved blobs would no longer load")
	}
}
