package main

import (
	"fmt"
	"math/bits"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// Fused Hamming maximum: the largest distance between one probe and the
// codes of a table, narrow (8-, 16-, 32-bit codes, an array of uint8,
// uint16 or uint32 on amd64) or wide (1, 2 or 4 words a code). The decode
// step of the instant score (Farthest) needs only each block's maximum, so
// these kernels stream the codes once and keep per-element running maxima
// in registers instead of storing distances and reading them back.
//
// A kernel takes nbytes bytes of table, at least one vector and a whole
// number of codes: four vectors per pass, then single vectors, then, when
// nbytes is not a whole number of vectors, the one vector that ends at
// nbytes. That last vector overlaps codes already counted, which leaves
// the maximum unchanged, and reads no code past nbytes (a narrow table's
// unused bits in its last word are never read either).
//
// How a vector is counted:
//
//   - AVX-512: xor with the broadcast probe, then VPOPCNTB/W (8, 16 bits,
//     AVX512_BITALG), VPOPCNTD (32) or VPOPCNTQ (64 and more, the qwords
//     of a 2- or 4-word code summed with shuffles), and VPMAXUB/UW/UD/UQ;
//   - AVX2: the nibble table of genHammingAVX2 gives byte counts, summed
//     per code by VPMADDUBSW (16 bits), VPMADDUBSW and VPMADDWD (32) or
//     VPSADBW and shuffles (64 and more), then VPMAXUB/UW/UD (a qword
//     count is below 2^32, so its high dword is 0 and dword maxima do).
//
// The four accumulators are combined at the end; the last bytes or words
// are reduced with VPHMINPOSUW on their complement, dwords with shuffles.
//
// The four-vector loop asks for the line 4 KiB ahead of each 64 bytes it
// reads (PREFETCHT1; a hint, which never faults past the table's end).
// With a few vector instructions per line the out-of-order window holds
// too few loads to keep memory busy: without it these kernels read a
// table beyond the caches at about 80% of the bandwidth of a plain read
// loop (AVX2: 65%), with it at 90-100%; in the caches it costs little.

func genHammingMaxAll() {
	for _, zmm := range []bool{true, false} {
		for _, b := range []int{8, 16, 32, 64, 128, 256} {
			genHammingMax(b, zmm)
		}
	}
}

func hammingMaxDoc(name string, nb, vb int) []string {
	size := nb / 8
	cond, codes := fmt.Sprintf("nbytes >= %d, a multiple of %d", vb, size), fmt.Sprintf("nbytes/%d", size)
	if size == 1 {
		cond, codes = fmt.Sprintf("nbytes >= %d", vb), "nbytes"
	}
	doc := []string{
		fmt.Sprintf("%s returns the largest Hamming distance between the %d-bit codes in the", name, nb),
		fmt.Sprintf("first nbytes bytes of table and the probe (%s):", cond),
		"",
		"\tvar m int",
	}
	if nb < 64 {
		k := 64 / nb
		doc = append(doc,
			fmt.Sprintf("\tfor i := 0; i < %s; i++ {", codes),
			fmt.Sprintf("\t\tc := uint%d(table[i/%d] >> (i %% %d * %d))", nb, k, k, nb),
			fmt.Sprintf("\t\tm = max(m, bits.OnesCount%d(c^uint%d(*probe)))", nb, nb),
			"\t}")
	} else if nb == 64 {
		doc = append(doc,
			"\tfor i := 0; i < nbytes/8; i++ {",
			"\t\tm = max(m, bits.OnesCount64(table[i]^*probe))",
			"\t}")
	} else {
		w := nb / 64
		doc = append(doc,
			fmt.Sprintf("\tfor i := 0; i < nbytes/%d; i++ {", size),
			"\t\tvar d int",
			fmt.Sprintf("\t\tfor w := 0; w < %d; w++ {", w),
			fmt.Sprintf("\t\t\td += bits.OnesCount64(table[i*%d+w] ^ (*[%d]uint64)(probe)[w])", w, w),
			"\t\t}",
			"\t\tm = max(m, d)",
			"\t}")
	}
	doc = append(doc, "\treturn uint32(m)")
	doc = append(doc, "", "It prefetches the table 4 KiB ahead (to L2).")
	if nb <= 16 && vb == 64 {
		doc = append(doc, "", "Requires AVX512_BITALG.")
	}
	return doc
}

// genHammingMax writes hammingMax<bits>AVX512 (zmm) or hammingMax<bits>AVX2.
func genHammingMax(nb int, zmm bool) {
	v := avx2
	if zmm {
		v = avx512
	}
	vb := v.bytes()
	name := fmt.Sprintf("hammingMax%d%s", nb, v.name)
	kernel(name, "func(table *uint64, nbytes int, probe *uint64) uint32", hammingMaxDoc(name, nb, vb))
	table := Load(Param("table"), GP64())
	nbytes := Load(Param("nbytes"), GP64())
	probe := Load(Param("probe"), GP64())

	pv := v.vec()
	switch nb {
	case 8:
		VPBROADCASTB(Mem{Base: probe}, pv)
	case 16:
		VPBROADCASTW(Mem{Base: probe}, pv)
	case 32:
		VPBROADCASTD(Mem{Base: probe}, pv)
	default:
		broadcastProbe(nb/64, Mem{Base: probe}, pv, zmm)
	}
	var lut, low, ones, zero reg.VecVirtual
	if !zmm {
		lut, low = YMM(), YMM()
		VMOVDQU(nibbleLUT, lut)
		VMOVDQU(lowNibbles, low)
		switch {
		case nb == 16 || nb == 32:
			ones = YMM()
			VMOVDQU(onesB, ones)
		case nb >= 64:
			zero = YMM()
			VPXOR(zero, zero, zero)
		}
	}
	var acc [4]reg.VecVirtual
	for i := range acc {
		acc[i] = v.vec()
		if zmm {
			VPXORD(acc[i], acc[i], acc[i])
		} else {
			VPXOR(acc[i], acc[i], acc[i])
		}
	}
	end := GP64()
	LEAQ(Mem{Base: table, Index: nbytes, Scale: 1}, end)

	// vmax is the maximum of the accumulators' element type (qword
	// counts: VPMAXUQ in ZMM, dwords in YMM).
	vmax := func(a, b, dst reg.Register) {
		switch {
		case nb == 8:
			VPMAXUB(a, b, dst)
		case nb == 16:
			VPMAXUW(a, b, dst)
		case nb > 32 && zmm:
			VPMAXUQ(a, b, dst)
		default:
			VPMAXUD(a, b, dst)
		}
	}
	// step counts the vector at m and takes its maximum into a.
	step := func(m Mem, a reg.VecVirtual) {
		t := v.vec()
		if zmm {
			switch nb {
			case 8, 16:
				VPXORQ(m, pv, t)
				vpopcntBW(nb, t, t)
			case 32:
				VPXORD(m, pv, t)
				VPOPCNTD(t, t)
			default:
				VPXORQ(m, pv, t)
				VPOPCNTQ(t, t)
			}
			if nb >= 128 { // add the other qword of each 128 bits
				s := ZMM()
				VPSHUFD(U8(0x4e), t, s)
				VPADDQ(s, t, t)
			}
			if nb == 256 { // and the other 128 bits of each 256
				s := ZMM()
				VPERMQ(U8(0x4e), t, s)
				VPADDQ(s, t, t)
			}
			vmax(t, a, a)
			return
		}
		hi := YMM()
		VPXOR(m, pv, t)
		VPSRLW(U8(4), t, hi)
		VPAND(low, t, t)
		VPAND(low, hi, hi)
		VPSHUFB(t, lut, t)
		VPSHUFB(hi, lut, hi)
		VPADDB(hi, t, t)
		switch nb {
		case 8:
		case 16:
			VPMADDUBSW(ones, t, t)
		case 32:
			VPMADDUBSW(ones, t, t)
			VPMADDWD(onesW, t, t)
		default:
			VPSADBW(zero, t, t)
			if nb >= 128 {
				s := YMM()
				VPSHUFD(U8(0x4e), t, s)
				VPADDD(s, t, t)
			}
			if nb == 256 {
				s := YMM()
				VPERMQ(U8(0x4e), t, s)
				VPADDD(s, t, t)
			}
		}
		vmax(t, a, a)
	}

	groups := GP64()
	MOVQ(nbytes, groups)
	SHRQ(U8(bits.TrailingZeros(uint(4*vb))), groups)
	JZ(LabelRef("single"))
	Label("loop4")
	for j := range acc {
		step(Mem{Base: table, Disp: vb * j}, acc[j])
		if vb*j%64 == 0 {
			PREFETCHT1(Mem{Base: table, Disp: 4096 + vb*j})
		}
	}
	ADDQ(U32(4*vb), table)
	DECQ(groups)
	JNZ(LabelRef("loop4"))

	Label("single")
	rest := GP64()
	MOVQ(end, rest)
	SUBQ(table, rest)
	Label("loop1")
	CMPQ(rest, U8(vb))
	JB(LabelRef("last"))
	step(Mem{Base: table}, acc[0])
	ADDQ(U8(vb), table)
	SUBQ(U8(vb), rest)
	JMP(LabelRef("loop1"))

	Label("last") // fewer than vb bytes remain: the vector that ends at nbytes
	TESTQ(rest, rest)
	JZ(LabelRef("reduce"))
	step(Mem{Base: end, Disp: -vb}, acc[1])

	Label("reduce")
	vmax(acc[1], acc[0], acc[0])
	vmax(acc[3], acc[2], acc[2])
	vmax(acc[2], acc[0], acc[0])
	y := acc[0]
	if zmm {
		hi := YMM()
		VEXTRACTI64X4(U8(1), acc[0], hi)
		y = acc[0].AsY().(reg.VecVirtual)
		if nb > 32 {
			VPMAXUD(hi, y, y) // qword counts: the high dwords are 0
		} else {
			vmax(hi, y, y)
		}
	}
	ret := GP32()
	switch nb {
	case 8, 16:
		hx := XMM()
		VEXTRACTI128(U8(1), y, hx)
		x := y.AsX()
		if nb == 8 {
			VPMAXUB(hx, x, x)
			w := YMM() // 16 byte counts to words
			VPMOVZXBW(x, w)
			hx = XMM()
			VEXTRACTI128(U8(1), w, hx)
			x = w.AsX()
		}
		VPMAXUW(hx, x, x)
		// The largest of 8 words is the complement of the smallest
		// complement (VPHMINPOSUW: the minimum in word 0, its index in 1).
		all := XMM()
		VPCMPEQB(all, all, all)
		VPXOR(all, x, x)
		VPHMINPOSUW(x, x)
		VMOVD(x, ret)
		NOTL(ret)
		MOVWLZX(ret.As16(), ret)
	default:
		hx := XMM()
		VEXTRACTI128(U8(1), y, hx)
		x := y.AsX()
		VPMAXUD(hx, x, x)
		t := XMM()
		VPSHUFD(U8(0x4e), x, t) // swap the qwords
		VPMAXUD(t, x, x)
		VPSHUFD(U8(0xb1), x, t) // swap the dwords of each qword
		VPMAXUD(t, x, x)
		VMOVD(x, ret)
	}
	Store(ret, ReturnIndex(0))
	VZEROUPPER()
	RET()
}
