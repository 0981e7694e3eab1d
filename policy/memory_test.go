package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// onMachine makes the engines created during the test see `bytes` of
// physical memory, so that the default bound can be tested without a
// machine that small (or allocations that large).
func onMachine(t *testing.T, bytes uint64) {
	t.Helper()
	saved, savedProc := physicalMemory, processHost
	physicalMemory = func() uint64 { return bytes }
	// A process total of its own: engines of other tests that the collector
	// has not reached yet would count otherwise.
	processHost = &hostTotal{}
	t.Cleanup(func() { physicalMemory, processHost = saved, savedProc })
}

// allocated returns the bytes f allocated on the Go heap (size classes
// included).
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

func wantMemCap(t *testing.T, err error, words ...string) {
	t.Helper()
	if CodeOf(err) != CodeMemoryCap {
		t.Fatalf("got %v (code %d), want MEMORY_CAP", err, CodeOf(err))
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("message %q does not name %q", err, w)
		}
	}
}

// overlapping is an n-token view whose token stride is one element: rows
// overlap (they are only read), so a huge chunk costs the test almost
// nothing.
func overlapping(seed uint64, tokens, heads, dim int) *Rows {
	x := gauss(newRand(seed), heads*dim+tokens)
	r := f32Rows(x, 1, heads, dim)
	r.Tokens = tokens
	r.TokenStride = 4
	r.Data = unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), len(x)*4)
	return r
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 7)) }

func seqPositions(from, n int) []int32 {
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(from + i)
	}
	return pos
}

func TestCreateCountsProjections(t *testing.T) {
	// 64 layers of 256 x 4096 f32: 256 MiB of projections, and a tiny
	// sequence. A cap that holds the sequence but not the projections must
	// be refused before they are drawn.
	p := DefaultParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Bits, p.Budget = 64, 1, 1, 4096, 256, 16
	p.MemoryCapBytes = uint64(p.heldBytes(p.Budget)) + 1<<20
	var err error
	if a := allocated(func() { _, err = NewEngine(p) }); a > 1<<20 {
		t.Errorf("a refused create allocated %d bytes", a)
	}
	wantMemCap(t, err, "projections", fmt.Sprint(p.engineBytes()), "memory_cap_bytes = ")
	p.MemoryCapBytes = p.budgetBytes()
	p.Layers, p.HeadDim = 2, 64 // a small engine at exactly its least cap
	p.MemoryCapBytes = p.budgetBytes()
	e := mustEngine(t, p)
	if host, _ := e.MemoryInUse(); host != p.engineBytes() {
		t.Errorf("a new engine holds %d bytes, want its projections and directory, %d", host, p.engineBytes())
	}
	p.MemoryCapBytes--
	if _, err := NewEngine(p); CodeOf(err) != CodeMemoryCap {
		t.Errorf("one byte below the least cap: %v", err)
	}
}

func TestDefaultBoundIsHalfThePhysicalMemory(t *testing.T) {
	onMachine(t, 64<<20)
	// One sequence at full budget: 2 x 8 tables of 2^17 slots, about 34 MiB
	// with the scratch: above the 32 MiB bound, though nothing is allocated
	// until a sequence is added.
	p := DefaultParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = 2, 8, 8, 16, 1<<17
	need := p.budgetBytes()
	if need <= 32<<20 || need > 64<<20 {
		t.Fatalf("test shape needs %d bytes; want it between half the machine and the machine", need)
	}
	_, err := NewEngine(p)
	wantMemCap(t, err, "physical memory", "67108864", "33554432")
	// An explicit cap above the bound does not lift it.
	p.MemoryCapBytes = 1 << 40
	_, err = NewEngine(p)
	wantMemCap(t, err, "physical memory")
	// Half the budget fits.
	p.MemoryCapBytes, p.Budget = 0, 1<<16
	e := mustEngine(t, p)
	if err := e.AddSeq(0); err != nil {
		t.Fatal(err)
	}
	// A second one does not.
	var addErr error
	if a := allocated(func() { addErr = e.AddSeq(1) }); a > 1<<16 {
		t.Errorf("a refused add allocated %d bytes", a)
	}
	wantMemCap(t, addErr, "sequence 1", "physical memory")
	// Unknown physical memory: only an explicit cap bounds the engine.
	onMachine(t, 0)
	p.Budget = 1 << 17
	if _, err := NewEngine(p); err != nil {
		t.Errorf("physical memory unknown, no cap: %v", err)
	}
}

func TestSeqAddAndForkCheckBeforeAllocating(t *testing.T) {
	p := DefaultParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = 4, 4, 4, 16, 1<<14
	seq := uint64(p.heldBytes(p.Budget))
	p.MemoryCapBytes = p.budgetBytes() + seq/2
	e := mustEngine(t, p)
	if err := e.AddSeq(0); err != nil {
		t.Fatal(err)
	}
	var err error
	for name, f := range map[string]func(){
		"add":  func() { err = e.AddSeq(1) },
		"fork": func() { err = e.ForkSeq(0, 2) },
	} {
		a := allocated(f)
		wantMemCap(t, err, "memory_cap_bytes")
		if a > seq/16 {
			t.Errorf("%s: refused after allocating %d bytes (a sequence is %d)", name, a, seq)
		}
	}
	if ids := e.SeqIDs(); len(ids) != 1 {
		t.Errorf("sequences after refusals: %v", ids)
	}
	// A reset at a cap that holds one sequence clears it in place.
	if a := allocated(func() { err = e.ResetSeq(0) }); err != nil || a > seq/16 {
		t.Errorf("reset: %v after allocating %d bytes (a sequence is %d)", err, a, seq)
	}
	if host, _ := e.MemoryInUse(); host != p.engineBytes()+seq {
		t.Errorf("after reset the engine holds %d bytes, want %d", host, p.engineBytes()+seq)
	}
	if err := e.RemoveSeq(0); err != nil {
		t.Fatal(err)
	}
	if err := e.AddSeq(1); err != nil {
		t.Errorf("add after remove: %v", err)
	}
}

// The figures are not an underestimate: what add and a first step allocate
// stays within what they count.
func TestAccountingCoversAllocations(t *testing.T) {
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		// Policy -1: the hash policy with both streaming options.
		for _, pol := range []Policy{PolicyHash, PolicyKnorm, PolicyOracle, -1} {
			for _, bits := range []int{16, 256} {
				p := smallParams()
				p.Mode, p.Policy, p.Bits, p.Budget = mode, pol, bits, 1000
				if pol < 0 {
					p.Policy, p.Estimate, p.Redundancy = PolicyHash, EstimateLogit, 1
				}
				// TotalAlloc is process-wide and, under the race detector,
				// sync.Pool drops items at random, so one measurement can
				// exceed what the engine itself asked for: take the least
				// of a few fresh runs (noise only ever adds bytes).
				var addMin, stepMin, counted uint64 = math.MaxUint64, math.MaxUint64, 0
				for try := 0; try < 5; try++ {
					e := mustEngine(t, p)
					var err error
					a := allocated(func() { err = e.AddSeq(0) })
					if err != nil {
						t.Fatalf("mode %d policy %d bits %d: add: %v", mode, pol, bits, err)
					}
					addMin = min(addMin, a)
					const n = 200
					qr, kr := overlapping(1, n, p.QHeads, p.HeadDim), overlapping(2, n, p.KVHeads, p.HeadDim)
					pos := seqPositions(0, n)
					out := make([]int32, n*p.KVHeads)
					before, _ := e.MemoryInUse()
					a = allocated(func() {
						if mode == ModeSlot {
							err = e.Place(0, 0, qr, kr, pos, out, nil)
						} else {
							err = e.Observe(0, 0, qr, kr, pos)
						}
					})
					after, _ := e.MemoryInUse()
					if err != nil {
						t.Fatalf("mode %d policy %d bits %d: step: %v", mode, pol, bits, err)
					}
					stepMin = min(stepMin, a)
					// Besides what the step counts: the per-slot scratch and,
					// twice per KV head, the one-token scratch, both in the
					// sequence's base (simd's bit-count tables are made per
					// distances call and dropped: garbage, not held).
					counted = after - before + p.slotScratchBytes()*uint64(p.Budget) + 2*uint64(p.KVHeads)*p.chunkScratchBytes(1)
					if addMin <= uint64(p.heldBytes(p.initialSlots())) && stepMin <= counted {
						break
					}
				}
				if addMin > uint64(p.heldBytes(p.initialSlots())) {
					t.Errorf("mode %d policy %d bits %d: add allocated %d bytes, counted %d", mode, pol, bits, addMin, p.heldBytes(p.initialSlots()))
				}
				if stepMin > counted {
					// The simd kernels take their block scratch from a
					// sync.Pool; the streaming options' full step calls
					// them once per token and head, and under the race
					// detector enough Gets miss to outweigh the step's
					// own bytes in every try. The normal build checks it.
					if raceDetector {
						t.Logf("mode %d policy %d bits %d: a step allocated %d bytes, counted %d (race detector: pool refills included; not checked)", mode, pol, bits, stepMin, counted)
					} else {
						t.Errorf("mode %d policy %d bits %d: a step allocated %d bytes, counted %d", mode, pol, bits, stepMin, counted)
					}
				}
			}
		}
	}
}

func TestTokenGrowthStopsAtTheBound(t *testing.T) {
	onMachine(t, 16<<20)
	p := DefaultParams()
	p.Mode, p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = ModeToken, 8, 8, 8, 8, 1000
	e := mustEngine(t, p)
	if err := e.AddSeq(0); err != nil {
		t.Fatal(err)
	}
	// Never evicting, one position at a time: the tables (about 1.1 KiB
	// per position) outgrow the 8 MiB bound well before 20,000 positions.
	k := gauss(newRand(3), p.KVHeads*p.HeadDim)
	q := gauss(newRand(4), p.QHeads*p.HeadDim)
	var err error
	pos := int32(0)
	for ; pos < 20000 && err == nil; pos++ {
		for l := 0; l < p.Layers && err == nil; l++ {
			err = e.Observe(0, l, f32Rows(q, 1, p.QHeads, p.HeadDim), f32Rows(k, 1, p.KVHeads, p.HeadDim), []int32{pos})
		}
	}
	wantMemCap(t, err, "token-mode tables", "physical memory")
	host, _ := e.MemoryInUse()
	if host > 8<<20 {
		t.Errorf("the engine holds %d bytes, above the 8 MiB bound", host)
	}
	st, _ := e.SeqStats(0)
	if st.Cached != uint64(pos-1) {
		t.Errorf("after the refusal the sequence holds %d positions, want the %d observed by every layer before it", st.Cached, pos-1)
	}
}

func TestChunkScratchIsCounted(t *testing.T) {
	onMachine(t, 16<<20)
	// 64 heads of 256-bit codes: 4 KiB of key and query codes per token.
	p := DefaultParams()
	p.Mode, p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Bits, p.Budget = ModeToken, 1, 64, 64, 1, 256, 32
	e := mustEngine(t, p)
	if err := e.AddSeq(0); err != nil {
		t.Fatal(err)
	}
	const n = 10000 // 40 MiB of codes, from 40 KiB of rows
	x, pos := overlapping(5, n, 64, 1), seqPositions(0, n)
	var err error
	if a := allocated(func() { err = e.Observe(0, 0, x, x, pos) }); a > 1<<20 {
		t.Errorf("a refused chunk allocated %d bytes", a)
	}
	wantMemCap(t, err, "scratch of a chunk of 10000 tokens", "physical memory")
	if st, _ := e.SeqStats(0); st.Steps != 0 {
		t.Errorf("the refused step was counted: %+v", st)
	}
	// A chunk that fits is counted once, kept by the sequence, and returned
	// with it; state_bytes does not include it.
	before, _ := e.MemoryInUse()
	st0, _ := e.SeqStats(0)
	if err := e.Observe(0, 0, overlapping(6, 100, 64, 1), overlapping(7, 100, 64, 1), seqPositions(0, 100)); err != nil {
		t.Fatal(err)
	}
	if err := e.Observe(0, 0, overlapping(8, 50, 64, 1), overlapping(9, 50, 64, 1), seqPositions(100, 50)); err != nil {
		t.Fatal(err)
	}
	after, _ := e.MemoryInUse()
	st1, _ := e.SeqStats(0)
	grew := uint64(st1.StateBytes - st0.StateBytes)
	if want := p.chunkScratchBytes(100) - p.chunkScratchBytes(1); after-before-grew != want {
		t.Errorf("scratch counted %d bytes, want %d", after-before-grew, want)
	}
	if err := e.RemoveSeq(0); err != nil {
		t.Fatal(err)
	}
	if host, _ := e.MemoryInUse(); host != p.engineBytes() {
		t.Errorf("after remove the engine holds %d bytes, want %d", host, p.engineBytes())
	}
}

func TestDeviceReservations(t *testing.T) {
	onMachine(t, 1<<20)
	p := smallParams()
	e := mustEngine(t, p)
	// Device memory is not bounded by the host's physical memory...
	if err := e.Reserve(MemDevice, 1<<30, "device tables"); err != nil {
		t.Fatal(err)
	}
	e.Release(MemDevice, 1<<30)
	// ...but by memory_cap_bytes, with the host's bytes.
	p.MemoryCapBytes = p.budgetBytes() + 1000
	e = mustEngine(t, p)
	err := e.Reserve(MemDevice, p.budgetBytes(), "device tables of sequence 3")
	wantMemCap(t, err, "device tables of sequence 3", "memory_cap_bytes = ")
	if err := e.Reserve(MemDevice, 1000, "x"); err != nil {
		t.Fatal(err)
	}
	if _, dev := e.MemoryInUse(); dev != 1000 {
		t.Errorf("device bytes %d, want 1000", dev)
	}
	e.Release(MemDevice, 1000)
	if err := e.AddSeq(0); err == nil {
		// the cap holds one sequence beyond the engine, with room to spare
	} else {
		t.Errorf("add after the device release: %v", err)
	}
	wantMemCap(t, e.Reserve(MemDevice, 1001, "y"))
}

func TestSizesSaturate(t *testing.T) {
	p := DefaultParams()
	p.Policy, p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Bits, p.Budget, p.MaxSeqs = PolicyOracle, MaxLayers, MaxHeads, MaxHeads, MaxHeadDim, 256, MaxBudget, MaxSeqs
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		p.Mode = mode
		if b := p.budgetBytes(); b < 1<<56 {
			t.Errorf("mode %d: the largest shape needs only %d bytes", mode, b)
		}
		// Refused as a whole, with small projections (4 MiB): were the check
		// missing, this test would not draw the 4 GiB of the largest ones.
		q := p
		q.HeadDim, q.Bits = 64, 16
		if _, err := NewEngine(q); CodeOf(err) != CodeMemoryCap {
			t.Errorf("mode %d: the largest shape was not refused: %v", mode, err)
		}
	}
	if satMul(1<<40, 1<<40) != math.MaxUint64 || satAdd(math.MaxUint64-1, 2) != math.MaxUint64 || satMul(3, 0, math.MaxUint64) != 0 {
		t.Error("saturating arithmetic")
	}
	if p.chunkScratchBytes(math.MaxInt32) < 1<<40 {
		t.Error("chunk scratch of 2^31 tokens")
	}
}

func TestPhysicalFrom(t *testing.T) {
	write := func(root, name, body string) {
		t.Helper()
		f := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	meminfo := "MemTotal:       24683652 kB\nMemFree:        1000 kB\n"
	const total = 24683652 * 1024
	cases := []struct {
		name  string
		files map[string]string
		want  uint64
	}{
		{"meminfo only", map[string]string{"proc/meminfo": meminfo}, total},
		{"v2, limit on a parent", map[string]string{
			"proc/meminfo":                         meminfo,
			"proc/self/cgroup":                     "0::/a/b\n",
			"sys/fs/cgroup/a/b/memory.max":         "max\n",
			"sys/fs/cgroup/a/memory.max":           "4294967296\n",
			"sys/fs/cgroup/memory.max":             "8589934592\n",
			"sys/fs/cgroup/a/b/memory.current":     "1\n",
			"sys/fs/cgroup/unrelated/memory.max":   "1\n",
			"sys/fs/cgroup/a/b/c/memory.max":       "1\n",
			"sys/fs/cgroup/unified/a/b/memory.max": "max\n",
		}, 4 << 30},
		{"v1, unlimited", map[string]string{
			"proc/meminfo":     meminfo,
			"proc/self/cgroup": "4:memory:/process_api/x\n3:cpuset:/\n",
			"sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes": "9223372036854771712\n",
		}, total},
		{"v1, limited, path hidden by the namespace", map[string]string{
			"proc/meminfo":     meminfo,
			"proc/self/cgroup": "5:cpuacct,memory:/docker/abc\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "2147483648\n",
		}, 2 << 30},
		{"no meminfo, a limit", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "1073741824\n",
		}, 1 << 30},
		{"nothing readable", map[string]string{}, 0},
		{"garbage", map[string]string{"proc/meminfo": "MemTotal: lots\n", "proc/self/cgroup": "::::\n0::\n"}, 0},
	}
	for _, c := range cases {
		root := t.TempDir()
		for name, body := range c.files {
			write(root, name, body)
		}
		if got := physicalFrom(root); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	if readPhysicalMemory() == 0 {
		t.Error("this machine's memory is unknown")
	}
}

// Reservations stay exact under concurrent add / fork / reset / remove /
// steps near the cap: once every sequence is gone, the engine holds its own
// arrays only.
func TestAccountingUnderConcurrency(t *testing.T) {
	p := smallParams()
	for _, mode := range []Mode{ModeSlot, ModeToken} {
		p.Mode = mode
		p.MaxSeqs = 16
		p.MemoryCapBytes = p.engineBytes() + 5*uint64(p.heldBytes(p.Budget+1))
		e := mustEngine(t, p)
		var wg sync.WaitGroup
		var refused atomic.Int64
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				rng := newRand(uint64(g))
				next := make([]int32, p.MaxSeqs)
				for i := 0; i < 400; i++ {
					id := 4*g + rng.IntN(4) // each goroutine steps its own ids
					switch rng.IntN(6) {
					case 0:
						if CodeOf(e.AddSeq(id)) == CodeMemoryCap {
							refused.Add(1)
						}
					case 1:
						src := 4*g + rng.IntN(4)
						if err := e.ForkSeq(src, id); err == nil {
							next[id] = next[src]
						} else if CodeOf(err) == CodeMemoryCap {
							refused.Add(1)
						}
					case 2:
						if e.ResetSeq(id) == nil {
							next[id] = 0
						}
					case 3:
						e.RemoveSeq(id)
						next[id] = 0
					default:
						n := 1 + rng.IntN(40)
						x := overlapping(uint64(i), n, p.QHeads, p.HeadDim)
						k := overlapping(uint64(i+1), n, p.KVHeads, p.HeadDim)
						pos := seqPositions(int(next[id]), n)
						var err error
						for l := 0; l < p.Layers; l++ {
							if mode == ModeSlot {
								err = e.Place(id, l, x, k, pos, make([]int32, n*p.KVHeads), nil)
							} else if err = e.Observe(id, l, x, k, pos); err == nil && l == p.Layers-1 {
								_, err = e.Evictions(id, make([]int32, 64))
							}
						}
						if err == nil {
							next[id] += int32(n)
						}
					}
				}
			}(g)
		}
		wg.Wait()
		if refused.Load() == 0 {
			t.Errorf("mode %d: the cap never refused an add or a fork", mode)
		}
		for _, id := range e.SeqIDs() {
			if err := e.RemoveSeq(id); err != nil {
				t.Fatal(err)
			}
		}
		if host, _ := e.MemoryInUse(); host != p.engineBytes() {
			t.Errorf("mode %d: with no sequence left the engine holds %d bytes, want %d", mode, host, p.engineBytes())
		}
		if st := e.EngineStats(); st.StateBytes != 0 {
			t.Errorf("mode %d: state_bytes %d with no sequence", mode, st.StateBytes)
		}
	}
}

// A saved sequence is counted before it is decoded, so a blob too large for
// the engine is refused without building its tables first.
func TestLoadCountsBeforeDecoding(t *testing.T) {
	p := smallParams()
	p.Mode, p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = ModeToken, 4, 4, 4, 8, 32
	src := mustEngine(t, p)
	if err := src.AddSeq(0); err != nil {
		t.Fatal(err)
	}
	// 4000 positions never evicted, in one chunk: tables of 4000 slots.
	const n = 4000
	q, k := overlapping(1, n, p.QHeads, p.HeadDim), overlapping(2, n, p.KVHeads, p.HeadDim)
	for l := 0; l < p.Layers; l++ {
		if err := src.Observe(0, l, q, k, seqPositions(0, n)); err != nil {
			t.Fatal(err)
		}
	}
	blob, err := src.SaveSeq(0)
	if err != nil {
		t.Fatal(err)
	}
	held := uint64(p.heldBytes(4000))
	p.MemoryCapBytes = p.budgetBytes()
	dst := mustEngine(t, p)
	if a := allocated(func() { err = dst.LoadSeq(0, blob) }); a > held/8 {
		t.Errorf("a refused load allocated %d bytes (the sequence holds %d)", a, held)
	}
	wantMemCap(t, err, "decoding a saved sequence with tables of 4000 slots", "memory_cap_bytes")
	if host, _ := dst.MemoryInUse(); host != p.engineBytes() {
		t.Errorf("after the refusal the engine holds %d bytes, want %d", host, p.engineBytes())
	}
	// With room for it, it loads, replaces itself (both held meanwhile),
	// and is accounted as it was in the engine that saved it.
	p.MemoryCapBytes = p.engineBytes() + 2*held
	dst = mustEngine(t, p)
	for i := 0; i < 2; i++ {
		if err := dst.LoadSeq(0, blob); err != nil {
			t.Fatalf("load %d: %v", i, err)
		}
	}
	a, _ := src.SeqStats(0)
	b, _ := dst.SeqStats(0)
	if a.StateBytes != b.StateBytes {
		t.Errorf("state_bytes %d after load, %d in the source", b.StateBytes, a.StateBytes)
	}
	if host, _ := dst.MemoryInUse(); host != p.engineBytes()+b.StateBytes {
		t.Errorf("the engine holds %d bytes, want %d", host, p.engineBytes()+b.StateBytes)
	}
}

// The physical bound holds for all the process's engines together: a second
// engine gets only what the first left, until the first is closed.
func TestPhysicalBoundIsProcessWide(t *testing.T) {
	onMachine(t, 64<<20)
	p := DefaultParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = 2, 8, 8, 16, 1<<16 // ~17 MiB a sequence
	a := mustEngine(t, p)
	if err := a.AddSeq(0); err != nil {
		t.Fatal(err)
	}
	_, err := NewEngine(p)
	wantMemCap(t, err, "by all engines", "physical memory")
	a.Close()
	b := mustEngine(t, p)
	if err := b.AddSeq(0); err != nil {
		t.Errorf("after the first engine closed: %v", err)
	}
	a.Close() // twice is harmless
	if processHost.bytes != p.engineBytes()+uint64(p.heldBytes(p.Budget)) {
		t.Errorf("the process total is %d, want the second engine's %d", processHost.bytes, p.engineBytes()+uint64(p.heldBytes(p.Budget)))
	}
}

// An engine nobody closes leaves the process total when it is collected.
func TestCollectedEngineLeavesTheTotal(t *testing.T) {
	onMachine(t, 1<<40)
	func() {
		e := mustEngine(t, smallParams())
		if err := e.AddSeq(0); err != nil {
			t.Fatal(err)
		}
	}()
	for i := 0; i < 100; i++ {
		runtime.GC()
		processHost.mu.Lock()
		left := processHost.bytes
		processHost.mu.Unlock()
		if left == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond) // cleanups run on their own goroutine
	}
	t.Errorf("an unreachable engine still counts %d bytes after 100 collections", processHost.bytes)
}

// Fork checks its destination before it locks the source: taking the
// directory lock while holding a sequence's lock would invert LoadSeq's
// order (directory, then sequence) and deadlock a fork racing a load. The
// race needs a narrow interleaving, so this can pass by luck on a broken
// build; on a correct one it always passes.
func TestForkRacingLoad(t *testing.T) {
	p := smallParams()
	e := mustEngine(t, p)
	if err := e.AddSeq(0); err != nil {
		t.Fatal(err)
	}
	blob, err := e.SaveSeq(0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for g := 1; g <= 3; g++ {
			wg.Add(2)
			go func() {
				defer wg.Done()
				for i := 0; i < 10000; i++ {
					e.ForkSeq(0, g)
					e.RemoveSeq(g)
				}
			}()
			go func() {
				defer wg.Done()
				for i := 0; i < 3000; i++ {
					if err := e.LoadSeq(0, blob); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("fork and load deadlocked")
	}
}
