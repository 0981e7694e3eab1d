package main

import (
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// Kernels of package bench (the measuring stick of cmd/hashevict-bench,
// not part of the library): a memory-read loop, and the f32 decode
// attention of one GQA group of 4 query heads with head_dim 128.

func genBench() {
	genReadSum("")
	genReadSum("T0")
	genReadSum("T1")
	genQK4()
	genMaxLanes()
	genExpSum()
	genPV2()
}

// genReadSum writes the read loop, plain or with a software prefetch
// (PREFETCHT0 1 KiB ahead, or PREFETCHT1 4 KiB ahead) of every line.
func genReadSum(prefetch string) {
	name := "readSumAVX512"
	doc := []string{"readSumAVX512 returns the wrapping sum of n uint64 (n % 64 == 0), reading",
		"512 bytes per iteration with 8 ZMM loads into 4 accumulators:",
		"",
		"\tfor i := 0; i < n; i++ {",
		"\t\ts += p[i]",
		"\t}"}
	switch prefetch {
	case "T0":
		name = "readSumT0AVX512"
		doc = append([]string{"readSumT0AVX512 is readSumAVX512 with a PREFETCHT0 1 KiB ahead of every line;"}, doc[1:]...)
	case "T1":
		name = "readSumT1AVX512"
		doc = append([]string{"readSumT1AVX512 is readSumAVX512 with a PREFETCHT1 4 KiB ahead of every line;"}, doc[1:]...)
	}
	TEXT(name, NOSPLIT, "func(p *uint64, n int) uint64")
	Pragma("noescape")
	Doc(doc...)
	p := Load(Param("p"), GP64())
	n := Load(Param("n"), GP64())
	var acc [4]reg.VecVirtual
	for i := range acc {
		acc[i] = ZMM()
		VPXORQ(acc[i], acc[i], acc[i])
	}
	SHRQ(U8(6), n)
	JZ(LabelRef("reduce"))
	Label("loop")
	for i := 0; i < 8; i++ {
		VPADDQ(Mem{Base: p, Disp: 64 * i}, acc[i%4], acc[i%4])
		switch prefetch {
		case "T0":
			PREFETCHT0(Mem{Base: p, Disp: 1024 + 64*i})
		case "T1":
			PREFETCHT1(Mem{Base: p, Disp: 4096 + 64*i})
		}
	}
	ADDQ(U32(512), p)
	DECQ(n)
	JNZ(LabelRef("loop"))
	Label("reduce")
	VPADDQ(acc[1], acc[0], acc[0])
	VPADDQ(acc[3], acc[2], acc[2])
	VPADDQ(acc[2], acc[0], acc[0])
	y := YMM()
	VEXTRACTI64X4(U8(1), acc[0], y)
	VPADDQ(y, acc[0].AsY(), y)
	x := XMM()
	VEXTRACTI128(U8(1), y, x)
	VPADDQ(x, y.AsX(), x)
	hi := XMM()
	VPSHUFD(U8(0x4E), x, hi)
	VPADDQ(hi, x, x)
	r := GP64()
	VMOVQ(x, r)
	Store(r, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

func genQK4() {
	TEXT("qk4AVX512", NOSPLIT, "func(out *float32, q *float32, k *float32, nkeys int, scale float32)")
	Pragma("noescape")
	Doc("qk4AVX512 computes the scaled logits of 4 query heads (q: 4 rows of 128)",
		"against nkeys keys (nkeys % 4 == 0, rows of 128), key-major, with FMAs:",
		"",
		"\tfor i := 0; i < nkeys; i++ {",
		"\t\tfor h := 0; h < 4; h++ {",
		"\t\t\tout[4*i+h] = scale * dot(q[128*h:128*h+128], k[128*i:128*i+128])",
		"\t\t}",
		"\t}")
	out := Load(Param("out"), GP64())
	q := Load(Param("q"), GP64())
	k := Load(Param("k"), GP64())
	n := Load(Param("nkeys"), GP64())
	scale := ZMM()
	VBROADCASTSS(Load(Param("scale"), XMM()), scale)
	SHRQ(U8(2), n)
	JZ(LabelRef("done"))
	Label("block")
	var acc [4][4]reg.VecVirtual // [key][head]
	for b := range acc {
		for h := range acc[b] {
			acc[b][h] = ZMM()
			VPXORD(acc[b][h], acc[b][h], acc[b][h])
		}
	}
	for c := 0; c < 8; c++ {
		for b := 0; b < 4; b++ {
			kv := ZMM()
			VMOVUPS(Mem{Base: k, Disp: 512*b + 64*c}, kv)
			for h := 0; h < 4; h++ {
				VFMADD231PS(Mem{Base: q, Disp: 512*h + 64*c}, kv, acc[b][h])
			}
		}
	}
	// Reduce the 16 accumulators to one register, element 4*key + head.
	var t [4]reg.VecVirtual
	for h := 0; h < 4; h++ {
		var s [2]reg.VecVirtual
		for i := 0; i < 2; i++ {
			x, y := acc[2*i][h], acc[2*i+1][h]
			lo, hi := ZMM(), ZMM()
			VSHUFF64X2(U8(0x44), y, x, lo)
			VSHUFF64X2(U8(0xEE), y, x, hi)
			s[i] = ZMM()
			VADDPS(hi, lo, s[i])
		}
		lo, hi := ZMM(), ZMM()
		VSHUFF32X4(U8(0x88), s[1], s[0], lo)
		VSHUFF32X4(U8(0xDD), s[1], s[0], hi)
		t[h] = ZMM()
		VADDPS(hi, lo, t[h])
	}
	var u [2]reg.VecVirtual
	for i := 0; i < 2; i++ {
		lo, hi := ZMM(), ZMM()
		VUNPCKLPS(t[2*i+1], t[2*i], lo)
		VUNPCKHPS(t[2*i+1], t[2*i], hi)
		u[i] = ZMM()
		VADDPS(hi, lo, u[i])
	}
	lo, hi, v := ZMM(), ZMM(), ZMM()
	VUNPCKLPD(u[1], u[0], lo)
	VUNPCKHPD(u[1], u[0], hi)
	VADDPS(hi, lo, v)
	VMULPS(scale, v, v)
	VMOVUPS(v, Mem{Base: out})
	ADDQ(U32(2048), k)
	ADDQ(U8(64), out)
	DECQ(n)
	JNZ(LabelRef("block"))
	Label("done")
	VZEROUPPER()
	RET()
}

func genMaxLanes() {
	TEXT("maxLanesAVX512", NOSPLIT, "func(x *float32, n int, out *[16]float32)")
	Pragma("noescape")
	Doc("maxLanesAVX512 writes the maximum of each of 16 lanes (n % 16 == 0):",
		"",
		"\tfor i := 0; i < n; i++ {",
		"\t\tout[i%16] = max(out[i%16], x[i]) // out starts at -Inf",
		"\t}")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	out := Load(Param("out"), GP64())
	m0, m1 := ZMM(), ZMM()
	t := GP32()
	MOVL(U32(0xff800000), t)
	VPBROADCASTD(t, m0)
	VMOVAPS(m0, m1)
	SHRQ(U8(5), n)
	JZ(LabelRef("done"))
	Label("loop")
	VMAXPS(Mem{Base: x}, m0, m0)
	VMAXPS(Mem{Base: x, Disp: 64}, m1, m1)
	ADDQ(U8(128), x)
	DECQ(n)
	JNZ(LabelRef("loop"))
	Label("done")
	n2 := Load(Param("n"), GP64())
	TESTQ(U32(16), n2)
	JZ(LabelRef("store"))
	VMAXPS(Mem{Base: x}, m0, m0)
	Label("store")
	VMAXPS(m1, m0, m0)
	VMOVUPS(m0, Mem{Base: out})
	VZEROUPPER()
	RET()
}

func genExpSum() {
	TEXT("expSumAVX512", NOSPLIT, "func(x *float32, n int, m *[16]float32, sums *[16]float32)")
	Pragma("noescape")
	Doc("expSumAVX512 replaces x by exp(x - m) (lane-wise m, n % 16 == 0) and adds",
		"each lane's values into sums; exp is 2^k * p(f) with t = x*log2(e),",
		"k = round(t), f = t - k and p a degree-6 polynomial (relative error < 4e-6 down to",
		"x - m = -87, where float32 results turn denormal; < 1e-6 on [-10, 0]):",
		"",
		"\tfor i := 0; i < n; i++ {",
		"\t\tx[i] = float32(math.Exp(float64(x[i] - m[i%16])))",
		"\t\tsums[i%16] += x[i]",
		"\t}")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	mp := Load(Param("m"), GP64())
	sp := Load(Param("sums"), GP64())
	m, sum := ZMM(), ZMM()
	VMOVUPS(Mem{Base: mp}, m)
	VMOVUPS(Mem{Base: sp}, sum)
	t := GP32()
	bc := func(v float64) reg.VecVirtual {
		z := ZMM()
		MOVL(U32(math.Float32bits(float32(v))), t)
		VPBROADCASTD(t, z)
		return z
	}
	log2e := bc(math.Log2E)
	var c [7]reg.VecVirtual
	f := 1.0
	for i := range c {
		c[i] = bc(math.Pow(math.Ln2, float64(i)) / f)
		f *= float64(i + 1)
	}
	SHRQ(U8(4), n)
	JZ(LabelRef("done"))
	Label("loop")
	v, kk, p := ZMM(), ZMM(), ZMM()
	VMOVUPS(Mem{Base: x}, v)
	VSUBPS(m, v, v) // v - m
	VMULPS(log2e, v, v)
	VRNDSCALEPS(U8(0), v, kk)
	VSUBPS(kk, v, v)
	VMOVAPS(c[6], p)
	for i := 5; i >= 0; i-- {
		VFMADD213PS(c[i], v, p) // p = p*f + c[i]
	}
	VSCALEFPS(kk, p, p)
	VMOVUPS(p, Mem{Base: x})
	VADDPS(p, sum, sum)
	ADDQ(U8(64), x)
	DECQ(n)
	JNZ(LabelRef("loop"))
	Label("done")
	VMOVUPS(sum, Mem{Base: sp})
	VZEROUPPER()
	RET()
}

func genPV2() {
	TEXT("pv2AVX512", NOSPLIT, "func(out *float32, p *float32, v *float32, n int)")
	Pragma("noescape")
	Doc("pv2AVX512 adds the weighted values of 2 heads (out: 2 rows of 128): key i",
		"has weights p[4*i] (head a) and p[4*i+1] (head b), values v[128*i:128*i+128]:",
		"",
		"\tfor i := 0; i < n; i++ {",
		"\t\tfor d := 0; d < 128; d++ {",
		"\t\t\tout[d] += p[4*i] * v[128*i+d]",
		"\t\t\tout[128+d] += p[4*i+1] * v[128*i+d]",
		"\t\t}",
		"\t}")
	out := Load(Param("out"), GP64())
	p := Load(Param("p"), GP64())
	v := Load(Param("v"), GP64())
	n := Load(Param("n"), GP64())
	var a, b [8]reg.VecVirtual
	for c := 0; c < 8; c++ {
		a[c], b[c] = ZMM(), ZMM()
		VMOVUPS(Mem{Base: out, Disp: 64 * c}, a[c])
		VMOVUPS(Mem{Base: out, Disp: 512 + 64*c}, b[c])
	}
	TESTQ(n, n)
	JZ(LabelRef("done"))
	Label("loop")
	pa, pb := ZMM(), ZMM()
	VBROADCASTSS(Mem{Base: p}, pa)
	VBROADCASTSS(Mem{Base: p, Disp: 4}, pb)
	for c := 0; c < 8; c++ {
		vv := ZMM()
		VMOVUPS(Mem{Base: v, Disp: 64 * c}, vv)
		VFMADD231PS(vv, pa, a[c])
		VFMADD231PS(vv, pb, b[c])
	}
	ADDQ(U8(16), p)
	ADDQ(U32(512), v)
	DECQ(n)
	JNZ(LabelRef("loop"))
	Label("done")
	for c := 0; c < 8; c++ {
		VMOVUPS(a[c], Mem{Base: out, Disp: 64 * c})
		VMOVUPS(b[c], Mem{Base: out, Disp: 512 + 64*c})
	}
	VZEROUPPER()
	RET()
}
