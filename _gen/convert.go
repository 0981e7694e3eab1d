package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// Conversions to float32 with the finiteness check: a float32 is NaN or
// ±Inf exactly when its exponent bits are all ones, and an f16 or bf16 is
// non-finite exactly when its float32 widening is.

var (
	f16Doc = []string{
		"",
		"\tok = true",
		"\tfor i := 0; i < n; i++ {",
		"\t\tdst[i] = HalfToFloat(src[i]) // VCVTPH2PS; quiets signalling NaNs",
		"\t\tok = ok && math.Float32bits(dst[i])&0x7f800000 != 0x7f800000",
		"\t}",
	}
	bf16Doc = []string{
		"",
		"\tok = true",
		"\tfor i := 0; i < n; i++ {",
		"\t\tdst[i] = math.Float32frombits(uint32(src[i]) << 16)",
		"\t\tok = ok && math.Float32bits(dst[i])&0x7f800000 != 0x7f800000",
		"\t}",
	}
	finiteDoc = []string{
		"",
		"\tok = true",
		"\tfor i := 0; i < n; i++ {",
		"\t\tok = ok && math.Float32bits(x[i])&0x7f800000 != 0x7f800000",
		"\t}",
	}
)

// convertKinds are the three conversions; each variant has one kernel per
// kind ("finite" only checks, it converts nothing).
var convertKinds = []string{"f16ToF32", "bf16ToF32", "finite"}

// convertArgs are the loaded parameters of a conversion kernel (dst is nil
// for finite) and what both variants set up from them.
type convertArgs struct {
	dst, src, n reg.Register
	srcStep     int            // bytes of src per vector of float32
	exp         reg.VecVirtual // the float32 exponent bits in every lane
}

// convertKernel starts the kernel kind+v.name, documented with intro after
// its name, and loads its parameters.
func convertKernel(v isa, kind, intro string) convertArgs {
	name := kind + v.name
	sig, doc := "func(dst *float32, src *uint16, n int) (ok bool)", f16Doc
	switch kind {
	case "bf16ToF32":
		doc = bf16Doc
	case "finite":
		sig, doc = "func(x *float32, n int) (ok bool)", finiteDoc
	}
	kernel(name, sig, doc, name+intro)
	var a convertArgs
	if kind == "finite" {
		a.src = Load(Param("x"), GP64())
	} else {
		a.dst = Load(Param("dst"), GP64())
		a.src = Load(Param("src"), GP64())
	}
	a.n = Load(Param("n"), GP64())
	a.exp = v.vec()
	t := GP32()
	MOVL(U32(0x7f800000), t)
	v.broadcastD(t, a.exp)
	// The source is float32 for finite and 16-bit otherwise.
	a.srcStep = v.bytes() / 2
	if kind == "finite" {
		a.srcStep = v.bytes()
	}
	return a
}

// convertReturn emits label "done", which returns ok = ZF as left by test:
// set when no element had an all-ones exponent.
func convertReturn(test func()) {
	Label("done")
	ok := GP8()
	test()
	SETEQ(ok)
	Store(ok, Return("ok"))
	VZEROUPPER()
	RET()
}

func genConvertAVX512() {
	for _, kind := range convertKinds {
		a := convertKernel(avx512, kind, " works 16 elements per step, the tail with masks:")
		bad := K() // lanes that met a non-finite element
		KXORW(bad, bad, bad)
		// step emits one vector; k is nil for a full vector.
		step := func(k reg.Register) {
			v := ZMM()
			m := Mem{Base: a.src}
			switch {
			case kind == "f16ToF32" && k == nil:
				VCVTPH2PS(m, v)
			case kind == "f16ToF32":
				VCVTPH2PS_Z(m, k, v)
			case kind == "bf16ToF32" && k == nil:
				VPMOVZXWD(m, v)
			case kind == "bf16ToF32":
				VPMOVZXWD_Z(m, k, v)
			case k == nil:
				VMOVDQU32(m, v)
			default:
				VMOVDQU32_Z(m, k, v)
			}
			if kind == "bf16ToF32" {
				VPSLLD(U8(16), v, v)
			}
			if kind != "finite" {
				if k == nil {
					VMOVUPS(v, Mem{Base: a.dst})
				} else {
					VMOVUPS(v, k, Mem{Base: a.dst})
				}
			}
			e := ZMM()
			VPANDD(a.exp, v, e)
			kb := K()
			if k == nil {
				VPCMPEQD(a.exp, e, kb)
			} else {
				VPCMPEQD(a.exp, e, k, kb)
			}
			KORW(kb, bad, bad)
		}
		countedLoop(a.n, 4, "tail", func() {
			step(nil)
			ADDQ(U8(a.srcStep), a.src)
			if kind != "finite" {
				ADDQ(U8(64), a.dst)
			}
		})
		maskedTail(a.n, step)
		convertReturn(func() { KORTESTW(bad, bad) })
	}
}

func genConvertAVX2() {
	for _, kind := range convertKinds {
		a := convertKernel(avx2, kind, " works 8 elements per step (n % 8 == 0):")
		bad := YMM() // all ones in lanes that met a non-finite element
		VPXOR(bad, bad, bad)
		countedLoop(a.n, 3, "done", func() {
			v := YMM()
			m := Mem{Base: a.src}
			switch kind {
			case "f16ToF32":
				VCVTPH2PS(m, v)
			case "bf16ToF32":
				VPMOVZXWD(m, v)
				VPSLLD(U8(16), v, v)
			default:
				VMOVDQU(m, v)
			}
			if kind != "finite" {
				VMOVUPS(v, Mem{Base: a.dst})
				ADDQ(U8(32), a.dst)
			}
			VPAND(a.exp, v, v)
			VPCMPEQD(a.exp, v, v)
			VPOR(v, bad, bad)
			ADDQ(U8(a.srcStep), a.src)
		})
		convertReturn(func() { VPTEST(bad, bad) })
	}
}
