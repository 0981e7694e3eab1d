package bench

import (
	"syscall"
	"time"
	"unsafe"
)

// ClockName says what ThreadTime measures.
const ClockName = "thread CPU time (CLOCK_THREAD_CPUTIME_ID)"

// ThreadTime returns the CPU time the calling OS thread has used. It does
// not advance while the thread waits for a core, which on a shared
// machine is most of the noise of a wall clock; stalls on memory count,
// as the thread holds its core through them. The caller locks its
// goroutine to the thread (runtime.LockOSThread).
func ThreadTime() time.Duration {
	const clockThreadCPUTime = 3
	var ts syscall.Timespec
	// The vDSO does not serve per-thread clocks, so this is a system call
	// (~0.3 µs): callers time batches, not single short calls.
	if _, _, e := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		panic("clock_gettime(CLOCK_THREAD_CPUTIME_ID): " + e.Error())
	}
	return time.Duration(ts.Nano())
}
