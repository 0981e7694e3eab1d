package main

import (
	"fmt"
	"math/bits"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// Fused Hamming maximum: the largest distance between a set of np probes
// and the codes of a table, narrow (8-, 16-, 32-bit codes, an array of
// uint8, uint16 or uint32 on amd64) or wide (1, 2 or 4 words a code), the
// distance of a code being the sum of its Hamming distances to the probes.
// The decode step of the instant score (Farthest) needs only each block's
// maximum, so these kernels stream the codes once and keep per-element
// running maxima in registers instead of storing distances and reading
// them back.
//
// A kernel takes nbytes bytes of table, at least one vector and a whole
// number of codes: four vectors per pass, then single vectors, then, when
// nbytes is not a whole number of vectors, the one vector that ends at
// nbytes. That last vector overlaps codes already counted, which leaves
// the maximum unchanged, and reads no code past nbytes (a narrow table's
// unused bits in its last word are never read either).
//
// hammingMax<bits><set> take one probe; hammingMaxN<bits><set> take np
// (the wrappers call them for np >= 2; they are correct for np = 1 too,
// but a probe loop that is never run still costs the one-probe loop about
// 5% in the caches and, for 256-bit codes, 10-15% beyond them, so the
// one-probe kernels are kept as they were). The N kernels sum the probes
// inside the vector loop: the first probe is broadcast once, before the
// loops, and counted against the pass's vectors; each further probe is
// broadcast from memory once a pass (four vectors in the main loop) and
// its counts are added to the pass's sums, which then go into the maxima.
// The table's vectors are read again for each probe, from L1. With a few
// probes the kernels are bound by the vector ports (three instructions a
// probe and vector on AVX-512), not by memory. The sums are in the counts'
// element type (bytes for 8-bit codes, words for 16, dwords for 32, qwords
// for 64 and more), so the caller bounds np: np*bits must fit that type (8 bits:
// np <= 31; 16 bits: np <= 4095; wider: np*bits < 2^32, the maximum being
// a uint32 and the AVX2 wide kernels taking dword maxima of qword sums).
//
// How a vector is counted against one probe:
//
//   - AVX-512: xor with the broadcast probe, then VPOPCNTB/W (8, 16 bits,
//     AVX512_BITALG), VPOPCNTD (32) or VPOPCNTQ (64 and more), summed over
//     the probes by VPADDB/W/D/Q; the qwords of a 2- or 4-word code are
//     then summed with shuffles, and VPMAXUB/UW/UD/UQ;
//   - AVX2: the nibble table of genHammingAVX2 gives byte counts, widened
//     per code by VPMADDUBSW (16 bits), VPMADDUBSW and VPMADDWD (32) or
//     VPSADBW (64 and more) and summed over the probes (VPADDB/W/D/Q),
//     the qwords of a wide code then summed with shuffles, and
//     VPMAXUB/UW/UD (a sum below 2^32 has its high dword 0, so dword
//     maxima do).
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
	for _, multi := range []bool{false, true} {
		for _, zmm := range []bool{true, false} {
			for _, b := range []int{8, 16, 32, 64, 128, 256} {
				genHammingMax(b, zmm, multi)
			}
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

func hammingMaxNDoc(name string, nb, vb int) []string {
	size := nb / 8
	cond, codes := fmt.Sprintf("nbytes >= %d, a multiple of %d", vb, size), fmt.Sprintf("nbytes/%d", size)
	if size == 1 {
		cond, codes = fmt.Sprintf("nbytes >= %d", vb), "nbytes"
	}
	limit := fmt.Sprintf("np*%d < 2^32", nb)
	switch nb {
	case 8:
		limit = "np <= 31"
	case 16:
		limit = "np <= 4095"
	}
	doc := []string{
		fmt.Sprintf("%s returns the largest sum of the Hamming distances between one of", name),
		fmt.Sprintf("the %d-bit codes in the first nbytes bytes of table and each of the np probes", nb),
		fmt.Sprintf("at probes (%s; 1 <= np, %s):", cond, limit),
		"",
		"\tvar m int",
		fmt.Sprintf("\tfor i := 0; i < %s; i++ {", codes),
		"\t\tvar d int",
		"\t\tfor p := 0; p < np; p++ {",
	}
	if nb < 64 {
		k := 64 / nb
		doc = append(doc,
			fmt.Sprintf("\t\t\tc := uint%d(table[i/%d] >> (i %% %d * %d))", nb, k, k, nb),
			fmt.Sprintf("\t\t\td += bits.OnesCount%d(c ^ uint%d(probes[p]))", nb, nb))
	} else if nb == 64 {
		doc = append(doc,
			"\t\t\td += bits.OnesCount64(table[i] ^ probes[p])")
	} else {
		w := nb / 64
		doc = append(doc,
			fmt.Sprintf("\t\t\tfor w := 0; w < %d; w++ {", w),
			fmt.Sprintf("\t\t\t\td += bits.OnesCount64(table[i*%d+w] ^ probes[p*%d+w])", w, w),
			"\t\t\t}")
	}
	doc = append(doc,
		"\t\t}",
		"\t\tm = max(m, d)",
		"\t}",
		"\treturn uint32(m)",
		"", "It prefetches the table 4 KiB ahead (to L2).")
	if nb <= 16 && vb == 64 {
		doc = append(doc, "", "Requires AVX512_BITALG.")
	}
	return doc
}

// genHammingMax writes hammingMax<bits>AVX512 (zmm) or hammingMax<bits>AVX2,
// for one probe, or with multi hammingMaxN<bits>AVX512 or
// hammingMaxN<bits>AVX2, for np of them.
func genHammingMax(nb int, zmm, multi bool) {
	v := avx2
	if zmm {
		v = avx512
	}
	vb := v.bytes()
	var table, nbytes, probes, np reg.Register
	if multi {
		name := fmt.Sprintf("hammingMaxN%d%s", nb, v.name)
		kernel(name, "func(table *uint64, nbytes int, probes *uint64, np int) uint32", hammingMaxNDoc(name, nb, vb))
		table = Load(Param("table"), GP64())
		nbytes = Load(Param("nbytes"), GP64())
		probes = Load(Param("probes"), GP64())
		np = Load(Param("np"), GP64())
	} else {
		name := fmt.Sprintf("hammingMax%d%s", nb, v.name)
		kernel(name, "func(table *uint64, nbytes int, probe *uint64) uint32", hammingMaxDoc(name, nb, vb))
		table = Load(Param("table"), GP64())
		nbytes = Load(Param("nbytes"), GP64())
		probes = Load(Param("probe"), GP64())
	}

	// broadcast repeats the probe at m over dst (a narrow probe's low
	// bits: its word is little-endian).
	broadcast := func(m Mem, dst reg.VecVirtual) {
		switch nb {
		case 8:
			VPBROADCASTB(m, dst)
		case 16:
			VPBROADCASTW(m, dst)
		case 32:
			VPBROADCASTD(m, dst)
		default:
			broadcastProbe(nb/64, m, dst, zmm)
		}
	}
	stride := 8 // bytes from one probe to the next
	if nb > 64 {
		stride = nb / 8
	}
	pv := v.vec() // the first probe
	broadcast(Mem{Base: probes}, pv)
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
	// vadd adds counts of the sums' element type.
	vadd := func(a, b, dst reg.Register) {
		switch nb {
		case 8:
			VPADDB(a, b, dst)
		case 16:
			VPADDW(a, b, dst)
		case 32:
			VPADDD(a, b, dst)
		default:
			VPADDQ(a, b, dst)
		}
	}
	// count returns the distances of the vector at m to the probe in p,
	// per byte, word, dword or qword of each code.
	count := func(m Mem, p reg.VecVirtual) reg.VecVirtual {
		t := v.vec()
		if zmm {
			switch nb {
			case 8, 16:
				VPXORQ(m, p, t)
				vpopcntBW(nb, t, t)
			case 32:
				VPXORD(m, p, t)
				VPOPCNTD(t, t)
			default:
				VPXORQ(m, p, t)
				VPOPCNTQ(t, t)
			}
			return t
		}
		hi := YMM()
		VPXOR(m, p, t)
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
		}
		return t
	}
	// finish sums the qwords of each wide code in t.
	finish := func(t reg.VecVirtual) {
		if zmm {
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
			return
		}
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
	// pass counts the vectors at ms against every probe (the first, in pv,
	// peeled) and takes the sums' maxima into accs; also(j), if any, is
	// emitted after vector j's first count (one probe) or after the first
	// probe's counts (multi).
	pass := func(label string, ms []Mem, accs []reg.VecVirtual, also func(j int)) {
		if !multi {
			// One probe: each vector counted, summed and taken into its
			// maximum in turn.
			for j, m := range ms {
				t := count(m, pv)
				finish(t)
				vmax(t, accs[j], accs[j])
				if also != nil {
					also(j)
				}
			}
			return
		}
		sums := make([]reg.VecVirtual, len(ms))
		for j, m := range ms {
			sums[j] = count(m, pv)
		}
		if also != nil {
			for j := range ms {
				also(j)
			}
		}
		left, p := GP64(), GP64()
		MOVQ(np, left)
		DECQ(left)
		JZ(LabelRef(label + "done"))
		MOVQ(probes, p)
		Label(label + "probe")
		ADDQ(U32(stride), p)
		q := v.vec()
		broadcast(Mem{Base: p}, q)
		for j, m := range ms {
			vadd(count(m, q), sums[j], sums[j])
		}
		DECQ(left)
		JNZ(LabelRef(label + "probe"))
		Label(label + "done")
		for j := range ms {
			finish(sums[j])
			vmax(sums[j], accs[j], accs[j])
		}
	}

	groups := GP64()
	MOVQ(nbytes, groups)
	SHRQ(U8(bits.TrailingZeros(uint(4*vb))), groups)
	JZ(LabelRef("single"))
	Label("loop4")
	var ms []Mem
	for j := range acc {
		ms = append(ms, Mem{Base: table, Disp: vb * j})
	}
	pass("loop4", ms, acc[:], func(j int) {
		if vb*j%64 == 0 {
			PREFETCHT1(Mem{Base: table, Disp: 4096 + vb*j})
		}
	})
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
	pass("loop1", []Mem{{Base: table}}, acc[:1], nil)
	ADDQ(U8(vb), table)
	SUBQ(U8(vb), rest)
	JMP(LabelRef("loop1"))

	Label("last") // fewer than vb bytes remain: the vector that ends at nbytes
	TESTQ(rest, rest)
	JZ(LabelRef("reduce"))
	pass("last", []Mem{{Base: end, Disp: -vb}}, acc[1:2], nil)

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
			VPMAXUD(hi, y, y) // qword sums: the high dwords are 0
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
			w := YMM() // 16 byte sums to words
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
