//go:build !noasm

package simd

// Go wrappers around the generated assembly (kernels_amd64.s, declared in
// kernels_stub_amd64.go). The wrappers check lengths, call the assembly on
// whole vectors and finish odd tails; any input the assembly does not
// handle (a zero dimension, a too-short slice, an unusual code width) goes
// to the generic kernel, so that odd calls behave exactly as the generic
// ones do, panics included.

import (
	"math"
	"slices"
	"unsafe"
)

func avx512Kernels() Kernels {
	return Kernels{
		ScoreStep:     scoreStepAVX512Go,
		Farthest:      farthestAVX512Go,
		HammingAdd:    hammingAddAVX512Go,
		Name:          "avx512",
		Hash:          hashAVX512Go,
		Hamming:       hammingAVX512Go,
		HammingNarrow: hammingNarrowAVX512Go,
		BitCount:      bitCountFast,
		ArgmaxIn:      argmaxAVX512Go,
		Update:        updateAVX512Go,
		F16ToF32:      f16ToF32AVX512Go,
		BF16ToF32:     bf16ToF32AVX512Go,
		FiniteF32:     finiteAVX512Go,
	}
}

func avx2Kernels() Kernels {
	return Kernels{
		ScoreStep:     scoreStepAVX2Go,
		Farthest:      farthestAVX2Go,
		HammingAdd:    hammingAddAVX2Go,
		Name:          "avx2",
		Hash:          hashAVX2Go,
		Hamming:       hammingAVX2Go,
		HammingNarrow: hammingNarrowAVX2Go,
		BitCount:      bitCountFast,
		ArgmaxIn:      argmaxAVX2Go,
		Update:        updateAVX2Go,
		F16ToF32:      f16ToF32AVX2Go,
		BF16ToF32:     bf16ToF32AVX2Go,
		FiniteF32:     finiteAVX2Go,
	}
}

// hashWith runs asm on the largest multiple of group rows and hashes the
// remaining rows with the reference dot product.
func hashWith(code []uint64, x, rt []float32, group int, asm func(*uint64, *float32, *float32, int, int)) {
	nbits, n, ok := hashStart(code, x, rt, group)
	if !ok {
		hashGeneric(code, x, rt)
		return
	}
	if n > 0 {
		asm(&code[0], &x[0], &rt[0], len(x), n)
	}
	if n < nbits {
		hashRest(code, x, rt, n)
	}
}

// hashAVX512Go is hashWith(code, x, rt, 8, hashAVX512) with the kernel
// called directly, not through a function value: the token-mode step
// hashes one row per call, 360 a step for SmolLM2, and the indirect call
// cost 9 % of a 64-dim, 16-bit row's hash (paired in one process).
func hashAVX512Go(code []uint64, x, rt []float32) {
	nbits, n, ok := hashStart(code, x, rt, 8)
	if !ok {
		hashGeneric(code, x, rt)
		return
	}
	if n > 0 {
		hashAVX512(&code[0], &x[0], &rt[0], len(x), n)
	}
	if n < nbits {
		hashRest(code, x, rt, n)
	}
}

// hashStart clears code for a shape the kernels take and returns its row
// count and how many of the rows a kernel of this group takes; ok is false
// for a shape the kernels do not take (hashGeneric's then). Small enough
// to inline: the token-mode step hashes one row per call.
func hashStart(code []uint64, x, rt []float32, group int) (nbits, n int, ok bool) {
	dim := len(x)
	if dim == 0 {
		return 0, 0, false
	}
	nbits = len(rt) / dim
	if len(code) < (nbits+63)/64 {
		return 0, 0, false
	}
	clear(code)
	return nbits, nbits - nbits%group, true
}

// hashRest hashes rows n.. of rt (those past the kernel's groups) with the
// reference dot product.
func hashRest(code []uint64, x, rt []float32, n int) {
	dim := len(x)
	for j := n; j < len(rt)/dim; j++ {
		if dotLanes(x, rt[j*dim:(j+1)*dim]) >= 0 {
			code[j>>6] |= 1 << (uint(j) & 63)
		}
	}
}

func hashAVX2Go(code []uint64, x, rt []float32) { hashWith(code, x, rt, 4, hashAVX2) }

type hammingAsm func(dist *uint32, table *uint64, blocks int, probes *uint64, np int)

// hammingWith runs the block kernel for 1-, 2- and 4-word codes; a block
// is blockWords words of table. The last partial block is copied into a
// zero-padded buffer and run as a whole block.
func hammingWith(dist []uint32, table []uint64, words int, probes []uint64, blockWords int, kern [5]hammingAsm) {
	n := len(dist)
	if words < 1 || words > 4 || kern[words] == nil || len(table) < n*words || n == 0 {
		hammingGeneric(dist, table, words, probes)
		return
	}
	np := len(probes) / words
	if np == 0 {
		hammingGeneric(dist, table, words, probes)
		return
	}
	per := blockWords / words
	blocks := n / per
	if blocks > 0 {
		kern[words](&dist[0], &table[0], blocks, &probes[0], np)
	}
	if done := blocks * per; done < n {
		sc := blockScratchPool.Get().(*blockScratch)
		tb, db := &sc.tailCodes, &sc.tailDist
		*tb = [32]uint64{}
		copy(tb[:], table[done*words:n*words])
		kern[words](&db[0], &tb[0], 1, &probes[0], np)
		copy(dist[done:], db[:n-done])
		blockScratchPool.Put(sc)
	}
}

var (
	hammingKernAVX512 = [5]hammingAsm{1: hammingW1AVX512, 2: hammingW2AVX512, 4: hammingW4AVX512}
	hammingKernAVX2   = [5]hammingAsm{1: hammingW1AVX2, 2: hammingW2AVX2, 4: hammingW4AVX2}
	hammingKernPopcnt = [5]hammingAsm{1: hammingW1Popcnt}
)

// streamBytes is the output size from which the AVX-512 Hamming kernel
// streams: it prefetches the table and writes the distances with
// non-temporal stores, which saves reading every output line before
// writing it but leaves the distances in memory rather than in the caches.
// Distances of up to 2M codes (all the policy produces) are below it.
const streamBytes = 8 << 20

var hammingKernAVX512NT = [5]hammingAsm{1: hammingW1NTAVX512, 2: hammingW2NTAVX512, 4: hammingW4NTAVX512}

func hammingAVX512Go(dist []uint32, table []uint64, words int, probes []uint64) {
	n := len(dist)
	if 4*n < streamBytes || (words != 1 && words != 2 && words != 4) || len(table) < n*words || len(probes) < words {
		hammingWith(dist, table, words, probes, 32, hammingKernAVX512)
		return
	}
	// Peel codes until dist is 32-byte aligned, stream whole blocks, and
	// finish with the cached kernel.
	a := int((32-uintptr(unsafe.Pointer(&dist[0]))%32)%32) / 4
	hammingWith(dist[:a], table[:a*words], words, probes, 32, hammingKernAVX512)
	per := 32 / words
	blocks := (n - a) / per
	np := len(probes) / words
	hammingKernAVX512NT[words](&dist[a], &table[a*words], blocks, &probes[0], np)
	done := a + blocks*per
	hammingWith(dist[done:], table[done*words:n*words], words, probes, 32, hammingKernAVX512)
}

func hammingAVX2Go(dist []uint32, table []uint64, words int, probes []uint64) {
	hammingWith(dist, table, words, probes, 16, hammingKernAVX2)
}

// hammingPopcntGo is the scalar-POPCNT alternative to the AVX2 nibble
// table, kept for the benchmarks that chose between them.
func hammingPopcntGo(dist []uint32, table []uint64, words int, probes []uint64) {
	hammingWith(dist, table, words, probes, 4, hammingKernPopcnt)
}

// argmaxReduce combines the lane results of an argmax kernel with the
// entries [from, m) the kernel did not scan (those for which kept is true
// qualify), and returns what argmaxRangeGeneric returns. best holds float32
// bits, bidx and fidx int32.
func argmaxReduce(score []float32, m int, kept func(i int) bool, best, bidx, fidx []uint32, from int) int {
	first := int32(math.MaxInt32)
	for _, f := range fidx {
		first = min(first, int32(f))
	}
	win, winScore := -1, float32(0)
	for l, u := range bidx {
		i := int(int32(u))
		if i < 0 {
			continue
		}
		if s := math.Float32frombits(best[l]); win < 0 || s > winScore || (s == winScore && i < win) {
			win, winScore = i, s
		}
	}
	for i := from; i < m; i++ {
		if !kept(i) {
			continue
		}
		if first == math.MaxInt32 {
			first = int32(i)
		}
		if s := score[i]; s == s && (win < 0 || s > winScore) {
			win, winScore = i, s
		}
	}
	if first == math.MaxInt32 {
		return -1
	}
	if s := score[first]; s != s {
		return int(first) // a NaN taken first is never beaten
	}
	return win
}

// The lane state of an argmax kernel (see argmaxDoc in _gen), for L lanes
// in a slice of 3L words: the best score (float32 bits), its index, and
// the first qualifying index. It carries over from one call to the next,
// so a table can be scanned in blocks.
func initLanes(st []uint32) {
	L := len(st) / 3
	for l := 0; l < L; l++ {
		st[l] = 0x7fc00000        // NaN: no best yet
		st[L+l] = 0xffffffff      // -1
		st[2*L+l] = math.MaxInt32 // none
	}
}

func reduceLanes(st []uint32, score []float32, pos []int32, lo, hi int32, from int) int {
	L := len(st) / 3
	kept := func(i int) bool { return pos[i] >= lo && pos[i] < hi }
	return argmaxReduce(score, len(pos), kept, st[:L], st[L:2*L], st[2*L:], from)
}

type argmaxAsm func(score *float32, pos *int32, n int, lo, hi, base int32, st []uint32)

func argmax32(score *float32, pos *int32, n int, lo, hi, base int32, st []uint32) {
	argmaxAVX512(score, pos, n, lo, hi, base, (*[96]uint32)(st))
}

// argmax16 needs hi > lo.
func argmax16(score *float32, pos *int32, n int, lo, hi, base int32, st []uint32) {
	argmaxAVX2(score, pos, n, lo, hi-1, base, (*[48]uint32)(st))
}

func argmaxAVX512Go(score []float32, pos []int32, lo, hi int32) int {
	n := len(pos)
	if len(score) < n || n == 0 || n > math.MaxInt32 {
		return argmaxRangeGeneric(score, pos, lo, hi)
	}
	var st [96]uint32
	initLanes(st[:])
	argmaxAVX512(&score[0], &pos[0], n, lo, hi, 0, &st)
	return reduceLanes(st[:], score, pos, lo, hi, n)
}

func argmaxAVX2Go(score []float32, pos []int32, lo, hi int32) int {
	n := len(pos)
	if len(score) < n || n < 8 || n > math.MaxInt32 {
		return argmaxRangeGeneric(score, pos, lo, hi)
	}
	if hi <= lo {
		return -1 // no position qualifies
	}
	var st [48]uint32
	initLanes(st[:])
	n8 := n &^ 7
	argmaxAVX2(&score[0], &pos[0], n8, lo, hi-1, 0, &st)
	return reduceLanes(st[:], score, pos, lo, hi, n8)
}

// scoreStepWith runs ScoreStep block by block with one set's kernels: the
// block's distances go to an L1-resident buffer, the update follows, and
// the argmax kernel scans the block's scores with stand-in positions (0
// kept, -1 skipped, range [0, 1); they stay in L1), its lane state
// carried over between blocks. Unusual calls go to the generic step.
func scoreStepWith(lanes int, // of the argmax kernel; vector width 8 when 16 (AVX2)
	ham, narrow func([]uint32, []uint64, int, []uint64),
	upd func([]float32, []uint32, []uint32, uint32, int, float32),
	argmax argmaxAsm,
	score []float32, count []uint32, table []uint64, bits int, probes []uint64, n uint32, mode int, decay float32, skip []int32) int {
	m := len(score)
	if !blockLayout(bits) || len(table) < CodeWords(bits, m) || (mode == ScoreAccumulated && len(count) < m) ||
		m > math.MaxInt32-scoreBlock {
		return scoreStepGeneric(score, count, table, bits, probes, n, mode, decay, skip)
	}
	// Not deferred: a scratch whose stand-in positions a panic left
	// marked must not go back to the pool.
	sc := blockScratchPool.Get().(*blockScratch)
	buf, keep := &sc.dist, &sc.keep
	st := sc.lanes[:3*lanes]
	initLanes(st)
	sorted := sortedSkip(skip)
	skipped := sorted
	done := 0 // entries scanned by the argmax kernel
	for b0 := 0; b0 < m; b0 += scoreBlock {
		b1 := min(b0+scoreBlock, m)
		if b1 < m {
			// Touch each 4 KiB page of the next block: the hardware
			// prefetchers do not cross pages, and the tables of a decode
			// step are usually not in the caches. (One prefetch per line
			// costs more than it saves when they are.)
			c := min(scoreBlock, m-b1)
			next := codeSpan(table, bits, b1, b1+c)
			prefetchT1((*byte)(unsafe.Pointer(&next[0])), 8*len(next), 4096)
			prefetchT1((*byte)(unsafe.Pointer(&score[b1])), 4*c, 4096)
			if mode == ScoreAccumulated {
				prefetchT1((*byte)(unsafe.Pointer(&count[b1])), 4*c, 4096)
			}
		}
		dist := buf[:b1-b0]
		hammingCodes(ham, narrow, dist, codeSpan(table, bits, b0, b1), bits, probes)
		var cnt []uint32
		if mode == ScoreAccumulated {
			cnt = count[b0:b1]
		}
		upd(score[b0:b1], cnt, dist, n, mode, decay)
		marked := skipped
		for len(skipped) > 0 && int(skipped[0]) < b1 {
			keep[int(skipped[0])-b0] = -1
			skipped = skipped[1:]
		}
		marked = marked[:len(marked)-len(skipped)]
		c := b1 - b0
		if lanes == 16 {
			c &^= 7 // the AVX2 kernel takes whole vectors; the tail is reduced in Go
		}
		if c > 0 {
			argmax(&score[b0], &keep[0], c, 0, 1, int32(b0), st)
			done = b0 + c
		}
		for _, x := range marked {
			keep[int(x)-b0] = 0
		}
	}
	kept := func(i int) bool { _, found := slices.BinarySearch(sorted, int32(i)); return !found }
	L := lanes
	victim := argmaxReduce(score, m, kept, st[:L], st[L:2*L], st[2*L:], done)
	blockScratchPool.Put(sc)
	return victim
}

func scoreStepAVX512Go(score []float32, count []uint32, table []uint64, bits int, probes []uint64, n uint32, mode int, decay float32, skip []int32) int {
	return scoreStepWith(32, hammingAVX512Go, hammingNarrowAVX512Go, updateAVX512Go, argmax32, score, count, table, bits, probes, n, mode, decay, skip)
}

func scoreStepAVX2Go(score []float32, count []uint32, table []uint64, bits int, probes []uint64, n uint32, mode int, decay float32, skip []int32) int {
	return scoreStepWith(16, hammingAVX2Go, hammingNarrowAVX2Go, updateAVX2Go, argmax16, score, count, table, bits, probes, n, mode, decay, skip)
}

// blockLayout reports whether the block-wise steps take bits-bit codes:
// narrow ones, and wide ones of 1, 2 or 4 words.
func blockLayout(bits int) bool {
	switch bits {
	case 8, 16, 32, 64, 128, 256:
		return true
	}
	return false
}

// The narrow Hamming kernels of the accelerated sets, by code width (index
// bits/16 for 8, 16 and 32 bits). Without AVX512_BITALG (VPOPCNTB/W) the
// AVX-512 set zero-extends 8- and 16-bit codes to dwords for VPOPCNTD.
var (
	hammingNarrowKernAVX512      = [3]hammingAsm{hammingN8AVX512, hammingN16AVX512, hammingN32AVX512}
	hammingNarrowKernAVX512Widen = [3]hammingAsm{hammingN8WidenAVX512, hammingN16WidenAVX512, hammingN32AVX512}
	hammingNarrowKernAVX2        = [3]hammingAsm{hammingN8AVX2, hammingN16AVX2, hammingN32AVX2}
)

// hammingNarrowWith runs a narrow kernel on the whole blocks (blockWords
// words of table) and on a zero-padded copy of the last partial block.
func hammingNarrowWith(dist []uint32, table []uint64, bits int, probes []uint64, blockWords int, kern *[3]hammingAsm) {
	n := len(dist)
	if (bits != 8 && bits != 16 && bits != 32) || n == 0 || len(probes) == 0 || len(table) < CodeWords(bits, n) {
		hammingNarrowGeneric(dist, table, bits, probes)
		return
	}
	k := kern[bits/16]
	per := blockWords * 64 / bits
	blocks := n / per
	if blocks > 0 {
		k(&dist[0], &table[0], blocks, &probes[0], len(probes))
	}
	if done := blocks * per; done < n {
		sc := blockScratchPool.Get().(*blockScratch)
		tb, db := &sc.tailCodes, &sc.tailDist
		*tb = [32]uint64{}
		copy(tb[:], table[blocks*blockWords:CodeWords(bits, n)])
		k(&db[0], &tb[0], 1, &probes[0], len(probes))
		copy(dist[done:], db[:n-done])
		blockScratchPool.Put(sc)
	}
}

func hammingNarrowAVX512Go(dist []uint32, table []uint64, bits int, probes []uint64) {
	kern := &hammingNarrowKernAVX512Widen
	if hasBITALG {
		kern = &hammingNarrowKernAVX512
	}
	hammingNarrowWith(dist, table, bits, probes, 8, kern)
}

func hammingNarrowAVX2Go(dist []uint32, table []uint64, bits int, probes []uint64) {
	hammingNarrowWith(dist, table, bits, probes, 4, &hammingNarrowKernAVX2)
}

func updateAVX512Go(score []float32, count []uint32, dist []uint32, n uint32, mode int, decay float32) {
	m := len(dist)
	if m == 0 || len(score) < m || (mode == ScoreAccumulated && len(count) < m) {
		updateGeneric(score, count, dist, n, mode, decay)
		return
	}
	inv := 1 / float32(n)
	switch mode {
	case ScoreInstant:
		updateInstantAVX512(&score[0], &dist[0], m, inv)
	case ScoreAccumulated:
		updateAccAVX512(&score[0], &count[0], &dist[0], m, inv)
	case ScoreDecayed:
		updateDecayAVX512(&score[0], &dist[0], m, inv, decay, 1-decay)
	}
}

func updateAVX2Go(score []float32, count []uint32, dist []uint32, n uint32, mode int, decay float32) {
	m := len(dist)
	if m < 8 || len(score) < m || (mode == ScoreAccumulated && len(count) < m) {
		updateGeneric(score, count, dist, n, mode, decay)
		return
	}
	inv := 1 / float32(n)
	m8 := m &^ 7
	switch mode {
	case ScoreInstant:
		updateInstantAVX2(&score[0], &dist[0], m8, inv)
	case ScoreAccumulated:
		updateAccAVX2(&score[0], &count[0], &dist[0], m8, inv)
	case ScoreDecayed:
		updateDecayAVX2(&score[0], &dist[0], m8, inv, decay, 1-decay)
	default:
		return
	}
	var cnt []uint32
	if mode == ScoreAccumulated {
		cnt = count[m8:m]
	}
	updateGeneric(score[m8:m], cnt, dist[m8:m], n, mode, decay)
}

// VCVTPH2PS quiets signalling NaNs where HalfToFloat keeps them, so a row
// with a non-finite element is converted again by the generic loop: the
// result is then bit-identical, and such rows are rejected anyway.
func f16ToF32AVX512Go(dst []float32, src []uint16) bool {
	n := len(src)
	if n == 0 || len(dst) < n {
		return f16ToF32Generic(dst, src)
	}
	if !f16ToF32AVX512(&dst[0], &src[0], n) {
		return f16ToF32Generic(dst, src)
	}
	return true
}

func bf16ToF32AVX512Go(dst []float32, src []uint16) bool {
	n := len(src)
	if n == 0 || len(dst) < n {
		return bf16ToF32Generic(dst, src)
	}
	return bf16ToF32AVX512(&dst[0], &src[0], n)
}

func finiteAVX512Go(x []float32) bool {
	if len(x) == 0 {
		return true
	}
	return finiteAVX512(&x[0], len(x))
}

func f16ToF32AVX2Go(dst []float32, src []uint16) bool {
	n := len(src)
	if n < 8 || len(dst) < n {
		return f16ToF32Generic(dst, src)
	}
	n8 := n &^ 7
	if !f16ToF32AVX2(&dst[0], &src[0], n8) {
		return f16ToF32Generic(dst, src)
	}
	return f16ToF32Generic(dst[n8:n], src[n8:])
}

func bf16ToF32AVX2Go(dst []float32, src []uint16) bool {
	n := len(src)
	if n < 8 || len(dst) < n {
		return bf16ToF32Generic(dst, src)
	}
	n8 := n &^ 7
	ok := bf16ToF32AVX2(&dst[0], &src[0], n8)
	return bf16ToF32Generic(dst[n8:n], src[n8:]) && ok
}

func finiteAVX2Go(x []float32) bool {
	n := len(x)
	if n < 8 {
		return finiteGeneric(x)
	}
	n8 := n &^ 7
	return finiteAVX2(&x[0], n8) && finiteGeneric(x[n8:])
}
