package policy

import (
	"encoding/binary"
	"math"
	"testing"
	"unsafe"
)

// FuzzPolicySteps reads the input as a program of engine calls with
// arbitrary arguments — sequence ids, layers, positions, chunk sizes, raw
// float bits (NaN, Inf, denormals), strides — for both modes and every
// policy. Calls may fail, but only with an *Error of a known code; nothing
// may panic, and after every successful placement the budget and the
// protections hold.
func FuzzPolicySteps(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte("\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte{0x81, 7, 0xff, 0xff, 0x7f, 0xc0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3})
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
		next := make([]int32, p.MaxSeqs)
		rd := func() byte {
			if len(prog) == 0 {
				return 0
			}
			b := prog[0]
			prog = prog[1:]
			return b
		}
		prog = prog[2:]
		for len(prog) > 0 {
			op, seq := rd()%8, int(int8(rd()))%6
			var err error
			switch op {
			case 0:
				err = e.AddSeq(seq)
			case 1:
				err = e.RemoveSeq(seq)
			case 2:
				err = e.ForkSeq(seq, int(rd())%5)
			case 3:
				err = e.ResetSeq(seq)
				if err == nil {
					next[seq] = 0
				}
			case 4:
				var blob []byte
				if blob, err = e.SaveSeq(seq); err == nil {
					if rd()&1 == 1 && len(blob) > 0 {
						blob[int(rd())%len(blob)] ^= 1 << (rd() % 8)
					}
					err = e.LoadSeq(int(rd())%5, blob)
				}
			case 5:
				out := make([]int32, 1+int(rd())%8)
				_, err = e.Evictions(seq, out)
			default:
				n := 1 + int(rd())%4
				layer := int(int8(rd())) % 3
				start := int32(rd()) - 8
				if seq >= 0 && seq < len(next) && rd()&3 != 0 {
					start = next[seq] // mostly valid positions, so steps happen
				}
				positions := make([]int32, n)
				for i := range positions {
					positions[i] = start + int32(i)
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
				}
				if err == nil && seq >= 0 && seq < len(next) && layer == p.Layers-1 {
					next[seq] = positions[n-1] + 1
				}
			}
			if err != nil {
				if _, ok := err.(*Error); !ok || CodeOf(err) == CodeInternal {
					t.Fatalf("op %d: unexpected error %T %v", op, err, err)
				}
			}
		}
		_ = unsafe.Sizeof(0)
	})
}
