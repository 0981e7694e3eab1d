package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// Score updates, in the exact float32 operation order of the Go loops
// (each line one rounded IEEE operation; no fused multiply-add). When both
// operands of an x86 operation are NaN the result is the first source's
// NaN, so the operands are also in the order the Go compiler emits for
// updateGeneric (go build -gcflags=-S): d*inv, t-s, (t-s)/c, q+s;
// s*decay, t*keep, a+b. With that, even NaN payloads match.

var (
	instantDoc = []string{
		"",
		"\tfor i := 0; i < n; i++ {",
		"\t\tscore[i] = float32(dist[i]) * inv",
		"\t}",
	}
	accDoc = []string{
		"",
		"\tfor i := 0; i < n; i++ {",
		"\t\tc := count[i] + 1",
		"\t\tcount[i] = c",
		"\t\ts := score[i]",
		"\t\tscore[i] = s + float32(float32(float32(dist[i])*inv)-s)/float32(c)",
		"\t}",
	}
	decayDoc = []string{
		"",
		"\tfor i := 0; i < n; i++ {",
		"\t\tscore[i] = float32(decay*score[i]) + float32(keep*float32(float32(dist[i])*inv))",
		"\t}",
	}
)

func genUpdateAVX512() {
	for _, mode := range []string{"Instant", "Acc", "Decay"} {
		var sig string
		var doc []string
		switch mode {
		case "Instant":
			sig, doc = "func(score *float32, dist *uint32, n int, inv float32)", instantDoc
		case "Acc":
			sig, doc = "func(score *float32, count *uint32, dist *uint32, n int, inv float32)", accDoc
		default:
			sig, doc = "func(score *float32, dist *uint32, n int, inv float32, decay float32, keep float32)", decayDoc
		}
		name := "update" + mode + "AVX512"
		TEXT(name, NOSPLIT, sig)
		Pragma("noescape")
		Doc(append([]string{name + " updates n scores, 16 per step, the tail with masked loads and stores:"}, doc...)...)
		score := Load(Param("score"), GP64())
		dist := Load(Param("dist"), GP64())
		n := Load(Param("n"), GP64())
		var count reg.Register
		if mode == "Acc" {
			count = Load(Param("count"), GP64())
		}
		inv := ZMM()
		VBROADCASTSS(Load(Param("inv"), XMM()), inv)
		var decay, keep, one reg.VecVirtual
		if mode == "Decay" {
			decay, keep = ZMM(), ZMM()
			VBROADCASTSS(Load(Param("decay"), XMM()), decay)
			VBROADCASTSS(Load(Param("keep"), XMM()), keep)
		}
		if mode == "Acc" {
			one = ZMM()
			t := GP32()
			MOVL(U32(1), t)
			VPBROADCASTD(t, one)
		}
		// step emits one vector; k is nil for a full vector.
		step := func(k reg.Register) {
			d := ZMM()
			if k == nil {
				VCVTUDQ2PS(Mem{Base: dist}, d)
			} else {
				VCVTUDQ2PS_Z(Mem{Base: dist}, k, d)
			}
			VMULPS(inv, d, d) // float32(d) * inv
			r := d
			switch mode {
			case "Acc":
				r = ZMM()
				c, cf, s := ZMM(), ZMM(), ZMM()
				if k == nil {
					VMOVDQU32(Mem{Base: count}, c)
					VMOVUPS(Mem{Base: score}, s)
				} else {
					VMOVDQU32_Z(Mem{Base: count}, k, c)
					VMOVUPS_Z(Mem{Base: score}, k, s)
				}
				VPADDD(one, c, c)
				if k == nil {
					VMOVDQU32(c, Mem{Base: count})
				} else {
					VMOVDQU32(c, k, Mem{Base: count})
				}
				VCVTUDQ2PS(c, cf)
				VSUBPS(s, d, d)  // d - s
				VDIVPS(cf, d, d) // / float32(c)
				VADDPS(s, d, r)  // s + ...
			case "Decay":
				r = ZMM()
				s := ZMM()
				if k == nil {
					VMOVUPS(Mem{Base: score}, s)
				} else {
					VMOVUPS_Z(Mem{Base: score}, k, s)
				}
				VMULPS(decay, s, s) // decay * s
				VMULPS(keep, d, d)  // keep * d
				VADDPS(d, s, r)
			}
			if k == nil {
				VMOVUPS(r, Mem{Base: score})
			} else {
				VMOVUPS(r, k, Mem{Base: score})
			}
		}
		full := GP64()
		MOVQ(n, full)
		SHRQ(U8(4), full)
		JZ(LabelRef("tail"))
		Label("loop")
		step(nil)
		ADDQ(U8(64), score)
		ADDQ(U8(64), dist)
		if mode == "Acc" {
			ADDQ(U8(64), count)
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
		VZEROUPPER()
		RET()
	}
}

// cvtU32AVX2 converts 8 uint32 at m exactly as Go's float32(uint32) does:
// float32(hi16)*65536 and float32(lo16) are exact, so their sum is rounded
// once, to the correctly rounded value.
func cvtU32AVX2(src reg.VecVirtual, lo16, c65536, dst reg.VecVirtual) {
	hi, lo := YMM(), YMM()
	VPSRLD(U8(16), src, hi)
	VPAND(lo16, src, lo)
	VCVTDQ2PS(hi, hi)
	VCVTDQ2PS(lo, lo)
	VMULPS(c65536, hi, hi)
	VADDPS(lo, hi, dst)
}

func genUpdateAVX2() {
	for _, mode := range []string{"Instant", "Acc", "Decay"} {
		var sig string
		var doc []string
		switch mode {
		case "Instant":
			sig, doc = "func(score *float32, dist *uint32, n int, inv float32)", instantDoc
		case "Acc":
			sig, doc = "func(score *float32, count *uint32, dist *uint32, n int, inv float32)", accDoc
		default:
			sig, doc = "func(score *float32, dist *uint32, n int, inv float32, decay float32, keep float32)", decayDoc
		}
		name := "update" + mode + "AVX2"
		TEXT(name, NOSPLIT, sig)
		Pragma("noescape")
		Doc(append([]string{name + " updates n scores (n % 8 == 0), 8 per step:"}, doc...)...)
		score := Load(Param("score"), GP64())
		dist := Load(Param("dist"), GP64())
		n := Load(Param("n"), GP64())
		var count reg.Register
		if mode == "Acc" {
			count = Load(Param("count"), GP64())
		}
		inv := YMM()
		VBROADCASTSS(Load(Param("inv"), XMM()), inv)
		var decay, keep, one reg.VecVirtual
		if mode == "Decay" {
			decay, keep = YMM(), YMM()
			VBROADCASTSS(Load(Param("decay"), XMM()), decay)
			VBROADCASTSS(Load(Param("keep"), XMM()), keep)
		}
		t := GP32()
		lo16, c65536 := YMM(), YMM()
		MOVL(U32(0xffff), t)
		x := XMM()
		MOVD(t, x)
		VPBROADCASTD(x, lo16)
		MOVL(U32(0x47800000), t) // 65536.0
		MOVD(t, x)
		VBROADCASTSS(x, c65536)
		if mode == "Acc" {
			one = YMM()
			MOVL(U32(1), t)
			MOVD(t, x)
			VPBROADCASTD(x, one)
		}
		full := GP64()
		MOVQ(n, full)
		SHRQ(U8(3), full)
		JZ(LabelRef("done"))
		Label("loop")
		di, d := YMM(), YMM()
		VMOVDQU(Mem{Base: dist}, di)
		cvtU32AVX2(di, lo16, c65536, d)
		VMULPS(inv, d, d)
		r := d
		switch mode {
		case "Acc":
			r = YMM()
			c, cf, s := YMM(), YMM(), YMM()
			VMOVDQU(Mem{Base: count}, c)
			VPADDD(one, c, c)
			VMOVDQU(c, Mem{Base: count})
			cvtU32AVX2(c, lo16, c65536, cf)
			VMOVUPS(Mem{Base: score}, s)
			VSUBPS(s, d, d)
			VDIVPS(cf, d, d)
			VADDPS(s, d, r)
		case "Decay":
			r = YMM()
			s := YMM()
			VMOVUPS(Mem{Base: score}, s)
			VMULPS(decay, s, s)
			VMULPS(keep, d, d)
			VADDPS(d, s, r)
		}
		VMOVUPS(r, Mem{Base: score})
		ADDQ(U8(32), score)
		ADDQ(U8(32), dist)
		if mode == "Acc" {
			ADDQ(U8(32), count)
		}
		DECQ(full)
		JNZ(LabelRef("loop"))
		Label("done")
		VZEROUPPER()
		RET()
	}
}
