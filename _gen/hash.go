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

// hashArgs are the registers of the prologue both hash variants share.
type hashArgs struct {
	code         reg.GPVirtual
	x, rt, nbits reg.Register
	stride, s3   reg.Register // bytes per row of rt, and 3 times that
	full, tail   reg.Register // dim / 16 whole blocks, dim % 16 left
}

// hashPrologue starts a hash kernel: it loads the parameters and derives
// the row stride (with 3*stride, four rows are addressed from one base) and
// the split of a row into 16-element blocks and a tail.
func hashPrologue(name, intro string) hashArgs {
	kernel(name, "func(code *uint64, x *float32, rt *float32, dim int, nbits int)", hashDoc, intro)
	var h hashArgs
	h.code = Load(Param("code"), GP64()).(reg.GPVirtual)
	h.x = Load(Param("x"), GP64())
	h.rt = Load(Param("rt"), GP64())
	dim := Load(Param("dim"), GP64())
	h.nbits = Load(Param("nbits"), GP64())

	h.stride = GP64()
	MOVQ(dim, h.stride)
	SHLQ(U8(2), h.stride)
	h.s3 = GP64()
	LEAQ(Mem{Base: h.stride, Index: h.stride, Scale: 2}, h.s3)
	h.full = GP64()
	MOVQ(dim, h.full)
	SHRQ(U8(4), h.full)
	h.tail = GP64()
	MOVQ(dim, h.tail)
	ANDQ(U8(15), h.tail)
	return h
}

// hashGroup emits the head of the loop over groups of rows: j counts rows
// from 0 to nbits. The fold leaves row 2k's sum in element 4k and row
// 2k+1's in element 4k+1, so pext picks bits 0b0011 of every four sign
// bits; pextMask is that pattern over the vector.
func hashGroup(h hashArgs, pextMask uint32) (mask reg.Register, j reg.GPVirtual) {
	mask = GP32()
	MOVL(U32(pextMask), mask)
	j = GP64().(reg.GPVirtual)
	XORQ(j, j)

	Label("group")
	CMPQ(j, h.nbits)
	JAE(LabelRef("done"))
	return mask, j
}

// hashFoldPairs does the w = 2 and w = 1 steps of the fold on a and b, which
// hold 4 lanes of a row per 128-bit block (a: rows 2k, b: rows 2k+1). Per
// block k, w = 2 gives (a[0]+a[2], b[0]+b[2], a[1]+a[3], b[1]+b[3]) and
// w = 1 leaves row 2k in element 4k and row 2k+1 in element 4k+1.
func hashFoldPairs(v isa, a, b reg.VecVirtual) reg.VecVirtual {
	lo, hi, u := v.vec(), v.vec(), v.vec()
	VUNPCKLPS(b, a, lo)
	VUNPCKHPS(b, a, hi)
	VADDPS(hi, lo, u)
	sw, r := v.vec(), v.vec()
	VPERMILPS(U8(0x4E), u, sw)
	VADDPS(sw, u, r)
	return r
}

// hashNext ORs the selected sign bits of the group's rows into code,
// advances j and rt by rows and loops back to "group"; it also emits the
// kernel's end, "done".
func hashNext(h hashArgs, j reg.GPVirtual, mask, bits reg.Register, rows int) {
	res := GP64().(reg.GPVirtual)
	PEXTL(mask, bits, res.As32())
	orBits(h.code, j, res)
	ADDQ(U8(rows), j)
	LEAQ(Mem{Base: h.rt, Index: h.stride, Scale: uint8(rows)}, h.rt)
	JMP(LabelRef("group"))

	Label("done")
	VZEROUPPER()
	RET()
}

func genHashAVX512() {
	h := hashPrologue("hashAVX512", "hashAVX512 hashes x against 8 rows of rt per pass (nbits % 8 == 0, dim >= 1).")
	ktail := lowLanes(h.tail) // the lanes below tail
	zero := ZMM()
	VPXORD(zero, zero, zero)
	mask, j := hashGroup(h, 0x3333)
	stride, s3 := h.stride, h.s3
	p0 := GP64()
	MOVQ(h.rt, p0)
	p4 := GP64()
	LEAQ(Mem{Base: h.rt, Index: stride, Scale: 4}, p4)
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
	MOVQ(h.x, xp)
	cnt := GP64()
	MOVQ(h.full, cnt)
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
	TESTQ(h.tail, h.tail)
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
	// w = 2, then w = 1.
	v := hashFoldPairs(avx512, tt[0], tt[1])
	kge := K()
	VCMPPS(U8(0x1D), zero, v, kge) // v >= 0 (GE_OQ: false for NaN)
	bitsr := GP32()
	KMOVW(kge, bitsr)
	hashNext(h, j, mask, bitsr, 8)
}

func genHashAVX2() {
	h := hashPrologue("hashAVX2", "hashAVX2 hashes x against 4 rows of rt per pass (nbits % 4 == 0, dim >= 1).")
	// Tail masks: lane i of (mlo, mhi) is all ones when i < tail.
	mp := GP64()
	LEAQ(maskTab, mp)
	ADDQ(U8(64), mp)
	t := GP64()
	MOVQ(h.tail, t)
	SHLQ(U8(2), t)
	SUBQ(t, mp)
	mask, j := hashGroup(h, 0x33)
	var alo, ahi [4]reg.VecVirtual
	for r := range alo {
		alo[r], ahi[r] = YMM(), YMM()
		VXORPS(alo[r], alo[r], alo[r])
		VXORPS(ahi[r], ahi[r], ahi[r])
	}
	xp := GP64()
	MOVQ(h.x, xp)
	cnt := GP64()
	MOVQ(h.full, cnt)
	// The row pointers advance with a per-group cursor pr.
	pr := GP64()
	MOVQ(h.rt, pr)
	stride, s3 := h.stride, h.s3
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
	TESTQ(h.tail, h.tail)
	JZ(LabelRef("fold"))
	mlo, mhi := YMM(), YMM()
	VMOVDQU(Mem{Base: mp}, mlo)
	VMOVDQU(Mem{Base: mp, Disp: 32}, mhi)
	VMASKMOVPS(Mem{Base: xp}, mlo, xlo)
	VMASKMOVPS(Mem{Base: xp, Disp: 32}, mhi, xhi)
	for r := range alo {
		for half, a := range []reg.VecVirtual{alo[r], ahi[r]} {
			m, xv := mlo, xlo
			if half == 1 {
				m, xv = mhi, xhi
			}
			p := YMM()
			VMASKMOVPS(rowp(r, 32*half), m, p)
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
	// w = 2, then w = 1.
	v := hashFoldPairs(avx2, s[0], s[1])
	zero := YMM()
	VXORPS(zero, zero, zero)
	VCMPPS(U8(0x1D), zero, v, v) // v >= 0 (GE_OQ: false for NaN)
	bitsr := GP32()
	VMOVMSKPS(v, bitsr)
	hashNext(h, j, mask, bitsr, 4)
}
