package main

// The C API's CUDA path: a call whose tensors are DEVICE_CUDA goes to
// package cuda (cuda/seq.go) instead of the host engine. The device and
// its context come from the data pointer (not from the thread's current
// context, which a runtime may not have made current), the work goes on
// the tensors' stream.

/*
#include "hashevict.h"
*/
import "C"

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/hashevict/hashevict/cuda"
	"github.com/hashevict/hashevict/policy"
)

// anyCUDA reports whether a call takes the CUDA path: one of its tensors
// is marked DEVICE_CUDA (the others must be too).
func anyCUDA(ts ...*C.hashevict_tensor) bool {
	for _, t := range ts {
		if t != nil && t.device == C.HASHEVICT_DEVICE_CUDA {
			return true
		}
	}
	return false
}

// cudaCall collects the device and stream of one call's tensors: the
// first tensor fixes them, every other one must share them.
type cudaCall struct {
	dev    *cuda.Device
	stream cuda.Stream
	first  string
}

func invalid(format string, args ...any) error {
	return &policy.Error{Code: policy.CodeInvalidArgument, Msg: fmt.Sprintf(format, args...)}
}

// view checks a CUDA tensor descriptor and describes its rows on the
// device; nil for an absent tensor.
func (c *cudaCall) view(t *C.hashevict_tensor, what string) (*cuda.Rows, error) {
	if t == nil {
		return nil, nil
	}
	if t.device != C.HASHEVICT_DEVICE_CUDA {
		return nil, invalid("%s->device = %d but the call's other tensors are DEVICE_CUDA: one call's tensors must all be in host memory or all on one CUDA device", what, t.device)
	}
	if t.data == nil {
		return nil, invalid("%s->data is NULL", what)
	}
	for _, v := range []C.int64_t{t.head_dim, t.n_heads, t.n_tokens} {
		if v < 1 || v > math.MaxInt32 {
			return nil, &policy.Error{Code: policy.CodeShape, Msg: fmt.Sprintf("%s has shape [%d tokens][%d heads][%d]: every dimension must be in 1..2^31-1", what, t.n_tokens, t.n_heads, t.head_dim)}
		}
	}
	dt := policy.DType(t.dtype)
	if _, err := policy.Extent(dt, int(t.head_dim), int(t.n_heads), int(t.n_tokens), int64(t.head_stride), int64(t.token_stride)); err != nil {
		if pe, ok := err.(*policy.Error); ok {
			pe.Msg = what + ": " + pe.Msg
		}
		return nil, err
	}
	p := cuda.Ptr(uintptr(t.data))
	s := cuda.Stream(uintptr(t.stream))
	if c.dev == nil {
		dev, err := cuda.ForPointer(p)
		if err != nil {
			return nil, prefix(what+" (a CUDA device tensor)", err)
		}
		if err := dev.CheckStream(s); err != nil {
			return nil, prefix(what+"->stream", err)
		}
		c.dev, c.stream, c.first = dev, s, what
	} else {
		if err := c.dev.CheckPointer(p, what); err != nil {
			return nil, err
		}
		if s != c.stream {
			return nil, invalid("%s->stream (%#x) differs from %s->stream (%#x): one call's work goes on one stream", what, uintptr(s), c.first, uintptr(c.stream))
		}
	}
	return &cuda.Rows{Data: p, DType: dt, Dim: int(t.head_dim), Heads: int(t.n_heads), Tokens: int(t.n_tokens),
		HeadStride: int64(t.head_stride), TokenStride: int64(t.token_stride)}, nil
}

// prefix names the tensor in a cuda error's message.
func prefix(what string, err error) error {
	if pe, ok := err.(*policy.Error); ok {
		return &policy.Error{Code: pe.Code, Msg: what + ": " + pe.Msg}
	}
	return err
}

// cudaStep checks the arguments place and place_async share, as
// stepInput does for host tensors.
func cudaStep(fn string, q, k *C.hashevict_tensor, positions *C.int32_t, n C.int32_t) (cuda.StepInput, error) {
	var in cuda.StepInput
	if n < 1 {
		return in, invalid("%s: n_tokens = %d, want at least 1", fn, n)
	}
	if positions == nil {
		return in, invalid("%s: positions is NULL", fn)
	}
	if k == nil {
		return in, invalid("%s: k is NULL", fn)
	}
	// The CUDA tensor first: without a driver the call is UNSUPPORTED
	// whichever tensor is on the host; with one, mixing is refused.
	var c cudaCall
	var err error
	if k.device == C.HASHEVICT_DEVICE_CUDA {
		if in.K, err = c.view(k, "k"); err == nil {
			in.Q, err = c.view(q, "q")
		}
	} else if in.Q, err = c.view(q, "q"); err == nil {
		in.K, err = c.view(k, "k")
	}
	if err != nil {
		return in, err
	}
	for _, t := range []*cuda.Rows{in.Q, in.K} {
		if t != nil && t.Tokens != int(n) {
			return in, &policy.Error{Code: policy.CodeShape, Msg: fmt.Sprintf("%s: tensor has %d tokens but n_tokens = %d", fn, t.Tokens, n)}
		}
	}
	if err := hostOnly(fn, "positions", unsafe.Pointer(positions)); err != nil {
		return in, err
	}
	in.Dev, in.Stream, in.Positions = c.dev, c.stream, int32s(positions, int(n))
	return in, nil
}

// hostOnly refuses device memory where the API reads or writes host
// memory: dereferencing it on the host would crash the process.
func hostOnly(fn, what string, p unsafe.Pointer) error {
	if p != nil && cuda.IsDeviceOnly(cuda.Ptr(uintptr(p))) {
		return invalid("%s: %s (%#x) is CUDA device memory, but the library reads and writes it on the host: pass host memory (hashevict_place_async writes its outputs to device memory)", fn, what, uintptr(p))
	}
	return nil
}

// placeCUDA is hashevict_place on CUDA tensors (synchronous: the results
// are in host memory when it returns).
func placeCUDA(h *handle, seq, layer C.int32_t, q, k *C.hashevict_tensor, positions *C.int32_t, n C.int32_t, outSlots, outEvicted *C.int32_t) error {
	const fn = "hashevict_place"
	in, err := cudaStep(fn, q, k, positions, n)
	if err != nil {
		return err
	}
	if outSlots == nil {
		return invalid("%s: out_slots is NULL", fn)
	}
	if int64(n)*int64(h.eng.P.KVHeads) > math.MaxInt32 {
		return invalid("%s: n_tokens * n_kv_heads overflows", fn)
	}
	m := int(n) * h.eng.P.KVHeads
	if err := hostOnly(fn, "out_slots", unsafe.Pointer(outSlots)); err != nil {
		return err
	}
	if err := hostOnly(fn, "out_evicted", unsafe.Pointer(outEvicted)); err != nil {
		return err
	}
	var ev []int32
	if outEvicted != nil {
		ev = int32s(outEvicted, m)
	}
	return cuda.Place(h.eng, int(seq), int(layer), in, int32s(outSlots, m), ev)
}

//export hevgo_place_async
func hevgo_place_async(e C.uintptr_t, seq, layer C.int32_t, q, k *C.hashevict_tensor, positions *C.int32_t, n C.int32_t, outSlots, outEvicted C.uintptr_t) status {
	const fn = "hashevict_place_async"
	return call(e, fn, func(h *handle) error {
		if !anyCUDA(q, k) {
			return invalid("%s: k is not DEVICE_CUDA: the asynchronous path is for CUDA tensors (use hashevict_place for host ones)", fn)
		}
		in, err := cudaStep(fn, q, k, positions, n)
		if err != nil {
			return err
		}
		if outSlots == 0 {
			return invalid("%s: out_slots is NULL", fn)
		}
		for _, o := range []struct {
			p    C.uintptr_t
			what string
		}{{outSlots, "out_slots"}, {outEvicted, "out_evicted"}} {
			if o.p != 0 {
				if err := in.Dev.CheckPointer(cuda.Ptr(o.p), o.what); err != nil {
					return err
				}
			}
		}
		return cuda.PlaceAsync(h.eng, int(seq), int(layer), in, cuda.Ptr(outSlots), cuda.Ptr(outEvicted))
	})
}

// hashCUDA is hashevict_hash on a CUDA tensor: codes computed on the
// device, copied to out (host memory).
func hashCUDA(h *handle, layer C.int32_t, x *C.hashevict_tensor, out *C.uint64_t, capacity C.int64_t) error {
	var c cudaCall
	xr, err := c.view(x, "x")
	if err != nil {
		return err
	}
	if err := hostOnly("hashevict_hash", "out", unsafe.Pointer(out)); err != nil {
		return err
	}
	if capacity > math.MaxInt32 {
		capacity = math.MaxInt32
	}
	return cuda.HashRows(h.eng, c.dev, c.stream, int(layer), xr, unsafe.Slice((*uint64)(unsafe.Pointer(out)), int(capacity)))
}

// observeCUDA is hashevict_observe on CUDA tensors (token mode): the
// tables are updated on the tensors' stream; hashevict_evictions then
// sums their scores on the device (Engine.Evictions, cuda.TokSeq.Totals).
func observeCUDA(h *handle, seq, layer C.int32_t, q, k *C.hashevict_tensor, positions *C.int32_t, n C.int32_t) error {
	in, err := cudaStep("hashevict_observe", q, k, positions, n)
	if err != nil {
		return err
	}
	return cuda.Observe(h.eng, int(seq), int(layer), in)
}
