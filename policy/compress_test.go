package policy

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// refCompressKeep recomputes, from the raw vectors and with float64 dot
// products, which positions one KV head keeps: estimate per candidate, max
// pool along the positions, protected positions first, then the smallest
// eviction scores; ties drop the oldest first.
func refCompressKeep(e *Engine, layer, h int, pos []int32, keys [][]float32, probes [][]float32, newest int32, nWindow, pool int, form CompressForm) map[int32]bool {
	p := &e.P
	rt := e.proj[layer]
	pcodes := make([][]uint64, len(probes))
	for i, x := range probes {
		pcodes[i] = naiveCode(x, rt, p.Bits)
	}
	kcodes := make([][]uint64, len(keys))
	for i, k := range keys {
		kcodes[i] = naiveCode(k, rt, p.Bits)
	}
	pooled := refShape(refEstimate(kcodes, pcodes, p.Bits, form), pool, form) // pos is ascending
	keep := map[int32]bool{}
	var cand []int
	winFrom := pos[len(pos)-nWindow]
	for i, q := range pos {
		if int(q) < p.Sinks || int64(q) >= int64(newest)-int64(p.Recent) || q >= winFrom {
			keep[q] = true
		} else {
			cand = append(cand, i)
		}
	}
	sort.SliceStable(cand, func(a, b int) bool {
		if pooled[cand[a]] != pooled[cand[b]] {
			return pooled[cand[a]] > pooled[cand[b]]
		}
		return pos[cand[a]] > pos[cand[b]]
	})
	for _, i := range cand[:max(0, p.Budget-len(keep))] {
		keep[pos[i]] = true
	}
	return keep
}

// refShape applies form's flags and the max pool to estimates in position
// order, from their definitions (hashevict_compress_form): LOCAL subtracts
// the mean over the neighbours within 64 either side, itself included;
// the pool takes the largest of i-pool/2 .. i+pool/2, or of i-(pool-1) ..
// i+pool/2 with TRAILING.
func refShape(est []float64, pool int, form CompressForm) []float64 {
	n := len(est)
	if form&CompressLocal != 0 {
		local := make([]float64, n)
		for i := range est {
			lo, hi := max(0, i-64), min(n-1, i+64)
			var sum float64
			for j := lo; j <= hi; j++ {
				sum += est[j]
			}
			local[i] = est[i] - sum/float64(hi-lo+1)
		}
		est = local
	}
	back, fwd := pool/2, pool/2
	if form&CompressTrailing != 0 && pool > 1 {
		back = pool - 1
	}
	pooled := make([]float64, n)
	for i := range est {
		pooled[i] = est[i]
		for j := max(0, i-back); j <= min(n-1, i+fwd); j++ {
			pooled[i] = max(pooled[i], est[j])
		}
	}
	return pooled
}

// refEstimate is each key's window estimate, straight from the definition
// of the forms: the mean over the probes of cos(pi*d/b), of -d, or of the
// probe's softmax of compressTau*cos(pi*d/b) over all the keys.
func refEstimate(kcodes, pcodes [][]uint64, bits int, form CompressForm) []float64 {
	est := make([]float64, len(kcodes))
	for _, pc := range pcodes {
		logit := make([]float64, len(kcodes))
		var z float64
		for i, kc := range kcodes {
			c := math.Cos(math.Pi * float64(ham(kc, pc)) / float64(bits))
			switch form.base() {
			case CompressCosine:
				est[i] += c
			case CompressDistance:
				est[i] -= float64(ham(kc, pc))
			case CompressSoftmax:
				logit[i] = math.Exp(compressTau * (c - 1))
				z += logit[i]
			}
		}
		for i := range logit {
			if form.base() == CompressSoftmax {
				est[i] += logit[i] / z
			}
		}
	}
	for i := range est {
		est[i] /= float64(len(pcodes))
	}
	return est
}

// TestCompressMatchesReference compresses a prompt twice the budget in one
// call and checks every head's kept positions against refCompressKeep, for
// both probes and both score forms. Random Gaussian keys have distinct
// enough estimates that the float32 kernel and the float64 reference agree.
func TestCompressMatchesReference(t *testing.T) {
	for _, probe := range []Probe{ProbeQuery, ProbeKey} {
		for _, form := range []CompressForm{CompressCosine, CompressDistance, CompressSoftmax, CompressCosine | CompressLocal | CompressTrailing, CompressSoftmax | CompressLocal, CompressDistance | CompressTrailing} {
			for _, pool := range []int{0, 5} {
				t.Run(fmt.Sprintf("probe%d/form%d/pool%d", probe, form, pool), func(t *testing.T) {
					p := smallParams()
					p.Probe, p.Bits, p.Budget = probe, 64, 40
					e := mustEngine(t, p)
					e.AddSeq(0)
					rng := rand.New(rand.NewPCG(3, uint64(form)))
					n, nw := 100, 8
					positions := make([]int32, n)
					for i := range positions {
						positions[i] = int32(i)
					}
					for l := 0; l < p.Layers; l++ {
						q := gauss(rng, nw*p.QHeads*p.HeadDim)
						k := gauss(rng, n*p.KVHeads*p.HeadDim)
						out := make([]int32, n*p.KVHeads)
						if err := e.Compress(0, l, f32Rows(q, nw, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), positions, nw, pool, form, out); err != nil {
							t.Fatal(err)
						}
						for h := 0; h < p.KVHeads; h++ {
							keys := make([][]float32, n)
							for tok := range keys {
								keys[tok] = k[(tok*p.KVHeads+h)*p.HeadDim:][:p.HeadDim]
							}
							var probes [][]float32
							g := p.Group()
							for tok := n - nw; tok < n; tok++ {
								if probe == ProbeKey {
									probes = append(probes, keys[tok])
									continue
								}
								for j := 0; j < g; j++ {
									w := tok - (n - nw)
									probes = append(probes, q[(w*p.QHeads+h*g+j)*p.HeadDim:][:p.HeadDim])
								}
							}
							want := refCompressKeep(e, l, h, positions, keys, probes, positions[n-1], nw, pool, form)
							held := make([]int32, p.Budget)
							if err := e.SlotPositions(0, l, h, held); err != nil {
								t.Fatal(err)
							}
							got := map[int32]bool{}
							for _, q := range held {
								if q < 0 {
									t.Fatalf("layer %d head %d: a free slot after compressing %d tokens into %d", l, h, n, p.Budget)
								}
								got[q] = true
							}
							for tok := 0; tok < n; tok++ {
								slot := out[tok*p.KVHeads+h]
								if (slot >= 0) != got[int32(tok)] || (slot >= 0 && held[slot] != int32(tok)) {
									t.Fatalf("layer %d head %d: out_slots[%d] = %d disagrees with the held positions", l, h, tok, slot)
								}
								if got[int32(tok)] != want[int32(tok)] {
									t.Fatalf("layer %d head %d: position %d kept %v, reference %v", l, h, tok, got[int32(tok)], want[int32(tok)])
								}
							}
						}
					}
				})
			}
		}
	}
}

// TestCompressKeepsWhatTheWindowAsksFor plants, in the middle of a random
// prompt, keys aligned with the window's queries: compression keeps them,
// where the sink+recent window (the budget's last positions) cannot.
func TestCompressKeepsWhatTheWindowAsksFor(t *testing.T) {
	p := smallParams()
	p.KVHeads, p.QHeads, p.Budget = 1, 2, 32
	e := mustEngine(t, p)
	e.AddSeq(0)
	rng := rand.New(rand.NewPCG(5, 5))
	n, nw := 200, 4
	dir := gauss(rng, p.HeadDim)
	k := gauss(rng, n*p.HeadDim)
	planted := []int{60, 61, 62, 120}
	for _, i := range planted {
		copy(k[i*p.HeadDim:(i+1)*p.HeadDim], dir)
	}
	q := make([]float32, nw*p.QHeads*p.HeadDim)
	for i := range q {
		q[i] = dir[i%p.HeadDim] + 0.1*float32(rng.NormFloat64())
	}
	positions := make([]int32, n)
	for i := range positions {
		positions[i] = int32(i)
	}
	out := make([]int32, n)
	if err := e.Compress(0, 0, f32Rows(q, nw, p.QHeads, p.HeadDim), f32Rows(k, n, 1, p.HeadDim), positions, nw, 0, CompressCosine, out); err != nil {
		t.Fatal(err)
	}
	for _, i := range planted {
		if out[i] < 0 {
			t.Errorf("planted position %d was dropped", i)
		}
	}
	// The protected ones are kept whatever their scores.
	for _, i := range []int{0, 1, 2, 3, n - 1, n - 1 - p.Recent} {
		if out[i] < 0 {
			t.Errorf("protected position %d was dropped", i)
		}
	}
}

// TestCompressAfterHeldSlots compresses a second chunk into a layer that
// already holds a full budget: the dropped held slots are refilled, nothing
// is left free, and decode steps continue as usual.
func TestCompressAfterHeldSlots(t *testing.T) {
	for _, pol := range []Policy{PolicyHash, PolicyKnorm, PolicySinkRecent, PolicyRandom} {
		t.Run(fmt.Sprint("policy", pol), func(t *testing.T) {
			p := smallParams()
			p.Policy = pol
			e := mustEngine(t, p)
			e.AddSeq(0)
			rng := rand.New(rand.NewPCG(7, 7))
			next := int32(0)
			chunk := func(n int) []int32 {
				ps := make([]int32, n)
				for i := range ps {
					ps[i] = next
					next++
				}
				return ps
			}
			for _, n := range []int{20, 50, 30} {
				ps := chunk(n)
				out := make([]int32, n*p.KVHeads)
				q := gauss(rng, 6*p.QHeads*p.HeadDim)
				k := gauss(rng, n*p.KVHeads*p.HeadDim)
				if err := e.Compress(0, 0, f32Rows(q, 6, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), ps, 6, 5, CompressCosine, out); err != nil {
					t.Fatal(err)
				}
				for h := 0; h < p.KVHeads; h++ {
					held := make([]int32, p.Budget)
					e.SlotPositions(0, 0, h, held)
					seen := map[int32]bool{}
					used := 0
					for _, q := range held {
						if q >= 0 {
							used++
							if seen[q] {
								t.Fatalf("position %d held twice", q)
							}
							seen[q] = true
						}
					}
					if want := min(int(next), p.Budget); used != want {
						t.Fatalf("head %d holds %d positions, want %d", h, used, want)
					}
					if pol == PolicySinkRecent && int(next) > p.Budget {
						for q := next - int32(p.Budget-p.Sinks); q < next; q++ {
							if !seen[q] {
								t.Fatalf("sink+recent dropped recent position %d", q)
							}
						}
					}
				}
			}
			// A decode step after the compression.
			ps := chunk(1)
			out := make([]int32, p.KVHeads)
			if err := e.Place(0, 0, f32Rows(gauss(rng, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim), f32Rows(gauss(rng, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim), ps, out, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCompressRefusesAndChangesNothing: every refused call leaves the
// sequence exactly as it was (its saved state is byte-identical).
func TestCompressRefusesAndChangesNothing(t *testing.T) {
	p := smallParams()
	e := mustEngine(t, p)
	e.AddSeq(0)
	rng := rand.New(rand.NewPCG(1, 1))
	pos := func(from, n int) []int32 {
		ps := make([]int32, n)
		for i := range ps {
			ps[i] = int32(from + i)
		}
		return ps
	}
	n := 30
	q := gauss(rng, 4*p.QHeads*p.HeadDim)
	k := gauss(rng, n*p.KVHeads*p.HeadDim)
	out := make([]int32, n*p.KVHeads)
	if err := e.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(0, n), 4, 5, CompressCosine, out); err != nil {
		t.Fatal(err)
	}
	before, err := e.SaveSeq(0)
	if err != nil {
		t.Fatal(err)
	}
	nan := gauss(rng, n*p.KVHeads*p.HeadDim)
	nan[77] = float32(math.NaN())
	big := 200
	cases := []struct {
		name string
		code Code
		call func() error
	}{
		{"window too long", CodeInvalidArgument, func() error {
			return e.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(100, n), n+1, 5, CompressCosine, out)
		}},
		{"window zero", CodeInvalidArgument, func() error {
			return e.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(100, n), 0, 5, CompressCosine, out)
		}},
		{"q rows differ from n_window", CodeShape, func() error {
			return e.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(100, n), 3, 5, CompressCosine, out)
		}},
		{"q nil", CodeInvalidArgument, func() error {
			return e.Compress(0, 0, nil, f32Rows(k, n, p.KVHeads, p.HeadDim), pos(100, n), 4, 5, CompressCosine, out)
		}},
		{"form", CodeInvalidArgument, func() error {
			return e.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(100, n), 4, 5, 7, out)
		}},
		{"pool", CodeInvalidArgument, func() error {
			return e.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(100, n), 4, -1, CompressCosine, out)
		}},
		{"positions not after", CodePosition, func() error {
			return e.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(10, n), 4, 5, CompressCosine, out)
		}},
		{"nan", CodeNonFinite, func() error {
			return e.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(nan, n, p.KVHeads, p.HeadDim), pos(100, n), 4, 5, CompressCosine, out)
		}},
		{"window covers the budget", CodeChunkTooLarge, func() error {
			kb := gauss(rng, big*p.KVHeads*p.HeadDim)
			qb := gauss(rng, big*p.QHeads*p.HeadDim)
			return e.Compress(0, 0, f32Rows(qb, big, p.QHeads, p.HeadDim), f32Rows(kb, big, p.KVHeads, p.HeadDim), pos(100, big), big, 5, CompressCosine, make([]int32, big*p.KVHeads))
		}},
		{"out too small", CodeInvalidArgument, func() error {
			return e.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(100, n), 4, 5, CompressCosine, out[:n])
		}},
		{"layer", CodeOutOfRange, func() error {
			return e.Compress(0, 9, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(100, n), 4, 5, CompressCosine, out)
		}},
		{"sequence", CodeUnknownSequence, func() error {
			return e.Compress(3, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(100, n), 4, 5, CompressCosine, out)
		}},
		{"token-mode call on a slot engine", CodeWrongMode, func() error {
			return e.CompressScores(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), pos(0, 4), 5, CompressCosine)
		}},
	}
	for _, c := range cases {
		err := c.call()
		var pe *Error
		if !errors.As(err, &pe) || pe.Code != c.code {
			t.Errorf("%s: got %v, want code %d", c.name, err, c.code)
		}
		after, err := e.SaveSeq(0)
		if err != nil {
			t.Fatal(err)
		}
		if string(after) != string(before) {
			t.Fatalf("%s: the refused call changed the sequence", c.name)
		}
	}
	po := p
	po.Policy = PolicyOracle
	eo := mustEngine(t, po)
	eo.AddSeq(0)
	var pe *Error
	if err := eo.Compress(0, 0, f32Rows(q, 4, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), pos(0, n), 4, 5, CompressCosine, out); !errors.As(err, &pe) || pe.Code != CodeUnsupported {
		t.Errorf("oracle: got %v, want UNSUPPORTED", err)
	}
}

// TestCompressScoresTokenMode observes a prompt in token mode (no
// eviction), scores it from the window, and checks that Evictions then
// drops exactly the positions of the largest summed compression scores,
// recomputed from the raw vectors.
//
// With lastAlone, every layer observes the prompt's last position on its
// own after the rest: a one-token instant step takes the fast path
// (tokenfast.go), whose running total and unwritten scores must not
// outlive the compression's scores.
func TestCompressScoresTokenMode(t *testing.T) {
	for _, c := range []struct {
		form      CompressForm
		lastAlone bool
	}{{CompressCosine, false}, {CompressDistance, false}, {CompressSoftmax, false}, {CompressCosine, true}, {CompressDistance, true}, {CompressSoftmax, true},
		{CompressCosine | CompressLocal | CompressTrailing, false}, {CompressSoftmax | CompressLocal | CompressTrailing, true}, {CompressDistance | CompressLocal, false}} {
		form := c.form
		t.Run(fmt.Sprint("form", form, "/lastAlone=", c.lastAlone), func(t *testing.T) {
			p := smallParams()
			p.Mode, p.Budget, p.Bits = ModeToken, 40, 32
			e := mustEngine(t, p)
			e.AddSeq(0)
			rng := rand.New(rand.NewPCG(11, uint64(form)))
			n, nw, pool := 120, 8, 3
			positions := make([]int32, n)
			for i := range positions {
				positions[i] = int32(i)
			}
			qs, ks := make([][]float32, p.Layers), make([][]float32, p.Layers)
			first := n
			if c.lastAlone {
				first = n - 1
			}
			for l := 0; l < p.Layers; l++ {
				qs[l] = gauss(rng, n*p.QHeads*p.HeadDim)
				ks[l] = gauss(rng, n*p.KVHeads*p.HeadDim)
				if err := e.Observe(0, l, f32Rows(qs[l], first, p.QHeads, p.HeadDim), f32Rows(ks[l], first, p.KVHeads, p.HeadDim), positions[:first]); err != nil {
					t.Fatal(err)
				}
			}
			for l := 0; c.lastAlone && l < p.Layers; l++ {
				q1 := qs[l][(n-1)*p.QHeads*p.HeadDim:]
				k1 := ks[l][(n-1)*p.KVHeads*p.HeadDim:]
				if err := e.Observe(0, l, f32Rows(q1, 1, p.QHeads, p.HeadDim), f32Rows(k1, 1, p.KVHeads, p.HeadDim), positions[n-1:]); err != nil {
					t.Fatal(err)
				}
			}
			total := make([]float64, n)
			wpos := positions[n-nw:]
			g := p.Group()
			for l := 0; l < p.Layers; l++ {
				q, k := qs[l], ks[l]
				qw := q[(n-nw)*p.QHeads*p.HeadDim:]
				if err := e.CompressScores(0, l, f32Rows(qw, nw, p.QHeads, p.HeadDim), wpos, pool, form); err != nil {
					t.Fatal(err)
				}
				for h := 0; h < p.KVHeads; h++ {
					var pcs [][]uint64
					for w := 0; w < nw; w++ {
						for j := 0; j < g; j++ {
							pcs = append(pcs, naiveCode(qw[(w*p.QHeads+h*g+j)*p.HeadDim:][:p.HeadDim], e.proj[l], p.Bits))
						}
					}
					kcs := make([][]uint64, n)
					for tok := range kcs {
						kcs[tok] = naiveCode(k[(tok*p.KVHeads+h)*p.HeadDim:][:p.HeadDim], e.proj[l], p.Bits)
					}
					pooled := refShape(refEstimate(kcs, pcs, p.Bits, form), pool, form)
					for tok := 0; tok < n-nw; tok++ {
						total[tok] += float64(toDistance(form, p.Bits, pooled[tok]))
					}
				}
			}
			out := make([]int32, n)
			got, err := e.Evictions(0, out)
			if err != nil {
				t.Fatal(err)
			}
			if got != n-p.Budget {
				t.Fatalf("dropped %d, want %d", got, n-p.Budget)
			}
			var cand []int
			for tok := p.Sinks; tok < n-nw && tok < n-1-p.Recent; tok++ {
				cand = append(cand, tok)
			}
			sort.SliceStable(cand, func(a, b int) bool {
				if total[cand[a]] != total[cand[b]] {
					return total[cand[a]] > total[cand[b]]
				}
				return cand[a] < cand[b]
			})
			want := cand[:n-p.Budget]
			sort.Ints(want)
			for i, w := range want {
				if out[i] != int32(w) {
					t.Fatalf("dropped %v, want %v", out[:got], want)
				}
			}
		})
	}
}

func TestCompressScoresRefuses(t *testing.T) {
	p := smallParams()
	p.Mode = ModeToken
	e := mustEngine(t, p)
	e.AddSeq(0)
	rng := rand.New(rand.NewPCG(2, 2))
	n := 10
	positions := []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	q := gauss(rng, n*p.QHeads*p.HeadDim)
	k := gauss(rng, n*p.KVHeads*p.HeadDim)
	if err := e.Observe(0, 0, f32Rows(q, n, p.QHeads, p.HeadDim), f32Rows(k, n, p.KVHeads, p.HeadDim), positions); err != nil {
		t.Fatal(err)
	}
	qw := f32Rows(q, 2, p.QHeads, p.HeadDim)
	for name, c := range map[string]struct {
		code Code
		err  error
	}{
		"not observed by layer 1": {CodePosition, e.CompressScores(0, 1, qw, []int32{8, 9}, 5, CompressCosine)},
		"not held":                {CodePosition, e.CompressScores(0, 0, qw, []int32{9, 10}, 5, CompressCosine)},
		"not increasing":          {CodePosition, e.CompressScores(0, 0, qw, []int32{9, 8}, 5, CompressCosine)},
		"q rows":                  {CodeShape, e.CompressScores(0, 0, qw, []int32{7, 8, 9}, 5, CompressCosine)},
		"empty window":            {CodeInvalidArgument, e.CompressScores(0, 0, qw, nil, 5, CompressCosine)},
		"nil q":                   {CodeInvalidArgument, e.CompressScores(0, 0, nil, []int32{8, 9}, 5, CompressCosine)},
		"slot call":               {CodeWrongMode, e.Compress(0, 0, qw, qw, positions, 2, 5, CompressCosine, make([]int32, 100))},
	} {
		var pe *Error
		if !errors.As(c.err, &pe) || pe.Code != c.code {
			t.Errorf("%s: got %v, want code %d", name, c.err, c.code)
		}
	}
	pk := p
	pk.Policy = PolicyKnorm
	ek := mustEngine(t, pk)
	ek.AddSeq(0)
	var pe *Error
	if err := ek.CompressScores(0, 0, qw, []int32{0}, 5, CompressCosine); !errors.As(err, &pe) || pe.Code != CodeUnsupported {
		t.Errorf("knorm: got %v, want UNSUPPORTED", err)
	}
}

// TestCompressRandomSequences mixes compressions with decode steps, saves,
// loads and forks, with random (often invalid) arguments: every call returns
// a status, and the tables stay consistent (positions unique, within the
// budget, slot mode dense; token mode never above the budget after
// Evictions).
func TestCompressRandomSequences(t *testing.T) {
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		t.Run(fmt.Sprint("mode", mode), func(t *testing.T) {
			p := smallParams()
			p.Mode, p.Budget = mode, 30
			e := mustEngine(t, p)
			rng := rand.New(rand.NewPCG(99, uint64(mode)))
			next := map[int]int32{}
			for id := 0; id < 2; id++ {
				e.AddSeq(id)
			}
			compressed := 0
			for it := 0; it < 400; it++ {
				id := rng.IntN(3) // 2 is never added
				layer := rng.IntN(p.Layers+1) - rng.IntN(2)
				n := 1 + rng.IntN(60)
				if rng.IntN(4) == 0 {
					n = 1
				}
				start := next[id] - int32(rng.IntN(2)) // sometimes not after the last
				positions := make([]int32, n)
				for i := range positions {
					positions[i] = start + int32(i)
				}
				nw := 1 + rng.IntN(n)
				if rng.IntN(8) == 0 {
					nw = n + 1
				}
				q := gauss(rng, n*p.QHeads*p.HeadDim)
				k := gauss(rng, n*p.KVHeads*p.HeadDim)
				if rng.IntN(30) == 0 {
					k[rng.IntN(len(k))] = float32(math.Inf(1))
				}
				qw := f32Rows(q[(n-min(nw, n))*p.QHeads*p.HeadDim:], min(nw, n), p.QHeads, p.HeadDim)
				kr := f32Rows(k, n, p.KVHeads, p.HeadDim)
				form := CompressForm(rng.IntN(3)) | CompressForm(rng.IntN(4))<<8
				pool := rng.IntN(8) - 1
				var err error
				op := rng.IntN(6)
				switch {
				case mode == ModeSlot && op < 3:
					err = e.Compress(id, layer, qw, kr, positions, nw, pool, form, make([]int32, n*p.KVHeads))
				case mode == ModeSlot && op < 5:
					err = e.Place(id, layer, f32Rows(q, n, p.QHeads, p.HeadDim), kr, positions, make([]int32, n*p.KVHeads), nil)
				case mode == ModeToken && op < 2:
					for l := 0; l < p.Layers && err == nil; l++ {
						err = e.Observe(id, l, f32Rows(q, n, p.QHeads, p.HeadDim), kr, positions)
					}
				case mode == ModeToken && op < 4:
					wp := make([]int32, min(nw, n))
					for i := range wp {
						wp[i] = next[id] - int32(len(wp)) + int32(i)
					}
					for l := 0; l < p.Layers && err == nil; l++ {
						err = e.CompressScores(id, l, qw, wp, pool, form)
					}
				case mode == ModeToken && op < 5:
					_, err = e.Evictions(id, make([]int32, 1+rng.IntN(200)))
				default:
					if blob, serr := e.SaveSeq(id); serr == nil {
						err = e.LoadSeq(1-min(id, 1), blob)
						if err == nil {
							next[1-min(id, 1)] = next[id]
						}
					}
				}
				if err != nil {
					var pe *Error
					if !errors.As(err, &pe) || pe.Code == CodeInternal {
						t.Fatalf("iteration %d: %v", it, err)
					}
					continue
				}
				if (mode == ModeSlot && op < 3) || (mode == ModeToken && op >= 2 && op < 4) {
					compressed++
				}
				// Advance the sequence's next position past what was accepted.
				for id := 0; id < 2; id++ {
					last := int32(-1)
					s, _ := e.seq(id)
					for l := range s.layers {
						last = max(last, s.layers[l].lastPos)
					}
					s.mu.Unlock()
					if last+1 > next[id] {
						next[id] = last + 1
					}
				}
				for id := 0; id < 2; id++ {
					if mode == ModeSlot {
						for l := 0; l < p.Layers; l++ {
							for h := 0; h < p.KVHeads; h++ {
								held := make([]int32, p.Budget)
								e.SlotPositions(id, l, h, held)
								seen, free := map[int32]bool{}, false
								for _, q := range held {
									if q < 0 {
										free = true
										continue
									}
									if free || seen[q] {
										t.Fatalf("iteration %d: seq %d layer %d head %d: slots %v not dense and unique", it, id, l, h, held)
									}
									seen[q] = true
								}
							}
						}
					}
				}
			}
			t.Logf("%d compressions succeeded", compressed)
			if compressed < 20 {
				t.Fatalf("only %d compressions succeeded: the sequence barely exercises them", compressed)
			}
		})
	}
}

// compressPrompt builds a token-mode prompt of n positions with one layer
// and one KV head whose keys have cosine alpha(i) with the window's query
// direction (the window's own queries are that direction), compresses it
// with form and pool to budget, and returns the positions kept.
func compressPrompt(t *testing.T, n, budget, pool int, form CompressForm, alpha func(int) float64) map[int32]bool {
	t.Helper()
	p := DefaultParams()
	p.Mode, p.Layers, p.KVHeads, p.QHeads, p.HeadDim = ModeToken, 1, 1, 1, 64
	p.Bits, p.Budget = 256, budget
	e := mustEngine(t, p)
	e.AddSeq(0)
	rng := rand.New(rand.NewPCG(21, 7))
	dir := gauss(rng, p.HeadDim)
	var nn float64
	for _, v := range dir {
		nn += float64(v) * float64(v)
	}
	for i := range dir {
		dir[i] /= float32(math.Sqrt(nn))
	}
	k := make([]float32, n*p.HeadDim)
	q := make([]float32, n*p.HeadDim)
	for i := 0; i < n; i++ {
		// alpha*dir plus a unit vector orthogonal to dir, scaled to sqrt(1-alpha^2).
		noise := gauss(rng, p.HeadDim)
		var d float64
		for j := range noise {
			d += float64(noise[j]) * float64(dir[j])
		}
		var m float64
		for j := range noise {
			noise[j] -= float32(d) * dir[j]
			m += float64(noise[j]) * float64(noise[j])
		}
		a := alpha(i)
		for j := range noise {
			k[i*p.HeadDim+j] = float32(a)*dir[j] + float32(math.Sqrt(1-a*a)/math.Sqrt(m))*noise[j]
			q[i*p.HeadDim+j] = dir[j]
		}
	}
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(i)
	}
	if err := e.Observe(0, 0, f32Rows(q, n, 1, p.HeadDim), f32Rows(k, n, 1, p.HeadDim), pos); err != nil {
		t.Fatal(err)
	}
	const nw = 4
	if err := e.CompressScores(0, 0, f32Rows(q[(n-nw)*p.HeadDim:], nw, 1, p.HeadDim), pos[n-nw:], pool, form); err != nil {
		t.Fatal(err)
	}
	out := make([]int32, n)
	if _, err := e.Evictions(0, out); err != nil {
		t.Fatal(err)
	}
	held, err := e.TokenPositions(0)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[int32]bool{}
	for _, q := range held {
		kept[q] = true
	}
	return kept
}

// TestCompressLocalKeepsWhatStandsOut: the newest third of a prompt
// resembles the window more (cosine 0.8) than an older key that stands out
// from its unrelated neighbours (0.5 among 0). The plain cosine keeps the
// newest keys and drops it; LOCAL scores each key against its
// neighbourhood and keeps it (the recency of post-RoPE estimates that the
// flag answers, docs/algorithm.md).
func TestCompressLocalKeepsWhatStandsOut(t *testing.T) {
	const n, spike = 300, 50
	alpha := func(i int) float64 {
		switch {
		case i == spike:
			return 0.5
		case i >= 200:
			return 0.8
		}
		return 0
	}
	if compressPrompt(t, n, 60, 0, CompressCosine, alpha)[spike] {
		t.Fatalf("the plain cosine kept position %d over the newest keys; the test no longer shows what LOCAL is for", spike)
	}
	if !compressPrompt(t, n, 60, 0, CompressCosine|CompressLocal, alpha)[spike] {
		t.Fatalf("LOCAL dropped position %d, which stands out from its neighbourhood", spike)
	}
}

// TestCompressTrailingKeepsWhatFollows: one key the window matches (a
// fact's subject) and the tokens after it (its value, unlike the window).
// The budget leaves 5 positions beyond the protected 15 (4 sinks, the 11
// newest): a symmetric pool of 5 keeps the subject, two before and two
// after; TRAILING (4 back, 2 forward) ties 7 positions at the subject's
// score, and of those the newest 5 stay: the subject and four after it.
func TestCompressTrailingKeepsWhatFollows(t *testing.T) {
	const n, subject = 200, 80
	alpha := func(i int) float64 {
		if i == subject {
			return 0.9
		}
		return 0
	}
	sym := compressPrompt(t, n, 20, 5, CompressCosine, alpha)
	trail := compressPrompt(t, n, 20, 5, CompressCosine|CompressTrailing, alpha)
	for d := int32(-4); d <= 4; d++ {
		if got, want := sym[subject+d], d >= -2 && d <= 2; got != want {
			t.Errorf("symmetric pool: position subject%+d kept %v, want %v", d, got, want)
		}
		if got, want := trail[subject+d], d >= 0; got != want {
			t.Errorf("TRAILING: position subject%+d kept %v, want %v", d, got, want)
		}
	}
}
