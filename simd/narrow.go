package simd

import (
	"math/bits"
	"unsafe"
)

// Code tables come in two layouts, chosen by the code width:
//
//   - wide, 64 bits and more: code i is the bits/64 words
//     table[i*w : (i+1)*w];
//   - narrow, 8, 16 or 32 bits: 64/bits codes share a word, code i in
//     bits [(i%k)*bits, (i%k+1)*bits) of table[i/k], k = 64/bits.
//
// A decode step reads every cached code once, so the narrow layout cuts
// the policy's memory traffic per cached token from 8 bytes of code to
// bits/8. Probes and the codes the hash writes are wide (one word for
// 8 to 64 bits, the code in the low bits, the rest zero) in both cases.

// Narrow reports whether bits-bit codes use the narrow layout.
func Narrow(bits int) bool { return bits < 64 }

// CodeWords is the number of table words that n codes of bits bits take.
func CodeWords(bits, n int) int {
	if Narrow(bits) {
		return (n*bits + 63) / 64
	}
	return n * (bits / 64)
}

// codeSpan returns the words of table that hold codes [i0, i1); for narrow
// codes i0*bits must be a multiple of 64 (a block boundary).
func codeSpan(table []uint64, bits, i0, i1 int) []uint64 {
	if Narrow(bits) {
		return table[i0*bits/64 : CodeWords(bits, i1)]
	}
	w := bits / 64
	return table[i0*w : i1*w]
}

// hammingNarrowGeneric sets dist[i] to the sum over probes of the Hamming
// distance between code i of a narrow table of bits-bit codes and the
// probe's low bits bits (the probe's other bits are ignored).
func hammingNarrowGeneric(dist []uint32, table []uint64, bitsPer int, probes []uint64) {
	k := 64 / bitsPer
	shift := uint(bits.TrailingZeros(uint(k))) // k is a power of two: no division per code
	mask := uint64(1)<<uint(bitsPer) - 1
	for i := range dist {
		c := table[i>>shift] >> (uint(i&(k-1)) * uint(bitsPer)) & mask
		var d int
		for _, p := range probes {
			d += bits.OnesCount64(c ^ (p & mask))
		}
		dist[i] = uint32(d)
	}
}

// hammingCodes is Hamming or HammingNarrow, as bits says, with k's kernels.
func hammingCodes(ham func([]uint32, []uint64, int, []uint64), narrow func([]uint32, []uint64, int, []uint64),
	dist []uint32, table []uint64, bits int, probes []uint64) {
	if Narrow(bits) {
		narrow(dist, table, bits, probes)
		return
	}
	ham(dist, table, bits/64, probes)
}

// GetCode returns code i of a table of bits-bit codes in its wide form
// (into dst, bits/64 words, or one word for narrow codes).
func GetCode(dst, table []uint64, bits, i int) {
	if Narrow(bits) {
		k := 64 / bits
		dst[0] = table[i/k] >> (uint(i%k) * uint(bits)) & (uint64(1)<<uint(bits) - 1)
		return
	}
	w := bits / 64
	copy(dst[:w], table[i*w:(i+1)*w])
}

// PutCode stores the wide code src as code i of a table of bits-bit codes.
// A narrow code's bits above its width must be zero.
func PutCode(table, src []uint64, bits, i int) {
	if Narrow(bits) {
		w, sh := narrowAt(bits, i)
		if littleEndian {
			// The code's own bytes, stored without reading the word: the
			// token-mode step puts one code in a random slot of each head's
			// table, hundreds a step, and reading the word first waited for
			// its cache line every time (a store does not wait).
			p := unsafe.Add(unsafe.Pointer(&table[w]), sh/8)
			switch bits {
			case 8:
				*(*uint8)(p) = uint8(src[0])
				return
			case 16:
				*(*uint16)(p) = uint16(src[0])
				return
			case 32:
				*(*uint32)(p) = uint32(src[0])
				return
			}
		}
		mask := (uint64(1)<<uint(bits) - 1) << sh
		table[w] = table[w]&^mask | src[0]<<sh&mask
		return
	}
	w := bits / 64
	copy(table[i*w:(i+1)*w], src[:w])
}

// narrowAt returns the word of a narrow table that holds code i and the
// code's shift in it; for the widths engines use (powers of two) without
// a division.
func narrowAt(width, i int) (word int, shift uint) {
	if width > 0 && width&(width-1) == 0 {
		lk := uint(6 - bits.TrailingZeros(uint(width))) // log2(64/width)
		return int(uint(i) >> lk), uint(i&(1<<lk-1)) * uint(width)
	}
	k := 64 / width
	return i / k, uint(i%k) * uint(width)
}

// littleEndian: a narrow code's bits [sh, sh+bits) of its word are then its
// bytes sh/8 on, so PutCode can store them alone.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()
