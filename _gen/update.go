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

// updateModes are the three score updates; each variant has one kernel per
// mode.
var updateModes = []string{"Instant", "Acc", "Decay"}

// updateArgs are the loaded parameters of an update kernel, the float32
// ones broadcast to every lane. count is only set for Acc, decay and keep
// only for Decay.
type updateArgs struct {
	score, dist, n, count reg.Register
	inv, decay, keep      reg.VecVirtual
}

// updateKernel starts the kernel "update"+mode+v.name, documented with
// intro after its name, and loads its parameters.
func updateKernel(v isa, mode, intro string) updateArgs {
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
	name := "update" + mode + v.name
	kernel(name, sig, doc, name+intro)
	var a updateArgs
	a.score = Load(Param("score"), GP64())
	a.dist = Load(Param("dist"), GP64())
	a.n = Load(Param("n"), GP64())
	if mode == "Acc" {
		a.count = Load(Param("count"), GP64())
	}
	a.inv = v.vec()
	VBROADCASTSS(Load(Param("inv"), XMM()), a.inv)
	if mode == "Decay" {
		a.decay, a.keep = v.vec(), v.vec()
		VBROADCASTSS(Load(Param("decay"), XMM()), a.decay)
		VBROADCASTSS(Load(Param("keep"), XMM()), a.keep)
	}
	return a
}

func genUpdateAVX512() {
	for _, mode := range updateModes {
		a := updateKernel(avx512, mode, " updates n scores, 16 per step, the tail with masked loads and stores:")
		var one reg.VecVirtual
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
				VCVTUDQ2PS(Mem{Base: a.dist}, d)
			} else {
				VCVTUDQ2PS_Z(Mem{Base: a.dist}, k, d)
			}
			VMULPS(a.inv, d, d) // float32(d) * inv
			r := d
			switch mode {
			case "Acc":
				r = ZMM()
				c, cf, s := ZMM(), ZMM(), ZMM()
				if k == nil {
					VMOVDQU32(Mem{Base: a.count}, c)
					VMOVUPS(Mem{Base: a.score}, s)
				} else {
					VMOVDQU32_Z(Mem{Base: a.count}, k, c)
					VMOVUPS_Z(Mem{Base: a.score}, k, s)
				}
				VPADDD(one, c, c)
				if k == nil {
					VMOVDQU32(c, Mem{Base: a.count})
				} else {
					VMOVDQU32(c, k, Mem{Base: a.count})
				}
				VCVTUDQ2PS(c, cf)
				VSUBPS(s, d, d)  // d - s
				VDIVPS(cf, d, d) // / float32(c)
				VADDPS(s, d, r)  // s + ...
			case "Decay":
				r = ZMM()
				s := ZMM()
				if k == nil {
					VMOVUPS(Mem{Base: a.score}, s)
				} else {
					VMOVUPS_Z(Mem{Base: a.score}, k, s)
				}
				VMULPS(a.decay, s, s) // decay * s
				VMULPS(a.keep, d, d)  // keep * d
				VADDPS(d, s, r)
			}
			if k == nil {
				VMOVUPS(r, Mem{Base: a.score})
			} else {
				VMOVUPS(r, k, Mem{Base: a.score})
			}
		}
		countedLoop(a.n, 4, "tail", func() {
			step(nil)
			ADDQ(U8(64), a.score)
			ADDQ(U8(64), a.dist)
			if mode == "Acc" {
				ADDQ(U8(64), a.count)
			}
		})
		maskedTail(a.n, step)
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
	for _, mode := range updateModes {
		a := updateKernel(avx2, mode, " updates n scores (n % 8 == 0), 8 per step:")
		var one reg.VecVirtual
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
		countedLoop(a.n, 3, "done", func() {
			di, d := YMM(), YMM()
			VMOVDQU(Mem{Base: a.dist}, di)
			cvtU32AVX2(di, lo16, c65536, d)
			VMULPS(a.inv, d, d)
			r := d
			switch mode {
			case "Acc":
				r = YMM()
				c, cf, s := YMM(), YMM(), YMM()
				VMOVDQU(Mem{Base: a.count}, c)
				VPADDD(one, c, c)
				VMOVDQU(c, Mem{Base: a.count})
				cvtU32AVX2(c, lo16, c65536, cf)
				VMOVUPS(Mem{Base: a.score}, s)
				VSUBPS(s, d, d)
				VDIVPS(cf, d, d)
				VADDPS(s, d, r)
			case "Decay":
				r = YMM()
				s := YMM()
				VMOVUPS(Mem{Base: a.score}, s)
				VMULPS(a.decay, s, s)
				VMULPS(a.keep, d, d)
				VADDPS(d, s, r)
			}
			VMOVUPS(r, Mem{Base: a.score})
			ADDQ(U8(32), a.score)
			ADDQ(U8(32), a.dist)
			if mode == "Acc" {
				ADDQ(U8(32), a.count)
			}
		})
		Label("done")
		VZEROUPPER()
		RET()
	}
}
