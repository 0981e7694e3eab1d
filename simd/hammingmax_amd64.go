//go:build !noasm

package simd

import (
	"math/bits"
	"unsafe"
)

// Fused Hamming maximum and search (see _gen/hammingmax.go): the largest
// sum of distances between a set of probes and a range of codes, skipped
// codes counting as 0, the codes streamed once and no distance stored
// (hammingMax<bits><set> for one probe, hammingMaxN<bits><set> for
// several); and the first code of a range at a given distance
// (hammingFind<bits><set>). The kernels take byte ranges of at least one
// vector; shorter ranges are done here in Go.

// fusedKerns are one set's fused kernels by code width (widthIndex), and
// the bytes of its vectors.
type fusedKerns struct {
	one      [6]func(table *byte, from, to int, probe *uint64, skip *int32, nskip int) uint32
	many     [6]func(table *byte, from, to int, probes *uint64, np int, skip *int32, nskip int) uint32
	find     [6]func(table *byte, from, to int, probes *uint64, np int, target uint32) int
	vecBytes int
}

var (
	fusedAVX512 = fusedKerns{
		one: [6]func(*byte, int, int, *uint64, *int32, int) uint32{hammingMax8AVX512, hammingMax16AVX512, hammingMax32AVX512,
			hammingMax64AVX512, hammingMax128AVX512, hammingMax256AVX512},
		many: [6]func(*byte, int, int, *uint64, int, *int32, int) uint32{hammingMaxN8AVX512, hammingMaxN16AVX512, hammingMaxN32AVX512,
			hammingMaxN64AVX512, hammingMaxN128AVX512, hammingMaxN256AVX512},
		find: [6]func(*byte, int, int, *uint64, int, uint32) int{hammingFind8AVX512, hammingFind16AVX512, hammingFind32AVX512,
			hammingFind64AVX512, hammingFind128AVX512, hammingFind256AVX512},
		vecBytes: 64,
	}
	fusedAVX2 = fusedKerns{
		one: [6]func(*byte, int, int, *uint64, *int32, int) uint32{hammingMax8AVX2, hammingMax16AVX2, hammingMax32AVX2,
			hammingMax64AVX2, hammingMax128AVX2, hammingMax256AVX2},
		many: [6]func(*byte, int, int, *uint64, int, *int32, int) uint32{hammingMaxN8AVX2, hammingMaxN16AVX2, hammingMaxN32AVX2,
			hammingMaxN64AVX2, hammingMaxN128AVX2, hammingMaxN256AVX2},
		find: [6]func(*byte, int, int, *uint64, int, uint32) int{hammingFind8AVX2, hammingFind16AVX2, hammingFind32AVX2,
			hammingFind64AVX2, hammingFind128AVX2, hammingFind256AVX2},
		vecBytes: 32,
	}
)

// fusedFor returns the kernels the avx512 set uses for bits-bit codes:
// VPOPCNTB/W are AVX512_BITALG, and without it the AVX2 kernels count 8-
// and 16-bit codes (every AVX-512 CPU the set runs on has AVX2), so the
// set never falls back to the distance kernels.
func fusedAVX512For(bits int) *fusedKerns {
	if bits <= 16 && !hasBITALG {
		return &fusedAVX2
	}
	return &fusedAVX512
}

// hammingMaxAVX512Go returns the largest distance between codes [0, n) of
// table (bits-bit codes in the layout of CodeWords: wide for 64/128/256
// bits, narrow for 8/16/32) and the probes, the distance of a code being
// the sum of its Hamming distances to each probe (as Hamming and
// HammingNarrow compute it), and ok = false, computing nothing, for a call
// hammingMaxArgs rejects. probes holds np >= 1 wide probes of
// max(1, bits/64) words each (a narrow probe is one word, of which only
// the low bits bits count; higher bits are ignored), np at most
// hammingMaxProbeLimit(bits). n = 0 gives (0, true).
func hammingMaxAVX512Go(table []uint64, bits, n int, probes []uint64) (uint32, bool) {
	return hammingMaxWith(table, bits, n, probes, fusedAVX512For(bits))
}

// hammingMaxAVX2Go is hammingMaxAVX512Go with the AVX2 kernels.
func hammingMaxAVX2Go(table []uint64, bits, n int, probes []uint64) (uint32, bool) {
	return hammingMaxWith(table, bits, n, probes, &fusedAVX2)
}

func hammingMaxWith(table []uint64, width, n int, probes []uint64, k *fusedKerns) (uint32, bool) {
	if n == 0 {
		return 0, true
	}
	np := hammingMaxArgs(table, width, n, probes)
	if np == 0 {
		return 0, false
	}
	return k.maxRange(table, width, 0, n, probes, np, nil), true
}

// maxRange is the largest distance over codes [c0, c1) of table, the codes
// in skip (sorted, every entry >= c0) counting as 0; the arguments are as
// hammingMaxArgs accepts for a table of at least c1 codes, np probes.
func (k *fusedKerns) maxRange(table []uint64, width, c0, c1 int, probes []uint64, np int, skip []int32) uint32 {
	cb := width / 8
	if (c1-c0)*cb < k.vecBytes {
		return hammingMaxGo(table, width, c0, c1, probes, skip)
	}
	w := bits.TrailingZeros(uint(width)) - 3 // widths 8, 16, ..., 256 as 0..5
	base := (*byte)(unsafe.Pointer(&table[0]))
	var sp *int32
	if len(skip) > 0 {
		sp = &skip[0]
	}
	if np == 1 {
		return k.one[w](base, c0*cb, c1*cb, &probes[0], sp, len(skip))
	}
	return k.many[w](base, c0*cb, c1*cb, &probes[0], np, sp, len(skip))
}

// findRange is the first code of [c0, c1) at distance target, or -1; the
// arguments are as for maxRange.
func (k *fusedKerns) findRange(table []uint64, width, c0, c1 int, probes []uint64, np int, target uint32) int {
	if uint64(target) > uint64(np)*uint64(width) {
		return -1 // no distance is that large; the kernels compare only the low bits of a byte or word sum
	}
	cb := width / 8
	if (c1-c0)*cb < k.vecBytes {
		for i := c0; i < c1; i++ {
			if codeDist(table, width, i, probes) == target {
				return i
			}
		}
		return -1
	}
	w := bits.TrailingZeros(uint(width)) - 3
	return k.find[w]((*byte)(unsafe.Pointer(&table[0])), c0*cb, c1*cb, &probes[0], np, target)
}

// hammingMaxProbeLimit is the most probes the fused kernels sum for
// bits-bit codes (bits 8, 16, 32, 64, 128 or 256): the kernels sum a code's
// distances in the element type of its counts, so np*bits, the largest
// sum, must fit a byte for 8-bit codes (np <= 31), a word for 16-bit codes
// (np <= 4095) and a uint32 otherwise (the result; the AVX2 wide kernels
// also take dword maxima of their qword sums): np <= (2^32-1)/bits, from
// 134217727 for 32-bit codes to 16777215 for 256-bit codes.
func hammingMaxProbeLimit(bits int) int {
	switch bits {
	case 8:
		return (1<<8 - 1) / 8
	case 16:
		return (1<<16 - 1) / 16
	}
	return (1<<32 - 1) / bits
}

// hammingMaxArgs returns the number of probes, np, when the fused kernels
// take a call with n > 0, and 0 when they do not. They take it when bits
// is 8, 16, 32, 64, 128 or 256, table holds CodeWords(bits, n) words and
// probes np >= 1 whole probes of max(1, bits/64) words, np at most
// hammingMaxProbeLimit(bits). The caller's distance path handles any
// other call (as the generic kernels do, panics included).
func hammingMaxArgs(table []uint64, bits, n int, probes []uint64) int {
	switch bits {
	case 8, 16, 32, 64, 128, 256:
	default:
		return 0
	}
	// n <= len(table)*64/bits is CodeWords(bits, n) <= len(table), and
	// n*bits cannot overflow.
	if n <= 0 || uint(n) > uint(len(table))*64/uint(bits) {
		return 0
	}
	pw := max(1, bits/64)
	np := len(probes) / pw
	if np == 0 || len(probes)%pw != 0 || np > hammingMaxProbeLimit(bits) {
		return 0
	}
	return np
}

// codeDist is the summed distance of code i to the probes.
func codeDist(table []uint64, width, i int, probes []uint64) uint32 {
	d := 0
	if Narrow(width) {
		k := 64 / width
		mask := uint64(1)<<uint(width) - 1
		c := table[i/k] >> (uint(i%k) * uint(width)) & mask
		for _, p := range probes {
			d += bits.OnesCount64(c ^ p&mask)
		}
		return uint32(d)
	}
	w := width / 64
	code := table[i*w : (i+1)*w]
	for p := 0; p+w <= len(probes); p += w {
		for j, c := range code {
			d += bits.OnesCount64(c ^ probes[p+j])
		}
	}
	return uint32(d)
}

// hammingMaxGo is maxRange in Go, for ranges shorter than a vector.
func hammingMaxGo(table []uint64, width, c0, c1 int, probes []uint64, skip []int32) uint32 {
	var m uint32
	for i := c0; i < c1; i++ {
		if skipNext(&skip, i) {
			continue
		}
		m = max(m, codeDist(table, width, i, probes))
	}
	return m
}
