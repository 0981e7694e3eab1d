//go:build !noasm

package simd

import (
	"math"
	"sync"
)

// blockScratch is the L1-resident working set of the block-wise steps
// (ScoreStep and the Hamming tails). The kernels are called through
// function values, so a local array would escape to the heap on every
// call; a pool reuses them instead.
type blockScratch struct {
	dist  [scoreBlock]uint32
	keep  [scoreBlock]int32 // ScoreStep's stand-in positions: all 0 outside a call
	lanes [96]uint32
	// A kernel's last partial block, zero-padded, and its distances.
	tailCodes [32]uint64
	tailDist  [64]uint32
	// Farthest's probes as planes (probeSet).
	planes [(maxPlanes + 1) * 4]uint64
	// The argmax kernels' lanes.
	out [16]uint64
}

var blockScratchPool = sync.Pool{New: func() any { return new(blockScratch) }}

// farthestRun is the number of table bytes per call of a maximum kernel in
// Farthest, whatever the code width: the run that reached the largest
// maximum first is searched again for its first index, so a run should be
// small next to a table beyond the caches, and large enough that a call's
// fixed cost (the call, the reduction of its accumulators: some 20-40 ns)
// is a few per cent of streaming it (32 KiB: ~1.2 µs at 27 GB/s). Runs of
// a fixed number of codes (1024 in an earlier version) were 1-4 KiB for
// narrow codes, and streamed a table at 43% of the read bandwidth.
const farthestRun = 32 << 10

// farthestPiece is the number of bytes of the run that reached the
// largest maximum that Farthest takes at a time, by the maximum kernel,
// to find the piece to search.
const farthestPiece = 4 << 10

// farthestWith runs Farthest with a set's fused kernels: the table in runs
// of farthestRun bytes, each run's largest level (the summed distance, or
// for several probes a quantity strictly increasing with it: see
// probeSet) from a maximum kernel that counts the skipped entries as 0
// (the first run that reached the overall largest is remembered), then a
// search kernel for the first entry of that run at the largest level that
// is not skipped. Zeroing is exact: a skipped entry cannot win over a
// positive maximum (ties go to the first index, and the search steps over
// skipped entries), and when the maximum is 0 every kept entry is at
// level 0 (one distance), so the answer is the first kept entry. Calls
// the kernels do not take go to the generic loop.
func farthestWith(kerns func(bits int) *fusedKerns, table []uint64, bits int, probes []uint64, n int, skip []int32) int {
	np := 0
	if blockLayout(bits) && n > 0 && n <= math.MaxInt32 {
		np = hammingMaxArgs(table, bits, n, probes)
	}
	if np == 0 {
		return farthestGeneric(table, bits, probes, n, skip)
	}
	k := kerns(bits)
	sc := blockScratchPool.Get().(*blockScratch)
	defer blockScratchPool.Put(sc)
	ps := newProbeSet(&sc.planes, bits, probes, np)
	sorted := sortedSkip(skip)
	run := farthestRun / (bits / 8)
	best, bestDist := -1, uint32(0)
	var bestSkip []int32 // the skipped entries from best on
	found := -1          // the first index at bestDist, when a run without skips gave it
	// One probe on 128- or 256-bit codes: runs without skipped entries,
	// as many as follow each other, go to the kernel that also notes
	// where the maximum was reached, so that the answer needs no second
	// look at the run.
	argmax := np == 1 && k.hasArgmax(bits)
	s := sorted
	for c0 := 0; c0 < n; {
		for len(s) > 0 && int(s[0]) < c0 {
			s = s[1:]
		}
		c1 := min(c0+run, n)
		if argmax && (len(s) == 0 || int(s[0]) >= c1) {
			if len(s) > 0 {
				c1 = max(c1, int(s[0])/run*run) // up to the run that holds the next skip
			} else {
				c1 = n
			}
			if m, i := k.argmaxRange(table, bits, c0, c1, &ps, &sc.out); m > bestDist {
				best, bestDist, bestSkip, found = c0, m, nil, i
			}
		} else if m := k.maxRange(table, bits, c0, c1, &ps, s); m > bestDist {
			best, bestDist, bestSkip, found = c0, m, s, -1
		}
		c0 = c1
	}
	if bestDist == 0 {
		return firstKept(sorted, n)
	}
	if found >= 0 {
		return found
	}
	// The run's first piece that reaches the maximum, by the maximum
	// kernel, which is about twice as fast as the search for wide codes;
	// then the search in that piece.
	end := min(best+run, n)
	piece := farthestPiece / (bits / 8)
	for ; best+piece < end; best += piece {
		for len(bestSkip) > 0 && int(bestSkip[0]) < best {
			bestSkip = bestSkip[1:]
		}
		if k.maxRange(table, bits, best, best+piece, &ps, bestSkip) == bestDist {
			end = best + piece
			break
		}
	}
	for c0, s := best, bestSkip; c0 < end; {
		i := k.findRange(table, bits, c0, end, &ps, bestDist)
		if i < 0 {
			break
		}
		for len(s) > 0 && int(s[0]) < i {
			s = s[1:]
		}
		if len(s) == 0 || int(s[0]) != i {
			return i
		}
		c0 = i + 1 // a skipped entry at the largest distance
	}
	panic("simd: Farthest lost its maximum") // unreachable: the run reached it with a kept entry
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

func farthestAVX512Go(table []uint64, bits int, probes []uint64, n int, skip []int32) int {
	return farthestWith(fusedAVX512For, table, bits, probes, n, skip)
}

func farthestAVX2Go(table []uint64, bits int, probes []uint64, n int, skip []int32) int {
	return farthestWith(func(int) *fusedKerns { return &fusedAVX2 }, table, bits, probes, n, skip)
}
