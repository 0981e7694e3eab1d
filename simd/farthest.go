package simd

import "slices"

// farthestGeneric returns the entry of [0, n) not listed in skip whose code
// has the largest summed Hamming distance to probes (ties: the lowest
// index), or -1 when every entry is skipped. skip may repeat entries and
// list entries outside [0, n), which are ignored.
//
// It is the whole decode step of the instant score. There the score of an
// entry is its step distance times 1/n, a positive constant, and
// float32(d)·c is strictly increasing in an integer d below 2²⁴, so the
// entry with the largest distance is the one ArgmaxIn would pick from the
// updated scores, ties included. No score needs to be written, and the
// protected entries are named by the caller (a few slots) instead of being
// found by reading every entry's position, so a step reads the codes and
// nothing else.
func farthestGeneric(table []uint64, bits int, probes []uint64, n int, skip []int32) int {
	var buf [scoreBlock]uint32
	skipped := sortedSkip(skip)
	best, bestDist := -1, uint32(0)
	for b0 := 0; b0 < n; b0 += scoreBlock {
		b1 := min(b0+scoreBlock, n)
		dist := buf[:b1-b0]
		hammingCodes(hammingGeneric, hammingNarrowGeneric, dist, codeSpan(table, bits, b0, b1), bits, probes)
		for i, d := range dist {
			if skipNext(&skipped, b0+i) {
				continue
			}
			if best < 0 || d > bestDist {
				best, bestDist = b0+i, d
			}
		}
	}
	return best
}

// skipNext reports whether entry i is the next one in skipped (sorted,
// entries visited in increasing order), and moves skipped past it and its
// repeats.
func skipNext(skipped *[]int32, i int) bool {
	s := *skipped
	if len(s) == 0 || int(s[0]) != i {
		return false
	}
	for len(s) > 0 && int(s[0]) == i {
		s = s[1:]
	}
	*skipped = s
	return true
}

// sortedSkip returns the non-negative entries of skip in increasing order
// (a copy when they must be sorted; skip itself is never modified).
func sortedSkip(skip []int32) []int32 {
	if slices.IsSorted(skip) {
		for len(skip) > 0 && skip[0] < 0 {
			skip = skip[1:]
		}
		return skip
	}
	s := slices.Clone(skip)
	slices.Sort(s)
	for len(s) > 0 && s[0] < 0 {
		s = s[1:]
	}
	return s
}
