package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// genHammingArgmax writes hammingArgmax<bits>AVX512 for 128- and 256-bit
// codes and one probe: the largest distance over a byte range and, per
// lane, the block of argmaxBlock bytes in which the lane first reached its
// maximum, in one pass over the codes.
//
// hammingMax<bits>AVX512 returns only the maximum, so Farthest had to take
// the run of 32 KiB that reached it again (pieces of 4 KiB by the maximum
// kernel, then a search) for its first index: for a table in the caches
// that second look was a fifth of the work. Here the loop is the maximum
// kernel's fast loop (four vectors a pass, summed with combine's shared
// shuffles, a running VPMAXUQ per lane), and at the end of each block the
// lanes whose running maximum grew in it take the block's offset: a
// compare and two masked moves per block, nothing per vector. The caller
// takes the largest lane; the first code at it lies in the earliest block
// noted by a lane at the largest (each lane notes the first block where
// it reached its final maximum), and a search of that one block (2 KiB)
// finds it.
//
// The range must be a whole number of passes (256 bytes), at least one;
// skipped codes are not taken (Farthest calls it on runs that hold none).
// The last block may be shorter; blocks start at from + a multiple of
// argmaxBlock.

// argmaxBlock is the bytes of the blocks hammingArgmax<bits>AVX512 notes
// the lanes' maxima in (simd's argmaxBlock must match).
const argmaxBlock = 2048

func genHammingArgmax() {
	for _, nb := range []int{128, 256} {
		genHammingArgmaxW(nb)
	}
}

func genHammingArgmaxW(nb int) {
	// No software prefetch: the hardware prefetchers keep up with this
	// sequential stream, and a PREFETCHT1 4 KiB ahead of every line (as in
	// hammingMax) made the kernel slower on this machine, paired against
	// itself without it (thread CPU time, 21 rounds): 1.16x the time on
	// 1 GiB of 256-bit codes, 1.7x on 32 MiB, 1.3x on 16 MiB of 128-bit
	// codes, the same in the caches.
	const vb, pass = 64, 256
	name := fmt.Sprintf("hammingArgmax%dAVX512", nb)
	kernel(name, "func(table *byte, from, to int, probe *uint64, out *[16]uint64)", []string{
		fmt.Sprintf("%s counts the %d-bit codes at table[from:to]", name, nb),
		"((to-from) a multiple of 256 bytes, at least 256) against one probe",
		fmt.Sprintf("(%d words) and writes, per lane l of 8, out[l] = the largest distance", nb/64),
		"of the codes the lane saw and out[8+l] = the byte offset of the first",
		"block of argmaxBlock bytes (or the range's last, shorter block) in",
		"which the lane reached it. In Go:",
		"",
		"\tfor b := from; b < to; b += argmaxBlock {",
		"\t\tm := lane maxima of the codes up to min(b+argmaxBlock, to)",
		"\t\tfor l := range 8 { if m[l] > out[l] || b == from { out[l], out[8+l] = m[l], b } }",
		"\t}",
	})
	table := Load(Param("table"), GP64())
	from := Load(Param("from"), GP64())
	to := Load(Param("to"), GP64())
	probe := Load(Param("probe"), GP64())
	p, end, bend := GP64(), GP64(), GP64()
	LEAQ(Mem{Base: table, Index: from, Scale: 1}, p)
	LEAQ(Mem{Base: table, Index: to, Scale: 1}, end)

	pv := ZMM()
	broadcastProbe(nb/64, Mem{Base: probe}, pv, true)
	acc, best, at, off := ZMM(), ZMM(), ZMM(), ZMM()
	VPXORQ(acc, acc, acc)
	VPTERNLOGQ(U8(0xff), best, best, best) // -1: below every distance
	VPBROADCASTQ(from, at)

	Label("block") // from: the block's byte offset
	LEAQ(Mem{Base: p, Disp: argmaxBlock}, bend)
	CMPQ(bend, end)
	CMOVQHI(end, bend)
	Label("loop")
	var ts [4]reg.VecVirtual
	for j := range ts {
		ts[j] = ZMM()
		VPXORQ(Mem{Base: p, Disp: vb * j}, pv, ts[j])
		VPOPCNTQ(ts[j], ts[j])
	}
	// hammingMax's combine: the two qwords of each 128 bits summed for
	// two vectors at once, then the two 128-bit halves of each code.
	pair := func(a, b reg.VecVirtual) reg.VecVirtual {
		lo, hi := ZMM(), ZMM()
		VPUNPCKLQDQ(b, a, lo)
		VPUNPCKHQDQ(b, a, hi)
		VPADDQ(hi, lo, lo)
		return lo
	}
	s01, s23 := pair(ts[0], ts[1]), pair(ts[2], ts[3])
	if nb == 128 { // each qword the distance of a code
		VPMAXUQ(s01, acc, acc)
		VPMAXUQ(s23, acc, acc)
	} else {
		x, y := ZMM(), ZMM()
		VSHUFI64X2(U8(0x88), s23, s01, x)
		VSHUFI64X2(U8(0xdd), s23, s01, y)
		VPADDQ(y, x, x)
		VPMAXUQ(x, acc, acc)
	}
	ADDQ(U32(pass), p)
	CMPQ(p, bend)
	JB(LabelRef("loop"))
	// The block's end: the lanes whose maximum grew take its start.
	k := K()
	VPCMPGTQ(best, acc, k)
	VMOVDQA64(acc, k, best)
	VPBROADCASTQ(from, off)
	VMOVDQA64(off, k, at)
	ADDQ(U32(argmaxBlock), from) // the next block's offset
	CMPQ(p, end)
	JB(LabelRef("block"))

	out := Load(Param("out"), GP64())
	VMOVDQU64(best, Mem{Base: out})
	VMOVDQU64(at, Mem{Base: out, Disp: 64})
	VZEROUPPER()
	RET()
}

// genHammingAddW1 writes hammingAddW1AVX512, the token-mode decode step's
// Hamming pass: for one-word codes (a layer's combined codes) it adds each
// code's distance, summed over the probes, straight into the running
// per-slot total. Hamming then a separate add wrote every distance to
// memory and read it back; here the sums go from the popcounts to the
// total in registers (VPMOVQD, then one VPADDD with the total). It also
// writes hammingAddSlicesW1AVX512, the same pass over the bit slices of the
// probes' per-bit counts (see hammingAddAVX512Go): the sum doubled before
// each slice is added, so 2^m - 1 probes take m popcounts.
func genHammingAddW1() {
	genHammingAddW1Kernel(false)
	genHammingAddW1Kernel(true)
}

func genHammingAddW1Kernel(slices bool) {
	if !slices {
		kernel("hammingAddW1AVX512", "func(run *uint32, table *uint64, blocks int, probes *uint64, np int)", []string{
			"hammingAddW1AVX512 adds to run[i] the summed Hamming distance of the",
			"one-word code table[i] to the np >= 1 probes, for blocks*32 codes. In Go:",
			"",
			"\tfor i := 0; i < blocks*32; i++ {",
			"\t\tfor p := 0; p < np; p++ {",
			"\t\t\trun[i] += uint32(bits.OnesCount64(table[i] ^ probes[p]))",
			"\t\t}",
			"\t}",
		})
	} else {
		kernel("hammingAddSlicesW1AVX512", "func(run *uint32, table *uint64, blocks int, probes *uint64, np int)", []string{
			"hammingAddSlicesW1AVX512 adds to run[i] the Hamming distances of the",
			"one-word code table[i] to the np >= 1 words probes, each weighted by",
			"2^(np-1-p) (Horner: the sum doubled before each further probe), for",
			"blocks*32 codes. In Go:",
			"",
			"\tfor i := 0; i < blocks*32; i++ {",
			"\t\tvar d uint64",
			"\t\tfor p := 0; p < np; p++ {",
			"\t\t\td = 2*d + uint64(bits.OnesCount64(table[i]^probes[p]))",
			"\t\t}",
			"\t\trun[i] += uint32(d)",
			"\t}",
		})
	}
	run := Load(Param("run"), GP64())
	table := Load(Param("table"), GP64())
	blocks := Load(Param("blocks"), GP64())
	probes := Load(Param("probes"), GP64())
	np := Load(Param("np"), GP64())

	Label("block")
	TESTQ(blocks, blocks)
	JZ(LabelRef("done"))
	var d, acc [4]reg.VecVirtual
	for i := range d {
		d[i] = ZMM()
		VMOVDQU64(Mem{Base: table, Disp: 64 * i}, d[i])
	}
	pp := GP64()
	MOVQ(probes, pp)
	for i := range d {
		acc[i] = ZMM()
		VPXORQ_BCST(Mem{Base: pp}, d[i], acc[i])
		VPOPCNTQ(acc[i], acc[i])
	}
	cnt := GP64()
	MOVQ(np, cnt)
	DECQ(cnt)
	JZ(LabelRef("add"))
	Label("probe")
	ADDQ(U8(8), pp)
	for i := range d {
		t := ZMM()
		VPXORQ_BCST(Mem{Base: pp}, d[i], t)
		VPOPCNTQ(t, t)
		if slices {
			VPADDQ(acc[i], acc[i], acc[i])
		}
		VPADDQ(t, acc[i], acc[i])
	}
	DECQ(cnt)
	JNZ(LabelRef("probe"))

	Label("add")
	for i := range acc {
		y := YMM()
		VPMOVQD(acc[i], y)
		VPADDD(Mem{Base: run, Disp: 32 * i}, y, y)
		VMOVDQU(y, Mem{Base: run, Disp: 32 * i})
	}
	ADDQ(U32(256), table)
	ADDQ(U32(128), run)
	DECQ(blocks)
	JMP(LabelRef("block"))

	Label("done")
	VZEROUPPER()
	RET()
}
