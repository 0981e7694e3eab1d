//go:build !linux

package bench

import "time"

// ClockName says what ThreadTime measures.
const ClockName = "wall time (no per-thread CPU clock on this OS)"

var start = time.Now()

// ThreadTime falls back to the monotonic wall clock where the per-thread
// CPU clock is not wired up.
func ThreadTime() time.Duration { return time.Since(start) }
