package main

import (
	"runtime"
	"sync/atomic"
	"time"
)

// A host that calls the library from its own thread at a steady rhythm (the
// llama.cpp fork: one hashevict_place per layer, ~0.5 ms of C between calls)
// borrows a Go processor (P) for each call and leaves it marked "in a
// syscall" on return, but never switches goroutines on it, so the P's
// scheduling tick never advances. Once the tick is 10 ms old, the runtime's
// monitor thread (sysmon) treats the P as a goroutine that will not yield:
// at every wake-up it takes the P back from the C thread, which counts as
// work done, so sysmon never backs off from its shortest sleep (20 µs) and
// the next call must wake it again. Measured: 4-13 % of the caller's CPU
// time on that thread with integrations/llamacpp-fork/place_pattern.c, ~4.5 %
// in the fork at one thread (the garbage collector ran once per run: it is
// not the cause; docs/llamacpp-fork.md, What it costs). One runtime.Gosched at least every yieldEvery advances the
// tick; it costs a hand-off of the P to another thread and back (tens of
// µs), a fraction of a percent at this rate, and sysmon sleeps up to 10 ms
// again. The rhythm is the runtime's (sysmon's forcePreemptNS), not an
// API: if it changes, the cost of this is the yields alone.
const yieldEvery = 5 * time.Millisecond

var (
	schedEpoch = time.Now()
	lastYield  atomic.Int64 // nanoseconds since schedEpoch
)

// yieldIfStale runs at the top of every export that takes an engine.
func yieldIfStale() {
	if dueYield(int64(time.Since(schedEpoch)), &lastYield) {
		runtime.Gosched()
	}
}

// dueYield reports whether a yield is due at now, claiming it (only one of
// several concurrent callers gets true).
func dueYield(now int64, last *atomic.Int64) bool {
	prev := last.Load()
	return now-prev >= int64(yieldEvery) && last.CompareAndSwap(prev, now)
}
