package policy

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"testing"
)

// fuzzModel is what FuzzPolicySteps expects of one sequence: the positions
// any layer observed, in order, and how far each layer is in that list
// (token mode: every layer must observe the same positions), and each
// layer's next position (slot mode: layers are independent).
type fuzzModel struct {
	live bool
	all  []int32
	idx  []int
	next []int32
}

func newFuzzModel(layers int) fuzzModel {
	return fuzzModel{live: true, idx: make([]int, layers), next: make([]int32, layers)}
}

func (m fuzzModel) clone() fuzzModel {
	return fuzzModel{live: m.live, all: slices.Clone(m.all), idx: slices.Clone(m.idx), next: slices.Clone(m.next)}
}

// inOrder reports whether layer may observe positions: first the positions
// other layers observed and this one not yet, then only newer ones.
func (m *fuzzModel) inOrder(layer int, positions []int32) bool {
	want := m.all[m.idx[layer]:]
	newest := int32(-1)
	if len(m.all) > 0 {
		newest = m.all[len(m.all)-1]
	}
	for i, q := range positions {
		if i < len(want) {
			if q != want[i] {
				return false
			}
		} else if q <= newest {
			return false
		}
	}
	return true
}

func (m *fuzzModel) observed(layer int, positions []int32) {
	for _, q := range positions {
		if m.idx[layer] == len(m.all) {
			m.all = append(m.all, q)
		}
		m.idx[layer]++
	}
	m.next[layer] = positions[len(positions)-1] + 1
}

// FuzzPolicySteps reads the input as a program of engine calls with
// arbitrary arguments — sequence ids, layers, positions, chunk sizes, raw
// float bits (NaN, Inf, denormals), strides — for both modes and every
// policy. Calls may fail, but only with an *Error of a known code; nothing
// may panic; after every successful placement the budget and the
// protections hold; an unmodified save → load round trip always succeeds
// and saves back to the same bytes, a blob with a flipped bit never loads;
// and a token-mode observe succeeds only when the layer observes the
// positions the other layers observed, in their order.
func FuzzPolicySteps(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte("\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte{0x81, 7, 0xff, 0xff, 0x7f, 0xc0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3})
	for _, seed := range tokenSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) < 2 {
			return
		}
		p := smallParams()
		p.Mode = Mode(prog[0] & 1)
		p.Policy = Policy(prog[0] >> 1 % 5)
		p.Score = Score(prog[0] >> 4 % 3)
		p.Probe = Probe(prog[0] >> 6 & 1)
		p.Bits = SupportedBits[int(prog[1])%len(SupportedBits)]
		p.MaxSeqs = 4
		e := mustEngine(t, p)
		model := make([]fuzzModel, p.MaxSeqs)
		rd := func() byte {
			if len(prog) == 0 {
				return 0
			}
			b := prog[0]
			prog = prog[1:]
			return b
		}
		valid := func(id int) bool { return id >= 0 && id < p.MaxSeqs }
		prog = prog[2:]
		for len(prog) > 0 {
			op, seq := rd()%8, int(int8(rd()))%6
			var err error
			switch op {
			case 0:
				if err = e.AddSeq(seq); err == nil {
					model[seq] = newFuzzModel(p.Layers)
				}
			case 1:
				if err = e.RemoveSeq(seq); err == nil {
					model[seq] = fuzzModel{}
				}
			case 2:
				dst := int(rd()) % 5
				if err = e.ForkSeq(seq, dst); err == nil {
					model[dst] = model[seq].clone()
				}
			case 3:
				if err = e.ResetSeq(seq); err == nil {
					model[seq] = newFuzzModel(p.Layers)
				}
			case 4:
				var blob []byte
				if blob, err = e.SaveSeq(seq); err == nil {
					flip := rd()&1 == 1
					if flip {
						blob[int(rd())%len(blob)] ^= 1 << (rd() % 8)
					}
					dst := int(rd()) % 5
					err = e.LoadSeq(dst, blob)
					switch {
					case flip && err == nil:
						t.Fatalf("a blob with a flipped bit loaded")
					case !flip && valid(dst):
						if err != nil {
							t.Fatalf("sequence %d refuses to load into %d, unmodified: %v", seq, dst, err)
						}
						if again, err := e.SaveSeq(dst); err != nil || !bytes.Equal(again, blob) {
							t.Fatalf("sequence %d loaded into %d saves differently (%v)", seq, dst, err)
						}
						model[dst] = model[seq].clone()
					}
				}
			case 5:
				out := make([]int32, 1+int(rd())%8)
				_, err = e.Evictions(seq, out)
			default:
				n := 1 + int(rd())%4
				layer := int(int8(rd())) % 3
				positions := make([]int32, n)
				start := int32(rd()) - 8
				for i := range positions {
					positions[i] = start + int32(i)
				}
				var m *fuzzModel
				if valid(seq) && model[seq].live {
					m = &model[seq]
				}
				if m != nil && layer >= 0 && layer < p.Layers && rd()&3 != 0 {
					// Mostly positions the model says are valid, so steps happen.
					copy(positions, m.all[m.idx[layer]:])
					for i := min(n, len(m.all)-m.idx[layer]); i < n; i++ {
						positions[i] = m.next[layer] + int32(i)
						if len(m.all) > 0 {
							positions[i] = max(positions[i], m.all[len(m.all)-1]+1+int32(i))
						}
					}
					if p.Mode == ModeSlot {
						for i := range positions {
							positions[i] = m.next[layer] + int32(i)
						}
					}
				}
				vals := make([]float32, n*p.QHeads*p.HeadDim+8)
				for i := range vals {
					switch rd() % 16 {
					case 0:
						vals[i] = math.Float32frombits(binary.LittleEndian.Uint32([]byte{rd(), rd(), rd(), rd()}))
					default:
						vals[i] = float32(int8(rd())) / 16
					}
				}
				q := f32Rows(vals, n, p.QHeads, p.HeadDim)
				k := f32Rows(vals, n, p.KVHeads, p.HeadDim)
				if rd()%8 == 0 {
					k.TokenStride = int64(int8(rd())) * 4 // possibly bad strides
				}
				if p.Mode == ModeSlot {
					slots := make([]int32, n*p.KVHeads)
					ev := make([]int32, n*p.KVHeads)
					err = e.Place(seq, layer, q, k, positions, slots, ev)
					if err == nil {
						for i, sl := range slots {
							if sl < 0 || int(sl) >= p.Budget {
								t.Fatalf("slot %d outside budget", sl)
							}
							if v := ev[i]; v >= 0 && (v < int32(p.Sinks) || v >= positions[n-1]-int32(p.Recent)) {
								t.Fatalf("evicted protected position %d", v)
							}
						}
					}
				} else {
					err = e.Observe(seq, layer, q, k, positions)
					if m != nil && layer >= 0 && layer < p.Layers && positions[0] >= m.next[layer] && positions[0] >= 0 {
						ok := m.inOrder(layer, positions)
						if err == nil && !ok {
							t.Fatalf("layer %d observed %v out of order (model %v, layer at %d)", layer, positions, m.all, m.idx[layer])
						}
						if err != nil && !ok && CodeOf(err) != CodePosition && CodeOf(err) != CodeShape && CodeOf(err) != CodeNonFinite {
							t.Fatalf("out-of-order observe: %v", err)
						}
						if ok && CodeOf(err) == CodePosition {
							t.Fatalf("layer %d refused %v, in order (model %v, layer at %d): %v", layer, positions, m.all, m.idx[layer], err)
						}
					}
				}
				if err == nil {
					model[seq].observed(layer, positions)
				}
			}
			if err != nil {
				if _, ok := err.(*Error); !ok || CodeOf(err) == CodeInternal {
					t.Fatalf("op %d: unexpected error %T %v", op, err, err)
				}
			}
		}
	})
}

// fuzzProg builds FuzzPolicySteps programs for the seeds.
type fuzzProg struct {
	b []byte
	p Params
}

func newFuzzProg(head byte) *fuzzProg {
	p := smallParams()
	return &fuzzProg{b: []byte{head, 1}, p: p}
}

func (g *fuzzProg) op(op, seq byte, args ...byte) *fuzzProg {
	g.b = append(append(g.b, op, seq), args...)
	return g
}

// observe emits one place/observe call of n tokens (n <= 4) whose positions
// the program picks itself: the model's next positions when asModel, else
// the given start (start + 8 is encoded, as the program subtracts 8).
func (g *fuzzProg) observe(seq, layer byte, n int, asModel bool, start int) *fuzzProg {
	pick := byte(0)
	if asModel {
		pick = 1
	}
	g.op(6, seq, byte(n-1), layer, byte(start+8), pick)
	for i := 0; i < n*g.p.QHeads*g.p.HeadDim+8; i++ {
		g.b = append(g.b, 1, byte(int8(int(i*37%61)-30)))
	}
	g.b = append(g.b, 1) // keep the strides
	return g
}

// step observes the next position on every layer, then asks for evictions.
func (g *fuzzProg) step(seq byte) *fuzzProg {
	for l := 0; l < g.p.Layers; l++ {
		g.observe(seq, byte(l), 1, true, 0)
	}
	return g.op(5, seq, 7)
}

// tokenSeeds reproduce issue 10's token-mode findings: a fork of a sequence
// never observed, then observed; empty sequences (new, reset, forked)
// saved and loaded; layers that skip a position; and a run past the budget
// with evictions, forks and round trips in between.
func tokenSeeds() [][]byte {
	var seeds [][]byte
	// mode byte: bit 0 token mode, bits 1.. policy 0 (hash), score instant.
	g := newFuzzProg(0x01).op(0, 0).op(2, 0, 1).step(1).step(0)
	seeds = append(seeds, g.b)
	g = newFuzzProg(0x01).op(0, 0).op(4, 0, 0, 2).op(2, 0, 1).op(4, 1, 0, 3).step(0)
	g.op(3, 0).op(4, 0, 0, 0).op(2, 0, 3).op(4, 3, 0, 1).step(1)
	seeds = append(seeds, g.b)
	g = newFuzzProg(0x01).op(0, 0).observe(0, 0, 3, false, 0).observe(0, 1, 2, false, 1).observe(0, 1, 1, false, 0)
	g.observe(0, 1, 3, true, 0).op(5, 0, 7)
	seeds = append(seeds, g.b)
	// Accumulated scores (0x10), key probe (0x40): a longer run.
	g = newFuzzProg(0x51).op(0, 0).observe(0, 0, 4, true, 0).observe(0, 1, 4, true, 0)
	for i := 0; i < 30; i++ {
		g.step(0)
		switch i % 10 {
		case 3:
			g.op(2, 0, 2)
		case 6:
			g.op(4, 0, 0, 1)
		case 9:
			g.op(4, 2, 1, 200, 3, 1) // a flipped bit, refused
		}
	}
	seeds = append(seeds, g.b)
	return seeds
}
