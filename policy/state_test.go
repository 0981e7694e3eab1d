package policy

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// drive runs steps decode steps (with an occasional chunk) on sequence id,
// returning the slots or evicted positions it produced, so that two
// engines' futures can be compared.
func drive(t testing.TB, e *Engine, id int, from int32, steps int, seed uint64) []int32 {
	t.Helper()
	p := &e.P
	rng := rand.New(rand.NewPCG(seed, 99))
	var trace []int32
	pos := from
	for step := 0; step < steps; step++ {
		n := 1
		if step%9 == 4 {
			n = 3
		}
		positions := make([]int32, n)
		for i := range positions {
			positions[i] = pos
			pos++
		}
		for l := 0; l < p.Layers; l++ {
			q := f32Rows(gauss(rng, n*p.QHeads*p.HeadDim), n, p.QHeads, p.HeadDim)
			k := f32Rows(gauss(rng, n*p.KVHeads*p.HeadDim), n, p.KVHeads, p.HeadDim)
			if p.Mode == ModeSlot {
				slots := make([]int32, n*p.KVHeads)
				if err := e.Place(id, l, q, k, positions, slots, nil); err != nil {
					t.Fatal(err)
				}
				trace = append(trace, slots...)
			} else if err := e.Observe(id, l, q, k, positions); err != nil {
				t.Fatal(err)
			}
		}
		if p.Mode == ModeToken {
			out := make([]int32, 8)
			got, err := e.Evictions(id, out)
			if err != nil {
				t.Fatal(err)
			}
			trace = append(trace, out[:got]...)
		}
	}
	return trace
}

func stateParams(mode Mode, pol Policy) Params {
	p := smallParams()
	p.Mode, p.Policy, p.Score = mode, pol, ScoreDecayed
	return p
}

func TestSaveLoadRoundTrip(t *testing.T) {
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		for _, pol := range []Policy{PolicyHash, PolicyOracle, PolicyKnorm} {
			t.Run(fmt.Sprintf("mode%d/policy%d", mode, pol), func(t *testing.T) {
				p := stateParams(mode, pol)
				a := mustEngine(t, p)
				a.AddSeq(0)
				drive(t, a, 0, 0, 60, 1)
				blob, err := a.SaveSeq(0)
				if err != nil {
					t.Fatal(err)
				}
				b := mustEngine(t, p)
				if err := b.LoadSeq(5, blob); err != nil {
					t.Fatal(err)
				}
				again, _ := b.SaveSeq(5)
				if !bytes.Equal(blob, again) {
					t.Fatal("a loaded sequence saves to a different blob")
				}
				// Both engines must make the same decisions from here on.
				fa := drive(t, a, 0, 1000, 40, 2)
				fb := drive(t, b, 5, 1000, 40, 2)
				if fmt.Sprint(fa) != fmt.Sprint(fb) {
					t.Fatal("restored sequence decides differently")
				}
				sa, _ := a.SeqStats(0)
				sb, _ := b.SeqStats(5)
				if sa != sb {
					t.Fatalf("stats %+v vs %+v", sa, sb)
				}
				// Loading over an existing sequence replaces it.
				if err := b.LoadSeq(5, blob); err != nil {
					t.Fatal(err)
				}
				if st := b.EngineStats(); st.Sequences != 1 {
					t.Fatalf("%d sequences after replacing", st.Sequences)
				}
			})
		}
	}
}

func TestLoadRefusesBadBlobs(t *testing.T) {
	p := stateParams(ModeToken, PolicyHash)
	a := mustEngine(t, p)
	a.AddSeq(0)
	drive(t, a, 0, 0, 50, 3)
	blob, _ := a.SaveSeq(0)

	target := mustEngine(t, p)
	target.AddSeq(1)
	drive(t, target, 1, 0, 10, 4)
	before, _ := target.SaveSeq(1)
	unchanged := func() {
		t.Helper()
		now, _ := target.SaveSeq(1)
		if !bytes.Equal(before, now) {
			t.Fatal("a refused load changed the sequence")
		}
	}
	cases := map[string]struct {
		blob []byte
		code Code
	}{
		"empty":          {nil, CodeCorruptState},
		"truncated":      {blob[:len(blob)/2], CodeCorruptState},
		"one byte short": {blob[:len(blob)-1], CodeCorruptState},
		"foreign":        {bytes.Repeat([]byte("x"), 200), CodeCorruptState},
		"bit flip":       {flip(blob, len(blob)/3), CodeCorruptState},
		"format":         {withFormat(blob, stateFormat+1), CodeIncompatibleState},
		"old format":     {withFormat(blob, 1), CodeIncompatibleState},
	}
	for name, c := range cases {
		if err := target.LoadSeq(1, c.blob); CodeOf(err) != c.code {
			t.Errorf("%s: got %v, want code %d", name, err, c.code)
		}
		unchanged()
	}
	// A blob from an engine with other parameters.
	q := p
	q.Budget++
	other := mustEngine(t, q)
	if err := other.LoadSeq(0, blob); CodeOf(err) != CodeIncompatibleState {
		t.Errorf("other params: %v", err)
	}
	q = p
	q.Seed = 77
	if err := mustEngine(t, q).LoadSeq(0, blob); CodeOf(err) != CodeIncompatibleState {
		t.Errorf("other seed: %v", err)
	}
	// Out of range ids and the memory cap.
	if err := target.LoadSeq(-1, blob); CodeOf(err) != CodeOutOfRange {
		t.Errorf("id -1: %v", err)
	}
	// The least cap create accepts holds budget+1 positions; the blob's
	// tables grew to 64 slots during its unevicted prefill-free run.
	q = p
	q.MemoryCapBytes = q.budgetBytes()
	capped := mustEngine(t, q)
	if err := capped.LoadSeq(0, blob); CodeOf(err) != CodeMemoryCap {
		t.Errorf("memory cap: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x10
	return c
}

func withFormat(b []byte, v byte) []byte {
	c := append([]byte(nil), b...)
	c[4] = v
	return c
}

// seal wraps a payload in a valid header and checksum for engine e, so the
// fuzzer's mutations reach the payload decoder instead of the checksum.
func seal(e *Engine, payload []byte) []byte {
	w := &writer{b: []byte(stateMagic)}
	w.u32(stateFormat)
	w.u64(e.P.fingerprint())
	w.u64(uint64(len(payload)))
	w.b = append(w.b, payload...)
	w.u32(crc32.Checksum(w.b, castagnoli))
	return w.b
}

// stateSeeds are the blobs the state fuzzers start from, in both modes: a
// driven sequence, a new one, a fork of a new one, a reset one, and in token
// mode one with a position only layer 0 observed. Each must load back
// unmodified, into a fresh engine, and save to the same bytes.
func stateSeeds(f *testing.F, seed uint64) (modes []Mode, blobs [][]byte) {
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		p := stateParams(mode, PolicyHash)
		e := mustEngine(f, p)
		must(f, e.AddSeq(0))
		drive(f, e, 0, 0, 30, seed)
		must(f, e.AddSeq(1))
		must(f, e.ForkSeq(1, 2))
		must(f, e.AddSeq(3))
		drive(f, e, 3, 0, 5, seed)
		must(f, e.ResetSeq(3))
		ids := []int{0, 1, 2, 3}
		if mode == ModeToken {
			must(f, e.ForkSeq(0, 4))
			must(f, observeLayer(e, rand.New(rand.NewPCG(seed, 1)), 4, 0, []int32{900, 901}))
			ids = append(ids, 4)
		}
		for _, id := range ids {
			blob, err := e.SaveSeq(id)
			must(f, err)
			fresh := mustEngine(f, p)
			if err := fresh.LoadSeq(0, blob); err != nil {
				f.Fatalf("mode %d: sequence %d refuses its own blob: %v", mode, id, err)
			}
			if again, _ := fresh.SaveSeq(0); !bytes.Equal(again, blob) {
				f.Fatalf("mode %d: sequence %d saves differently after a load", mode, id)
			}
			modes, blobs = append(modes, mode), append(blobs, blob)
		}
	}
	return modes, blobs
}

// FuzzDecodePayload mutates the payload of valid blobs behind a valid
// seal: every invariant check of the decoder is in reach.
func FuzzDecodePayload(f *testing.F) {
	modes, blobs := stateSeeds(f, 7)
	for i, blob := range blobs {
		f.Add(uint8(modes[i]), blob[stateHeader:len(blob)-stateTrailer])
	}
	f.Fuzz(func(t *testing.T, mode uint8, payload []byte) {
		e := mustEngine(t, stateParams(Mode(mode%2), PolicyHash))
		blob := seal(e, payload)
		if err := e.LoadSeq(0, blob); err != nil {
			if c := CodeOf(err); c != CodeCorruptState && c != CodeMemoryCap {
				t.Fatalf("unexpected error class %d: %v", c, err)
			}
			return
		}
		again, err := e.SaveSeq(0)
		if err != nil || !bytes.Equal(again, blob) {
			t.Fatalf("accepted payload does not round-trip: %v", err)
		}
		catchUp(t, e, 0)
		drive(t, e, 0, 1<<20, 5, 8)
	})
}

// FuzzLoadSeq feeds arbitrary blobs to the decoder: it must never panic,
// and whatever it accepts must save back to the same bytes.
func FuzzLoadSeq(f *testing.F) {
	modes, blobs := stateSeeds(f, 5)
	for i, blob := range blobs {
		f.Add(uint8(modes[i]), blob)
	}
	f.Fuzz(func(t *testing.T, mode uint8, blob []byte) {
		p := stateParams(Mode(mode%2), PolicyHash)
		e := mustEngine(t, p)
		if err := e.LoadSeq(0, blob); err != nil {
			if c := CodeOf(err); c != CodeCorruptState && c != CodeIncompatibleState && c != CodeMemoryCap {
				t.Fatalf("unexpected error class %d: %v", c, err)
			}
			return
		}
		again, err := e.SaveSeq(0)
		if err != nil || !bytes.Equal(again, blob) {
			t.Fatalf("accepted blob does not round-trip: %v", err)
		}
		catchUp(t, e, 0)
		drive(t, e, 0, 1<<20, 5, 6) // and the engine keeps working
	})
}

// catchUp has every token-mode layer of seq observe the positions other
// layers observed before it, as a runtime finishing its step would, so that
// drive can go on from any state a blob held.
func catchUp(t testing.TB, e *Engine, seq int) {
	t.Helper()
	s := e.seqs[seq]
	if s.tok == nil {
		return
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for l := range s.layers {
		ts := s.tok
		var positions []int32
		for _, slot := range ts.pending[ts.head+ts.ahead[l]:] {
			positions = append(positions, ts.pos[slot])
		}
		if len(positions) > 0 {
			must(t, observeLayer(e, rng, seq, l, positions))
		}
	}
}

// Issue 10, item 2: an empty token-mode sequence (new, reset, or a fork of
// one) saved no observed flags and refused its own blob as truncated.
func TestEmptySequenceRoundTrip(t *testing.T) {
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		t.Run(fmt.Sprint("mode", mode), func(t *testing.T) {
			p := stateParams(mode, PolicyHash)
			p.MaxSeqs = 8
			e := mustEngine(t, p)
			must(t, e.AddSeq(0)) // new
			must(t, e.AddSeq(1))
			drive(t, e, 1, 0, 20, 1)
			must(t, e.ResetSeq(1)) // reset after use
			must(t, e.ForkSeq(0, 2))
			must(t, e.ForkSeq(1, 3))
			for id := 0; id < 4; id++ {
				blob, err := e.SaveSeq(id)
				must(t, err)
				if err := e.LoadSeq(id, blob); err != nil {
					t.Fatalf("sequence %d refuses its own blob: %v", id, err)
				}
				if err := e.LoadSeq(4+id, blob); err != nil {
					t.Fatalf("sequence %d's blob refused by id %d: %v", id, 4+id, err)
				}
				again, err := e.SaveSeq(4 + id)
				if err != nil || !bytes.Equal(blob, again) {
					t.Fatalf("sequence %d: loaded copy saves differently (%v)", id, err)
				}
				// Original and copy decide alike from here.
				if a, b := drive(t, e, id, 0, 30, 9), drive(t, e, 4+id, 0, 30, 9); fmt.Sprint(a) != fmt.Sprint(b) {
					t.Fatalf("sequence %d: the loaded copy decides differently", id)
				}
			}
		})
	}
}

// tampered saves sequence 0 of a driven engine after tamper changed its
// state: the blob is sealed with a valid checksum, as a forger would.
func tampered(t *testing.T, p Params, tamper func(s *Sequence)) []byte {
	t.Helper()
	e := mustEngine(t, p)
	must(t, e.AddSeq(0))
	drive(t, e, 0, 0, 40, 11)
	if p.Mode == ModeToken {
		// One position observed by layer 0 only: pending for layer 1.
		rng := rand.New(rand.NewPCG(1, 2))
		must(t, observeLayer(e, rng, 0, 0, []int32{500}))
	}
	s := e.seqs[0]
	tamper(s)
	blob, err := e.SaveSeq(0)
	must(t, err)
	return blob
}

// Issue 10, item 5: a sealed blob is checked for values, not only for
// structure: scores and keys are finite, counts fit the steps, and the
// observed flags, seen counts and newest position agree with the rule that
// a layer observes every held position up to its last one and no other.
func TestLoadRefusesBadValues(t *testing.T) {
	tok := stateParams(ModeToken, PolicyHash)
	tok.Score = ScoreAccumulated
	slot := stateParams(ModeSlot, PolicyHash)
	oracle := stateParams(ModeToken, PolicyOracle)
	inf := float32(math.Inf(1))
	// slotOf returns the slot of position q in a token-mode sequence.
	slotOf := func(s *Sequence, q int32) int { return int(s.tok.index[q]) }
	freeSlot := func(s *Sequence) int { return int(s.tok.free[0]) }
	cases := []struct {
		name   string
		p      Params
		tamper func(s *Sequence)
		want   string
	}{
		{"token score +Inf", tok, func(s *Sequence) { s.layers[1].heads[0].score[slotOf(s, 30)] = inf }, "scores"},
		{"token score -Inf", tok, func(s *Sequence) { s.layers[0].heads[1].score[0] = -inf }, "scores"},
		{"slot score +Inf", slot, func(s *Sequence) { s.layers[0].heads[0].score[3] = inf }, "scores"},
		{"oracle key +Inf", oracle, func(s *Sequence) { s.layers[0].heads[0].keys[5] = inf }, "keys"},
		{"count that wraps", tok, func(s *Sequence) { s.layers[0].heads[0].count[2] = math.MaxUint32 }, "scored"},
		{"count above the steps", slot, func(s *Sequence) { s.layers[1].heads[1].count[0] = uint32(s.layers[1].steps) + 1 }, "scored"},
		{"a layer passed a held position without observing it", tok, func(s *Sequence) {
			i := slotOf(s, 30)
			s.tok.obs[1][i] = false
			s.tok.seen[i]--
		}, "layer 1"},
		{"a pending position claimed complete", tok, func(s *Sequence) {
			i := slotOf(s, 500)
			s.tok.obs[1][i] = true
			s.tok.seen[i]++
		}, "layer 1"},
		{"a free slot counted as observed", tok, func(s *Sequence) { s.tok.seen[freeSlot(s)] = 1 }, "free slot"},
		{"a free slot flagged observed", tok, func(s *Sequence) { s.tok.obs[0][freeSlot(s)] = true }, "free slot"},
		{"newest position beyond every layer", tok, func(s *Sequence) { s.tok.maxPos = 900 }, "newest observed position"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			blob := tampered(t, c.p, c.tamper)
			err := mustEngine(t, c.p).LoadSeq(0, blob)
			if CodeOf(err) != CodeCorruptState || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want CORRUPT_STATE mentioning %q", err, c.want)
			}
		})
	}
	// An empty sequence whose layer claims a position below -1.
	e := mustEngine(t, tok)
	must(t, e.AddSeq(0))
	e.seqs[0].layers[1].lastPos = -7
	blob, _ := e.SaveSeq(0)
	if err := mustEngine(t, tok).LoadSeq(0, blob); CodeOf(err) != CodeCorruptState || !strings.Contains(err.Error(), "last position") {
		t.Fatalf("last position -7: got %v", err)
	}
	// The untampered blobs load.
	for _, p := range []Params{tok, slot, oracle} {
		if err := mustEngine(t, p).LoadSeq(0, tampered(t, p, func(*Sequence) {})); err != nil {
			t.Fatal(err)
		}
	}
}
