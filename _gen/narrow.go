package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// Hamming distances of a narrow code table (8-, 16- or 32-bit codes packed
// in words, so that on amd64 the table is simply an array of uint8, uint16
// or uint32) against a set of one-word probes, of which only the low bits
// count. A block is one vector of table: 64 bytes (AVX-512) or 32 (AVX2);
// its codes give 32/bits vectors of uint32 distances.
//
// The ways to count, by kernel:
//
//   - narrowPopcntD (AVX-512, 32-bit codes): xor with the probe's low dword
//     (embedded broadcast), VPOPCNTD, dword sums;
//   - narrowWiden (AVX-512 without BITALG, 8 and 16 bits): the codes are
//     zero-extended to dwords once per block (VPMOVZXBD/VPMOVZXWD), the
//     probe is zero-extended and broadcast, then as above;
//   - narrowBitalg (AVX-512 with BITALG, 8 and 16 bits): VPOPCNTB/VPOPCNTW
//     on the codes in place, summed in bytes (chunks of at most 31 probes,
//     8 bits each) or words (4095 probes, 16 bits each), then widened;
//   - narrowLUT (AVX2): the nibble table of genHammingAVX2 gives byte
//     counts, summed over chunks of at most 31 probes, then added up per
//     code (VPMADDUBSW, VPMADDWD with ones) and widened.
//
// The first chunk's distances are stored, a further chunk's added to them:
// the dword sums wrap as uint32(d) does, so every probe count is exact. The
// 8-bit kernels reorder each block's codes once (permute8) so that their
// byte counts widen by shifts and masks instead of shuffles.
const (
	narrowPopcntD = iota
	narrowWiden
	narrowBitalg
	narrowLUT
)

// Constants of the narrow kernels.
var (
	onesB     Mem // 32 bytes 1 (VPMADDUBSW)
	onesW     Mem // 16 words 1 (VPMADDWD)
	lowByteD  Mem // 16 dwords 0xff
	permD8Z   Mem // VPERMD indices of the 8-bit code order, ZMM (see permute8)
	permD8Y   Mem // the same for YMM
	transB4x4 Mem // VPSHUFB: bytes 4m+k <- 4k+m in each 16
)

func narrowConsts() {
	onesB = GLOBL("onesB", RODATA|NOPTR)
	for i := 0; i < 32; i++ {
		DATA(i, U8(1))
	}
	onesW = GLOBL("onesW", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(2*i, U16(1))
	}
	lowByteD = GLOBL("lowByteD", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(4*i, U32(0xff))
	}
	// Dword 4j+k of lane j <- dword 4k+j (ZMM), 4j+k <- 2k+j (YMM).
	permD8Z = GLOBL("permD8Z", RODATA|NOPTR)
	for j := 0; j < 4; j++ {
		for k := 0; k < 4; k++ {
			DATA(4*(4*j+k), U32(uint32(4*k+j)))
		}
	}
	permD8Y = GLOBL("permD8Y", RODATA|NOPTR)
	for j := 0; j < 2; j++ {
		for k := 0; k < 4; k++ {
			DATA(4*(4*j+k), U32(uint32(2*k+j)))
		}
	}
	transB4x4 = GLOBL("transB4x4", RODATA|NOPTR)
	for l := 0; l < 4; l++ {
		for m := 0; m < 4; m++ {
			for k := 0; k < 4; k++ {
				DATA(16*l+4*m+k, U8(4*k+m))
			}
		}
	}
}

// permute8 holds the three constants by which the 8-bit kernels reorder
// each block of table codes, once, so that the byte counts widen to
// uint32 vectors by shifts and masks rather than shuffles: code 16k+i
// (ZMM; 8k+i in YMM) goes to byte 4i+k, so that byte k of dword i of the
// counts is the distance of code i of uint32 vector k.
type permute8 struct{ idx, shuf, mask reg.VecVirtual }

func loadPermute8(zmm bool) permute8 {
	if zmm {
		p := permute8{ZMM(), ZMM(), ZMM()}
		VMOVDQU32(permD8Z, p.idx)
		VMOVDQU32(transB4x4, p.shuf)
		VMOVDQU32(lowByteD, p.mask)
		return p
	}
	p := permute8{YMM(), YMM(), YMM()}
	VMOVDQU(permD8Y, p.idx)
	VMOVDQU(transB4x4, p.shuf)
	VMOVDQU(lowByteD, p.mask)
	return p
}

// load sets d to the block at m, reordered.
func (p permute8) load(m Mem, d reg.VecVirtual) {
	VPERMD(m, p.idx, d)
	VPSHUFB(p.shuf, d, d)
}

// widen gives the uint32 vectors of the byte counts of reordered codes.
func (p permute8) widen(zmm bool, acc reg.VecVirtual, out func(k int, w reg.VecVirtual)) {
	for k := 0; k < 4; k++ {
		var w reg.VecVirtual
		if zmm {
			w = ZMM()
		} else {
			w = YMM()
		}
		switch {
		case k == 0 && zmm:
			VPANDD(p.mask, acc, w)
		case k == 0:
			VPAND(p.mask, acc, w)
		case k < 3:
			VPSRLD(U8(8*k), acc, w)
			if zmm {
				VPANDD(p.mask, w, w)
			} else {
				VPAND(p.mask, w, w)
			}
		default:
			VPSRLD(U8(24), acc, w)
		}
		out(k, w)
	}
}

func genNarrowAll() {
	narrowConsts()
	genNarrow("hammingN8AVX512", 8, narrowBitalg, 4)
	genNarrow("hammingN16AVX512", 16, narrowBitalg, 2)
	genNarrow("hammingN32AVX512", 32, narrowPopcntD, 4)
	genNarrow("hammingN8WidenAVX512", 8, narrowWiden, 1)
	genNarrow("hammingN16WidenAVX512", 16, narrowWiden, 2)
	genNarrow("hammingN8AVX2", 8, narrowLUT, 2)
	genNarrow("hammingN16AVX2", 16, narrowLUT, 4)
	genNarrow("hammingN32AVX2", 32, narrowLUT, 4)
}

func narrowDoc(name string, bits, vecBytes int) []string {
	k := 64 / bits
	codes := vecBytes * 8 / bits
	return []string{
		fmt.Sprintf("%s computes blocks*%d distances of %d-bit codes (%d words of table per block), np >= 1:", name, codes, bits, vecBytes/8),
		"",
		fmt.Sprintf("\tfor i := 0; i < blocks*%d; i++ {", codes),
		"\t\tvar d int",
		"\t\tfor p := 0; p < np; p++ {",
		fmt.Sprintf("\t\t\tc := uint%d(table[i/%d] >> (i %% %d * %d))", bits, k, k, bits),
		fmt.Sprintf("\t\t\td += bits.OnesCount%d(c ^ uint%d(probes[p]))", bits, bits),
		"\t\t}",
		"\t\tdist[i] = uint32(d)",
		"\t}",
	}
}

// vpopcntBW emits VPOPCNTB or VPOPCNTW (AVX512_BITALG), which the Go
// assembler knows but avo's instruction database does not.
func vpopcntBW(bits int, src, dst reg.Register) {
	op := "VPOPCNTB"
	if bits == 16 {
		op = "VPOPCNTW"
	}
	Instruction(&ir.Instruction{
		Opcode:   op,
		Operands: []Op{src, dst},
		Inputs:   []Op{src},
		Outputs:  []Op{dst},
		ISA:      []string{"AVX512BITALG"},
	})
}

// genNarrow writes one narrow kernel; it handles unroll blocks per pass
// while it can, then single blocks.
func genNarrow(name string, bits, method, unroll int) {
	zmm := method != narrowLUT
	vb := 32
	if zmm {
		vb = 64
	}
	TEXT(name, NOSPLIT, "func(dist *uint32, table *uint64, blocks int, probes *uint64, np int)")
	Pragma("noescape")
	doc := narrowDoc(name, bits, vb)
	if method == narrowBitalg {
		doc = append(doc, "", "Requires AVX512_BITALG.")
	}
	Doc(doc...)
	dist := Load(Param("dist"), GP64())
	table := Load(Param("table"), GP64())
	blocks := Load(Param("blocks"), GP64())
	probes := Load(Param("probes"), GP64())
	np := Load(Param("np"), GP64())

	var lut, low reg.VecVirtual
	if method == narrowLUT {
		lut, low = YMM(), YMM()
		VMOVDQU(nibbleLUT, lut)
		VMOVDQU(lowNibbles, low)
	}
	var perm *permute8
	if bits == 8 && (method == narrowBitalg || method == narrowLUT) {
		p := loadPermute8(method != narrowLUT)
		perm = &p
	}
	outPer := 32 / bits // uint32 vectors of distances per block

	units := []int{unroll}
	if unroll > 1 {
		units = append(units, 1)
	}
	for _, u := range units {
		loop := fmt.Sprintf("loop%d", u)
		next := fmt.Sprintf("done%d", u)
		Label(loop)
		CMPQ(blocks, U8(u))
		JB(LabelRef(next))
		switch method {
		case narrowPopcntD, narrowWiden:
			narrowDwordBody(bits, method, u, table, dist, probes, np)
		default:
			narrowChunkBody(bits, method, u, vb, table, dist, probes, np, lut, low, perm, fmt.Sprint(u))
		}
		ADDQ(U32(u*vb*outPer), dist)
		ADDQ(U32(u*vb), table)
		SUBQ(U8(u), blocks)
		JMP(LabelRef(loop))
		Label(next)
	}
	VZEROUPPER()
	RET()
}

// narrowDwordBody counts in dwords: the first probe sets the sums.
func narrowDwordBody(bits, method, u int, table, dist, probes, np reg.Register) {
	var d []reg.VecVirtual
	for j := 0; j < u; j++ {
		switch {
		case bits == 32:
			v := ZMM()
			VMOVDQU32(Mem{Base: table, Disp: 64 * j}, v)
			d = append(d, v)
		case bits == 16:
			for m := 0; m < 2; m++ {
				v := ZMM()
				VPMOVZXWD(Mem{Base: table, Disp: 64*j + 32*m}, v)
				d = append(d, v)
			}
		default:
			for m := 0; m < 4; m++ {
				v := ZMM()
				VPMOVZXBD(Mem{Base: table, Disp: 64*j + 16*m}, v)
				d = append(d, v)
			}
		}
	}
	pp := GP64()
	MOVQ(probes, pp)
	cnt := GP64()
	MOVQ(np, cnt)
	// loadProbe (narrowWiden) broadcasts the probe at pp, zero-extended;
	// xorProbe sets t to d xor the probe's low bits.
	var pv reg.VecVirtual
	loadProbe := func() {
		if method == narrowWiden {
			g := GP32()
			if bits == 8 {
				MOVBLZX(Mem{Base: pp}, g)
			} else {
				MOVWLZX(Mem{Base: pp}, g)
			}
			pv = ZMM()
			VPBROADCASTD(g, pv)
		}
	}
	xorProbe := func(d, t reg.VecVirtual) {
		if method == narrowWiden {
			VPXORD(pv, d, t)
		} else {
			VPXORD_BCST(Mem{Base: pp}, d, t)
		}
	}
	acc := make([]reg.VecVirtual, len(d))
	loadProbe()
	for i := range d {
		acc[i] = ZMM()
		xorProbe(d[i], acc[i])
		VPOPCNTD(acc[i], acc[i])
	}
	store := fmt.Sprintf("store%d", u)
	probe := fmt.Sprintf("probe%d", u)
	DECQ(cnt)
	JZ(LabelRef(store))
	Label(probe)
	ADDQ(U8(8), pp)
	loadProbe()
	for i := range d {
		t := ZMM()
		xorProbe(d[i], t)
		VPOPCNTD(t, t)
		VPADDD(t, acc[i], acc[i])
	}
	DECQ(cnt)
	JNZ(LabelRef(probe))
	Label(store)
	for i := range acc {
		VMOVDQU32(acc[i], Mem{Base: dist, Disp: 64 * i})
	}
}

// narrowChunkBody counts in bytes (or words) over chunks of probes. The
// first chunk's counts, widened, are stored to dist; those of any further
// chunk are added to it.
func narrowChunkBody(bits, method, u, vb int, table, dist, probes, np reg.Register, lut, low reg.VecVirtual, perm *permute8, sfx string) {
	zmm := method != narrowLUT
	vec := func() reg.VecVirtual {
		if zmm {
			return ZMM()
		}
		return YMM()
	}
	outPer := 32 / bits
	chunk := 31 // byte sums: at most 8 per probe
	if method == narrowBitalg && bits == 16 {
		chunk = 4095 // word sums: at most 16 per probe
	}
	var d []reg.VecVirtual // the table (the AVX2 kernels xor 16- and 32-bit codes from memory)
	for j := 0; j < u; j++ {
		m := Mem{Base: table, Disp: vb * j}
		switch {
		case perm != nil:
			v := vec()
			perm.load(m, v)
			d = append(d, v)
		case zmm:
			v := ZMM()
			VMOVDQU64(m, v)
			d = append(d, v)
		}
	}
	pp := GP64()
	MOVQ(probes, pp)
	rem := GP64()
	MOVQ(np, rem)
	cnt := GP64()

	// count adds (or, with set, sets) the counts of the probe at pp.
	count := func(acc []reg.VecVirtual, set bool) {
		pv := vec()
		switch bits {
		case 8:
			VPBROADCASTB(Mem{Base: pp}, pv)
		case 16:
			VPBROADCASTW(Mem{Base: pp}, pv)
		default:
			VPBROADCASTD(Mem{Base: pp}, pv)
		}
		for j := range acc {
			if zmm {
				if set {
					VPXORQ(pv, d[j], acc[j])
					vpopcntBW(bits, acc[j], acc[j])
					continue
				}
				t := ZMM()
				VPXORQ(pv, d[j], t)
				vpopcntBW(bits, t, t)
				if bits == 8 {
					VPADDB(t, acc[j], acc[j])
				} else {
					VPADDW(t, acc[j], acc[j])
				}
				continue
			}
			t, hi := YMM(), YMM()
			if d != nil {
				VPXOR(d[j], pv, t)
			} else {
				VPXOR(Mem{Base: table, Disp: 32 * j}, pv, t)
			}
			VPSRLW(U8(4), t, hi)
			VPAND(low, t, t)
			VPAND(low, hi, hi)
			VPSHUFB(t, lut, t)
			VPSHUFB(hi, lut, hi)
			if set {
				VPADDB(t, hi, acc[j])
			} else {
				VPADDB(t, acc[j], acc[j])
				VPADDB(hi, acc[j], acc[j])
			}
		}
		ADDQ(U8(8), pp)
	}

	for _, first := range []bool{true, false} {
		pass := "a"
		if !first {
			pass = "b"
			Label("more" + sfx)
		}
		MOVQ(U32(chunk), cnt)
		CMPQ(rem, cnt)
		CMOVQLT(rem, cnt)
		SUBQ(cnt, rem)
		acc := make([]reg.VecVirtual, u)
		for j := range acc {
			acc[j] = vec()
		}
		count(acc, true)
		DECQ(cnt)
		JZ(LabelRef("widen" + pass + sfx))
		Label("probe" + pass + sfx)
		count(acc, false)
		DECQ(cnt)
		JNZ(LabelRef("probe" + pass + sfx))

		Label("widen" + pass + sfx)
		// out stores (or adds to dist) the uint32 vector k of acc[j].
		out := func(j, k int, w reg.VecVirtual) {
			m := Mem{Base: dist, Disp: vb * (j*outPer + k)}
			if !first {
				VPADDD(m, w, w)
			}
			if zmm {
				VMOVDQU32(w, m)
			} else {
				VMOVDQU(w, m)
			}
		}
		for j := range acc {
			o := func(k int, w reg.VecVirtual) { out(j, k, w) }
			if perm != nil {
				perm.widen(zmm, acc[j], o)
			} else {
				widenCounts(bits, zmm, acc[j], o)
			}
		}
		TESTQ(rem, rem)
		if first {
			JZ(LabelRef("end" + sfx))
		} else {
			JNZ(LabelRef("more" + sfx))
		}
	}
	Label("end" + sfx)
}

// widenCounts widens the byte (or word) counts of acc to the uint32
// vectors out(0), out(1), ... of the codes' distances.
func widenCounts(bits int, zmm bool, acc reg.VecVirtual, out func(k int, w reg.VecVirtual)) {
	switch {
	case zmm && bits == 8: // 64 byte counts
		for k := 0; k < 4; k++ {
			x := acc.AsX()
			if k > 0 {
				x = XMM()
				VEXTRACTI32X4(U8(k), acc, x)
			}
			w := ZMM()
			VPMOVZXBD(x, w)
			out(k, w)
		}
	case zmm: // 32 word counts
		for k := 0; k < 2; k++ {
			y := acc.AsY()
			if k > 0 {
				y = YMM()
				VEXTRACTI64X4(U8(1), acc, y)
			}
			w := ZMM()
			VPMOVZXWD(y, w)
			out(k, w)
		}
	case bits == 8: // 32 byte counts, 8 per uint32 vector
		hx := XMM()
		VEXTRACTI128(U8(1), acc, hx)
		for k := 0; k < 4; k++ {
			x := acc.AsX()
			if k >= 2 {
				x = hx
			}
			if k%2 == 1 {
				h := XMM()
				VPSRLDQ(U8(8), x, h)
				x = h
			}
			w := YMM()
			VPMOVZXBD(x, w)
			out(k, w)
		}
	case bits == 16: // byte pairs to 16 word counts
		s := YMM()
		VPMADDUBSW(onesB, acc, s)
		for k := 0; k < 2; k++ {
			x := s.AsX()
			if k > 0 {
				x = XMM()
				VEXTRACTI128(U8(1), s, x)
			}
			w := YMM()
			VPMOVZXWD(x, w)
			out(k, w)
		}
	default: // byte quads to 8 dword counts
		s := YMM()
		VPMADDUBSW(onesB, acc, s)
		VPMADDWD(onesW, s, s)
		out(0, s)
	}
}
