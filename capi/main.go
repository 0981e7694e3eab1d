// Command capi is libhashevict: built with -buildmode=c-shared, it exports
// the functions of include/hashevict.h. It is the only package that imports
// "C". Each C function hashevict_<name> is one Go export hevgo_<name>,
// reached through a one-line forwarder in shim.c (which says why it exists).
// Every export validates its arguments, describes failures through the
// thread-local last error, and recovers panics into HASHEVICT_ERR_INTERNAL.
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../include -O2 -Wall
#include <stdlib.h>
#include "hashevict.h"
// The process environment as C sees it now: Go's os.Getenv only sees a copy
// taken when the library was loaded, missing later setenv calls.
static inline const char *hev_getenv(const char *name) { return getenv(name); }
void hev_set_last_error(const char *msg, size_t n);
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hashevict/hashevict/policy"
	"github.com/hashevict/hashevict/simd"
)

func main() {}

// handle is what an opaque hashevict_engine* stands for.
type handle struct {
	eng      *policy.Engine
	poisoned atomic.Bool
	// panicIn names an export that panics on purpose; set from
	// HASHEVICT_TEST_PANIC at create so tests can exercise the recover path.
	panicIn string
}

// Handles are numbers with the top bits set: no user-space pointer looks
// like one, and a freed number is never reused, so a stale or foreign
// pointer is recognised instead of dereferenced.
const handleTag = uintptr(0x4845) << 48

var (
	handlesMu  sync.RWMutex
	handles    = map[uintptr]*handle{}
	nextHandle uintptr
)

type status = C.hashevict_status

func cgetenv(name string) string {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	if v := C.hev_getenv(cs); v != nil {
		return C.GoString(v)
	}
	return ""
}

func setLastError(msg string) {
	if msg == "" {
		msg = "unknown error"
	}
	b := []byte(msg)
	C.hev_set_last_error((*C.char)(unsafe.Pointer(&b[0])), C.size_t(len(b)))
}

// fail records err as the thread's last error and returns its status.
func fail(err error) status {
	var pe *policy.Error
	if errors.As(err, &pe) {
		setLastError(pe.Msg)
		return status(pe.Code)
	}
	setLastError(err.Error())
	return C.HASHEVICT_ERR_INTERNAL
}

func failf(code policy.Code, format string, args ...any) status {
	return fail(&policy.Error{Code: code, Msg: fmt.Sprintf(format, args...)})
}

// guard runs fn, turning a panic into HASHEVICT_ERR_INTERNAL and poisoning
// the engine it was working on (its state may be half-updated).
func guard(h *handle, fn func() status) (st status) {
	defer func() {
		if r := recover(); r != nil {
			if h != nil {
				h.poisoned.Store(true)
			}
			msg := fmt.Sprintf("internal error (engine poisoned; free it): %v", r)
			if cgetenv("HASHEVICT_DEBUG") != "" {
				msg += "\n" + string(debug.Stack())
			}
			setLastError(msg)
			st = C.HASHEVICT_ERR_INTERNAL
		}
	}()
	return fn()
}

// lookup validates an engine handle.
func lookup(e C.uintptr_t, fn string) (*handle, status) {
	if e == 0 {
		return nil, failf(policy.CodeInvalidHandle, "%s: engine is NULL", fn)
	}
	handlesMu.RLock()
	h := handles[uintptr(e)]
	handlesMu.RUnlock()
	if h == nil {
		return nil, failf(policy.CodeInvalidHandle, "%s: engine %#x is not a live engine of this library (freed, or a foreign pointer)", fn, uintptr(e))
	}
	if h.poisoned.Load() {
		return nil, failf(policy.CodeInternal, "%s: engine is poisoned by an earlier internal error; free it and create a new one", fn)
	}
	return h, C.HASHEVICT_OK
}

// call is the common shape of an export on an engine: validate the handle,
// then run fn under guard, mapping its error.
func call(e C.uintptr_t, fn string, body func(h *handle) error) status {
	yieldIfStale()
	var h *handle
	return guard(nil, func() status {
		var st status
		h, st = lookup(e, fn)
		if st != C.HASHEVICT_OK {
			return st
		}
		return guard(h, func() status {
			if h.panicIn == fn {
				panic("injected by HASHEVICT_TEST_PANIC=" + fn)
			}
			if err := body(h); err != nil {
				return fail(err)
			}
			return C.HASHEVICT_OK
		})
	})
}

// paramsV1Size is sizeof(hashevict_params) up to 0.4.0 (through
// memory_cap_bytes): callers must pass at least that much. The fields after
// it are read only when the caller's size covers them, so a caller compiled
// against an older header gets their defaults.
const paramsV1Size = C.uint32_t(unsafe.Offsetof(C.hashevict_params{}.memory_cap_bytes) + 8)

// paramsSize is sizeof(hashevict_params) in this header.
const paramsSize = C.uint32_t(C.sizeof_hashevict_params)

// maxParamsSize bounds the size create reads: the bytes past this library's
// struct are read to check they are zero.
const maxParamsSize = 1024

//export hevgo_default_params
func hevgo_default_params(out *C.hashevict_params) {
	guard(nil, func() status {
		out.size = paramsSize
		writeParams(out, policy.DefaultParams())
		return C.HASHEVICT_OK
	})
}

func writeParams(out *C.hashevict_params, p policy.Params) {
	out.mode = C.int32_t(p.Mode)
	out.policy = C.int32_t(p.Policy)
	out.probe = C.int32_t(p.Probe)
	out.score = C.int32_t(p.Score)
	out.n_layers = C.int32_t(p.Layers)
	out.n_kv_heads = C.int32_t(p.KVHeads)
	out.n_q_heads = C.int32_t(p.QHeads)
	out.head_dim = C.int32_t(p.HeadDim)
	out.hash_bits = C.int32_t(p.Bits)
	out.budget = C.int32_t(p.Budget)
	out.n_sink = C.int32_t(p.Sinks)
	out.n_recent = C.int32_t(p.Recent)
	out.max_seqs = C.int32_t(p.MaxSeqs)
	out.decay = C.float(p.Decay)
	out.seed = C.uint64_t(p.Seed)
	out.memory_cap_bytes = C.uint64_t(p.MemoryCapBytes)
	out.estimate = C.int32_t(p.Estimate)
	out.redundancy = C.float(p.Redundancy)
}

// readParams reads the caller's params of in.size bytes (at least
// paramsV1Size): a 0.4 struct's size gives the newer fields their defaults, and bytes past
// this library's struct must be zero, since a field this library does not
// know would otherwise be ignored silently.
func readParams(in *C.hashevict_params) (policy.Params, error) {
	size := uintptr(in.size)
	if size > maxParamsSize {
		// Not a struct any header will grow to: a size field never set.
		return policy.Params{}, &policy.Error{Code: policy.CodeInvalidArgument, Msg: fmt.Sprintf("hashevict_engine_create: params->size = %d is not the size of a hashevict_params (at most %d; set it from hashevict_default_params())", size, maxParamsSize)}
	}
	if size != uintptr(paramsV1Size) && size < uintptr(paramsSize) {
		// Between the sizes of two headers: not a struct any header made.
		return policy.Params{}, &policy.Error{Code: policy.CodeInvalidArgument, Msg: fmt.Sprintf("hashevict_engine_create: params->size = %d is neither %d (headers up to 0.4) nor at least %d (this one): set it from hashevict_default_params()", size, paramsV1Size, paramsSize)}
	}
	if size > uintptr(paramsSize) {
		extra := unsafe.Slice((*byte)(unsafe.Pointer(in)), size)[paramsSize:]
		for i, b := range extra {
			if b != 0 {
				return policy.Params{}, &policy.Error{Code: policy.CodeInvalidArgument, Msg: fmt.Sprintf("hashevict_engine_create: params->size = %d, larger than this library's %d (%s), and byte %d past it is not zero: a field this library does not know would be ignored", size, paramsSize, C.GoString(C.hashevict_version()), int(paramsSize)+i)}
			}
		}
	}
	p := policy.Params{
		Mode:           policy.Mode(in.mode),
		Policy:         policy.Policy(in.policy),
		Probe:          policy.Probe(in.probe),
		Score:          policy.Score(in.score),
		Layers:         int(in.n_layers),
		KVHeads:        int(in.n_kv_heads),
		QHeads:         int(in.n_q_heads),
		HeadDim:        int(in.head_dim),
		Bits:           int(in.hash_bits),
		Budget:         int(in.budget),
		Sinks:          int(in.n_sink),
		Recent:         int(in.n_recent),
		MaxSeqs:        int(in.max_seqs),
		Decay:          float32(in.decay),
		Seed:           uint64(in.seed),
		MemoryCapBytes: uint64(in.memory_cap_bytes),
	}
	d := policy.DefaultParams()
	p.Estimate, p.Redundancy = d.Estimate, d.Redundancy
	if size >= unsafe.Offsetof(in.estimate)+unsafe.Sizeof(in.estimate) {
		p.Estimate = policy.Estimate(in.estimate)
	}
	if size >= unsafe.Offsetof(in.redundancy)+unsafe.Sizeof(in.redundancy) {
		p.Redundancy = float32(in.redundancy)
	}
	return p, nil
}

//export hevgo_engine_create
func hevgo_engine_create(params *C.hashevict_params, hasOut C.int, out *C.uintptr_t) status {
	return guard(nil, func() status {
		if hasOut == 0 {
			return failf(policy.CodeInvalidArgument, "hashevict_engine_create: out is NULL")
		}
		if params == nil {
			return failf(policy.CodeInvalidArgument, "hashevict_engine_create: params is NULL (start from hashevict_default_params())")
		}
		if params.size < paramsV1Size {
			return failf(policy.CodeInvalidArgument, "hashevict_engine_create: params->size = %d, want at least %d (set it from hashevict_default_params())", params.size, paramsV1Size)
		}
		p, err := readParams(params)
		if err != nil {
			return fail(err)
		}
		eng, err := policy.NewEngine(p)
		if err != nil {
			return fail(err)
		}
		h := &handle{eng: eng, panicIn: cgetenv("HASHEVICT_TEST_PANIC")}
		handlesMu.Lock()
		nextHandle++
		id := handleTag | nextHandle<<4
		handles[id] = h
		handlesMu.Unlock()
		*out = C.uintptr_t(id)
		return C.HASHEVICT_OK
	})
}

//export hevgo_engine_free
func hevgo_engine_free(e C.uintptr_t) {
	guard(nil, func() status {
		handlesMu.Lock()
		h := handles[uintptr(e)]
		delete(handles, uintptr(e))
		handlesMu.Unlock()
		if h != nil {
			// Its memory leaves the process-wide bound now, not when the
			// collector gets to it; device memory is never the collector's.
			h.eng.FreeDevice()
			h.eng.Close()
		}
		return C.HASHEVICT_OK
	})
}

//export hevgo_engine_params
func hevgo_engine_params(e C.uintptr_t, out *C.hashevict_params) status {
	return call(e, "hashevict_engine_params", func(h *handle) error {
		if out == nil {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: "hashevict_engine_params: out is NULL"}
		}
		size := uintptr(out.size)
		if size < unsafe.Sizeof(out.size) {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: "hashevict_engine_params: out->size is not set"}
		}
		var full C.hashevict_params
		full.size = paramsSize
		writeParams(&full, h.eng.P)
		copyPrefix(unsafe.Pointer(out), unsafe.Pointer(&full), size, unsafe.Sizeof(full))
		return nil
	})
}

// copyPrefix copies min(have, want) bytes, keeping the caller's size field.
func copyPrefix(dst, src unsafe.Pointer, have, want uintptr) {
	n := min(have, want)
	size := *(*C.uint32_t)(dst)
	copy(unsafe.Slice((*byte)(dst), n), unsafe.Slice((*byte)(src), n))
	*(*C.uint32_t)(dst) = size
}

// kernelNames holds one C copy of each kernel-set name, allocated on first
// use and never freed: hashevict_kernels promises static storage, and the
// set in use can change at run time (HASHEVICT_KERNELS, tests).
var (
	kernelNamesMu sync.Mutex
	kernelNames   = map[string]*C.char{}
)

//export hevgo_kernels
func hevgo_kernels() (name *C.char) {
	// No engine and no status to report through: a panic here (none is
	// known) gives the shim's fallback rather than crossing into C.
	defer func() {
		if recover() != nil {
			name = nil
		}
	}()
	s := simd.Active().Name
	kernelNamesMu.Lock()
	defer kernelNamesMu.Unlock()
	if c, ok := kernelNames[s]; ok {
		return c
	}
	c := C.CString(s)
	kernelNames[s] = c
	return c
}

//export hevgo_seq_add
func hevgo_seq_add(e C.uintptr_t, seq C.int32_t) status {
	return call(e, "hashevict_seq_add", func(h *handle) error { return h.eng.AddSeq(int(seq)) })
}

//export hevgo_seq_remove
func hevgo_seq_remove(e C.uintptr_t, seq C.int32_t) status {
	return call(e, "hashevict_seq_remove", func(h *handle) error { return h.eng.RemoveSeq(int(seq)) })
}

//export hevgo_seq_reset
func hevgo_seq_reset(e C.uintptr_t, seq C.int32_t) status {
	return call(e, "hashevict_seq_reset", func(h *handle) error { return h.eng.ResetSeq(int(seq)) })
}

//export hevgo_seq_fork
func hevgo_seq_fork(e C.uintptr_t, src, dst C.int32_t) status {
	return call(e, "hashevict_seq_fork", func(h *handle) error { return h.eng.ForkSeq(int(src), int(dst)) })
}

// rows turns a tensor descriptor into a policy view over the caller's
// memory. what names the argument in messages.
func rows(t *C.hashevict_tensor, what string) (*policy.Rows, error) {
	return view(t, what, new(policy.Rows))
}

// view is rows writing the view into *into, which it returns (nil for a
// NULL t): place and observe keep their views in their own frames, since
// views returned by pointer are two heap objects per call, and a decoding
// host calls once per layer and token (TestPlaceAllocatesNothing).
func view(t *C.hashevict_tensor, what string, into *policy.Rows) (*policy.Rows, error) {
	if t == nil {
		return nil, nil
	}
	if t.data == nil {
		return nil, &policy.Error{Code: policy.CodeInvalidArgument, Msg: what + "->data is NULL"}
	}
	switch t.device {
	case C.HASHEVICT_DEVICE_HOST:
		// A stream with host memory means the caller believes the library
		// orders its reads after work on that stream; it does not, so
		// ignoring it could read data a kernel is still writing.
		if t.stream != nil {
			return nil, &policy.Error{Code: policy.CodeInvalidArgument, Msg: what + "->stream is set but " + what + " is in host memory (DEVICE_HOST): a stream belongs to a DEVICE_CUDA tensor; synchronise it and pass NULL"}
		}
	case C.HASHEVICT_DEVICE_CUDA:
		// The calls with a CUDA path (place, place_async, hash) branch off
		// before they view their tensors here.
		return nil, &policy.Error{Code: policy.CodeUnsupported, Msg: what + " is on a CUDA device, but this call has no CUDA path (only hashevict_place, hashevict_place_async and hashevict_hash take CUDA tensors); copy it to host memory"}
	default:
		return nil, &policy.Error{Code: policy.CodeUnsupported, Msg: fmt.Sprintf("%s->device = %d is not a hashevict_device", what, t.device)}
	}
	for _, v := range []C.int64_t{t.head_dim, t.n_heads, t.n_tokens} {
		if v < 1 || v > math.MaxInt32 {
			return nil, &policy.Error{Code: policy.CodeShape, Msg: fmt.Sprintf("%s has shape [%d tokens][%d heads][%d]: every dimension must be in 1..2^31-1", what, t.n_tokens, t.n_heads, t.head_dim)}
		}
	}
	dt := policy.DType(t.dtype)
	ext, err := policy.Extent(dt, int(t.head_dim), int(t.n_heads), int(t.n_tokens), int64(t.head_stride), int64(t.token_stride))
	if err != nil {
		var pe *policy.Error
		if errors.As(err, &pe) {
			pe.Msg = what + ": " + pe.Msg
		}
		return nil, err
	}
	*into = policy.Rows{
		Data:        unsafe.Slice((*byte)(t.data), ext),
		DType:       dt,
		Dim:         int(t.head_dim),
		Heads:       int(t.n_heads),
		Tokens:      int(t.n_tokens),
		HeadStride:  int64(t.head_stride),
		TokenStride: int64(t.token_stride),
	}
	return into, nil
}

func int32s(p *C.int32_t, n int) []int32 {
	if n == 0 {
		return []int32{}
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(p)), n)
}

// stepInput checks the arguments place and observe share and views the
// caller's tensors (into views[0] and views[1]) and positions.
func stepInput(fn string, q, k *C.hashevict_tensor, positions *C.int32_t, n C.int32_t, views *[2]policy.Rows) (qr, kr *policy.Rows, pos []int32, err error) {
	if n < 1 {
		return nil, nil, nil, &policy.Error{Code: policy.CodeInvalidArgument, Msg: fmt.Sprintf("%s: n_tokens = %d, want at least 1", fn, n)}
	}
	if positions == nil {
		return nil, nil, nil, &policy.Error{Code: policy.CodeInvalidArgument, Msg: fn + ": positions is NULL"}
	}
	if k == nil {
		return nil, nil, nil, &policy.Error{Code: policy.CodeInvalidArgument, Msg: fn + ": k is NULL"}
	}
	if qr, err = view(q, "q", &views[0]); err != nil {
		return nil, nil, nil, err
	}
	if kr, err = view(k, "k", &views[1]); err != nil {
		return nil, nil, nil, err
	}
	// Check the tensors' token counts before reading positions, so a
	// wrong n_tokens is a SHAPE error rather than a read past the array.
	for _, t := range []*policy.Rows{qr, kr} {
		if t != nil && t.Tokens != int(n) {
			return nil, nil, nil, &policy.Error{Code: policy.CodeShape, Msg: fmt.Sprintf("%s: tensor has %d tokens but n_tokens = %d", fn, t.Tokens, n)}
		}
	}
	return qr, kr, int32s(positions, int(n)), nil
}

//export hevgo_place
func hevgo_place(e C.uintptr_t, seq, layer C.int32_t, q, k *C.hashevict_tensor, positions *C.int32_t, n C.int32_t, outSlots, outEvicted *C.int32_t) status {
	const fn = "hashevict_place"
	return call(e, fn, func(h *handle) error {
		if anyCUDA(q, k) {
			return placeCUDA(h, seq, layer, q, k, positions, n, outSlots, outEvicted)
		}
		var views [2]policy.Rows
		qr, kr, pos, err := stepInput(fn, q, k, positions, n, &views)
		if err != nil {
			return err
		}
		if outSlots == nil {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fn + ": out_slots is NULL"}
		}
		if int64(n)*int64(h.eng.P.KVHeads) > math.MaxInt32 {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fn + ": n_tokens * n_kv_heads overflows"}
		}
		m := int(n) * h.eng.P.KVHeads
		var ev []int32
		if outEvicted != nil {
			ev = int32s(outEvicted, m)
		}
		return h.eng.Place(int(seq), int(layer), qr, kr, pos, int32s(outSlots, m), ev)
	})
}

//export hevgo_observe
func hevgo_observe(e C.uintptr_t, seq, layer C.int32_t, q, k *C.hashevict_tensor, positions *C.int32_t, n C.int32_t) status {
	const fn = "hashevict_observe"
	return call(e, fn, func(h *handle) error {
		if anyCUDA(q, k) {
			return observeCUDA(h, seq, layer, q, k, positions, n)
		}
		var views [2]policy.Rows
		qr, kr, pos, err := stepInput(fn, q, k, positions, n, &views)
		if err != nil {
			return err
		}
		return h.eng.Observe(int(seq), int(layer), qr, kr, pos)
	})
}

//export hevgo_compress
func hevgo_compress(e C.uintptr_t, seq, layer C.int32_t, qWindow *C.hashevict_tensor, nWindow C.int32_t, k *C.hashevict_tensor, positions *C.int32_t, n C.int32_t, pool, form C.int32_t, outSlots *C.int32_t) status {
	const fn = "hashevict_compress"
	return call(e, fn, func(h *handle) error {
		// The window has its own token count, so q goes through stepInput
		// as absent and is viewed here.
		var views [2]policy.Rows
		_, kr, pos, err := stepInput(fn, nil, k, positions, n, &views)
		if err != nil {
			return err
		}
		qr, err := rows(qWindow, "q_window")
		if err != nil {
			return err
		}
		if outSlots == nil {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fn + ": out_slots is NULL"}
		}
		if int64(n)*int64(h.eng.P.KVHeads) > math.MaxInt32 {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fn + ": n_tokens * n_kv_heads overflows"}
		}
		m := int(n) * h.eng.P.KVHeads
		return h.eng.Compress(int(seq), int(layer), qr, kr, pos, int(nWindow), int(pool), policy.CompressForm(form), int32s(outSlots, m))
	})
}

//export hevgo_compress_score
func hevgo_compress_score(e C.uintptr_t, seq, layer C.int32_t, qWindow *C.hashevict_tensor, windowPositions *C.int32_t, nWindow, pool, form C.int32_t) status {
	const fn = "hashevict_compress_score"
	return call(e, fn, func(h *handle) error {
		if nWindow < 1 {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fmt.Sprintf("%s: n_window = %d, want at least 1", fn, nWindow)}
		}
		if windowPositions == nil {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fn + ": window_positions is NULL"}
		}
		qr, err := rows(qWindow, "q_window")
		if err != nil {
			return err
		}
		if qr != nil && qr.Tokens != int(nWindow) {
			return &policy.Error{Code: policy.CodeShape, Msg: fmt.Sprintf("%s: q_window has %d tokens but n_window = %d", fn, qr.Tokens, nWindow)}
		}
		return h.eng.CompressScores(int(seq), int(layer), qr, int32s(windowPositions, int(nWindow)), int(pool), policy.CompressForm(form))
	})
}

//export hevgo_slot_positions
func hevgo_slot_positions(e C.uintptr_t, seq, layer, head C.int32_t, out *C.int32_t, capacity C.int32_t) status {
	return call(e, "hashevict_slot_positions", func(h *handle) error {
		if out == nil || capacity < 0 {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: "hashevict_slot_positions: out_positions is NULL or capacity negative"}
		}
		return h.eng.SlotPositions(int(seq), int(layer), int(head), int32s(out, int(capacity)))
	})
}

//export hevgo_evictions
func hevgo_evictions(e C.uintptr_t, seq C.int32_t, out *C.int32_t, capacity C.int32_t, count *C.int32_t) status {
	return call(e, "hashevict_evictions", func(h *handle) error {
		if out == nil || count == nil {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: "hashevict_evictions: out_positions or out_count is NULL"}
		}
		*count = 0
		if capacity < 1 {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fmt.Sprintf("hashevict_evictions: capacity = %d, want at least 1", capacity)}
		}
		k, err := h.eng.Evictions(int(seq), int32s(out, int(capacity)))
		*count = C.int32_t(k)
		return err
	})
}

//export hevgo_token_positions
func hevgo_token_positions(e C.uintptr_t, seq C.int32_t, out *C.int32_t, capacity C.int32_t, count *C.int32_t) status {
	return call(e, "hashevict_token_positions", func(h *handle) error {
		if count == nil || (out == nil && capacity > 0) || capacity < 0 {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: "hashevict_token_positions: out_count is NULL, or out_positions NULL with capacity > 0, or capacity negative"}
		}
		pos, err := h.eng.TokenPositions(int(seq))
		if err != nil {
			return err
		}
		*count = C.int32_t(len(pos))
		if len(pos) > int(capacity) {
			return &policy.Error{Code: policy.CodeBufferTooSmall, Msg: fmt.Sprintf("hashevict_token_positions: %d positions held, capacity %d", len(pos), capacity)}
		}
		copy(int32s(out, int(capacity)), pos)
		return nil
	})
}

//export hevgo_set_layer_window
func hevgo_set_layer_window(e C.uintptr_t, layer, window C.int32_t) status {
	return call(e, "hashevict_set_layer_window", func(h *handle) error {
		return h.eng.SetLayerWindow(int(layer), int(window))
	})
}

//export hevgo_hash
func hevgo_hash(e C.uintptr_t, layer C.int32_t, x *C.hashevict_tensor, out *C.uint64_t, capacity C.int64_t) status {
	return call(e, "hashevict_hash", func(h *handle) error {
		if x == nil || out == nil || capacity < 0 {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: "hashevict_hash: x or out is NULL, or capacity negative"}
		}
		if x.device == C.HASHEVICT_DEVICE_CUDA {
			return hashCUDA(h, layer, x, out, capacity)
		}
		xr, err := rows(x, "x")
		if err != nil {
			return err
		}
		if capacity > math.MaxInt32 {
			capacity = math.MaxInt32
		}
		return h.eng.Hash(int(layer), xr, unsafe.Slice((*uint64)(unsafe.Pointer(out)), int(capacity)))
	})
}

//export hevgo_projection
func hevgo_projection(e C.uintptr_t, layer C.int32_t, out *C.float, capacity C.int64_t) status {
	return call(e, "hashevict_projection", func(h *handle) error {
		if out == nil {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: "hashevict_projection: out is NULL"}
		}
		r, err := h.eng.ProjectionOf(int(layer))
		if err != nil {
			return err
		}
		if int64(capacity) < int64(len(r)) {
			return &policy.Error{Code: policy.CodeBufferTooSmall, Msg: fmt.Sprintf("hashevict_projection: capacity %d floats, need hash_bits*head_dim = %d", capacity, len(r))}
		}
		copy(unsafe.Slice((*float32)(unsafe.Pointer(out)), len(r)), r)
		return nil
	})
}

//export hevgo_stats_get
func hevgo_stats_get(e C.uintptr_t, seq C.int32_t, out *C.hashevict_stats) status {
	return call(e, "hashevict_stats_get", func(h *handle) error {
		if out == nil {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: "hashevict_stats_get: out is NULL"}
		}
		if uintptr(out.size) < unsafe.Sizeof(out.size) {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: "hashevict_stats_get: out->size is not set"}
		}
		var st policy.Stats
		if seq == -1 {
			st = h.eng.EngineStats()
		} else {
			var err error
			if st, err = h.eng.SeqStats(int(seq)); err != nil {
				return err
			}
		}
		var full C.hashevict_stats
		full.size = C.uint32_t(C.sizeof_hashevict_stats)
		full.n_sequences = C.int32_t(st.Sequences)
		full.state_bytes = C.uint64_t(st.StateBytes)
		full.steps = C.uint64_t(st.Steps)
		full.tokens = C.uint64_t(st.Tokens)
		full.evictions = C.uint64_t(st.Evictions)
		full.cached = C.uint64_t(st.Cached)
		copyPrefix(unsafe.Pointer(out), unsafe.Pointer(&full), uintptr(out.size), unsafe.Sizeof(full))
		return nil
	})
}

//export hevgo_seq_state_size
func hevgo_seq_state_size(e C.uintptr_t, seq C.int32_t, out *C.size_t) status {
	const fn = "hashevict_seq_state_size"
	return call(e, fn, func(h *handle) error {
		if out == nil {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fn + ": out_size is NULL"}
		}
		blob, err := h.eng.SaveSeq(int(seq))
		if err != nil {
			return err
		}
		*out = C.size_t(len(blob))
		return nil
	})
}

// hevgo_seq_state_save answers a NULL buffer of capacity 0 like any buffer
// too small: BUFFER_TOO_SMALL with the size in *written, so a caller can ask
// for the size and save with one function, and a caller that only checks for
// OK never takes "nothing written" for a saved state.
//
//export hevgo_seq_state_save
func hevgo_seq_state_save(e C.uintptr_t, seq C.int32_t, buf unsafe.Pointer, capacity C.size_t, written *C.size_t) status {
	const fn = "hashevict_seq_state_save"
	return call(e, fn, func(h *handle) error {
		if buf == nil && capacity > 0 {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fmt.Sprintf("%s: buf is NULL but capacity is %d (pass capacity 0 to ask for the size)", fn, capacity)}
		}
		blob, err := h.eng.SaveSeq(int(seq))
		if err != nil {
			return err
		}
		if written != nil {
			*written = C.size_t(len(blob))
		}
		if uint64(len(blob)) > uint64(capacity) {
			return &policy.Error{Code: policy.CodeBufferTooSmall, Msg: fmt.Sprintf("%s: the state needs %d bytes, capacity is %d", fn, len(blob), capacity)}
		}
		if len(blob) > 0 {
			copy(unsafe.Slice((*byte)(buf), len(blob)), blob)
		}
		return nil
	})
}

//export hevgo_seq_state_load
func hevgo_seq_state_load(e C.uintptr_t, seq C.int32_t, buf unsafe.Pointer, size C.size_t) status {
	const fn = "hashevict_seq_state_load"
	return call(e, fn, func(h *handle) error {
		if buf == nil && size > 0 {
			return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fn + ": buf is NULL"}
		}
		if uint64(size) > math.MaxInt32*8 {
			return &policy.Error{Code: policy.CodeCorruptState, Msg: fmt.Sprintf("%s: %d bytes is larger than any state", fn, size)}
		}
		var blob []byte
		if size > 0 {
			blob = unsafe.Slice((*byte)(buf), int(size))
		}
		return h.eng.LoadSeq(int(seq), blob)
	})
}
