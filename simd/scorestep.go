package simd

// scoreStepGeneric folds one step into the scores of a code table and
// returns the entry to evict. It returns exactly what
//
//	dist := make([]uint32, len(score))
//	Hamming(dist, table, bits/64, probes) // HammingNarrow(dist, table, bits, probes) below 64 bits
//	Update(score, count, dist, n, mode, decay)
//	return ArgmaxIn(score, pos, lo, hi) // -1 when pos is nil
//
// returns, and leaves score and count in the same state. The accelerated
// sets run it in blocks of scoreBlock entries, so that the distances stay
// in L1 and the table, the scores, the counts and the positions are each
// read from memory once per step instead of up to three times. pos is nil
// or as long as score; count is only read in the accumulated mode.
func scoreStepGeneric(score []float32, count []uint32, table []uint64, bits int, probes []uint64, n uint32, mode int, decay float32, pos []int32, lo, hi int32) int {
	var buf [scoreBlock]uint32
	m := len(score)
	for b0 := 0; b0 < m; b0 += scoreBlock {
		b1 := min(b0+scoreBlock, m)
		dist := buf[:b1-b0]
		hammingCodes(hammingGeneric, hammingNarrowGeneric, dist, codeSpan(table, bits, b0, b1), bits, probes)
		var cnt []uint32
		if mode == ScoreAccumulated {
			cnt = count[b0:b1]
		}
		updateGeneric(score[b0:b1], cnt, dist, n, mode, decay)
	}
	if pos == nil {
		return -1
	}
	return argmaxRangeGeneric(score, pos, lo, hi)
}

// scoreBlock is the number of entries per block of ScoreStep: 4 KiB of
// distances and scores, and 8 to 32 KiB of codes.
const scoreBlock = 1024
