package cuda

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/hashevict/hashevict/policy"
)

// tokPair drives one sequence of a host engine and the same sequence of a
// token-mode engine whose tables are on the (emulated) device with the
// same rows, and compares every eviction.
type tokPair struct {
	t         *testing.T
	v         *Device
	r         *rand.Rand
	p         policy.Params
	dt        policy.DType
	host, dev *policy.Engine
	extra     []*policy.Engine // more engines fed host rows (a loaded copy)
	next      map[int]int32    // sequence -> next position
}

func newTokPair(t *testing.T, v *Device, r *rand.Rand, p policy.Params, dt policy.DType) *tokPair {
	t.Helper()
	p.Mode = policy.ModeToken
	host, err := policy.NewEngine(p)
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := policy.NewEngine(p)
	return &tokPair{t: t, v: v, r: r, p: p, dt: dt, host: host, dev: dev, next: map[int]int32{}}
}

func (tp *tokPair) add(id int) {
	tp.host.AddSeq(id)
	tp.dev.AddSeq(id)
}

// observe feeds n new positions (with random gaps) of sequence id to every
// layer of both engines.
func (tp *tokPair) observe(id, n int, what string) {
	t, p := tp.t, tp.p
	t.Helper()
	positions := make([]int32, n)
	for j := range positions {
		positions[j] = tp.next[id]
		tp.next[id] += 1 + int32(tp.r.IntN(2))
	}
	hq, dq, fq := devRows(t, tp.v, tp.r, tp.dt, n, p.QHeads, p.HeadDim)
	hk, dk, fk := devRows(t, tp.v, tp.r, tp.dt, n, p.KVHeads, p.HeadDim)
	defer fq()
	defer fk()
	for l := 0; l < p.Layers; l++ {
		if err := tp.host.Observe(id, l, hq, hk, positions); err != nil {
			t.Fatalf("%s: host Observe: %v", what, err)
		}
		if err := Observe(tp.dev, id, l, StepInput{Dev: tp.v, Q: dq, K: dk, Positions: positions}); err != nil {
			t.Fatalf("%s: device Observe (sequence %d layer %d, %d tokens at %d): %v", what, id, l, n, positions[0], err)
		}
		for _, e := range tp.extra {
			if err := e.Observe(id, l, hq, hk, positions); err != nil {
				t.Fatalf("%s: Observe of another engine: %v", what, err)
			}
		}
	}
}

// evict asks both engines for at most capacity evictions.
func (tp *tokPair) evict(id, capacity int, what string) int {
	t := tp.t
	t.Helper()
	want, got := make([]int32, capacity), make([]int32, capacity)
	nw, err := tp.host.Evictions(id, want)
	if err != nil {
		t.Fatalf("%s: host Evictions: %v", what, err)
	}
	ng, err := tp.dev.Evictions(id, got)
	if err != nil {
		t.Fatalf("%s: device Evictions: %v", what, err)
	}
	if !slices.Equal(got[:ng], want[:nw]) {
		t.Fatalf("%s: device evicts %v, host %v", what, got[:ng], want[:nw])
	}
	for _, e := range tp.extra {
		ne, err := e.Evictions(id, got)
		if err != nil || !slices.Equal(got[:ne], want[:nw]) {
			t.Fatalf("%s: another engine evicts %v (%v), host %v", what, got[:ne], err, want[:nw])
		}
	}
	return nw
}

// same compares what the sequence holds and its counters.
func (tp *tokPair) same(id int, what string) {
	t := tp.t
	t.Helper()
	hp, err := tp.host.TokenPositions(id)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := tp.dev.TokenPositions(id)
	if err != nil || !slices.Equal(dp, hp) {
		t.Fatalf("%s: device holds %v (%v), host %v", what, dp, err, hp)
	}
	hs, _ := tp.host.SeqStats(id)
	ds, _ := tp.dev.SeqStats(id)
	if hs.Steps != ds.Steps || hs.Tokens != ds.Tokens || hs.Evictions != ds.Evictions || hs.Cached != ds.Cached {
		t.Fatalf("%s: stats: host %+v, device %+v", what, hs, ds)
	}
}

// TestTokSeqMatchesEngine drives hashevict_observe's CUDA path (Observe)
// and hashevict_evictions on a device sequence (Engine.Evictions ->
// TokSeq.Totals) on the host-emulated driver against a host engine fed the
// same rows: every width x probe x score, f32/f16/bf16, 2-3 layers, GQA
// groups 1-2, a prefill chunk larger than the budget, then decode steps
// and small chunks with evictions of random capacity in between (so the
// sequence sometimes stays above its budget and the tables grow), layer
// windows on some cases. Every eviction, the held positions and the
// counters agree; removing the sequence gives back every device byte.
func TestTokSeqMatchesEngine(t *testing.T) {
	useLibrary(t, buildEmu(t))
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(13, 14))
	i := 0
	for _, bits := range []int{8, 16, 32, 64, 128, 256} {
		for _, probe := range []policy.Probe{policy.ProbeQuery, policy.ProbeKey} {
			for _, score := range []policy.Score{policy.ScoreInstant, policy.ScoreAccumulated, policy.ScoreDecayed} {
				i++
				p := policy.DefaultParams()
				p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Bits, p.Budget = 2+i%2, 1+i%3, (1+i%3)*(1+i%2), []int{5, 32, 64}[i%3], bits, 20+i%7
				p.Probe, p.Score, p.Seed = probe, score, uint64(i)
				windows := i%4 == 1
				name := fmt.Sprintf("%d-bit probe %d score %d windows %v", bits, probe, score, windows)
				t.Run(name, func(t *testing.T) {
					tp := newTokPair(t, v, r, p, []policy.DType{policy.F32, policy.F16, policy.BF16}[i%3])
					tokCase(tp, windows)
				})
			}
		}
	}
}

func tokCase(tp *tokPair, windows bool) {
	t, p, v := tp.t, tp.p, tp.v
	before := v.Allocated()
	if windows {
		// A sliding layer and an unlimited one: candidates fall into two
		// sets of layers, summed apart on the device.
		for _, e := range []*policy.Engine{tp.host, tp.dev} {
			if err := e.SetLayerWindow(0, 12); err != nil {
				t.Fatal(err)
			}
		}
	}
	tp.add(0)
	tp.observe(0, p.Budget+7, "prefill")
	tp.evict(0, 3, "after the prefill, 3 of 7")
	tp.evict(0, 100, "the rest")
	for step := 0; step < 3*p.Budget; step++ {
		n := 1
		if step%9 == 4 {
			n = 2 + tp.r.IntN(3)
		}
		what := fmt.Sprintf("step %d", step)
		tp.observe(0, n, what)
		if step%5 != 3 { // sometimes no eviction: the next step holds more
			tp.evict(0, 1+tp.r.IntN(4), what)
		}
		if step%11 == 0 {
			tp.same(0, what)
		}
	}
	tp.evict(0, 100, "the end")
	tp.same(0, "the end")
	if _, d := tp.dev.MemoryInUse(); d == 0 || int64(d) != v.Allocated()-before {
		t.Errorf("reserved %d device bytes, allocated %d", d, v.Allocated()-before)
	}
	if err := tp.dev.RemoveSeq(0); err != nil {
		t.Fatal(err)
	}
	if _, d := tp.dev.MemoryInUse(); d != 0 || v.Allocated() != before {
		t.Errorf("after remove: %d device bytes reserved, %d allocated", d, v.Allocated()-before)
	}
}

// TestTokSeqForkResetAndRefusals: a fork of a device token-mode sequence
// and its source continue as the host engine's; what has no device path,
// NaN rows, chunks beyond one scan, out-of-order positions, a memory cap
// too small and host/device mixing are refused with their codes and
// nothing changed; a reset sequence may start over on the host.
func TestTokSeqForkResetAndRefusals(t *testing.T) {
	useLibrary(t, buildEmu(t))
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(15, 16))
	p := policy.DefaultParams()
	p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget = 2, 2, 4, 16, 20
	p.Score = policy.ScoreDecayed
	code := func(err error) policy.Code {
		if err == nil {
			return 0
		}
		return policy.CodeOf(err)
	}
	tp := newTokPair(t, v, r, p, policy.F32)
	tp.add(0)
	tp.observe(0, 10, "start")
	for step := 0; step < 20; step++ {
		tp.observe(0, 1, "before the fork")
		tp.evict(0, 1, "before the fork")
	}
	_, held := tp.dev.MemoryInUse()
	for _, e := range []*policy.Engine{tp.host, tp.dev} {
		if err := e.ForkSeq(0, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, d := tp.dev.MemoryInUse(); d <= held {
		t.Errorf("the fork reserved nothing: %d then %d device bytes", held, d)
	}
	tp.next[1] = tp.next[0]
	for step := 0; step < 25; step++ {
		tp.observe(1, 1, "the fork")
		tp.evict(1, 1, "the fork")
		tp.observe(0, 1, "the source")
		tp.evict(0, 1, "the source")
	}
	tp.same(0, "the source")
	tp.same(1, "the fork")
	if err := tp.dev.RemoveSeq(1); err != nil {
		t.Fatal(err)
	}
	if _, d := tp.dev.MemoryInUse(); d < held {
		t.Errorf("after removing the fork: %d device bytes reserved, below the source's %d", d, held)
	}

	hq, dq, fq := devRows(t, v, r, policy.F32, 1, p.QHeads, p.HeadDim)
	hk, dk, fk := devRows(t, v, r, policy.F32, 1, p.KVHeads, p.HeadDim)
	defer fq()
	defer fk()
	at := func(pos int32) StepInput { return StepInput{Dev: v, Q: dq, K: dk, Positions: []int32{pos}} }
	next := tp.next[0]
	// Host tensors on a device sequence; the engine's host-state calls.
	if err := tp.dev.Observe(0, 0, hq, hk, []int32{next}); code(err) != policy.CodeUnsupported {
		t.Errorf("host tensors on a device sequence: %v", err)
	}
	// Layer 1 may not skip the position layer 0 observed: the host's
	// check and message.
	if err := Observe(tp.dev, 0, 0, at(next)); err != nil {
		t.Fatal(err)
	}
	err = Observe(tp.dev, 0, 1, at(next+1))
	herr := tp.host.Observe(0, 0, hq, hk, []int32{next})
	if herr == nil {
		herr = tp.host.Observe(0, 1, hq, hk, []int32{next + 1})
	}
	if code(err) != policy.CodePosition || err.Error() != herr.Error() {
		t.Errorf("a layer skipping a position: device %v, host %v", err, herr)
	}
	if err := Observe(tp.dev, 0, 1, at(next)); err != nil {
		t.Fatal(err)
	}
	tp.host.Observe(0, 1, hq, hk, []int32{next})
	tp.next[0] = next + 1
	tp.evict(0, 4, "after the refused skip")
	// NaN: refused, nothing changed.
	st0, _ := tp.dev.SeqStats(0)
	nan := make([]byte, len(hk.Data))
	copy(nan, hk.Data)
	*(*uint32)(unsafe.Pointer(&nan[4*(p.HeadDim+3)])) = 0x7fc00000
	v.Upload(0, dk.Data, unsafe.Pointer(&nan[0]), int64(len(nan)))
	if err := Observe(tp.dev, 0, 0, at(tp.next[0])); code(err) != policy.CodeNonFinite || err.Error() != "k row of token 0, head 1 holds NaN or Inf" {
		t.Errorf("NaN: %v", err)
	}
	v.Upload(0, dk.Data, unsafe.Pointer(&hk.Data[0]), int64(len(hk.Data)))
	if st, _ := tp.dev.SeqStats(0); st != st0 {
		t.Errorf("a refused step changed the stats: %+v then %+v", st0, st)
	}
	// A chunk whose probes do not fit in one scan.
	big := MaxProbeWords/p.Group() + 1
	_, bq, fbq := devRows(t, v, r, policy.F32, big, p.QHeads, p.HeadDim)
	_, bk, fbk := devRows(t, v, r, policy.F32, big, p.KVHeads, p.HeadDim)
	defer fbq()
	defer fbk()
	bp := make([]int32, big)
	for j := range bp {
		bp[j] = tp.next[0] + int32(j)
	}
	if err := Observe(tp.dev, 0, 0, StepInput{Dev: v, Q: bq, K: bk, Positions: bp}); code(err) != policy.CodeUnsupported {
		t.Errorf("a chunk of %d tokens: %v", big, err)
	}
	for step := 0; step < 10; step++ {
		tp.observe(0, 1, "after the refusals")
		tp.evict(0, 1, "after the refusals")
	}
	tp.same(0, "after the refusals")
	// A slot-mode call on the token-mode engine.
	if err := Place(tp.dev, 0, 0, at(tp.next[0]), make([]int32, 2), nil); code(err) != policy.CodeWrongMode {
		t.Errorf("place on a token-mode engine: %v", err)
	}

	// A host sequence refuses CUDA tensors; a reset device sequence
	// starts over on the host.
	tp.dev.AddSeq(2)
	if err := tp.dev.Observe(2, 0, hq, hk, []int32{0}); err != nil {
		t.Fatal(err)
	}
	if err := Observe(tp.dev, 2, 1, at(0)); code(err) != policy.CodeInvalidArgument {
		t.Errorf("CUDA tensors on a host sequence: %v", err)
	}
	if err := tp.dev.ResetSeq(0); err != nil {
		t.Fatal(err)
	}
	if tp.dev.IsDevice(0) {
		t.Error("a reset sequence is still on the device")
	}
	if err := tp.dev.Observe(0, 0, hq, hk, []int32{0}); err != nil {
		t.Errorf("a reset sequence on the host: %v", err)
	}
	tp.dev.RemoveSeq(0)
	tp.dev.RemoveSeq(2)
	if _, d := tp.dev.MemoryInUse(); d != 0 {
		t.Errorf("after remove: %d device bytes reserved", d)
	}

	// A memory cap that holds the host state but not the device tables:
	// refused, nothing held, the sequence not bound to the device.
	capped := p
	capped.Mode = policy.ModeToken
	capped.MemoryCapBytes = 1 << 20
	ce, err := policy.NewEngine(capped)
	if err != nil {
		t.Fatal(err)
	}
	ce.AddSeq(0)
	h, _ := ce.MemoryInUse()
	ce.Reserve(policy.MemHost, capped.MemoryCapBytes-h-16, "test filler")
	allocated := v.Allocated()
	if err := Observe(ce, 0, 0, at(0)); code(err) != policy.CodeMemoryCap {
		t.Errorf("cap: %v", err)
	}
	if _, d := ce.MemoryInUse(); d != 0 || v.Allocated() != allocated || ce.IsDevice(0) {
		t.Errorf("after a refused first call: %d reserved, %d allocated, device %v", d, v.Allocated()-allocated, ce.IsDevice(0))
	}
}

// TestSaveDeviceSequences: the state blob of a CUDA sequence, slot and
// token mode, is the host format: it loads into a host engine, and the
// loaded sequence continues exactly as the host engine's own sequence and
// the device one (every slot, every eviction). A load over the device
// sequence makes it a host sequence and gives back its device memory.
func TestSaveDeviceSequences(t *testing.T) {
	useLibrary(t, buildEmu(t))
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(17, 18))
	for _, score := range []policy.Score{policy.ScoreInstant, policy.ScoreDecayed} {
		for _, bits := range []int{16, 128} {
			p := policy.DefaultParams()
			p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget, p.Bits, p.Score = 2, 2, 4, 24, 20, bits, score
			t.Run(fmt.Sprintf("slot %d-bit score %d", bits, score), func(t *testing.T) { saveSlotCase(t, v, r, p) })
			t.Run(fmt.Sprintf("token %d-bit score %d", bits, score), func(t *testing.T) { saveTokenCase(t, v, r, p) })
		}
	}
}

func saveSlotCase(t *testing.T, v *Device, r *rand.Rand, p policy.Params) {
	host, _ := policy.NewEngine(p)
	dev, _ := policy.NewEngine(p)
	loaded, _ := policy.NewEngine(p)
	host.AddSeq(0)
	dev.AddSeq(0)
	pos := int32(0)
	step := func(n int, es []*policy.Engine) {
		t.Helper()
		positions := make([]int32, n)
		for j := range positions {
			positions[j] = pos
			pos += 1 + int32(r.IntN(2))
		}
		hq, dq, fq := devRows(t, v, r, policy.F16, n, p.QHeads, p.HeadDim)
		hk, dk, fk := devRows(t, v, r, policy.F16, n, p.KVHeads, p.HeadDim)
		defer fq()
		defer fk()
		for l := 0; l < p.Layers; l++ {
			want := make([]int32, 2*n*p.KVHeads)
			if err := host.Place(0, l, hq, hk, positions, want[:n*p.KVHeads], want[n*p.KVHeads:]); err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				got := make([]int32, 2*n*p.KVHeads)
				var err error
				if e.IsDevice(0) {
					err = Place(e, 0, l, StepInput{Dev: v, Q: dq, K: dk, Positions: positions}, got[:n*p.KVHeads], got[n*p.KVHeads:])
				} else {
					err = e.Place(0, l, hq, hk, positions, got[:n*p.KVHeads], got[n*p.KVHeads:])
				}
				if err != nil || !slices.Equal(got, want) {
					t.Fatalf("position %d layer %d: %v, want %v (%v)", positions[0], l, got, want, err)
				}
			}
		}
	}
	step(8, []*policy.Engine{dev})
	for range 40 {
		step(1, []*policy.Engine{dev})
	}
	blob, err := dev.SaveSeq(0)
	if err != nil {
		t.Fatal(err)
	}
	hblob, _ := host.SaveSeq(0)
	// With the instant score the stored scores of cached slots are never
	// read (a step that reads them rewrites them first), and the device
	// does not write them while free slots are taken: only they may
	// differ. The continuation below shows the blob holds what matters.
	if !bytes.Equal(blob, hblob) && (p.Score != policy.ScoreInstant || len(blob) != len(hblob)) {
		t.Errorf("device blob of %d bytes, host blob of %d: they differ", len(blob), len(hblob))
	}
	if err := loaded.LoadSeq(0, blob); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		step(1, []*policy.Engine{dev, loaded})
	}
	// A load over the device sequence: a host sequence from then on.
	blob, _ = dev.SaveSeq(0)
	if err := dev.LoadSeq(0, blob); err != nil {
		t.Fatal(err)
	}
	if _, d := dev.MemoryInUse(); d != 0 || dev.IsDevice(0) {
		t.Errorf("after a load over the device sequence: %d device bytes reserved, device %v", d, dev.IsDevice(0))
	}
	for range 10 {
		step(1, []*policy.Engine{dev, loaded})
	}
}

func saveTokenCase(t *testing.T, v *Device, r *rand.Rand, p policy.Params) {
	tp := newTokPair(t, v, r, p, policy.BF16)
	tp.add(0)
	tp.observe(0, p.Budget+5, "prefill")
	for step := 0; step < 40; step++ {
		tp.observe(0, 1, "before the save")
		if step%4 != 1 {
			tp.evict(0, 2, "before the save")
		}
	}
	blob, err := tp.dev.SaveSeq(0)
	if err != nil {
		t.Fatal(err)
	}
	hblob, _ := tp.host.SaveSeq(0)
	if !bytes.Equal(blob, hblob) {
		t.Errorf("device blob of %d bytes, host blob of %d: they differ", len(blob), len(hblob))
	}
	loaded, _ := policy.NewEngine(tp.p)
	if err := loaded.LoadSeq(0, blob); err != nil {
		t.Fatal(err)
	}
	if got, _ := loaded.TokenPositions(0); !slices.Equal(got, must(tp.host.TokenPositions(0))) {
		t.Fatalf("loaded positions %v", got)
	}
	// The loaded sequence takes the host rows the host engine takes.
	tp.extra = []*policy.Engine{loaded}
	for step := 0; step < 30; step++ {
		tp.observe(0, 1, "after the save")
		tp.evict(0, 2, "after the save")
	}
	tp.same(0, "after the save")
	// A load over the device sequence: a host sequence from then on.
	blob, _ = tp.dev.SaveSeq(0)
	if err := tp.dev.LoadSeq(0, blob); err != nil {
		t.Fatal(err)
	}
	if _, d := tp.dev.MemoryInUse(); d != 0 || tp.dev.IsDevice(0) {
		t.Errorf("after a load over the device sequence: %d device bytes reserved, device %v", d, tp.dev.IsDevice(0))
	}
}

func must[T any](x T, err error) T {
	if err != nil {
		panic(err)
	}
	return x
}

// TestTokSeqConcurrentSequences: token-mode CUDA sequences observed and
// evicted from their own goroutines at once (run with -race) each agree
// with a host engine's sequence fed the same rows.
func TestTokSeqConcurrentSequences(t *testing.T) {
	useLibrary(t, buildEmu(t))
	v, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	p := policy.DefaultParams()
	p.Mode, p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Budget, p.MaxSeqs = policy.ModeToken, 2, 2, 4, 24, 20, 4
	p.Score = policy.ScoreAccumulated
	host, _ := policy.NewEngine(p)
	dev, _ := policy.NewEngine(p)
	errs := make(chan error, p.MaxSeqs)
	for id := 0; id < p.MaxSeqs; id++ {
		host.AddSeq(id)
		dev.AddSeq(id)
		go func(id int) {
			errs <- func() error {
				r := rand.New(rand.NewPCG(uint64(id), 78))
				for step := 0; step < 60; step++ {
					hq, dq, fq := devRows(t, v, r, policy.F16, 1, p.QHeads, p.HeadDim)
					hk, dk, fk := devRows(t, v, r, policy.F16, 1, p.KVHeads, p.HeadDim)
					for l := 0; l < p.Layers; l++ {
						if err := host.Observe(id, l, hq, hk, []int32{int32(step)}); err != nil {
							return err
						}
						if err := Observe(dev, id, l, StepInput{Dev: v, Q: dq, K: dk, Positions: []int32{int32(step)}}); err != nil {
							return err
						}
					}
					fq()
					fk()
					want, got := make([]int32, 2), make([]int32, 2)
					nw, err := host.Evictions(id, want)
					if err != nil {
						return err
					}
					ng, err := dev.Evictions(id, got)
					if err != nil {
						return err
					}
					if !slices.Equal(got[:ng], want[:nw]) {
						return fmt.Errorf("sequence %d step %d: device evicts %v, host %v", id, step, got[:ng], want[:nw])
					}
				}
				return nil
			}()
		}(id)
	}
	for range p.MaxSeqs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	dev.FreeDevice()
	if _, d := dev.MemoryInUse(); d != 0 {
		t.Errorf("after FreeDevice: %d device bytes reserved", d)
	}
}
