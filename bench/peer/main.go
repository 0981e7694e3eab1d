// Command peer is a benchmark-only shared library, never shipped: it lets
// bench/faiss_peer.py call simd.Farthest (the kernel of the instant
// score's decode step) from the same Python process that calls FAISS, so
// that both are timed alike, by that thread's CPU time, in paired rounds.
// It is not an export of libhashevict, whose C API has no entry point for
// a bare kernel.
//
//	go build -buildmode=c-shared -o build/bench/libhevpeer.so ./bench/peer
package main

/*
#include <stdint.h>
*/
import "C"

import (
	"unsafe"

	"github.com/hashevict/hashevict/bench"
	"github.com/hashevict/hashevict/simd"
)

func main() {}

// hevpeer_use makes the kernel set name active ("avx512", "avx2",
// "generic"); 0 on success, -1 when this CPU does not run it.
//
//export hevpeer_use
func hevpeer_use(name *C.char) C.int {
	if simd.Use(C.GoString(name)) != nil {
		return -1
	}
	return 0
}

// hevpeer_farthest returns simd.Farthest over the n codes of bits bits at
// table (laid out as simd.CodeWords says: for 8-, 16-, 32-bit codes an
// array of uint8/16/32, for wider ones bits/64 words a code; the same
// bytes as a FAISS binary code array) against np probes (max(1, bits/64)
// words each), with no entry skipped: the index of the first code at the
// largest summed Hamming distance. -2 when the arguments are unusable.
//
//export hevpeer_farthest
func hevpeer_farthest(table unsafe.Pointer, bits, n C.int64_t, probes unsafe.Pointer, np C.int64_t) C.int64_t {
	if hevpeer_prepare(table, bits, n, probes, np) != 0 {
		return -2
	}
	return hevpeer_run()
}

// The call hevpeer_prepare sets up and hevpeer_run makes: a Python
// timing loop then pays one argument-free call into Go (~0.2 µs) instead
// of ctypes converting five arguments (~0.5 µs more), as FAISS's side is
// called with its SWIG pointers made once.
var prepared struct {
	table, probes []uint64
	bits, n       int
}

// hevpeer_prepare checks and keeps the arguments of hevpeer_farthest for
// hevpeer_run; 0, or -2 when they are unusable. The buffers must outlive
// the runs.
//
//export hevpeer_prepare
func hevpeer_prepare(table unsafe.Pointer, bits, n C.int64_t, probes unsafe.Pointer, np C.int64_t) C.int64_t {
	b, cn, p := int(bits), int(n), int(np)
	switch b {
	case 8, 16, 32, 64, 128, 256:
	default:
		return -2
	}
	if table == nil || probes == nil || cn < 1 || p < 1 || cn > 1<<34 || p > 1<<20 {
		return -2
	}
	prepared.table = unsafe.Slice((*uint64)(table), simd.CodeWords(b, cn))
	prepared.probes = unsafe.Slice((*uint64)(probes), p*max(1, b/64))
	prepared.bits, prepared.n = b, cn
	return 0
}

// hevpeer_run returns Farthest for the prepared call, -2 when there is
// none or it panicked.
//
//export hevpeer_run
func hevpeer_run() (r C.int64_t) {
	defer func() {
		if recover() != nil {
			r = -2
		}
	}()
	if prepared.table == nil {
		return -2
	}
	return C.int64_t(simd.Active().Farthest(prepared.table, prepared.bits, prepared.probes, prepared.n, nil))
}

// hevpeer_nop does nothing: the cost of a call through the binding alone.
//
//export hevpeer_nop
func hevpeer_nop() C.int64_t { return 0 }

// hevpeer_read reads the prepared table with this machine's last read loop
// (bench.ReadLoops: the AVX-512 loop with a PREFETCHT1 4 KiB ahead where
// the CPU has it) and returns its sum: the floor for any kernel that must
// see every byte of the table, timed in the same rounds as both sides.
//
//export hevpeer_read
func hevpeer_read() C.int64_t {
	if prepared.table == nil {
		return -2
	}
	return C.int64_t(bench.ReadLoops[len(bench.ReadLoops)-1].Sum(prepared.table) & 0x7fffffff)
}
