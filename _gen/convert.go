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

func genConvertAVX512() {
	for _, kind := range []string{"f16ToF32", "bf16ToF32", "finite"} {
		name := kind + "AVX512"
		sig, doc := "func(dst *float32, src *uint16, n int) (ok bool)", f16Doc
		switch kind {
		case "bf16ToF32":
			doc = bf16Doc
		case "finite":
			sig, doc = "func(x *float32, n int) (ok bool)", finiteDoc
		}
		TEXT(name, NOSPLIT, sig)
		Pragma("noescape")
		Doc(append([]string{name + " works 16 elements per step, the tail with masks:"}, doc...)...)
		var dst, src reg.Register
		if kind == "finite" {
			src = Load(Param("x"), GP64())
		} else {
			dst = Load(Param("dst"), GP64())
			src = Load(Param("src"), GP64())
		}
		n := Load(Param("n"), GP64())
		exp := ZMM()
		t := GP32()
		MOVL(U32(0x7f800000), t)
		VPBROADCASTD(t, exp)
		bad := K()
		KXORW(bad, bad, bad)
		srcStep := 32
		if kind == "finite" {
			srcStep = 64
		}
		step := func(k reg.Register) {
			v := ZMM()
			m := Mem{Base: src}
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
					VMOVUPS(v, Mem{Base: dst})
				} else {
					VMOVUPS(v, k, Mem{Base: dst})
				}
			}
			e := ZMM()
			VPANDD(exp, v, e)
			kb := K()
			if k == nil {
				VPCMPEQD(exp, e, kb)
			} else {
				VPCMPEQD(exp, e, k, kb)
			}
			KORW(kb, bad, bad)
		}
		full := GP64()
		MOVQ(n, full)
		SHRQ(U8(4), full)
		JZ(LabelRef("tail"))
		Label("loop")
		step(nil)
		ADDQ(U8(srcStep), src)
		if kind != "finite" {
			ADDQ(U8(64), dst)
		}
		DECQ(full)
		JNZ(LabelRef("loop"))
		Label("tail")
		r := GP64()
		MOVQ(n, r)
		ANDQ(U8(15), r)
		JZ(LabelRef("done"))
		m := GP64()
		MOVQ(U32(1), m)
		SHLXQ(r, m, m)
		DECQ(m)
		kt := K()
		KMOVW(m.As32(), kt)
		step(kt)
		Label("done")
		ok := GP8()
		KORTESTW(bad, bad)
		SETEQ(ok)
		Store(ok, Return("ok"))
		VZEROUPPER()
		RET()
	}
}

func genConvertAVX2() {
	for _, kind := range []string{"f16ToF32", "bf16ToF32", "finite"} {
		name := kind + "AVX2"
		sig, doc := "func(dst *float32, src *uint16, n int) (ok bool)", f16Doc
		switch kind {
		case "bf16ToF32":
			doc = bf16Doc
		case "finite":
			sig, doc = "func(x *float32, n int) (ok bool)", finiteDoc
		}
		TEXT(name, NOSPLIT, sig)
		Pragma("noescape")
		Doc(append([]string{name + " works 8 elements per step (n % 8 == 0):"}, doc...)...)
		var dst, src reg.Register
		if kind == "finite" {
			src = Load(Param("x"), GP64())
		} else {
			dst = Load(Param("dst"), GP64())
			src = Load(Param("src"), GP64())
		}
		n := Load(Param("n"), GP64())
		exp := YMM()
		t := GP32()
		MOVL(U32(0x7f800000), t)
		x := XMM()
		MOVD(t, x)
		VPBROADCASTD(x, exp)
		bad := YMM()
		VPXOR(bad, bad, bad)
		srcStep := 16
		if kind == "finite" {
			srcStep = 32
		}
		full := GP64()
		MOVQ(n, full)
		SHRQ(U8(3), full)
		JZ(LabelRef("done"))
		Label("loop")
		v := YMM()
		m := Mem{Base: src}
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
			VMOVUPS(v, Mem{Base: dst})
			ADDQ(U8(32), dst)
		}
		VPAND(exp, v, v)
		VPCMPEQD(exp, v, v)
		VPOR(v, bad, bad)
		ADDQ(U8(srcStep), src)
		DECQ(full)
		JNZ(LabelRef("loop"))
		Label("done")
		ok := GP8()
		VPTEST(bad, bad)
		SETEQ(ok)
		Store(ok, Return("ok"))
		VZEROUPPER()
		RET()
	}
}
