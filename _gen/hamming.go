package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// Hamming distances of a packed code table against a set of probes. The
// table is read as a stream of 64-bit words; because a block of 4 words
// (YMM) or 8 words (ZMM) always holds whole codes of 1, 2 or 4 words, the
// probe is broadcast to the register with its period and the xor/popcount
// is the same for every code width. Only the final reduction (summing the
// words of each code and narrowing to uint32) depends on the width.

func hammingDoc(name string, words, qwords int) []string {
	codes := qwords / words
	return []string{
		fmt.Sprintf("%s computes blocks*%d distances of %d-word codes (%d words of table per block), np >= 1:", name, codes, words, qwords),
		"",
		fmt.Sprintf("\tfor i := 0; i < blocks*%d; i++ {", codes),
		"\t\tvar d int",
		"\t\tfor p := 0; p < np; p++ {",
		fmt.Sprintf("\t\t\tfor w := 0; w < %d; w++ {", words),
		fmt.Sprintf("\t\t\t\td += bits.OnesCount64(table[i*%d+w] ^ probes[p*%d+w])", words, words),
		"\t\t\t}",
		"\t\t}",
		"\t\tdist[i] = uint32(d)",
		"\t}",
	}
}

// broadcastProbe loads one probe of `words` words, repeated over the register.
func broadcastProbe(words int, src Mem, dst reg.VecVirtual, zmm bool) {
	switch {
	case words == 1:
		VPBROADCASTQ(src, dst)
	case words == 2 && zmm:
		VBROADCASTI32X4(src, dst)
	case words == 2:
		VBROADCASTI128(src, dst)
	case words == 4 && zmm:
		VBROADCASTI64X4(src, dst)
	default:
		VMOVDQU(src, dst)
	}
}

// genHammingAVX512 writes hammingW<words>AVX512 and, with nt, the variant
// for outputs much larger than the caches, hammingW<words>NTAVX512: it
// prefetches the table 4 KiB ahead (PREFETCHT1) and stores the distances with
// non-temporal stores (no read-for-ownership of the output lines; dist must
// be 32-byte aligned).
func genHammingAVX512(words int, nt bool) {
	name := fmt.Sprintf("hammingW%dAVX512", words)
	doc := hammingDoc(name, words, 32)
	if nt {
		name = fmt.Sprintf("hammingW%dNTAVX512", words)
		doc = append(hammingDoc(name, words, 32), "",
			"Streaming variant: prefetches the table 4 KiB ahead (to L2) and writes dist",
			"(32-byte aligned) with non-temporal stores.")
	}
	TEXT(name, NOSPLIT, "func(dist *uint32, table *uint64, blocks int, probes *uint64, np int)")
	Pragma("noescape")
	Doc(doc...)
	dist := Load(Param("dist"), GP64())
	table := Load(Param("table"), GP64())
	blocks := Load(Param("blocks"), GP64())
	probes := Load(Param("probes"), GP64())
	np := Load(Param("np"), GP64())

	var idxE, idxO reg.VecVirtual
	if words > 1 {
		idxE, idxO = ZMM(), ZMM()
		VMOVDQU64(evenQ, idxE)
		VMOVDQU64(oddQ, idxO)
	}
	pstep := 8 * words

	Label("block")
	TESTQ(blocks, blocks)
	JZ(LabelRef("done"))
	var d, acc [4]reg.VecVirtual
	for i := range d {
		d[i] = ZMM()
		VMOVDQU64(Mem{Base: table, Disp: 64 * i}, d[i])
	}
	if nt {
		for i := 0; i < 4; i++ {
			PREFETCHT1(Mem{Base: table, Disp: 4096 + 64*i})
		}
	}
	// First probe initialises the accumulators.
	pp := GP64()
	MOVQ(probes, pp)
	pv := ZMM()
	if words > 1 {
		broadcastProbe(words, Mem{Base: pp}, pv, true)
	}
	for i := range d {
		acc[i] = ZMM()
		if words == 1 {
			VPXORQ_BCST(Mem{Base: pp}, d[i], acc[i])
		} else {
			VPXORQ(pv, d[i], acc[i])
		}
		VPOPCNTQ(acc[i], acc[i])
	}
	cnt := GP64()
	MOVQ(np, cnt)
	DECQ(cnt)
	JZ(LabelRef("reduce"))
	Label("probe")
	ADDQ(U8(pstep), pp)
	if words > 1 {
		broadcastProbe(words, Mem{Base: pp}, pv, true)
	}
	for i := range d {
		t := ZMM()
		if words == 1 {
			VPXORQ_BCST(Mem{Base: pp}, d[i], t)
		} else {
			VPXORQ(pv, d[i], t)
		}
		VPOPCNTQ(t, t)
		VPADDQ(t, acc[i], acc[i])
	}
	DECQ(cnt)
	JNZ(LabelRef("probe"))

	Label("reduce")
	// sumPairs returns the register whose qword k is the sum of qwords
	// 2k and 2k+1 of the 16-qword pair (a, b).
	sumPairs := func(a, b reg.VecVirtual) reg.VecVirtual {
		e, o := ZMM(), ZMM()
		VMOVDQA64(a, e)
		VPERMT2Q(b, idxE, e)
		VMOVDQA64(a, o)
		VPERMT2Q(b, idxO, o)
		VPADDQ(o, e, e)
		return e
	}
	// store narrows 8 qword counts to 8 uint32 at dist+disp.
	store := func(v reg.VecVirtual, disp int) {
		if !nt {
			VPMOVQD(v, Mem{Base: dist, Disp: disp})
			return
		}
		y := YMM()
		VPMOVQD(v, y)
		VMOVNTDQ(y, Mem{Base: dist, Disp: disp})
	}
	switch words {
	case 1: // 32 codes, one per qword
		for i := range acc {
			store(acc[i], 32*i)
		}
		ADDQ(U8(128), dist)
	case 2: // 16 codes
		s0 := sumPairs(acc[0], acc[1])
		s1 := sumPairs(acc[2], acc[3])
		store(s0, 0)
		store(s1, 32)
		ADDQ(U8(64), dist)
	case 4: // 8 codes
		s0 := sumPairs(acc[0], acc[1])
		s1 := sumPairs(acc[2], acc[3])
		f := sumPairs(s0, s1)
		store(f, 0)
		ADDQ(U8(32), dist)
	}
	ADDQ(U32(256), table)
	DECQ(blocks)
	JMP(LabelRef("block"))

	Label("done")
	if nt {
		SFENCE()
	}
	VZEROUPPER()
	RET()
}

// genHammingAVX2 uses the nibble table method: each byte's popcount is
// lut[b & 15] + lut[b >> 4] (VPSHUFB), summed in bytes over up to 31 probes
// (at most 8 per probe, so no byte overflows) and then per word (VPSADBW).
func genHammingAVX2(words int) {
	name := fmt.Sprintf("hammingW%dAVX2", words)
	TEXT(name, NOSPLIT, "func(dist *uint32, table *uint64, blocks int, probes *uint64, np int)")
	Pragma("noescape")
	Doc(hammingDoc(name, words, 16)...)
	dist := Load(Param("dist"), GP64())
	table := Load(Param("table"), GP64())
	blocks := Load(Param("blocks"), GP64())
	probes := Load(Param("probes"), GP64())
	np := Load(Param("np"), GP64())

	lut, low := YMM(), YMM()
	VMOVDQU(nibbleLUT, lut)
	VMOVDQU(lowNibbles, low)
	zero := YMM()
	VPXOR(zero, zero, zero)
	pstep := 8 * words

	Label("block")
	TESTQ(blocks, blocks)
	JZ(LabelRef("done"))
	var q [4]reg.VecVirtual
	for i := range q {
		q[i] = YMM()
		VPXOR(q[i], q[i], q[i])
	}
	pp := GP64()
	MOVQ(probes, pp)
	rem := GP64()
	MOVQ(np, rem)

	Label("chunk")
	cnt := GP64()
	MOVQ(U32(31), cnt)
	CMPQ(rem, cnt)
	CMOVQLT(rem, cnt)
	SUBQ(cnt, rem)
	var acc [4]reg.VecVirtual
	for i := range acc {
		acc[i] = YMM()
		VPXOR(acc[i], acc[i], acc[i])
	}
	Label("probe")
	pv := YMM()
	broadcastProbe(words, Mem{Base: pp}, pv, false)
	for i := range acc {
		t, hi := YMM(), YMM()
		VPXOR(Mem{Base: table, Disp: 32 * i}, pv, t)
		VPSRLW(U8(4), t, hi)
		VPAND(low, t, t)
		VPAND(low, hi, hi)
		VPSHUFB(t, lut, t)
		VPSHUFB(hi, lut, hi)
		VPADDB(t, acc[i], acc[i])
		VPADDB(hi, acc[i], acc[i])
	}
	ADDQ(U8(pstep), pp)
	DECQ(cnt)
	JNZ(LabelRef("probe"))
	for i := range acc {
		VPSADBW(zero, acc[i], acc[i])
		VPADDQ(acc[i], q[i], q[i])
	}
	TESTQ(rem, rem)
	JNZ(LabelRef("chunk"))

	// q[i] holds 4 per-word counts (each < 2^32, so the high dword is 0).
	switch words {
	case 1: // 16 codes
		for h := 0; h < 2; h++ {
			r := YMM()
			VPHADDD(q[2*h+1], q[2*h], r) // [c0 c1 c4 c5 | c2 c3 c6 c7]
			VPERMQ(U8(0xD8), r, r)
			VMOVDQU(r, Mem{Base: dist, Disp: 32 * h})
		}
		ADDQ(U8(64), dist)
	case 2, 4:
		r01, r23, s := YMM(), YMM(), YMM()
		VPHADDD(q[1], q[0], r01)
		VPHADDD(q[3], q[2], r23)
		VPHADDD(r23, r01, s)
		if words == 2 { // 8 codes: s = [c0 c2 c4 c6 | c1 c3 c5 c7]
			idx := YMM()
			VMOVDQU(interleave8, idx)
			VPERMD(s, idx, s)
			VMOVDQU(s, Mem{Base: dist})
			ADDQ(U8(32), dist)
		} else { // 4 codes: code k = s[k] + s[k+4]
			h := XMM()
			VEXTRACTI128(U8(1), s, h)
			VPADDD(h, s.AsX(), h)
			VMOVDQU(h, Mem{Base: dist})
			ADDQ(U8(16), dist)
		}
	}
	ADDQ(U8(128), table)
	DECQ(blocks)
	JMP(LabelRef("block"))

	Label("done")
	VZEROUPPER()
	RET()
}

// genHammingPopcnt is the scalar alternative for CPUs without a vector
// popcount: four one-word codes per pass, one POPCNT per code and probe.
func genHammingPopcnt() {
	name := "hammingW1Popcnt"
	TEXT(name, NOSPLIT, "func(dist *uint32, table *uint64, blocks int, probes *uint64, np int)")
	Pragma("noescape")
	Doc(hammingDoc(name, 1, 4)...)
	dist := Load(Param("dist"), GP64())
	table := Load(Param("table"), GP64())
	blocks := Load(Param("blocks"), GP64())
	probes := Load(Param("probes"), GP64())
	np := Load(Param("np"), GP64())

	Label("block")
	TESTQ(blocks, blocks)
	JZ(LabelRef("done"))
	var acc [4]reg.GPVirtual
	for i := range acc {
		acc[i] = GP64().(reg.GPVirtual)
		XORQ(acc[i], acc[i])
	}
	pp := GP64()
	MOVQ(probes, pp)
	cnt := GP64()
	MOVQ(np, cnt)
	Label("probe")
	p := GP64()
	MOVQ(Mem{Base: pp}, p)
	for i := range acc {
		t := GP64()
		MOVQ(Mem{Base: table, Disp: 8 * i}, t)
		XORQ(p, t)
		POPCNTQ(t, t)
		ADDQ(t, acc[i])
	}
	ADDQ(U8(8), pp)
	DECQ(cnt)
	JNZ(LabelRef("probe"))
	for i := range acc {
		MOVL(acc[i].As32(), Mem{Base: dist, Disp: 4 * i})
	}
	ADDQ(U8(16), dist)
	ADDQ(U8(32), table)
	DECQ(blocks)
	JMP(LabelRef("block"))

	Label("done")
	RET()
}

// genPrefetch writes a loop of PREFETCHT1 over a byte range with a given
// stride, for the blocked ScoreStep to request its next block while it
// works on this one.
func genPrefetch() {
	TEXT("prefetchT1", NOSPLIT, "func(p *byte, n int, stride int)")
	Pragma("noescape")
	Doc("prefetchT1 asks for one cache line every stride bytes of p[0:n] in L2 (PREFETCHT1):",
		"",
		"\tfor i := 0; i < n; i += stride {",
		"\t\tprefetcht1(&p[i]) // a hint: it neither faults nor changes memory",
		"\t}")
	p := Load(Param("p"), GP64())
	n := Load(Param("n"), GP64())
	stride := Load(Param("stride"), GP64())
	ADDQ(p, n) // end
	Label("loop")
	CMPQ(p, n)
	JAE(LabelRef("done"))
	PREFETCHT1(Mem{Base: p})
	ADDQ(stride, p)
	JMP(LabelRef("loop"))
	Label("done")
	RET()
}
