package policy

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
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

// FuzzDecodePayload mutates the payload of valid blobs behind a valid
// seal: every invariant check of the decoder is in reach.
func FuzzDecodePayload(f *testing.F) {
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		e := mustEngine(f, stateParams(mode, PolicyHash))
		e.AddSeq(0)
		drive(f, e, 0, 0, 30, 7)
		blob, _ := e.SaveSeq(0)
		f.Add(uint8(mode), blob[stateHeader:len(blob)-stateTrailer])
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
		drive(t, e, 0, 1<<20, 5, 8)
	})
}

// FuzzLoadSeq feeds arbitrary blobs to the decoder: it must never panic,
// and whatever it accepts must save back to the same bytes.
func FuzzLoadSeq(f *testing.F) {
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		p := stateParams(mode, PolicyHash)
		e := mustEngine(f, p)
		e.AddSeq(0)
		drive(f, e, 0, 0, 30, 5)
		blob, _ := e.SaveSeq(0)
		f.Add(uint8(mode), blob)
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
		drive(t, e, 0, 1<<20, 5, 6) // and the engine keeps working
	})
}
