package main

import (
	"encoding/binary"
	"runtime"
	"strings"
	"testing"
)

// known lists every status the header pins.
var known = map[int32]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true, 6: true, 7: true, 8: true,
	9: true, 10: true, 11: true, 12: true, 13: true, 14: true, 15: true, 16: true}

// FuzzABI drives the exported functions with fuzzed parameters, tensor
// descriptors (dtype, device, shape, strides, NULL data, raw bytes),
// positions, ids and sizes, the way a C caller could. Every call must
// return a pinned status with a message when it fails; HASHEVICT_ERR_INTERNAL
// (a recovered panic) fails the test.
func FuzzABI(f *testing.F) {
	f.Add([]byte{1, 2, 0, 0, 8, 2, 4, 16, 16, 24, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18"))
	f.Fuzz(func(t *testing.T, prog []byte) {
		runtime.LockOSThread() // the last error is thread-local
		defer runtime.UnlockOSThread()
		rd := func() byte {
			if len(prog) == 0 {
				return 0
			}
			b := prog[0]
			prog = prog[1:]
			return b
		}
		rd32 := func() int32 { return int32(binary.LittleEndian.Uint32([]byte{rd(), rd(), rd(), rd()})) }
		h := &harness{}
		defer h.free()
		p := defaultHarnessParams()
		p.Mode, p.Policy, p.Probe, p.Score = int32(rd()%3), int32(rd()%6), int32(rd()%3), int32(rd()%4)
		p.Layers, p.KVHeads, p.QHeads = int32(rd()%4), 1+int32(rd()%3), int32(rd()%7)
		p.HeadDim, p.Bits, p.Budget = int32(rd()%40), []int32{8, 16, 24, 32, 64, 128, 256, 0}[rd()%8], int32(rd())
		p.Sinks, p.Recent, p.MaxSeqs = int32(rd()%8), int32(rd()%16), int32(rd()%5)
		if rd()%16 == 0 {
			p.Size = uint32(rd())
		}
		check := func(what string, st int32) {
			if !known[st] {
				t.Fatalf("%s: status %d (%s)", what, st, h.lastError())
			}
			if st != 0 && h.lastError() == "" {
				t.Fatalf("%s: status %d without a message", what, st)
			}
		}
		check("create", h.create(p))
		if h.eng == 0 {
			return
		}
		for len(prog) > 0 {
			seq := int32(int8(rd())) % 6
			switch rd() % 6 {
			case 0:
				check("seq op", h.seqOp(int(rd()%4), seq, int32(int8(rd()))%6))
			case 1:
				check("evictions", h.evictions(seq, int32(int8(rd()))))
			case 2:
				check("save/load", h.saveLoad(seq, int32(int8(rd()))%6, int(rd())-128))
			default:
				n := int32(int8(rd())) % 5
				mk := func(heads int32) *harnessTensor {
					if rd()%16 == 0 {
						return nil
					}
					dim := int64(p.HeadDim)
					tt := &harnessTensor{DType: int32(rd() % 4), Dim: dim, Heads: int64(heads), Tokens: int64(n),
						HeadStride: dim * 4, TokenStride: int64(heads) * dim * 4}
					switch rd() % 8 {
					case 0:
						tt.Null = true
					case 1:
						tt.Device = int32(rd() % 3)
					case 2:
						tt.HeadStride, tt.TokenStride = int64(rd32()), int64(rd32())
					case 3:
						tt.Dim, tt.Heads, tt.Tokens = int64(int8(rd())), int64(int8(rd())), int64(int8(rd()))
					case 4:
						tt.Stream = true
					}
					tt.Fill = []byte{rd(), rd(), rd(), rd() & 0x7f}
					return tt
				}
				q, k := mk(p.QHeads), mk(p.KVHeads)
				var positions []int32
				if rd()%16 != 0 && n > 0 {
					positions = make([]int32, n)
					base := rd32() % 64
					for i := range positions {
						positions[i] = base + int32(i)*int32(1+rd()%2)
					}
				}
				st, ok := h.step(rd()&1 == 1, seq, int32(int8(rd()))%5, q, k, positions, n, int(int8(rd()))%4)
				if ok {
					check("step", st)
				}
			}
		}
	})
}

// TestPanicIsRecovered checks the recover path without the environment:
// a panic inside an export becomes HASHEVICT_ERR_INTERNAL, poisons that
// engine only, and the next engine works.
func TestPanicIsRecovered(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p := defaultHarnessParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = 1, 1, 1, 8, 32
	h := &harness{}
	defer h.free()
	if st := h.create(p); st != 0 {
		t.Fatal(st, h.lastError())
	}
	handlesMu.RLock()
	hd := handles[uintptr(h.eng)]
	handlesMu.RUnlock()
	hd.panicIn = "hashevict_seq_add"
	if st := h.seqOp(0, 0, 0); st != 99 {
		t.Fatalf("panic gave status %d", st)
	}
	if msg := h.lastError(); msg == "" {
		t.Fatal("no message for the recovered panic")
	}
	if st := h.seqOp(1, 0, 0); st != 99 {
		t.Fatalf("poisoned engine answered %d", st)
	}
	other := &harness{}
	defer other.free()
	if st := other.create(p); st != 0 || other.seqOp(0, 0, 0) != 0 {
		t.Fatal("a new engine does not work after another one panicked")
	}
}

// TestEveryExportNamesItself checks that each export reports failures under
// the name of the C function it implements (the names once came from a
// table indexed by an op code) and that a NULL or stale engine is refused by
// every one of them.
func TestEveryExportNamesItself(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h := &harness{}
	defer h.free()
	p := defaultHarnessParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = 1, 1, 1, 8, 32
	if st := h.create(p); st != 0 {
		t.Fatal(st, h.lastError())
	}
	live := h.eng
	hevgo_engine_free(live)
	h.eng = 0
	for _, e := range []struct {
		what string
		eng  uintptr
		want string
	}{{"NULL", 0, "engine is NULL"}, {"freed", uintptr(live), "not a live engine"}} {
		res := h.callEvery(cEngine(e.eng))
		if len(res) != 17 {
			t.Fatalf("%d exports called, want every one of the 17 that take an engine", len(res))
		}
		for _, r := range res {
			if r.st != 2 || !strings.HasPrefix(r.msg, r.fn+": ") || !strings.Contains(r.msg, e.want) {
				t.Errorf("%s engine: %s gave status %d, message %q; want 2 and %q naming the function", e.what, r.fn, r.st, r.msg, e.want)
			}
		}
	}
}
