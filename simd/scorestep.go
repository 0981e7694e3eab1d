package simd

// scoreStepGeneric folds one step into the scores of a code table and
// returns the entry to evict: it leaves score and count as
//
//	dist := make([]uint32, len(score))
//	Hamming(dist, table, bits/64, probes) // HammingNarrow(dist, table, bits, probes) below 64 bits
//	Update(score, count, dist, n, mode, decay)
//
// does, and returns what ArgmaxIn returns on the updated scores when the
// entries listed in skip are the ones out of range (skip may repeat entries
// and list entries outside the table; it is not modified). The accelerated
// sets run it in blocks of scoreBlock entries, so that the distances stay
// in L1 and the table, the scores and the counts are each read from memory
// once per step instead of up to three times; the protected entries are
// named by the caller instead of found by reading every entry's position.
// count is only read in the accumulated mode.
func scoreStepGeneric(score []float32, count []uint32, table []uint64, bits int, probes []uint64, n uint32, mode int, decay float32, skip []int32) int {
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
	// ArgmaxIn's loop, the skipped entries left out.
	skipped := sortedSkip(skip)
	best := -1
	var bestScore float32
	for i, s := range score {
		if skipNext(&skipped, i) {
			continue
		}
		if best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// scoreBlock is the number of entries per block of ScoreStep: 4 KiB of
// distances and scores, and 8 to 32 KiB of codes.
const scoreBlock = 1024
