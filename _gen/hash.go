package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// The projection hash. Bit j of the code is dot(x, rt[j]) >= 0 with the dot
// product in the lane order of docs/algorithm.md: element i is multiplied
// (VMULPS) and then added (VADDPS, never a fused multiply-add) into lane
// i%16; the sixteen lanes are folded lane[i] += lane[i+w] for w = 8, 4, 2, 1.
// One ZMM register (AVX-512) or two YMM registers (AVX2: lanes 0-7 and
// 8-15) hold the sixteen lanes of one row; several rows share the loads of x.
// The tail of a row (dim % 16 elements) only touches lanes below dim % 16:
// merge masking (AVX-512) or a blend (AVX2) leaves the other lanes exactly
// as they were, so even the sign of a zero lane matches the Go loop.

var hashDoc = []string{
	"It ORs into code the bits of rows [0, nbits) of rt (row j is rt[j*dim:(j+1)*dim]);",
	"code must be zero on entry. The Go loop it computes, bit for bit:",
	"",
	"\tfor j := 0; j < nbits; j++ {",
	"\t\tvar acc [16]float32",
	"\t\tfor i := 0; i < dim; i++ {",
	"\t\t\tacc[i%16] = acc[i%16] + float32(x[i]*rt[j*dim+i]) // no FMA",
	"\t\t}",
	"\t\tfor w := 8; w >= 1; w /= 2 {",
	"\t\t\tfor l := 0; l < w; l++ {",
	"\t\t\t\tacc[l] = acc[l] + acc[l+w]",
	"\t\t\t}",
	"\t\t}",
	"\t\tif acc[0] >= 0 {",
	"\t\t\tcode[j/64] |= 1 << (j % 64)",
	"\t\t}",
	"\t}",
}

// orBits ORs the low bits of res, shifted to bit j, into code[j/64].
func orBits(code, j, res reg.GPVirtual) {
	sh := GP64()
	MOVQ(j, sh)
	ANDQ(U8(63), sh)
	SHLXQ(sh, res, res)
	w := GP64()
	MOVQ(j, w)
	SHRQ(U8(6), w)
	ORQ(res, Mem{Base: code, Index: w, Scale: 8})
}

func genHashAVX512() {
	TEXT("hashAVX512", NOSPLIT, "func(code *uint64, x *float32, rt *float32, dim int, nbits int)")
	Pragma("noescape")
	Doc(append([]string{"hashAVX512 hashes x against 8 rows of rt per pass (nbits % 8 == 0, dim >= 1)."}, hashDoc...)...)
	code := Load(Param("code"), GP64()).(reg.GPVirtual)
	x := Load(Param("x"), GP64())
	rg := Load(Param("rt"), GP64())
	dim := Load(Param("dim"), GP64())
	nbits := Load(Param("nbits"), GP64())

	stride := GP64()
	MOVQ(dim, stride)
	SHLQ(U8(2), stride)
	s3 := GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, s3)
	full := GP64()
	MOVQ(dim, full)
	SHRQ(U8(4), full)
	tail := GP64()
	MOVQ(dim, tail)
	ANDQ(U8(15), tail)
	ktail := K()
	t := GP64()
	MOVQ(U32(1), t)
	SHLXQ(tail, t, t)
	DECQ(t)
	KMOVW(t.As32(), ktail)
	zero := ZMM()
	VPXORD(zero, zero, zero)
	mask := GP32()
	MOVL(U32(0x3333), mask)
	j := GP64().(reg.GPVirtual)
	XORQ(j, j)

	Label("group")
	CMPQ(j, nbits)
	JAE(LabelRef("done"))
	p0 := GP64()
	MOVQ(rg, p0)
	p4 := GP64()
	LEAQ(Mem{Base: rg, Index: stride, Scale: 4}, p4)
	row := func(r int) Mem {
		base := p0
		if r >= 4 {
			base = p4
		}
		switch r % 4 {
		case 0:
			return Mem{Base: base}
		case 1:
			return Mem{Base: base, Index: stride, Scale: 1}
		case 2:
			return Mem{Base: base, Index: stride, Scale: 2}
		}
		return Mem{Base: base, Index: s3, Scale: 1}
	}
	var acc [8]reg.VecVirtual
	for r := range acc {
		acc[r] = ZMM()
		VPXORD(acc[r], acc[r], acc[r])
	}
	xp := GP64()
	MOVQ(x, xp)
	cnt := GP64()
	MOVQ(full, cnt)
	TESTQ(cnt, cnt)
	JZ(LabelRef("tail"))

	Label("block")
	xv := ZMM()
	VMOVUPS(Mem{Base: xp}, xv)
	for r := range acc {
		p := ZMM()
		VMULPS(row(r), xv, p)
		VADDPS(p, acc[r], acc[r])
	}
	ADDQ(U8(64), xp)
	ADDQ(U8(64), p0)
	ADDQ(U8(64), p4)
	DECQ(cnt)
	JNZ(LabelRef("block"))

	Label("tail")
	TESTQ(tail, tail)
	JZ(LabelRef("fold"))
	VMOVUPS_Z(Mem{Base: xp}, ktail, xv)
	for r := range acc {
		p := ZMM()
		VMULPS_Z(row(r), xv, ktail, p)
		VADDPS(p, acc[r], ktail, acc[r]) // merge masking: lanes >= tail untouched
	}

	Label("fold")
	// w = 8: pairs of rows share a register, [row a lanes 0-7 | row b lanes 0-7].
	pairs := [4][2]int{{0, 2}, {4, 6}, {1, 3}, {5, 7}}
	var s [4]reg.VecVirtual
	for i, pr := range pairs {
		lo, hi := ZMM(), ZMM()
		VSHUFF64X2(U8(0x44), acc[pr[1]], acc[pr[0]], lo)
		VSHUFF64X2(U8(0xEE), acc[pr[1]], acc[pr[0]], hi)
		s[i] = ZMM()
		VADDPS(hi, lo, s[i])
	}
	// w = 4: four rows per register, 4 lanes each: t1 rows 0,2,4,6; t2 rows 1,3,5,7.
	var tt [2]reg.VecVirtual
	for i := range tt {
		lo, hi := ZMM(), ZMM()
		VSHUFF32X4(U8(0x88), s[2*i+1], s[2*i], lo)
		VSHUFF32X4(U8(0xDD), s[2*i+1], s[2*i], hi)
		tt[i] = ZMM()
		VADDPS(hi, lo, tt[i])
	}
	// w = 2: per 128-bit block k, (t1[0]+t1[2], t2[0]+t2[2], t1[1]+t1[3], t2[1]+t2[3]).
	lo, hi, u := ZMM(), ZMM(), ZMM()
	VUNPCKLPS(tt[1], tt[0], lo)
	VUNPCKHPS(tt[1], tt[0], hi)
	VADDPS(hi, lo, u)
	// w = 1: element 4k holds row 2k, element 4k+1 row 2k+1.
	sw, v := ZMM(), ZMM()
	VPERMILPS(U8(0x4E), u, sw)
	VADDPS(sw, u, v)
	kge := K()
	VCMPPS(U8(0x1D), zero, v, kge) // v >= 0 (GE_OQ: false for NaN)
	bitsr := GP32()
	KMOVW(kge, bitsr)
	res := GP64().(reg.GPVirtual)
	PEXTL(mask, bitsr, res.As32())
	orBits(code, j, res)
	ADDQ(U8(8), j)
	LEAQ(Mem{Base: rg, Index: stride, Scale: 8}, rg)
	JMP(LabelRef("group"))

	Label("done")
	VZEROUPPER()
	RET()
}

func genHashAVX2() {
	TEXT("hashAVX2", NOSPLIT, "func(code *uint64, x *float32, rt *float32, dim int, nbits int)")
	Pragma("noescape")
	Doc(append([]string{"hashAVX2 hashes x against 4 rows of rt per pass (nbits % 4 == 0, dim >= 1)."}, hashDoc...)...)
	code := Load(Param("code"), GP64()).(reg.GPVirtual)
	x := Load(Param("x"), GP64())
	rg := Load(Param("rt"), GP64())
	dim := Load(Param("dim"), GP64())
	nbits := Load(Param("nbits"), GP64())

	stride := GP64()
	MOVQ(dim, stride)
	SHLQ(U8(2), stride)
	s3 := GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, s3)
	full := GP64()
	MOVQ(dim, full)
	SHRQ(U8(4), full)
	tail := GP64()
	MOVQ(dim, tail)
	ANDQ(U8(15), tail)
	// Tail masks: lane i of (mlo, mhi) is all ones when i < tail.
	mp := GP64()
	LEAQ(maskTab, mp)
	ADDQ(U8(64), mp)
	t := GP64()
	MOVQ(tail, t)
	SHLQ(U8(2), t)
	SUBQ(t, mp)
	mask := GP32()
	MOVL(U32(0x33), mask)
	j := GP64().(reg.GPVirtual)
	XORQ(j, j)

	Label("group")
	CMPQ(j, nbits)
	JAE(LabelRef("done"))
	var alo, ahi [4]reg.VecVirtual
	for r := range alo {
		alo[r], ahi[r] = YMM(), YMM()
		VXORPS(alo[r], alo[r], alo[r])
		VXORPS(ahi[r], ahi[r], ahi[r])
	}
	xp := GP64()
	MOVQ(x, xp)
	cnt := GP64()
	MOVQ(full, cnt)
	// The row pointers advance with a per-group cursor pr.
	pr := GP64()
	MOVQ(rg, pr)
	rowp := func(r, disp int) Mem {
		switch r {
		case 0:
			return Mem{Base: pr, Disp: disp}
		case 1:
			return Mem{Base: pr, Index: stride, Scale: 1, Disp: disp}
		case 2:
			return Mem{Base: pr, Index: stride, Scale: 2, Disp: disp}
		}
		return Mem{Base: pr, Index: s3, Scale: 1, Disp: disp}
	}
	TESTQ(cnt, cnt)
	JZ(LabelRef("tail"))

	Label("block")
	xlo, xhi := YMM(), YMM()
	VMOVUPS(Mem{Base: xp}, xlo)
	VMOVUPS(Mem{Base: xp, Disp: 32}, xhi)
	for r := range alo {
		p := YMM()
		VMULPS(rowp(r, 0), xlo, p)
		VADDPS(p, alo[r], alo[r])
		q := YMM()
		VMULPS(rowp(r, 32), xhi, q)
		VADDPS(q, ahi[r], ahi[r])
	}
	ADDQ(U8(64), xp)
	ADDQ(U8(64), pr)
	DECQ(cnt)
	JNZ(LabelRef("block"))

	Label("tail")
	TESTQ(tail, tail)
	JZ(LabelRef("fold"))
	mlo, mhi := YMM(), YMM()
	VMOVDQU(Mem{Base: mp}, mlo)
	VMOVDQU(Mem{Base: mp, Disp: 32}, mhi)
	VMASKMOVPS(Mem{Base: xp}, mlo, xlo)
	VMASKMOVPS(Mem{Base: xp, Disp: 32}, mhi, xhi)
	for r := range alo {
		for h, a := range []reg.VecVirtual{alo[r], ahi[r]} {
			m, xv := mlo, xlo
			if h == 1 {
				m, xv = mhi, xhi
			}
			p := YMM()
			VMASKMOVPS(rowp(r, 32*h), m, p)
			VMULPS(p, xv, p)
			VADDPS(p, a, p)
			VBLENDVPS(m, p, a, a) // lanes >= tail keep their value
		}
	}

	Label("fold")
	// w = 8: lanes 0-7 += lanes 8-15.
	for r := range alo {
		VADDPS(ahi[r], alo[r], alo[r])
	}
	// w = 4: [row a lanes 0-3 | row b lanes 0-3]; s1 rows 0,2; s2 rows 1,3.
	pairs := [2][2]int{{0, 2}, {1, 3}}
	var s [2]reg.VecVirtual
	for i, p := range pairs {
		lo, hi := YMM(), YMM()
		VPERM2F128(U8(0x20), alo[p[1]], alo[p[0]], lo)
		VPERM2F128(U8(0x31), alo[p[1]], alo[p[0]], hi)
		s[i] = YMM()
		VADDPS(hi, lo, s[i])
	}
	// w = 2, then w = 1: element 4k holds row 2k, element 4k+1 row 2k+1.
	lo, hi, u := YMM(), YMM(), YMM()
	VUNPCKLPS(s[1], s[0], lo)
	VUNPCKHPS(s[1], s[0], hi)
	VADDPS(hi, lo, u)
	sw, v := YMM(), YMM()
	VPERMILPS(U8(0x4E), u, sw)
	VADDPS(sw, u, v)
	zero := YMM()
	VXORPS(zero, zero, zero)
	VCMPPS(U8(0x1D), zero, v, v) // v >= 0 (GE_OQ: false for NaN)
	bitsr := GP32()
	VMOVMSKPS(v, bitsr)
	res := GP64().(reg.GPVirtual)
	PEXTL(mask, bitsr, res.As32())
	orBits(code, j, res)
	ADDQ(U8(4), j)
	LEAQ(Mem{Base: rg, Index: stride, Scale: 4}, rg)
	JMP(LabelRef("group"))

	Label("done")
	VZEROUPPER()
	RET()
}
