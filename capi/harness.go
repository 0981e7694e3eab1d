package main

/*
#include <stdlib.h>
#include <string.h>
#include "hashevict.h"
*/
import "C"

import (
	"unsafe"
)

// harness calls the exports with C memory the way a C caller would, for
// the tests (test files cannot use cgo). Nothing in the library refers to
// it, so the linker leaves it out of libhashevict.so.
type harness struct {
	eng   C.uintptr_t
	alloc []unsafe.Pointer
}

func (h *harness) cmem(n int) unsafe.Pointer {
	p := C.calloc(C.size_t(max(n, 1)), 1)
	h.alloc = append(h.alloc, p)
	return p
}

func (h *harness) free() {
	hevgo_engine_free(h.eng)
	for _, p := range h.alloc {
		C.free(p)
	}
	h.alloc = nil
}

// harnessParams are the fields of hashevict_params, in order.
type harnessParams struct {
	Size                                           uint32
	Mode, Policy, Probe, Score                     int32
	Layers, KVHeads, QHeads, HeadDim, Bits, Budget int32
	Sinks, Recent, MaxSeqs                         int32
	Decay                                          float32
	Seed, MemoryCap                                uint64
}

func defaultHarnessParams() harnessParams {
	var c C.hashevict_params
	hevgo_default_params(&c)
	return harnessParams{uint32(c.size), int32(c.mode), int32(c.policy), int32(c.probe), int32(c.score),
		int32(c.n_layers), int32(c.n_kv_heads), int32(c.n_q_heads), int32(c.head_dim), int32(c.hash_bits),
		int32(c.budget), int32(c.n_sink), int32(c.n_recent), int32(c.max_seqs), float32(c.decay),
		uint64(c.seed), uint64(c.memory_cap_bytes)}
}

func (h *harness) create(p harnessParams) int32 {
	c := (*C.hashevict_params)(h.cmem(int(C.sizeof_hashevict_params)))
	c.size = C.uint32_t(p.Size)
	c.mode, c.policy, c.probe, c.score = C.int32_t(p.Mode), C.int32_t(p.Policy), C.int32_t(p.Probe), C.int32_t(p.Score)
	c.n_layers, c.n_kv_heads, c.n_q_heads = C.int32_t(p.Layers), C.int32_t(p.KVHeads), C.int32_t(p.QHeads)
	c.head_dim, c.hash_bits, c.budget = C.int32_t(p.HeadDim), C.int32_t(p.Bits), C.int32_t(p.Budget)
	c.n_sink, c.n_recent, c.max_seqs = C.int32_t(p.Sinks), C.int32_t(p.Recent), C.int32_t(p.MaxSeqs)
	c.decay, c.seed, c.memory_cap_bytes = C.float(p.Decay), C.uint64_t(p.Seed), C.uint64_t(p.MemoryCap)
	var out C.uintptr_t
	st := hevgo_engine_create(c, 1, &out)
	h.eng = out
	return int32(st)
}

// seqOp calls one of the sequence functions, chosen by op % 4 (add,
// remove, reset, fork), so a fuzzer can pick it from a byte.
func (h *harness) seqOp(op int, a, b int32) int32 {
	switch op % 4 {
	case 0:
		return int32(hevgo_seq_add(h.eng, C.int32_t(a)))
	case 1:
		return int32(hevgo_seq_remove(h.eng, C.int32_t(a)))
	case 2:
		return int32(hevgo_seq_reset(h.eng, C.int32_t(a)))
	}
	return int32(hevgo_seq_fork(h.eng, C.int32_t(a), C.int32_t(b)))
}

// harnessTensor describes rows; data is copied into C memory of the size
// the descriptor claims (so a well-formed claim is never read out of
// bounds), or passed as NULL when Null is set.
type harnessTensor struct {
	Null                    bool
	Stream                  bool // a non-NULL stream (a pointer to C memory)
	DType, Device           int32
	Dim, Heads, Tokens      int64
	HeadStride, TokenStride int64
	Fill                    []byte
}

// maxHarnessBytes bounds the C memory one fuzzed tensor may claim.
const maxHarnessBytes = 1 << 20

func (h *harness) tensor(t *harnessTensor) (*C.hashevict_tensor, bool) {
	if t == nil {
		return nil, true
	}
	c := (*C.hashevict_tensor)(h.cmem(int(C.sizeof_hashevict_tensor)))
	c.dtype, c.device = C.int32_t(t.DType), C.int32_t(t.Device)
	c.head_dim, c.n_heads, c.n_tokens = C.int64_t(t.Dim), C.int64_t(t.Heads), C.int64_t(t.Tokens)
	c.head_stride, c.token_stride = C.int64_t(t.HeadStride), C.int64_t(t.TokenStride)
	if t.Stream {
		c.stream = h.cmem(8)
	}
	if t.Null {
		return c, true
	}
	// The bytes a valid descriptor of these numbers could span; a claim
	// beyond the bound is skipped rather than handed to the library, which
	// trusts the caller's pointer for that much memory.
	extent := int64(16)
	if t.Dim > 0 && t.Heads > 0 && t.Tokens > 0 && t.HeadStride > 0 && t.TokenStride > 0 {
		if t.Dim > maxHarnessBytes || t.Heads > maxHarnessBytes || t.Tokens > maxHarnessBytes ||
			t.HeadStride > maxHarnessBytes || t.TokenStride > maxHarnessBytes {
			return nil, false
		}
		extent = (t.Tokens-1)*t.TokenStride + (t.Heads-1)*t.HeadStride + t.Dim*4
	}
	if extent > maxHarnessBytes {
		return nil, false
	}
	p := h.cmem(int(extent))
	buf := unsafe.Slice((*byte)(p), extent)
	for i := range buf {
		if len(t.Fill) > 0 {
			buf[i] = t.Fill[i%len(t.Fill)]
		}
	}
	c.data = p
	return c, true
}

func (h *harness) int32s(v []int32) *C.int32_t {
	if v == nil {
		return nil
	}
	p := (*C.int32_t)(h.cmem(4 * len(v)))
	copy(unsafe.Slice((*int32)(unsafe.Pointer(p)), len(v)), v)
	return p
}

// step calls place (token = false) or observe with outputs sized for
// n*outHeads entries (no outputs when outHeads < 0).
func (h *harness) step(token bool, seq, layer int32, q, k *harnessTensor, positions []int32, n int32, outHeads int) (int32, bool) {
	qc, ok1 := h.tensor(q)
	kc, ok2 := h.tensor(k)
	if !ok1 || !ok2 {
		return 0, false
	}
	if int64(len(positions)) < int64(n) && positions != nil {
		return 0, false // a C caller passing a shorter array is outside the contract
	}
	var outSlots, outEv *C.int32_t
	if outHeads >= 0 && n > 0 {
		outSlots = h.int32s(make([]int32, int(n)*outHeads))
		outEv = h.int32s(make([]int32, int(n)*outHeads))
	}
	if token {
		return int32(hevgo_observe(h.eng, C.int32_t(seq), C.int32_t(layer), qc, kc, h.int32s(positions), C.int32_t(n))), true
	}
	return int32(hevgo_place(h.eng, C.int32_t(seq), C.int32_t(layer), qc, kc, h.int32s(positions), C.int32_t(n), outSlots, outEv)), true
}

func (h *harness) evictions(seq, capacity int32) int32 {
	var out *C.int32_t
	if capacity > 0 {
		out = h.int32s(make([]int32, capacity))
	}
	cnt := (*C.int32_t)(h.cmem(4))
	return int32(hevgo_evictions(h.eng, C.int32_t(seq), out, C.int32_t(capacity), cnt))
}

func (h *harness) saveLoad(seq, dst int32, flip int) int32 {
	size := (*C.size_t)(h.cmem(8))
	if st := hevgo_seq_state_size(h.eng, C.int32_t(seq), size); st != C.HASHEVICT_OK {
		return int32(st)
	}
	buf := h.cmem(int(*size))
	if st := hevgo_seq_state_save(h.eng, C.int32_t(seq), buf, *size, size); st != C.HASHEVICT_OK {
		return int32(st)
	}
	if flip >= 0 && *size > 0 {
		b := unsafe.Slice((*byte)(buf), int(*size))
		b[flip%len(b)] ^= 0x20
	}
	return int32(hevgo_seq_state_load(h.eng, C.int32_t(dst), buf, *size))
}

func (h *harness) lastError() string { return C.GoString(C.hashevict_last_error()) }

// exportResult is what one export answered.
type exportResult struct {
	fn  string // the C function the export implements
	st  int32
	msg string
}

// callEvery calls each export that takes an engine with engine e and
// arguments it could accept, and returns each status with the thread's
// message right after it (the caller locks the OS thread).
func (h *harness) callEvery(e C.uintptr_t) []exportResult {
	var res []exportResult
	rec := func(fn string, st C.hashevict_status) {
		res = append(res, exportResult{fn, int32(st), h.lastError()})
	}
	i32 := (*C.int32_t)(h.cmem(4 * 64))
	sz := (*C.size_t)(h.cmem(8))
	params := (*C.hashevict_params)(h.cmem(int(C.sizeof_hashevict_params)))
	params.size = C.uint32_t(C.sizeof_hashevict_params)
	stats := (*C.hashevict_stats)(h.cmem(int(C.sizeof_hashevict_stats)))
	stats.size = C.uint32_t(C.sizeof_hashevict_stats)
	buf := h.cmem(64)
	rec("hashevict_engine_params", hevgo_engine_params(e, params))
	rec("hashevict_seq_add", hevgo_seq_add(e, 0))
	rec("hashevict_seq_remove", hevgo_seq_remove(e, 0))
	rec("hashevict_seq_reset", hevgo_seq_reset(e, 0))
	rec("hashevict_seq_fork", hevgo_seq_fork(e, 0, 1))
	rec("hashevict_place", hevgo_place(e, 0, 0, nil, nil, i32, 1, i32, nil))
	rec("hashevict_observe", hevgo_observe(e, 0, 0, nil, nil, i32, 1))
	rec("hashevict_slot_positions", hevgo_slot_positions(e, 0, 0, 0, i32, 64))
	rec("hashevict_evictions", hevgo_evictions(e, 0, i32, 64, i32))
	rec("hashevict_token_positions", hevgo_token_positions(e, 0, i32, 64, i32))
	rec("hashevict_set_layer_window", hevgo_set_layer_window(e, 0, 0))
	rec("hashevict_hash", hevgo_hash(e, 0, nil, (*C.uint64_t)(buf), 8))
	rec("hashevict_projection", hevgo_projection(e, 0, (*C.float)(buf), 16))
	rec("hashevict_stats_get", hevgo_stats_get(e, -1, stats))
	rec("hashevict_seq_state_size", hevgo_seq_state_size(e, 0, sz))
	rec("hashevict_seq_state_save", hevgo_seq_state_save(e, 0, buf, 64, sz))
	rec("hashevict_seq_state_load", hevgo_seq_state_load(e, 0, buf, 64))
	return res
}

func cEngine(e uintptr) C.uintptr_t { return C.uintptr_t(e) }

// decodeLoop prepares, in C memory, what a llama.cpp fork passes to
// hashevict_place for one token of every layer (f32 q and k, one position,
// out_slots, no out_evicted) on an engine created with p, and returns a
// function that runs one such token through every layer; its status is the
// first failure's, or 0. Nothing but the calls themselves runs per token,
// so the tests can count what the library allocates.
func (h *harness) decodeLoop(p harnessParams, fill func(i int) float32) (func() int32, int32) {
	if st := h.create(p); st != 0 {
		return nil, st
	}
	if st := hevgo_seq_add(h.eng, 0); st != 0 {
		return nil, int32(st)
	}
	desc := func(heads int32) *C.hashevict_tensor {
		n := int(heads * p.HeadDim)
		c := (*C.hashevict_tensor)(h.cmem(int(C.sizeof_hashevict_tensor)))
		data := unsafe.Slice((*float32)(h.cmem(4*n)), n)
		for i := range data {
			data[i] = fill(i)
		}
		c.data = unsafe.Pointer(&data[0])
		c.dtype, c.device = C.HASHEVICT_DTYPE_F32, C.HASHEVICT_DEVICE_HOST
		c.head_dim, c.n_heads, c.n_tokens = C.int64_t(p.HeadDim), C.int64_t(heads), 1
		c.head_stride, c.token_stride = C.int64_t(4*p.HeadDim), C.int64_t(4*n)
		return c
	}
	q, k := desc(p.QHeads), desc(p.KVHeads)
	pos := (*C.int32_t)(h.cmem(4))
	slots := (*C.int32_t)(h.cmem(4 * int(p.KVHeads)))
	data := unsafe.Slice((*float32)(k.data), int(p.KVHeads*p.HeadDim))
	return func() int32 {
		// A new key each token, so the hash tables see changing codes.
		data[int(*pos)%len(data)] += 0.5
		for l := int32(0); l < p.Layers; l++ {
			if st := hevgo_place(h.eng, 0, C.int32_t(l), q, k, pos, 1, slots, nil); st != 0 {
				return int32(st)
			}
		}
		*pos++
		return 0
	}, 0
}
