//go:build !linux

package policy

// readPhysicalMemory does not know the machine's memory outside Linux: the
// engine is then bounded by memory_cap_bytes alone (hashevict.h says so).
func readPhysicalMemory() uint64 { return 0 }
