//go:build !noasm

package simd

import (
	"math"
	"sync"
	"unsafe"
)

// blockScratch is the L1-resident working set of the block-wise steps. The
// kernels are called through function values, so a local array would
// escape to the heap on every call; a pool reuses them instead.
type blockScratch struct {
	dist  [scoreBlock]uint32
	keep  [scoreBlock]int32 // ScoreStep's stand-in positions: all 0 outside a call
	lanes [96]uint32
	// A kernel's last partial block, zero-padded, and its distances.
	tailCodes [32]uint64
	tailDist  [64]uint32
}

var blockScratchPool = sync.Pool{New: func() any { return new(blockScratch) }}

// farthestWith runs Farthest block by block. A block without skipped
// entries goes through a fused kernel that streams the codes once and
// returns their largest summed distance (hmax: no distances are stored;
// it declines probe counts its sums cannot hold). Otherwise the block's
// distances go to an L1-resident buffer, the skipped entries' distances
// are set to 0 and the block's maximum is taken (maxU32). The first block
// that reaches the largest maximum is computed again at the end and
// searched for that maximum's first index. Zeroing is exact: a skipped
// entry cannot win over a positive maximum (ties go to the first index,
// and the first index of a positive maximum is not a zeroed one), and
// when the maximum is 0 every kept entry is at distance 0, so the answer
// is the first kept entry.
func farthestWith(maxU32 func([]uint32) uint32,
	hmax func(table []uint64, bits, n int, probes []uint64) (uint32, bool),
	ham, narrow func([]uint32, []uint64, int, []uint64),
	table []uint64, bits int, probes []uint64, n int, skip []int32) int {
	if !blockLayout(bits) || n < 0 || len(table) < CodeWords(bits, n) || n > math.MaxInt32 {
		return farthestGeneric(table, bits, probes, n, skip)
	}
	sc := blockScratchPool.Get().(*blockScratch)
	defer blockScratchPool.Put(sc)
	sorted := sortedSkip(skip)
	// distances computes block [b0, b1) with its skipped entries zeroed;
	// skipped holds the entries from b0 on and is returned past b1.
	distances := func(b0, b1 int, skipped []int32) ([]uint32, []int32) {
		dist := sc.dist[:b1-b0]
		hammingCodes(ham, narrow, dist, codeSpan(table, bits, b0, b1), bits, probes)
		for len(skipped) > 0 && int(skipped[0]) < b1 {
			dist[int(skipped[0])-b0] = 0
			skipped = skipped[1:]
		}
		return dist, skipped
	}
	bestBlock, bestDist := -1, uint32(0)
	var bestSkip []int32 // the skipped entries from bestBlock on
	skipped := sorted
	for b0 := 0; b0 < n; b0 += scoreBlock {
		b1 := min(b0+scoreBlock, n)
		if b1 < n {
			// Touch each 4 KiB page of the next block: the hardware
			// prefetchers do not cross pages, and a decode step's codes
			// are usually not in the caches.
			next := codeSpan(table, bits, b1, min(b1+scoreBlock, n))
			prefetchT1((*byte)(unsafe.Pointer(&next[0])), 8*len(next), 4096)
		}
		from := skipped
		m, ok := uint32(0), false
		if len(skipped) == 0 || int(skipped[0]) >= b1 { // hmax says ok = false for probe counts it cannot sum
			m, ok = hmax(codeSpan(table, bits, b0, b1), bits, b1-b0, probes)
		}
		if !ok {
			var dist []uint32
			dist, skipped = distances(b0, b1, skipped)
			m = maxU32(dist)
		}
		if m > bestDist {
			bestBlock, bestDist, bestSkip = b0, m, from
		}
	}
	if bestDist == 0 {
		return firstKept(sorted, n)
	}
	dist, _ := distances(bestBlock, min(bestBlock+scoreBlock, n), bestSkip)
	for i, d := range dist {
		if d == bestDist {
			return bestBlock + i
		}
	}
	panic("simd: Farthest lost its maximum") // unreachable: the block was computed twice alike
}

// firstKept returns the lowest entry of [0, n) not in skipped (sorted,
// non-negative), or -1.
func firstKept(skipped []int32, n int) int {
	i := 0
	for _, x := range skipped {
		if int(x) > i {
			break
		}
		if int(x) == i {
			i++
		}
	}
	if i >= n {
		return -1
	}
	return i
}

// maxU32With runs a maximum kernel on the whole passes (multiples of per)
// and finishes the tail in Go; 0 for an empty x.
func maxU32With(x []uint32, per int, kern func(*uint32, int) uint32) uint32 {
	n := len(x) - len(x)%per
	var m uint32
	if n > 0 {
		m = kern(&x[0], n)
	}
	for _, v := range x[n:] {
		m = max(m, v)
	}
	return m
}

func maxU32AVX512Go(x []uint32) uint32 { return maxU32With(x, 64, maxU32AVX512) }
func maxU32AVX2Go(x []uint32) uint32   { return maxU32With(x, 32, maxU32AVX2) }

func farthestAVX512Go(table []uint64, bits int, probes []uint64, n int, skip []int32) int {
	return farthestWith(maxU32AVX512Go, hammingMaxAVX512Go, hammingAVX512Go, hammingNarrowAVX512Go, table, bits, probes, n, skip)
}

func farthestAVX2Go(table []uint64, bits int, probes []uint64, n int, skip []int32) int {
	return farthestWith(maxU32AVX2Go, hammingMaxAVX2Go, hammingAVX2Go, hammingNarrowAVX2Go, table, bits, probes, n, skip)
}
