package simd

import "unsafe"

// AddSmallU32 adds src into dst element by element (dst[i] += src[i] for
// i < len(src); dst must be at least as long) for sums that stay below
// 2^32, two elements per 64-bit add: with no sum reaching 2^32 no carry
// crosses from one element into the next, so the result is the plain
// loop's. The token-mode decode step adds every head's distances into a
// running total this way; Go does not vectorise the plain loop, and the
// adds were as costly as the Hamming kernels they follow.
func AddSmallU32(dst, src []uint32) {
	n := len(src)
	dst = dst[:n]
	i := 0
	if n >= 2 && uintptr(unsafe.Pointer(&dst[0]))%8 == 0 && uintptr(unsafe.Pointer(&src[0]))%8 == 0 {
		w := n / 2
		d := unsafe.Slice((*uint64)(unsafe.Pointer(&dst[0])), w)
		s := unsafe.Slice((*uint64)(unsafe.Pointer(&src[0])), w)
		s = s[:len(d)]
		j := 0
		for ; j+4 <= len(d); j += 4 {
			d[j] += s[j]
			d[j+1] += s[j+1]
			d[j+2] += s[j+2]
			d[j+3] += s[j+3]
		}
		for ; j < len(d); j++ {
			d[j] += s[j]
		}
		i = 2 * w
	}
	for ; i < n; i++ {
		dst[i] += src[i]
	}
}
