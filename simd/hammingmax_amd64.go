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
	many     [6]func(table *byte, from, to int, m, planes *uint64, np int, dbl uint64, skip *int32, nskip int) uint32
	find     [6]func(table *byte, from, to int, m, planes *uint64, np int, dbl uint64, target uint32) int
	vecBytes int
	// argmax, where the set has them, are the maxima of 128- and 256-bit
	// codes against one probe with the blocks where each lane first
	// reached its maximum (see argmaxRange).
	argmax [2]func(table *byte, from, to int, probe *uint64, out *[16]uint64)
}

var (
	fusedAVX512 = fusedKerns{
		one: [6]func(*byte, int, int, *uint64, *int32, int) uint32{hammingMax8AVX512, hammingMax16AVX512, hammingMax32AVX512,
			hammingMax64AVX512, hammingMax128AVX512, hammingMax256AVX512},
		many: [6]func(*byte, int, int, *uint64, *uint64, int, uint64, *int32, int) uint32{hammingMaxN8AVX512, hammingMaxN16AVX512, hammingMaxN32AVX512,
			hammingMaxN64AVX512, hammingMaxN128AVX512, hammingMaxN256AVX512},
		find: [6]func(*byte, int, int, *uint64, *uint64, int, uint64, uint32) int{hammingFind8AVX512, hammingFind16AVX512, hammingFind32AVX512,
			hammingFind64AVX512, hammingFind128AVX512, hammingFind256AVX512},
		vecBytes: 64,
		argmax:   [2]func(*byte, int, int, *uint64, *[16]uint64){hammingArgmax128AVX512, hammingArgmax256AVX512},
	}
	fusedAVX2 = fusedKerns{
		one: [6]func(*byte, int, int, *uint64, *int32, int) uint32{hammingMax8AVX2, hammingMax16AVX2, hammingMax32AVX2,
			hammingMax64AVX2, hammingMax128AVX2, hammingMax256AVX2},
		many: [6]func(*byte, int, int, *uint64, *uint64, int, uint64, *int32, int) uint32{hammingMaxN8AVX2, hammingMaxN16AVX2, hammingMaxN32AVX2,
			hammingMaxN64AVX2, hammingMaxN128AVX2, hammingMaxN256AVX2},
		find: [6]func(*byte, int, int, *uint64, *uint64, int, uint64, uint32) int{hammingFind8AVX2, hammingFind16AVX2, hammingFind32AVX2,
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
	sc := blockScratchPool.Get().(*blockScratch)
	defer blockScratchPool.Put(sc)
	ps := newProbeSet(&sc.planes, width, probes, np)
	return ps.dist(k.maxRange(table, width, 0, n, &ps, nil)), true
}

// maxRange is the largest level (see probeSet) over codes [c0, c1) of
// table, the codes in skip (sorted, every entry >= c0) counting as 0; the
// arguments are as hammingMaxArgs accepts for a table of at least c1
// codes.
func (k *fusedKerns) maxRange(table []uint64, width, c0, c1 int, ps *probeSet, skip []int32) uint32 {
	cb := width / 8
	if (c1-c0)*cb < k.vecBytes {
		return hammingMaxGo(table, width, c0, c1, ps, skip)
	}
	w := bits.TrailingZeros(uint(width)) - 3 // widths 8, 16, ..., 256 as 0..5
	base := (*byte)(unsafe.Pointer(&table[0]))
	var sp *int32
	if len(skip) > 0 {
		sp = &skip[0]
	}
	if ps.np == 1 {
		return k.one[w](base, c0*cb, c1*cb, &ps.probes[0], sp, len(skip))
	}
	return k.many[w](base, c0*cb, c1*cb, &ps.m[0], &ps.planes[0], ps.nplanes, ps.dbl, sp, len(skip))
}

// findRange is the first code of [c0, c1) at level target, or -1; the
// arguments are as for maxRange.
func (k *fusedKerns) findRange(table []uint64, width, c0, c1 int, ps *probeSet, target uint32) int {
	if uint64(target) > uint64(ps.np)*uint64(width) {
		return -1 // no level is that large; the kernels compare only the low bits of a byte or word sum
	}
	cb := width / 8
	if (c1-c0)*cb < k.vecBytes {
		for i := c0; i < c1; i++ {
			if ps.level(table, width, i) == target {
				return i
			}
		}
		return -1
	}
	w := bits.TrailingZeros(uint(width)) - 3
	base := (*byte)(unsafe.Pointer(&table[0]))
	return k.find[w](base, c0*cb, c1*cb, &ps.m[0], &ps.planes[0], ps.nplanes, ps.dbl, target)
}

// A probeSet is the np probes of a Farthest call in the form the kernels
// take. One probe is taken as it is: the level of a code is its Hamming
// distance. Several are turned into planes, which need fewer popcounts
// than probes (2 for 4 probes, 3 for 8): at bit b of the codes, u_b of
// the np probes are set, so a code with bit b equal to the probes'
// majority M_b differs from min(u_b, np-u_b) of them and one with the
// other bit from that many plus a_b = |np - 2u_b|. The summed distance of
// a code c is then
//
//	base + Σ_b a_b·[c_b ≠ M_b] = base + Σ_k 2^k·popcount((c ^ M) & A_k),
//
// base = Σ_b min(u_b, np-u_b), A_k the bit plane k of the a_b. The
// kernels compute the level s = Σ_k 2^(k-k0)·popcount((c ^ M) & A_k) over
// the planes from the highest, k1, down to the lowest, k0 (every a_b is a
// multiple of 2^k0), by doubling (or, for two planes that never share a
// bit, as popcount((c ^ M) & A_k1) + popcount((c ^ M) & (A_k1 | A_k0))
// without doubling): the distance is base + s<<k0, strictly increasing in
// s, so the largest level and its first index are those of the distance. A level never exceeds its distance, so the probe limits
// of hammingMaxProbeLimit hold for levels too.
type probeSet struct {
	np             int
	probes         []uint64 // np == 1: the probe, for the maximum kernels
	m, planes      []uint64 // max(1, bits/64) words each; nplanes planes from k1 down to k0 (one of all ones for np == 1)
	nplanes        int
	dbl            uint64 // bit p set: the level is doubled before plane p is added
	base           uint32
	shift          uint // k0
	words, widthIn int
}

// maxPlanes bounds the planes of a probeSet: a_b <= np < 2^25 (the probe
// limit for 256-bit codes is 2^24-1), so at most 25 levels, of at most 4
// words.
const maxPlanes = 25

var _ = [32 - (maxPlanes + 2)]int{} // the two's complement levels of newProbeSet fit its arrays

// newProbeSet prepares np probes (as hammingMaxArgs counts them) of
// width-bit codes; buf holds the planes and the majority.
func newProbeSet(buf *[(maxPlanes + 1) * 4]uint64, width int, probes []uint64, np int) probeSet {
	ps := probeSet{np: np, probes: probes, words: max(1, width/64), widthIn: min(width, 64)}
	w := ps.words
	if np == 1 { // for the search kernels: x = code ^ probe, all of it counted
		ps.m, ps.planes, ps.nplanes = buf[:w], buf[w:2*w], 1
		copy(ps.m, probes)
		for i := range ps.planes {
			ps.planes[i] = ^uint64(0)
		}
		return ps
	}
	// The count of set bits per bit position, bit-sliced: slice j of word
	// i holds bit j of the counts of that word's 64 positions.
	nbits := bits.Len(uint(np))
	var slices [4][maxPlanes]uint64
	for p := 0; p < np; p++ {
		for i := 0; i < w; i++ {
			carry := probes[p*w+i]
			for j := 0; j < nbits && carry != 0; j++ {
				slices[i][j], carry = slices[i][j]^carry, slices[i][j]&carry
			}
		}
	}
	// Word-parallel, per bit position: d = 2u - np in two's complement
	// (L bits hold ±np), the majority where d > 0, a = |d|, and the sum of
	// the a_b, from which base = Σ_b (np - a_b)/2.
	L := nbits + 2
	mask := ^uint64(0) >> uint(64-ps.widthIn)
	var planeA [4][32]uint64
	var levels uint64 // bit k set: plane k is not empty
	for i := 0; i < w; i++ {
		var d [32]uint64
		borrow := uint64(0)
		for j := 0; j < L; j++ {
			var u uint64 // bit j of 2u
			if j > 0 && j-1 < nbits {
				u = slices[i][j-1]
			}
			n := -uint64(np >> uint(j) & 1) // bit j of np, as a mask
			d[j] = u ^ n ^ borrow
			borrow = ^u&(n|borrow) | n&borrow
		}
		neg := d[L-1]
		var nz uint64
		carry := neg // |d| = d where d >= 0, ^d + 1 where d < 0
		sumA := 0
		for j := 0; j < L; j++ {
			nz |= d[j]
			x := d[j] ^ neg
			planeA[i][j] = (x ^ carry) & mask
			carry &= x
			if planeA[i][j] != 0 {
				levels |= 1 << uint(j)
				sumA += bits.OnesCount64(planeA[i][j]) << uint(j)
			}
		}
		buf[i] = nz &^ neg & mask // the majority: d > 0
		ps.base += uint32((ps.widthIn*np - sumA) / 2)
	}
	ps.m = buf[:w]
	if levels == 0 { // every probe equal: every code at distance base
		ps.planes = buf[w : 2*w]
		clear(ps.planes)
		ps.nplanes = 1
		return ps
	}
	k0, k1 := bits.TrailingZeros64(levels), bits.Len64(levels)-1
	ps.shift = uint(k0)
	ps.nplanes = k1 - k0 + 1
	ps.planes = buf[w : w+ps.nplanes*w]
	ps.dbl = ^uint64(1) // Horner: double before every plane but the first
	for l := 0; l < ps.nplanes; l++ {
		for i := 0; i < w; i++ {
			ps.planes[l*w+i] = planeA[i][k1-l]
		}
	}
	// Two planes whose bits never meet (a_b>>k0 in {0, 1, 2}: 4 probes,
	// say) are counted as A_hi and A_hi | A_lo, with no doubling: the same
	// level, one vector add fewer per plane and vector.
	if ps.nplanes == 2 {
		disjoint := true
		for i := 0; i < w; i++ {
			disjoint = disjoint && ps.planes[i]&ps.planes[w+i] == 0
		}
		if disjoint {
			for i := 0; i < w; i++ {
				ps.planes[w+i] |= ps.planes[i]
			}
			ps.dbl = 0
		}
	}
	return ps
}

// dist is the distance of a code at level s.
func (ps *probeSet) dist(s uint32) uint32 { return ps.base + s<<ps.shift }

// level is the level of code i of table.
func (ps *probeSet) level(table []uint64, width, i int) uint32 {
	if ps.np == 1 {
		return codeDist(table, width, i, ps.probes)
	}
	var code [4]uint64
	GetCode(code[:], table, width, i)
	var s uint32
	for l := 0; l < ps.nplanes; l++ {
		c := 0
		for j := 0; j < ps.words; j++ {
			c += bits.OnesCount64((code[j] ^ ps.m[j]) & ps.planes[l*ps.words+j])
		}
		s = s<<(ps.dbl>>uint(l)&1) + uint32(c)
	}
	return s
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
func hammingMaxGo(table []uint64, width, c0, c1 int, ps *probeSet, skip []int32) uint32 {
	var m uint32
	for i := c0; i < c1; i++ {
		if skipNext(&skip, i) {
			continue
		}
		m = max(m, ps.level(table, width, i))
	}
	return m
}

// argmaxBlock is the bytes of the blocks in which the argmax kernels note
// where each lane reached its maximum (_gen's argmaxBlock).
const argmaxBlock = 2048

// hasArgmax says whether the set has an argmax kernel for width-bit codes.
func (k *fusedKerns) hasArgmax(width int) bool {
	return (width == 128 || width == 256) && k.argmax[width/256] != nil
}

// argmaxRange returns the largest distance between one probe (ps, of one
// probe) and the codes [c0, c1) of table (c1 > c0, none skipped; width 128
// or 256, hasArgmax) and the first code at that distance: whole passes of
// 256 bytes by the kernel, which keeps per lane its maximum and the block
// of argmaxBlock bytes where it first reached it; the first code at the
// largest is in the earliest of the blocks of the lanes at the largest,
// and a search of that block finds it. The few codes after the passes are
// done here.
func (k *fusedKerns) argmaxRange(table []uint64, width, c0, c1 int, ps *probeSet, out *[16]uint64) (uint32, int) {
	cb := width / 8
	best, at := uint64(0), -1
	whole := c0 + (c1-c0)&^(256/cb-1)
	if whole > c0 {
		k.argmax[width/256]((*byte)(unsafe.Pointer(&table[0])), c0*cb, whole*cb, &ps.probes[0], out)
		block := -1
		for l := 0; l < 8; l++ {
			b := int(out[8+l])
			if block < 0 || out[l] > best || out[l] == best && b < block {
				best, block = out[l], b
			}
		}
		b0 := block / cb
		at = k.findRange(table, width, b0, min(b0+argmaxBlock/cb, whole), ps, uint32(best))
	}
	for i := whole; i < c1; i++ {
		if d := uint64(codeDist(table, width, i, ps.probes)); at < 0 || d > best {
			best, at = d, i
		}
	}
	return uint32(best), at
}
