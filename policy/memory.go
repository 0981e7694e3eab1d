package policy

import (
	"fmt"
	"math"
	"sync"
)

// Memory accounting.
//
// Go cannot recover from a failed allocation: "fatal error: out of memory"
// ends the host process, and on Linux, which overcommits, a huge allocation
// can even succeed and the process be killed later when the pages are
// touched. The header promises that the library never aborts its host, so
// every allocation whose size depends on the parameters or on a call's input
// is sized first, with saturating arithmetic, and counted against the
// engine's bound before it is made; a request that does not fit is refused
// with CodeMemoryCap and nothing is allocated.
//
// The bound (documented with memory_cap_bytes in hashevict.h):
//   - host and device bytes together never exceed memory_cap_bytes when it
//     is not 0;
//   - the host bytes of all the process's engines together never exceed
//     half the physical memory available to the process, whatever the caps.
//     Half, because the Go collector lets the heap grow to about twice the
//     live data before it collects (GOGC = 100), and because the host
//     runtime needs the rest for its weights and its cache. An engine's
//     bytes leave that total when it is closed (hashevict_engine_free), or
//     when the collector finds it unreachable.
//
// What is counted: the projections and the sequence directory (at create),
// each sequence's tables and headers (at add, fork, load, and as token mode
// grows), and the scratch a step allocates (per sequence, the largest chunk
// so far). Figures are the requested sizes; the allocator's rounding and the
// collector's slack are what the factor of two leaves room for.

// MemKind says which memory a reservation is for.
type MemKind int

const (
	MemHost   MemKind = 0 // Go heap: counted against the cap and the physical bound
	MemDevice MemKind = 1 // accelerator memory: counted against the cap only
)

// physicalMemory returns the bytes of memory available to the process, 0
// when unknown. A variable so that tests can stand in a small machine.
var physicalMemory = readPhysicalMemory

// hostTotal is the host memory reserved by every engine of the process.
type hostTotal struct {
	mu    sync.Mutex
	bytes uint64
}

// processHost is the process's total; tests swap in their own so that
// engines left to the collector by other tests do not count.
var processHost = &hostTotal{}

// memAccount holds what an engine has reserved. Mutexes rather than
// atomics: the bound involves several counters, and reservations happen on
// add, fork, load and growth, not on every step. Every method takes mu and
// then proc.mu, so that a check and its reservation are one step for the
// engine and the process alike.
type memAccount struct {
	mu           sync.Mutex
	host, device uint64
	capBytes     uint64     // memory_cap_bytes, 0 = none
	physical     uint64     // as read at create, 0 = unknown
	proc         *hostTotal // the process's total this engine counts in
	closed       bool       // its bytes have left proc
}

func newMemAccount(capBytes uint64) *memAccount {
	return &memAccount{capBytes: capBytes, physical: physicalMemory(), proc: processHost}
}

func (m *memAccount) lock() {
	m.mu.Lock()
	m.proc.mu.Lock()
}

func (m *memAccount) unlock() {
	m.proc.mu.Unlock()
	m.mu.Unlock()
}

// fits reports whether n more bytes of kind fit, and if not, an error naming
// what they were for. m.lock must be held.
func (m *memAccount) fits(kind MemKind, n uint64, what string) error {
	used := satAdd(m.host, m.device)
	if m.capBytes != 0 && n > m.capBytes-min(used, m.capBytes) {
		return errf(CodeMemoryCap, "%s needs %d bytes, more than the %d left under memory_cap_bytes = %d (in use: %d)",
			what, n, m.capBytes-min(used, m.capBytes), m.capBytes, used)
	}
	if half, all := m.physical/2, m.proc.bytes; kind == MemHost && m.physical != 0 && n > half-min(all, half) {
		return errf(CodeMemoryCap, "%s needs %d bytes, more than the %d left under the bound of %d bytes, half of the %d bytes of physical memory available to the process (memory_cap_bytes = %d; in use by this engine: %d, by all engines: %d)",
			what, n, half-min(all, half), half, m.physical, m.capBytes, m.host, all)
	}
	return nil
}

// add counts n host bytes in the engine and, unless it is closed, in the
// process. m.lock must be held.
func (m *memAccount) add(n uint64) {
	m.host += n
	if !m.closed {
		m.proc.bytes += n
	}
}

func (m *memAccount) reserve(kind MemKind, n uint64, what string) error {
	m.lock()
	defer m.unlock()
	if err := m.fits(kind, n, what); err != nil {
		return err
	}
	if kind == MemDevice {
		m.device += n
	} else {
		m.add(n)
	}
	return nil
}

func (m *memAccount) release(kind MemKind, n uint64) {
	m.lock()
	defer m.unlock()
	if kind == MemDevice {
		m.device -= min(n, m.device)
		return
	}
	n = min(n, m.host)
	m.host -= n
	if !m.closed {
		m.proc.bytes -= min(n, m.proc.bytes)
	}
}

// close takes the engine's host bytes out of the process's total, once.
func (m *memAccount) close() {
	m.lock()
	defer m.unlock()
	if !m.closed {
		m.closed = true
		m.proc.bytes -= min(m.host, m.proc.bytes)
	}
}

// Close returns the engine's memory to the process's total, which bounds
// every engine's host memory together (hashevict_engine_free calls it). The
// engine must not be used afterwards. An engine left to the collector is
// taken out of the total when it is collected.
func (e *Engine) Close() { e.mem.close() }

// Reserve counts n bytes that the caller is about to allocate for this
// engine. On error (CodeMemoryCap, naming what and the bytes) nothing is
// counted and the caller must not allocate. Every allocation that grows with
// the parameters or the input goes through it; device memory too (MemDevice),
// so that memory_cap_bytes bounds everything the engine holds.
func (e *Engine) Reserve(kind MemKind, n uint64, what string) error {
	return e.mem.reserve(kind, n, what)
}

// Release returns n bytes reserved with Reserve, once they are freed.
func (e *Engine) Release(kind MemKind, n uint64) {
	e.mem.release(kind, n)
}

// MemoryInUse returns the bytes the engine has reserved.
func (e *Engine) MemoryInUse() (host, device uint64) {
	e.mem.lock()
	defer e.mem.unlock()
	return e.mem.host, e.mem.device
}

// reserveState accounts delta more bytes of sequence state (negative:
// fewer), refusing growth that does not fit; the sequences' total is what
// hashevict_stats reports as state_bytes.
func (e *Engine) reserveState(delta int64, what string) error {
	if delta > 0 {
		if err := e.mem.reserve(MemHost, uint64(delta), what); err != nil {
			return err
		}
	} else {
		e.mem.release(MemHost, uint64(-delta))
	}
	e.stateBytes.Add(delta)
	return nil
}

// fitScratch counts, before a step of n tokens decodes its input, the
// scratch the step allocates beyond what s already holds: a sequence keeps
// the buffers of its largest chunk. Only the part beyond a one-token step
// (which heldBytes includes) is counted here, apart from the state, so that
// a sequence's state_bytes does not depend on the chunks it was fed.
func (e *Engine) fitScratch(s *Sequence, n int) error {
	have := max(s.scratchN, 1)
	if n <= have {
		return nil
	}
	add := e.P.chunkScratchBytes(n) - e.P.chunkScratchBytes(have)
	if err := e.mem.reserve(MemHost, add, fmt.Sprintf("the step scratch of a chunk of %d tokens (sequence %d)", n, s.id)); err != nil {
		return err
	}
	s.scratchN = n
	s.scratchBytes += add
	return nil
}

// holdDecoding counts, before a saved sequence is decoded, the tables it
// will have (the blob says how many slots), until the caller releases them:
// LoadSeq then accounts the sequence as its own. Until it swaps them, the
// decoded sequence and the one it replaces are both held.
func (e *Engine) holdDecoding(capacity int) (release func(), err error) {
	n := uint64(e.P.heldBytes(capacity))
	if err := e.mem.reserve(MemHost, n, fmt.Sprintf("decoding a saved sequence with tables of %d slots", capacity)); err != nil {
		return nil, err
	}
	return func() { e.mem.release(MemHost, n) }, nil
}

// dropScratch returns the scratch of a sequence that is going away.
func (e *Engine) dropScratch(s *Sequence) {
	e.mem.release(MemHost, s.scratchBytes)
	s.scratchBytes = 0
}

// resize returns x with length n, keeping its elements and zeroing the new
// ones; a new array is exactly n long (append would round up by its own
// growth rule, beyond what was reserved).
func resize[T any](x []T, n int) []T {
	if n <= len(x) {
		return x[:n]
	}
	if n <= cap(x) {
		old := len(x)
		x = x[:n]
		clear(x[old:])
		return x
	}
	y := make([]T, n)
	copy(y, x)
	return y
}

func satAdd(xs ...uint64) uint64 {
	var s uint64
	for _, x := range xs {
		if x > math.MaxUint64-s {
			return math.MaxUint64
		}
		s += x
	}
	return s
}

func satMul(xs ...uint64) uint64 {
	p := uint64(1)
	for _, x := range xs {
		if x != 0 && p > math.MaxUint64/x {
			return math.MaxUint64
		}
		p *= x
	}
	return p
}

func clampInt64(x uint64) int64 {
	return int64(min(x, math.MaxInt64))
}
