package policy

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/hashevict/hashevict/simd"
)

// DType is an element type of input rows.
type DType int32

const (
	F32  DType = 0
	F16  DType = 1
	BF16 DType = 2
)

// Size is the element size in bytes, or 0 for an unknown dtype.
func (d DType) Size() int64 {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// Rows is a read-only view of rows [token][head][dim] inside Data. Elements
// of a row are contiguous; strides are in bytes.
type Rows struct {
	Data        []byte
	DType       DType
	Dim         int
	Heads       int
	Tokens      int
	HeadStride  int64
	TokenStride int64
}

// Extent returns the number of bytes a view with these strides spans, or an
// error when a stride is invalid or the extent overflows.
func Extent(dt DType, dim, heads, tokens int, headStride, tokenStride int64) (int64, error) {
	es := dt.Size()
	if es == 0 {
		return 0, errf(CodeUnsupported, "dtype %d is not f32 (0), f16 (1) or bf16 (2)", int32(dt))
	}
	if dim < 1 || heads < 1 || tokens < 1 {
		return 0, errf(CodeShape, "shape [%d tokens][%d heads][%d] has an empty dimension", tokens, heads, dim)
	}
	if headStride <= 0 || tokenStride <= 0 || headStride%es != 0 || tokenStride%es != 0 {
		return 0, errf(CodeShape, "strides (head %d, token %d bytes) must be positive multiples of the %s element size %d", headStride, tokenStride, dt, es)
	}
	const lim = math.MaxInt64 / 4
	if headStride > lim/int64(heads) || tokenStride > lim/int64(tokens) {
		return 0, errf(CodeShape, "strides times counts overflow")
	}
	return int64(tokens-1)*tokenStride + int64(heads-1)*headStride + int64(dim)*es, nil
}

// row decodes row (token, head) into buf as float32 and reports whether it
// is finite. For aligned f32 input it returns a view of the caller's memory
// instead of copying.
func (r *Rows) row(k *simd.Kernels, token, head int, buf []float32) ([]float32, bool) {
	off := int64(token)*r.TokenStride + int64(head)*r.HeadStride
	p := unsafe.Pointer(&r.Data[off])
	switch r.DType {
	case F32:
		var x []float32
		if uintptr(p)%4 == 0 {
			x = unsafe.Slice((*float32)(p), r.Dim)
		} else {
			x = buf[:r.Dim]
			for i := range x {
				b := r.Data[off+int64(i)*4:]
				x[i] = math.Float32frombits(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
			}
		}
		return x, k.FiniteF32(x)
	case F16, BF16:
		var src []uint16
		if uintptr(p)%2 == 0 {
			src = unsafe.Slice((*uint16)(p), r.Dim)
		} else {
			src = make([]uint16, r.Dim)
			for i := range src {
				src[i] = uint16(r.Data[off+int64(2*i)]) | uint16(r.Data[off+int64(2*i)+1])<<8
			}
		}
		x := buf[:r.Dim]
		if r.DType == F16 {
			return x, k.F16ToF32(x, src)
		}
		return x, k.BF16ToF32(x, src)
	}
	return nil, false
}

// check verifies the view against the expected shape.
func (r *Rows) check(what string, dim, heads, tokens int) error {
	if r.Dim != dim || r.Heads != heads || r.Tokens != tokens {
		return errf(CodeShape, "%s has shape [%d tokens][%d heads][%d], want [%d][%d][%d]", what, r.Tokens, r.Heads, r.Dim, tokens, heads, dim)
	}
	ext, err := Extent(r.DType, r.Dim, r.Heads, r.Tokens, r.HeadStride, r.TokenStride)
	if err != nil {
		return err
	}
	if ext > int64(len(r.Data)) {
		return errf(CodeShape, "%s spans %d bytes but its buffer holds %d", what, ext, len(r.Data))
	}
	return nil
}
