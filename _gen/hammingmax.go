package main

import (
	"fmt"
	"math/bits"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// Fused Hamming maximum and search: the kernels of Farthest, the decode
// step of the instant score. The codes of a table, narrow (8-, 16-, 32-bit
// codes, an array of uint8, uint16 or uint32 on amd64) or wide (1, 2 or 4
// words a code), are compared with a set of np probes, the distance of a
// code being the sum of its Hamming distances to the probes.
//
//   - hammingMax<bits><set> (one probe) returns the largest distance over
//     the codes of a byte range of the table, the codes on a sorted skip
//     list counting as 0; hammingMaxN<bits><set> the largest "level" of
//     several probes turned into planes (simd's probeSet): with m the
//     probes' bitwise majority and planes[0..np) the bit planes, highest
//     first, of a_b = |probes - 2·(probes with bit b set)|, the level of a
//     code c is Σ_k 2^(np-1-k)·popcount((c ^ m) & planes[k]), the summed
//     distance less a constant, shifted: 4 probes take 2 popcounts, 8
//     take 3. Both stream the codes once and keep per-element running
//     maxima in registers.
//   - hammingFind<bits><set> returns the first code of a byte range at a
//     given level (the one probe's distance is its level over m = probe
//     and one plane of all ones): after the maxima, Farthest searches the
//     one range that reached the largest for its first index.
//
// The range is given as byte offsets [from, to) from the table's start, so
// the caller can cut a table into runs of a fixed number of bytes whatever
// the code width (the index of a code is its byte offset / (bits/8)). A
// kernel takes at least one vector and a whole number of codes: four
// vectors per pass (maxima), then single vectors, then, when the range is
// not a whole number of vectors, the one vector that ends at `to`. That
// last vector overlaps codes already counted, whose distances are set to 0
// (maxima) or whose matches are dropped (search) so that they are neither
// counted twice nor counted when they were skipped; no byte outside the
// range is read.
//
// Skipped codes (the protected entries of a decode step: a few slots in a
// table of thousands) are masked inside the kernel: a pass of four vectors
// that holds none runs the fast loop; one that holds some stores its
// distances to a stack buffer, writes 0 over the skipped codes' distances,
// reloads them and takes the maxima. Every kernel's distances have the
// layout of the codes (one byte, word or dword per narrow code; the sum of
// a wide code in each of its qwords), so the distance of the code at byte
// offset o of a vector is the bits/8 bytes at offset o of its distances.
// A skipped code at distance 0 cannot win over a positive maximum, and the
// caller handles a maximum of 0 (every kept code at distance 0).
//
// hammingMax<bits><set> is kept apart from the N kernels: a plane loop
// that is never run still costs the one-probe loop about 5% in the caches
// and, for 256-bit codes, 10-15% beyond them. The N kernels loop over the
// planes inside the vector loop: x = code ^ m once per vector (AVX-512;
// AVX2, short of registers, xors again from L1 for each plane), the first
// plane broadcast once, before the loops; each further plane is broadcast
// from memory once a pass, the pass's sums doubled and its counts of
// x & plane added. With a few planes the kernels are bound by the vector
// ports, not by memory. The sums are in the counts' element type (bytes
// for 8-bit codes, words for 16, dwords for 32, qwords for 64 and more),
// so the caller bounds the levels (a level never exceeds the summed
// distance, so np probes with np*bits within the type do: 8 bits: np <=
// 31; 16 bits: np <= 4095; wider: np*bits < 2^32, the maximum being a
// uint32 and the AVX2 wide kernels taking dword maxima of qword sums).
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
// The search compares each vector's distances with the broadcast value
// (VPCMPEQB/W/D/Q) and stops at the first vector with a match.
//
// The four-vector loop asks for the line 4 KiB ahead of each 64 bytes it
// reads (PREFETCHT1; a hint, which never faults past the table's end).
// With a few vector instructions per line the out-of-order window holds
// too few loads to keep memory busy: without it these kernels read a
// table beyond the caches at about 80% of the bandwidth of a plain read
// loop (AVX2: 65%), with it at 90-100%; in the caches it costs little.

type hmMode int

const (
	hmOne  hmMode = iota // the maximum, one probe
	hmMany               // the maximum, np probes
	hmFind               // the first code at a given distance, np probes
)

func genHammingMaxAll() {
	for _, mode := range []hmMode{hmOne, hmMany, hmFind} {
		for _, zmm := range []bool{true, false} {
			for _, b := range []int{8, 16, 32, 64, 128, 256} {
				genHammingMax(b, zmm, mode)
			}
		}
	}
}

// hmDistDoc is the Go loop's body that sets d to code i's distance (one
// probe) or level (planes).
func hmDistDoc(nb int, multi bool) []string {
	w := max(1, nb/64)
	word := fmt.Sprintf("*(*uint%d)(unsafe.Add(table, i*%d))", min(nb, 64), nb/8)
	if w > 1 {
		word = fmt.Sprintf("*(*uint64)(unsafe.Add(table, i*%d+w*8))", nb/8)
	}
	cnt := fmt.Sprintf("bits.OnesCount%d", min(nb, 64))
	typ := fmt.Sprintf("uint%d", min(nb, 64))
	if !multi {
		if w == 1 {
			return []string{fmt.Sprintf("\t\td = %s(%s ^ %s(*probe))", cnt, word, typ)}
		}
		return []string{
			fmt.Sprintf("\t\tfor w := 0; w < %d; w++ {", w),
			fmt.Sprintf("\t\t\td += %s(%s ^ (*[%d]uint64)(probe)[w])", cnt, word, w),
			"\t\t}"}
	}
	if w == 1 {
		return []string{
			"\t\tfor p := 0; p < np; p++ {",
			"\t\t\td <<= dbl >> p & 1",
			fmt.Sprintf("\t\t\td += %s((%s ^ %s(*m)) & %s(planes[p]))", cnt, word, typ, typ),
			"\t\t}"}
	}
	return []string{
		"\t\tfor p := 0; p < np; p++ {",
		"\t\t\td <<= dbl >> p & 1",
		fmt.Sprintf("\t\t\tfor w := 0; w < %d; w++ {", w),
		fmt.Sprintf("\t\t\t\td += %s((%s ^ (*[%d]uint64)(m)[w]) & planes[p*%d+w])", cnt, word, w, w),
		"\t\t\t}",
		"\t\t}"}
}

func hammingMaxDoc(name string, nb, vb int, mode hmMode) []string {
	size := nb / 8
	var doc []string
	if mode == hmFind {
		doc = []string{
			fmt.Sprintf("%s returns the index of the first of the %d-bit codes [from/%d, to/%d)", name, nb, size, size),
			"of table whose level over the np planes (1 <= np; the level of a code: the sum of",
			"bits.OnesCount of (code ^ m) & plane, doubled before plane p where bit p of dbl is set,",
			"p >= 1) equals target, or -1",
			fmt.Sprintf("(to-from >= %d, from and to multiples of %d; every level and target at most %s):", vb, size, hmLimit(nb)),
			"",
			fmt.Sprintf("\tfor i := from / %d; i < to/%d; i++ {", size, size),
			"\t\tvar d int",
		}
		doc = append(doc, hmDistDoc(nb, true)...)
		doc = append(doc,
			"\t\tif uint32(d) == target {",
			"\t\t\treturn i",
			"\t\t}",
			"\t}",
			"\treturn -1")
	} else {
		if mode == hmOne {
			doc = []string{
				fmt.Sprintf("%s returns the largest Hamming distance between the probe and the %d-bit", name, nb),
				fmt.Sprintf("codes [from/%d, to/%d) of table, the codes listed in skip[:nskip] counting as 0", size, size),
			}
		} else {
			doc = []string{
				fmt.Sprintf("%s returns the largest level over the np planes (1 <= np; the level of a", name),
				"code: the sum of bits.OnesCount of (code ^ m) & plane, doubled before plane p where bit p",
				"of dbl is set, p >= 1;",
				fmt.Sprintf("every level at most %s) of the %d-bit codes [from/%d, to/%d) of table,", hmLimit(nb), nb, size, size),
				"the codes listed in skip[:nskip] counting as 0",
			}
		}
		doc = append(doc,
			fmt.Sprintf("(to-from >= %d, from and to multiples of %d; skip sorted, entries >= from/%d):", vb, size, size),
			"",
			"\tvar best int",
			fmt.Sprintf("\tfor i := from / %d; i < to/%d; i++ {", size, size),
			"\t\tfor nskip > 0 && int(*skip) < i {",
			"\t\t\tskip, nskip = skip+1, nskip-1",
			"\t\t}",
			"\t\tif nskip > 0 && int(*skip) == i {",
			"\t\t\tcontinue",
			"\t\t}",
			"\t\tvar d int",
		)
		doc = append(doc, hmDistDoc(nb, mode == hmMany)...)
		doc = append(doc,
			"\t\tbest = max(best, d)",
			"\t}",
			"\treturn uint32(best)",
			"", "It prefetches the table 4 KiB ahead (to L2).")
	}
	if nb <= 16 && vb == 64 {
		doc = append(doc, "", "Requires AVX512_BITALG.")
	}
	return doc
}

// hmLimit is the largest level the sums' element type holds.
func hmLimit(nb int) string {
	switch nb {
	case 8:
		return "255, byte sums"
	case 16:
		return "65535, word sums"
	}
	return "2^32-1"
}

// genHammingMax writes hammingMax<bits><set> (one probe), hammingMaxN<bits><set>
// (np probes) or hammingFind<bits><set>, set AVX512 (zmm) or AVX2.
func genHammingMax(nb int, zmm bool, mode hmMode) {
	v := avx2
	if zmm {
		v = avx512
	}
	vb := v.bytes()
	cb := nb / 8 // bytes per code
	multi := mode != hmOne
	var table, from, to, probes, np reg.Register
	switch mode {
	case hmOne:
		name := fmt.Sprintf("hammingMax%d%s", nb, v.name)
		kernel(name, "func(table *byte, from, to int, probe *uint64, skip *int32, nskip int) uint32", hammingMaxDoc(name, nb, vb, mode))
	case hmMany:
		name := fmt.Sprintf("hammingMaxN%d%s", nb, v.name)
		kernel(name, "func(table *byte, from, to int, m *uint64, planes *uint64, np int, dbl uint64, skip *int32, nskip int) uint32", hammingMaxDoc(name, nb, vb, mode))
	default:
		name := fmt.Sprintf("hammingFind%d%s", nb, v.name)
		kernel(name, "func(table *byte, from, to int, m *uint64, planes *uint64, np int, dbl uint64, target uint32) int", hammingMaxDoc(name, nb, vb, mode))
	}
	table = Load(Param("table"), GP64())
	from = Load(Param("from"), GP64())
	to = Load(Param("to"), GP64())
	var mp reg.Register // the xor of the planes kernels
	if multi {
		mp = Load(Param("m"), GP64())
		probes = Load(Param("planes"), GP64())
		np = Load(Param("np"), GP64())
	} else {
		probes = Load(Param("probe"), GP64())
	}
	p, end := GP64(), GP64() // the next vector; the range's end
	LEAQ(Mem{Base: table, Index: from, Scale: 1}, p)
	LEAQ(Mem{Base: table, Index: to, Scale: 1}, end)

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
	pv := v.vec() // the first probe, or plane
	broadcast(Mem{Base: probes}, pv)
	var mv reg.VecVirtual
	if multi {
		mv = v.vec()
		broadcast(Mem{Base: mp}, mv)
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
	// countReg (AVX2) turns the bits of t into their count per byte, word,
	// dword or qword of each code, in t.
	countReg := func(t reg.VecVirtual) reg.VecVirtual {
		hi := YMM()
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
		VPXOR(m, p, t)
		return countReg(t)
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
	// combined says whether a pass over ms sums its wide codes with
	// combine: the four vectors of 128- or 256-bit codes of the fast loop
	// of a maximum, where the order of the sums does not matter (the
	// buffered passes need them in the order of the codes).
	fast := false
	combined := func(ms []Mem) bool { return fast && nb >= 128 && len(ms) == 4 }
	// combine sums the qwords of the codes of four vectors of qword
	// counts, sharing the shuffles between vectors: the low and high
	// qwords of each 128 bits of two vectors are interleaved (VPUNPCKLQDQ,
	// VPUNPCKHQDQ) and added, which sums the halves of each 128 bits; for
	// 256-bit codes the 128-bit halves of the codes are then gathered into
	// two vectors (VSHUFI64X2, VPERM2I128) and added. The sums come out
	// in another order than the codes: two vectors (128 bits) or one
	// (256) of them. Per vector that is 2.5 shuffles and adds (1.5 for
	// 128 bits) where finish takes 4 (2).
	combine := func(t []reg.VecVirtual) []reg.VecVirtual {
		pair := func(a, b reg.VecVirtual) reg.VecVirtual {
			lo, hi := v.vec(), v.vec()
			VPUNPCKLQDQ(b, a, lo)
			VPUNPCKHQDQ(b, a, hi)
			VPADDQ(hi, lo, lo)
			return lo
		}
		s01, s23 := pair(t[0], t[1]), pair(t[2], t[3])
		if nb == 128 {
			return []reg.VecVirtual{s01, s23}
		}
		x, y := v.vec(), v.vec()
		if zmm {
			VSHUFI64X2(U8(0x88), s23, s01, x) // the first 128 bits of each code
			VSHUFI64X2(U8(0xdd), s23, s01, y) // the second
		} else {
			VPERM2I128(U8(0x20), s23, s01, x)
			VPERM2I128(U8(0x31), s23, s01, y)
		}
		VPADDQ(y, x, x)
		return []reg.VecVirtual{x}
	}
	// pass counts the vectors at ms against every probe (the first, in pv,
	// peeled) and hands each vector's summed distances to sink; also(j),
	// if any, is emitted after vector j's first count (one probe) or after
	// the first probe's counts (multi).
	pass := func(label string, ms []Mem, sink func(j int, t reg.VecVirtual), also func(j int)) {
		if combined(ms) && !multi {
			ts := make([]reg.VecVirtual, len(ms))
			for j, m := range ms {
				ts[j] = count(m, pv)
				if also != nil {
					also(j)
				}
			}
			for j, r := range combine(ts) {
				sink(j, r)
			}
			return
		}
		if !multi {
			// One probe: each vector counted, summed and sunk in turn.
			for j, m := range ms {
				t := count(m, pv)
				finish(t)
				sink(j, t)
				if also != nil {
					also(j)
				}
			}
			return
		}
		// Planes: x = code ^ m, once per vector (AVX-512; AVX2, short of
		// registers, takes it again from L1 for each plane), and the sum
		// doubled before each further plane's count of x & plane.
		var xs []reg.VecVirtual
		if zmm {
			for _, m := range ms {
				x := v.vec()
				VPXORQ(m, mv, x)
				xs = append(xs, x)
			}
		}
		countPlane := func(j int, m Mem, q reg.VecVirtual) reg.VecVirtual {
			if zmm {
				t := v.vec()
				VPANDQ(q, xs[j], t)
				switch nb {
				case 8, 16:
					vpopcntBW(nb, t, t)
				case 32:
					VPOPCNTD(t, t)
				default:
					VPOPCNTQ(t, t)
				}
				return t
			}
			x := YMM()
			VPXOR(m, mv, x)
			VPAND(q, x, x)
			return countReg(x)
		}
		sums := make([]reg.VecVirtual, len(ms))
		for j, m := range ms {
			sums[j] = countPlane(j, m, pv)
		}
		if also != nil {
			for j := range ms {
				also(j)
			}
		}
		left, pp, d := GP64(), GP64(), GP64()
		MOVQ(np, left)
		DECQ(left)
		JZ(LabelRef(label + "done"))
		MOVQ(probes, pp)
		Load(Param("dbl"), d)
		SHRQ(U8(1), d) // the first plane's flag
		Label(label + "probe")
		ADDQ(U32(stride), pp)
		q := v.vec()
		broadcast(Mem{Base: pp}, q)
		SHRQ(U8(1), d) // CF: this plane's flag
		JCC(LabelRef(label + "add"))
		for j := range ms {
			vadd(sums[j], sums[j], sums[j])
		}
		Label(label + "add")
		for j, m := range ms {
			vadd(countPlane(j, m, q), sums[j], sums[j])
		}
		DECQ(left)
		JNZ(LabelRef(label + "probe"))
		Label(label + "done")
		if combined(ms) {
			for j, r := range combine(sums) {
				sink(j, r)
			}
			return
		}
		for j := range ms {
			finish(sums[j])
			sink(j, sums[j])
		}
	}
	stop := GP64()
	if mode == hmFind {
		genHammingFind(nb, zmm, v, table, p, end, stop, pass)
		return
	}

	skip := Load(Param("skip"), GP64())
	nskip := Load(Param("nskip"), GP64())
	var acc [4]reg.VecVirtual
	for i := range acc {
		acc[i] = v.vec()
		if zmm {
			VPXORD(acc[i], acc[i], acc[i])
		} else {
			VPXOR(acc[i], acc[i], acc[i])
		}
	}
	// next is the address of the next skipped code (all ones when there
	// is none): the passes compare it with their end.
	next := GP64()
	labels := 0
	uniq := func(s string) string { labels++; return fmt.Sprintf("%s%d", s, labels) }
	loadNext := func() {
		none, done := uniq("noskip"), uniq("skipset")
		TESTQ(nskip, nskip)
		JZ(LabelRef(none))
		MOVLQSX(Mem{Base: skip}, next)
		if cb > 1 {
			SHLQ(U8(bits.TrailingZeros(uint(cb))), next)
		}
		ADDQ(table, next)
		JMP(LabelRef(done))
		Label(none)
		MOVQ(I32(-1), next)
		Label(done)
	}
	loadNext()
	buf := AllocLocal(4 * vb)
	// zeroSkips writes 0 over the distances in buf of the skipped codes in
	// [start, stop), buf holding the distances of the vectors from start.
	zeroSkips := func(start, stop reg.Register) {
		loop, done := uniq("zero"), uniq("zerodone")
		Label(loop)
		CMPQ(next, stop)
		JAE(LabelRef(done))
		off := GP64()
		MOVQ(next, off)
		SUBQ(start, off)
		m := buf.Idx(off, 1)
		switch cb {
		case 1:
			MOVB(U8(0), m)
		case 2:
			MOVW(U16(0), m)
		case 4:
			MOVL(U32(0), m)
		default:
			for o := 0; o < cb; o += 8 {
				MOVQ(U32(0), m.Offset(o))
			}
		}
		ADDQ(U8(4), skip)
		DECQ(nskip)
		loadNext()
		JMP(LabelRef(loop))
		Label(done)
	}
	// buffered is the pass for vectors that hold skipped codes (or, with
	// overlap, the last vector, whose first overlap bytes were counted
	// already): the distances go through buf.
	buffered := func(label string, ms []Mem, start, stop reg.Register, accs []reg.VecVirtual, overlap reg.Register) {
		pass(label, ms, func(j int, t reg.VecVirtual) { v.movdqu(t, buf.Offset(j*vb)) }, nil)
		if overlap != nil {
			i := GP64()
			XORQ(i, i)
			Label(label + "overlap")
			MOVB(U8(0), buf.Idx(i, 1))
			INCQ(i)
			CMPQ(i, overlap)
			JB(LabelRef(label + "overlap"))
		}
		zeroSkips(start, stop)
		for j := range ms {
			t := v.vec()
			v.movdqu(buf.Offset(j*vb), t)
			vmax(t, accs[j], accs[j])
		}
	}
	vecs := func(base reg.Register, k int) []Mem {
		var ms []Mem
		for j := 0; j < k; j++ {
			ms = append(ms, Mem{Base: base, Disp: vb * j})
		}
		return ms
	}

	Label("loop4")
	LEAQ(Mem{Base: p, Disp: 4 * vb}, stop)
	CMPQ(stop, end)
	JA(LabelRef("single"))
	CMPQ(stop, next)
	JA(LabelRef("slow4"))
	fast = true
	pass("loop4", vecs(p, 4), func(j int, t reg.VecVirtual) { vmax(t, acc[j], acc[j]) }, func(j int) {
		if vb*j%64 == 0 {
			PREFETCHT1(Mem{Base: p, Disp: 4096 + vb*j})
		}
	})
	fast = false
	MOVQ(stop, p)
	JMP(LabelRef("loop4"))
	Label("slow4")
	buffered("slow4", vecs(p, 4), p, stop, acc[:], nil)
	MOVQ(stop, p)
	JMP(LabelRef("loop4"))

	Label("single") // at most three vectors
	LEAQ(Mem{Base: p, Disp: vb}, stop)
	CMPQ(stop, end)
	JA(LabelRef("last"))
	buffered("single", vecs(p, 1), p, stop, acc[:1], nil)
	MOVQ(stop, p)
	JMP(LabelRef("single"))

	Label("last") // fewer than vb bytes remain: the vector that ends at `to`
	CMPQ(p, end)
	JE(LabelRef("reduce"))
	LEAQ(Mem{Base: end, Disp: -vb}, stop)
	SUBQ(stop, p) // the bytes counted already
	buffered("last", vecs(stop, 1), stop, end, acc[1:2], p)

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

// genHammingFind writes the body of hammingFind<bits><set> after the
// shared prologue of genHammingMax: single vectors from p, then the vector
// that ends at end, each compared with the target until one matches.
func genHammingFind(nb int, zmm bool, v isa, table, p, end, stop reg.Register,
	pass func(string, []Mem, func(int, reg.VecVirtual), func(int))) {
	cb := nb / 8
	target := GP32()
	Load(Param("target"), target)
	tv := v.vec()
	if zmm {
		switch nb {
		case 8:
			VPBROADCASTB(target, tv)
		case 16:
			VPBROADCASTW(target, tv)
		case 32:
			VPBROADCASTD(target, tv)
		default:
			VPBROADCASTQ(target.As64(), tv) // a qword per code's qword: MOVL zero-extended it
		}
	} else {
		x := XMM()
		MOVQ(target.As64(), x)
		switch nb {
		case 8:
			VPBROADCASTB(x, tv)
		case 16:
			VPBROADCASTW(x, tv)
		case 32:
			VPBROADCASTD(x, tv)
		default:
			VPBROADCASTQ(x, tv)
		}
	}
	// mask gets one bit per element of the distances (AVX-512) or per byte
	// (AVX2) that equals the target; eb is the bytes per bit.
	mask := GP64()
	eb := 1
	compare := func(_ int, t reg.VecVirtual) {
		if !zmm {
			switch nb {
			case 8:
				VPCMPEQB(tv, t, t)
			case 16:
				VPCMPEQW(tv, t, t)
			case 32:
				VPCMPEQD(tv, t, t)
			default:
				VPCMPEQQ(tv, t, t)
			}
			VPMOVMSKB(t, mask.As32())
			return
		}
		k := K()
		switch nb {
		case 8:
			VPCMPEQB(tv, t, k)
			KMOVQ(k, mask)
		case 16:
			VPCMPEQW(tv, t, k)
			KMOVD(k, mask.As32())
		case 32:
			VPCMPEQD(tv, t, k)
			KMOVW(k, mask.As32())
		default:
			VPCMPEQQ(tv, t, k)
			KMOVW(k, mask.As32()) // 8 bits; KMOVB would need AVX512DQ
		}
	}
	if zmm {
		eb = min(cb, 8)
	}
	// Four vectors a pass while they fit: their matches (opmasks, or
	// compare results on AVX2) ORed into one test, so that a pass without
	// a match, nearly every one, takes one branch; the pass that has one
	// is searched vector by vector for the first.
	var hits [4]reg.Register
	compare4 := func(j int, t reg.VecVirtual) {
		if !zmm {
			switch nb {
			case 8:
				VPCMPEQB(tv, t, t)
			case 16:
				VPCMPEQW(tv, t, t)
			case 32:
				VPCMPEQD(tv, t, t)
			default:
				VPCMPEQQ(tv, t, t)
			}
			hits[j] = t
			return
		}
		k := K()
		switch nb {
		case 8:
			VPCMPEQB(tv, t, k)
		case 16:
			VPCMPEQW(tv, t, k)
		case 32:
			VPCMPEQD(tv, t, k)
		default:
			VPCMPEQQ(tv, t, k)
		}
		hits[j] = k
	}
	Label("loop4")
	LEAQ(Mem{Base: p, Disp: 4 * v.bytes()}, stop)
	CMPQ(stop, end)
	JA(LabelRef("loop"))
	var ms []Mem
	for j := 0; j < 4; j++ {
		ms = append(ms, Mem{Base: p, Disp: j * v.bytes()})
	}
	pass("loop4", ms, compare4, nil)
	if zmm {
		a, b := K(), K()
		kor := KORW
		switch nb {
		case 8:
			kor = KORQ
		case 16:
			kor = KORD
		}
		kor(hits[1], hits[0], a)
		kor(hits[3], hits[2], b)
		kor(b, a, a)
		switch nb {
		case 8:
			KORTESTQ(a, a)
		case 16:
			KORTESTD(a, a)
		default:
			KORTESTW(a, a)
		}
	} else {
		a := YMM()
		VPOR(hits[1], hits[0], a)
		VPOR(hits[3], a, a)
		VPOR(hits[2], a, a)
		VPTEST(a, a)
	}
	JNZ(LabelRef("hit4"))
	MOVQ(stop, p)
	JMP(LabelRef("loop4"))
	Label("hit4")
	for j := 0; j < 4; j++ {
		if zmm {
			switch nb {
			case 8:
				KMOVQ(hits[j], mask)
			case 16:
				KMOVD(hits[j], mask.As32())
			default:
				KMOVW(hits[j], mask.As32())
			}
		} else {
			VPMOVMSKB(hits[j], mask.As32())
		}
		if j < 3 {
			TESTQ(mask, mask)
			JNZ(LabelRef(fmt.Sprintf("hit4v%d", j)))
		} else {
			ADDQ(U32(3*v.bytes()), p)
			JMP(LabelRef("found"))
		}
	}
	for j := 2; j >= 0; j-- {
		Label(fmt.Sprintf("hit4v%d", j))
		if j > 0 {
			ADDQ(U32(j*v.bytes()), p)
		}
		JMP(LabelRef("found"))
	}

	Label("loop")
	LEAQ(Mem{Base: p, Disp: v.bytes()}, stop)
	CMPQ(stop, end)
	JA(LabelRef("last"))
	pass("loop", []Mem{{Base: p}}, compare, nil)
	TESTQ(mask, mask)
	JNZ(LabelRef("found"))
	MOVQ(stop, p)
	JMP(LabelRef("loop"))

	Label("last") // fewer than a vector left: the vector that ends at end
	CMPQ(p, end)
	JE(LabelRef("none"))
	LEAQ(Mem{Base: end, Disp: -v.bytes()}, stop)
	pass("last", []Mem{{Base: stop}}, compare, nil)
	SUBQ(stop, p) // the bytes searched already: drop their bits
	if eb > 1 {
		SHRQ(U8(bits.TrailingZeros(uint(eb))), p)
	}
	SHRXQ(p, mask, mask)
	SHLXQ(p, mask, mask)
	MOVQ(stop, p)
	TESTQ(mask, mask)
	JNZ(LabelRef("found"))

	Label("none")
	ret := GP64()
	MOVQ(I32(-1), ret)
	Store(ret, ReturnIndex(0))
	VZEROUPPER()
	RET()

	Label("found")
	bit := GP64()
	BSFQ(mask, bit)
	if eb > 1 {
		SHLQ(U8(bits.TrailingZeros(uint(eb))), bit)
	}
	SUBQ(table, p)
	ADDQ(bit, p)
	if cb > 1 {
		SHRQ(U8(bits.TrailingZeros(uint(cb))), p)
	}
	Store(p, ReturnIndex(0))
	VZEROUPPER()
	RET()
}
