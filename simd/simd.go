// Package simd holds the hot kernels of hashevict behind one dispatch table.
//
// The policy package calls only the exported functions below; which
// implementation runs is chosen once, at start-up, from the CPU features,
// and can be forced with the HASHEVICT_KERNELS environment variable
// ("generic", or the name of an accelerated set) or switched by tests with
// Use. Every implementation must return exactly what the generic one does.
package simd

import (
	"fmt"
	"os"
	"sync"
)

// Kernels is one implementation of every hot kernel.
type Kernels struct {
	Name    string
	Hash    func(code []uint64, x, rt []float32)
	Hamming func(dist []uint32, table []uint64, words int, probes []uint64)
	// HammingNarrow is Hamming for a packed table of 8-, 16- or 32-bit
	// codes (see hammingNarrowGeneric).
	HammingNarrow func(dist []uint32, table []uint64, bits int, probes []uint64)
	BitCount      func(dist []uint32, table []uint64, words int, ones []uint32, total uint32)
	ArgmaxIn      func(score []float32, pos []int32, lo, hi int32) int
	Update        func(score []float32, count []uint32, dist []uint32, n uint32, mode int, decay float32)
	F16ToF32      func(dst []float32, src []uint16) bool
	BF16ToF32     func(dst []float32, src []uint16) bool
	FiniteF32     func(x []float32) bool
	// ScoreStep is Hamming, then Update, then ArgmaxIn on the updated
	// scores, fused (see scoreStepGeneric). Its table has the layout of
	// bits-bit codes (see CodeWords).
	ScoreStep func(score []float32, count []uint32, table []uint64, bits int, probes []uint64, n uint32, mode int, decay float32, skip []int32) int
	// Farthest is the step of the instant score: the entry with the
	// largest Hamming distance among those not skipped, no scores kept
	// (see farthestGeneric).
	Farthest func(table []uint64, bits int, probes []uint64, n int, skip []int32) int
	// HammingAdd adds Hamming's distances into run instead of writing
	// them (see hammingAddGeneric): the token-mode step's running total.
	HammingAdd func(run []uint32, table []uint64, words int, probes []uint64)
}

// Generic is the portable implementation and the reference for the others.
var Generic = Kernels{
	Name:          "generic",
	Hash:          hashGeneric,
	Hamming:       hammingGeneric,
	HammingNarrow: hammingNarrowGeneric,
	BitCount:      bitCountDistGeneric,
	ArgmaxIn:      argmaxRangeGeneric,
	Update:        updateGeneric,
	F16ToF32:      f16ToF32Generic,
	BF16ToF32:     bf16ToF32Generic,
	FiniteF32:     finiteGeneric,
	ScoreStep:     scoreStepGeneric,
	Farthest:      farthestGeneric,
	HammingAdd:    hammingAddGeneric,
}

var (
	mu        sync.RWMutex
	active    = &Generic // never modified: ActiveSet hands it out
	available = map[string]*Kernels{"generic": &Generic}
	// order lists accelerated sets from most to least preferred; the
	// architecture files register into it in init.
	order []string
)

// register adds an accelerated set that this CPU supports.
func register(k Kernels) {
	available[k.Name] = &k
	order = append(order, k.Name)
}

func init() {
	if len(order) > 0 {
		active = available[order[0]]
	}
	if name := os.Getenv("HASHEVICT_KERNELS"); name != "" {
		if k, ok := available[name]; ok {
			active = k
		}
	}
}

// Available lists the kernel sets this CPU can run, best first, "generic"
// last.
func Available() []string {
	return append(append([]string(nil), order...), "generic")
}

// Use switches every later call to the named kernel set. Tests use it to
// run the same checks on each path.
func Use(name string) error {
	k, ok := available[name]
	if !ok {
		return fmt.Errorf("simd: kernel set %q is not available on this CPU (have %v)", name, Available())
	}
	mu.Lock()
	active = k
	mu.Unlock()
	return nil
}

// Active returns the kernel set in use.
func Active() Kernels {
	return *ActiveSet()
}

// ActiveSet returns the kernel set in use, shared: callers must not modify
// it. A decode step takes it without copying the table (a copy whose
// address is passed on escapes to the heap on every step).
func ActiveSet() *Kernels {
	mu.RLock()
	defer mu.RUnlock()
	return active
}
