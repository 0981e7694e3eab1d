// Command gpucheck is `make gpu-check`: on a machine with an NVIDIA GPU it
// checks the device kernels against the CPU engine (package policy) and
// measures them, in one run of at most a few minutes:
//
//  1. codes: hev_hash against Engine.Hash for f32, f16 and bf16 rows with
//     strides, every head_dim 1…4096 and every width, NaN/Inf rows named;
//  2. slot mode: a prefill chunk then decode steps on the device (hash,
//     Farthest or ScoreStep, Store) against Engine.Place, every width,
//     probe and score: every slot of every step identical;
//  3. token mode: the same with Engine.Observe and Evictions (device score
//     updates and float64 totals);
//  4. cuda.Layer.DecodeStep (what the C API's wiring will call) against
//     Engine.Place; the asynchronous path on a caller's non-blocking stream,
//     behind a long kernel: results identical, the launches return before
//     the work runs;
//  5. the C API's CUDA path (cuda.Place, PlaceAsync, HashRows) against
//     Engine.Place and Engine.Hash, on a stream of its own (wired.go); its
//     token mode (cuda.Observe, Engine.Evictions of a device sequence)
//     against the host engine's Observe and Evictions (token.go);
//  6. benchmarks: the device's read bandwidth (hev_read_bw), the scans'
//     throughput as a ratio of it, the per-layer decision latency at
//     budgets 4k/32k/128k against the CPU engine, and the token-mode step
//     (observe one layer, evictions) through the C API's path at the same
//     budgets against the CPU engine, in paired interleaved rounds,
//     medians and spread.
//
// It prints one line per check and a closing "N passed, M failed" line; it
// exits 1 when a check fails and 2 when no GPU can be used.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/hashevict/hashevict/cuda"
	"github.com/hashevict/hashevict/policy"
	"github.com/hashevict/hashevict/simd"
)

var (
	quick   = flag.Bool("quick", false, "fewer dims, steps and benchmark rounds (about a minute)")
	noBench = flag.Bool("no-bench", false, "checks only, no benchmarks")
	only    = flag.String("only", "", "comma-separated subset of: hash,slot,token,layer,async,wired,bench")
	budgets = flag.String("budgets", "4096,32768,131072", "budgets of the per-layer latency benchmark")
	rounds  = flag.Int("rounds", 7, "paired rounds per benchmark")
	// Sizes of the device buffers the benchmarks scan and the long kernel
	// the async check queues first (the host-emulation test makes them
	// small; on a GPU the defaults fit in 10 GB).
	benchBytes = flag.Int64("bench-bytes", 1<<30, "bytes of codes per scan benchmark")
	delayBytes = flag.Int64("delay-bytes", 4<<30, "bytes read by the kernel queued before the async check's steps")
)

var passed, failed int

func report(ok bool, format string, args ...any) {
	status := "ok  "
	if ok {
		passed++
	} else {
		failed++
		status = "FAIL"
	}
	fmt.Printf("%s %s\n", status, fmt.Sprintf(format, args...))
}

func must(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "gpu-check: %s: %v\n", what, err)
		fmt.Printf("%d passed, %d failed\n", passed, failed+1)
		os.Exit(1)
	}
}

func want(name string) bool {
	if *only == "" {
		return name != "bench" || !*noBench
	}
	for _, s := range strings.Split(*only, ",") {
		if strings.TrimSpace(s) == name {
			return true
		}
	}
	return false
}

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: gpucheck [flags]   (make gpu-check)\n\nChecks the CUDA kernels against the CPU engine and benchmarks them on the first GPU.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	bl, err := parseBudgets(*budgets)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpu-check:", err)
		os.Exit(2)
	}
	if *benchBytes < 1<<20 || *benchBytes%(1<<20) != 0 || *delayBytes < 16 || *delayBytes%16 != 0 {
		fmt.Fprintln(os.Stderr, "gpu-check: -bench-bytes must be a multiple of 1 MiB, -delay-bytes of 16")
		os.Exit(2)
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "gpu-check: -rounds must be at least 1")
		os.Exit(2)
	}
	start := time.Now()
	v, err := cuda.Open()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gpu-check: no usable GPU: %v\n", err)
		os.Exit(2)
	}
	code, err := v.Code()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gpu-check: the kernels do not load on %s (sm_%d%d): %v\n", v.Name, v.CCMajor, v.CCMinor, err)
		os.Exit(2)
	}
	fmt.Printf("device: %s, sm_%d%d, driver CUDA %s; kernels: %s; CPU kernels: %s\n",
		v.Name, v.CCMajor, v.CCMinor, v.DriverVersion(), code, simd.Active().Name)
	c := &checker{v: v, r: rand.New(rand.NewPCG(7, 11))}
	if want("hash") {
		c.hashChecks()
	}
	if want("slot") {
		c.slotChecks()
	}
	if want("token") {
		c.tokenChecks()
	}
	if want("layer") {
		c.layerChecks()
	}
	if want("async") {
		c.asyncCheck()
	}
	if want("wired") {
		c.wiredChecks()
		c.wiredTokenChecks()
	}
	if want("bench") {
		c.bench(bl)
	}
	fmt.Printf("gpu-check took %.1f s; device memory still allocated by the checks: %d bytes\n", time.Since(start).Seconds(), v.Allocated())
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

func parseBudgets(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		var b int
		if _, err := fmt.Sscanf(strings.TrimSpace(f), "%d", &b); err != nil || b < 64 || b > 1<<24 {
			return nil, fmt.Errorf("-budgets: %q is not a budget between 64 and 2^24", f)
		}
		out = append(out, b)
	}
	return out, nil
}

type checker struct {
	v *cuda.Device
	r *rand.Rand
}

// buf is device memory of the checks, freed by free.
type buf struct {
	p cuda.Ptr
	n int64
}

func (c *checker) alloc(n int64) buf {
	p, err := c.v.Alloc(max(n, 16))
	must(err, "alloc")
	return buf{p, max(n, 16)}
}

func (c *checker) free(bs ...buf) {
	for _, b := range bs {
		must(c.v.Free(b.p, b.n), "free")
	}
}

func upload[T any](c *checker, b buf, s []T) {
	if len(s) == 0 {
		return
	}
	n := int64(len(s)) * int64(unsafe.Sizeof(s[0]))
	if n > b.n {
		must(fmt.Errorf("%d bytes into a buffer of %d", n, b.n), "upload")
	}
	must(c.v.Upload(0, b.p, unsafe.Pointer(&s[0]), n), "upload")
}

func download[T any](c *checker, s []T, b buf) {
	if len(s) == 0 {
		return
	}
	n := int64(len(s)) * int64(unsafe.Sizeof(s[0]))
	must(c.v.Download(0, unsafe.Pointer(&s[0]), b.p, n), "download")
}

func wordsOf(bits int) int { return (bits + 63) / 64 }

// randomRows returns tokens*heads rows of dim values of dtype in a byte
// buffer with padded strides (so that strides are exercised), and the
// strides.
func (c *checker) randomRows(dt policy.DType, dim, heads, tokens int) ([]byte, int64, int64) {
	es := dt.Size()
	hs := int64(dim)*es + es*int64(c.r.IntN(3))
	ts := int64(heads)*hs + es*int64(c.r.IntN(3))
	b := make([]byte, int64(tokens-1)*ts+int64(heads-1)*hs+int64(dim)*es)
	for t := 0; t < tokens; t++ {
		for h := 0; h < heads; h++ {
			off := int64(t)*ts + int64(h)*hs
			for i := 0; i < dim; i++ {
				f := float32(c.r.NormFloat64())
				if c.r.IntN(50) == 0 {
					f = 0
				}
				put(b[off+int64(i)*es:], dt, f)
			}
		}
	}
	return b, hs, ts
}

func put(b []byte, dt policy.DType, f float32) {
	switch dt {
	case policy.F32:
		*(*float32)(unsafe.Pointer(&b[0])) = f
	case policy.F16:
		*(*uint16)(unsafe.Pointer(&b[0])) = toHalf(f)
	case policy.BF16:
		*(*uint16)(unsafe.Pointer(&b[0])) = uint16(*(*uint32)(unsafe.Pointer(&f)) >> 16)
	}
}

// toHalf rounds toward zero into binary16 (any finite half will do as
// test input; normal range only, smaller magnitudes become zero).
func toHalf(f float32) uint16 {
	u := *(*uint32)(unsafe.Pointer(&f))
	sign := uint16(u>>16) & 0x8000
	if u>>23&0xff == 0xff {
		return sign | 0x7c00 | uint16(u>>13&0x3ff) // Inf, NaN
	}
	e := int(u>>23&0xff) - 127 + 15
	if e <= 0 {
		return sign
	}
	if e >= 31 {
		return sign | 0x7bff
	}
	return sign | uint16(e)<<10 | uint16(u>>13&0x3ff)
}

func engine(mode policy.Mode, layers, kvh, qh, dim, bits, budget int, probe policy.Probe, score policy.Score) *policy.Engine {
	p := policy.DefaultParams()
	p.Mode, p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Bits, p.Budget = mode, layers, kvh, qh, dim, bits, budget
	p.Probe, p.Score, p.Seed = probe, score, uint64(dim*1000+bits)
	e, err := policy.NewEngine(p)
	must(err, "policy.NewEngine")
	return e
}

// --- 1. codes ----------------------------------------------------------------

func (c *checker) hashChecks() {
	t0 := time.Now()
	dims := make([]int, 0, 4096)
	step := 1
	if *quick {
		step = 29
	}
	for d := 1; d <= policy.MaxHeadDim; d += step {
		dims = append(dims, d)
	}
	bad := 0
	cases, rows := 0, 0
	dtypes := []policy.DType{policy.F32, policy.F16, policy.BF16}
	widths := []int{8, 16, 32, 64, 128, 256}
	for i, dim := range dims {
		// Every dim at a rotating width and dtype, and every width and
		// dtype at the dims where lanes and warps have edges.
		combos := [][2]int{{widths[i%6], i % 3}}
		if dim <= 33 || dim%64 <= 1 || dim%64 == 63 || dim == policy.MaxHeadDim {
			combos = combos[:0]
			for w := range widths {
				for d := range dtypes {
					combos = append(combos, [2]int{widths[w], d})
				}
			}
		}
		for _, cb := range combos {
			ok, n := c.hashCase(dtypes[cb[1]], dim, cb[0], i%11 == 0)
			cases++
			rows += n
			if !ok {
				bad++
			}
		}
	}
	report(bad == 0, "codes: %d cases, %d rows (f32/f16/bf16, head_dim 1..4096 step %d, widths 8..256, strided rows, NaN/Inf rows): %d differ from Engine.Hash (%.1f s)",
		cases, rows, step, bad, time.Since(t0).Seconds())
}

// engineCache keeps the engines (their projections) of the current dim.
var engineCache struct {
	dim int
	m   map[[3]int]*policy.Engine
}

func (c *checker) hashCase(dt policy.DType, dim, bits int, poison bool) (bool, int) {
	heads, tokens := 1+c.r.IntN(4), 1+c.r.IntN(5)
	raw, hs, ts := c.randomRows(dt, dim, heads, tokens)
	badRow := -1
	if poison {
		badRow = c.r.IntN(tokens * heads)
		t, h := badRow/heads, badRow%heads
		inf := float32(1)
		for i := 0; i < 200; i++ {
			inf *= 1e30 // overflows to +Inf
		}
		put(raw[int64(t)*ts+int64(h)*hs+int64(c.r.IntN(dim))*dt.Size():], dt, inf)
	}
	key := [3]int{dim, bits, heads}
	if engineCache.dim != dim {
		engineCache.dim, engineCache.m = dim, map[[3]int]*policy.Engine{}
	}
	e := engineCache.m[key]
	if e == nil {
		e = engine(policy.ModeSlot, 1, heads, heads, dim, bits, 64, policy.ProbeQuery, policy.ScoreInstant)
		engineCache.m[key] = e
	}
	W := wordsOf(bits)
	wantCodes := make([]uint64, tokens*heads*W)
	cerr := e.Hash(0, &policy.Rows{Data: raw, DType: dt, Dim: dim, Heads: heads, Tokens: tokens, HeadStride: hs, TokenStride: ts}, wantCodes)
	rt, err := e.ProjectionOf(0)
	must(err, "ProjectionOf")
	x, rtb, codes, bad := c.alloc(int64(len(raw))), c.alloc(int64(4*len(rt))), c.alloc(int64(8*len(wantCodes))), c.alloc(4)
	defer c.free(x, rtb, codes, bad)
	upload(c, x, raw)
	upload(c, rtb, rt)
	must(c.v.Hash(0, cuda.Rows{Data: x.p, DType: dt, Dim: dim, Heads: heads, Tokens: tokens, HeadStride: hs, TokenStride: ts}, rtb.p, bits, codes.p, bad.p), "Hash")
	got := make([]uint64, len(wantCodes))
	download(c, got, codes)
	var gotBad [1]uint32
	download(c, gotBad[:], bad)
	n := tokens * heads
	if poison {
		if cerr == nil || policy.CodeOf(cerr) != policy.CodeNonFinite || gotBad[0] != uint32(badRow) {
			fmt.Printf("     %s dim %d bits %d: NaN/Inf row %d: device says %d, CPU says %v\n", dt, dim, bits, badRow, int32(gotBad[0]), cerr)
			return false, n
		}
		return true, n
	}
	if cerr != nil || gotBad[0] != 0xffffffff {
		fmt.Printf("     %s dim %d bits %d: device bad row %d, CPU error %v\n", dt, dim, bits, int32(gotBad[0]), cerr)
		return false, n
	}
	if !slices.Equal(got, wantCodes) {
		for i := range got {
			if got[i] != wantCodes[i] {
				fmt.Printf("     %s dim %d bits %d row %d: code word %#x, CPU %#x\n", dt, dim, bits, i/W, got[i], wantCodes[i])
				break
			}
		}
		return false, n
	}
	return true, n
}

// --- 2 and 3. decisions -----------------------------------------------------

// layerBufs are one layer's device tables and scratch for kvh KV heads of
// slots entries.
type layerBufs struct {
	codes, score, count buf
	pos                 buf   // each slot's position (-1: free), head-major
	guard               buf   // each head's guard (cuda.GuardWords)
	stride              int64 // table words per head
}

func (l layerBufs) all() []buf { return []buf{l.codes, l.score, l.count, l.pos, l.guard} }

// stepBufs are the per-step device buffers shared by the layers.
type stepBufs struct {
	q, k, kc, qc, bad, skip, skipN, keys, victims, out, evicted, rt buf
}

type shape struct {
	layers, kvh, qh, dim, bits, budget int
	probe                              policy.Probe
	score                              policy.Score
	dt                                 policy.DType
}

func (s shape) String() string {
	p := "query"
	if s.probe == policy.ProbeKey {
		p = "key"
	}
	return fmt.Sprintf("%d-bit %s probe, score %d, %s, %d layers, %d/%d heads, dim %d, budget %d", s.bits, p, s.score, s.dt, s.layers, s.kvh, s.qh, s.dim, s.budget)
}

func (c *checker) newLayer(s shape, slots int) layerBufs {
	stride := int64(simd.CodeWords(s.bits, slots))
	l := layerBufs{
		codes:  c.alloc(8 * stride * int64(s.kvh)),
		score:  c.alloc(4 * int64(slots) * int64(s.kvh)),
		count:  c.alloc(4 * int64(slots) * int64(s.kvh)),
		pos:    c.alloc(4 * int64(slots) * int64(s.kvh)),
		guard:  c.alloc(4 * int64(s.kvh*cuda.GuardWords(policy.DefaultSinks, policy.DefaultRecent))),
		stride: stride,
	}
	must(c.v.Fill32(0, l.pos.p, 0xffffffff, slots*s.kvh), "Fill32")
	upload(c, l.guard, cuda.NewGuards(s.kvh, policy.DefaultSinks, policy.DefaultRecent))
	return l
}

func (c *checker) newStep(s shape, maxTokens, skipStride int) stepBufs {
	W := int64(wordsOf(s.bits))
	// randomRows pads each stride by up to two elements.
	rowBytes := int64(s.dim+4) * s.dt.Size()
	return stepBufs{
		q: c.alloc(int64(maxTokens*s.qh)*rowBytes + 64), k: c.alloc(int64(maxTokens*s.kvh)*rowBytes + 64),
		kc: c.alloc(8 * W * int64(maxTokens*s.kvh)), qc: c.alloc(8 * W * int64(maxTokens*s.qh)),
		bad: c.alloc(4), skip: c.alloc(4 * int64(skipStride*s.kvh)), skipN: c.alloc(4 * int64(s.kvh)),
		keys: c.alloc(8 * int64(s.kvh)), victims: c.alloc(4 * int64(s.kvh)), out: c.alloc(4 * int64(s.kvh)),
		evicted: c.alloc(4 * int64(s.kvh)), rt: c.alloc(4 * int64(s.bits*s.dim)),
	}
}

func (b stepBufs) all() []buf {
	return []buf{b.q, b.k, b.kc, b.qc, b.bad, b.skip, b.skipN, b.keys, b.victims, b.out, b.evicted, b.rt}
}

// hashStep uploads q and k of one step and hashes them on the device; it
// returns the probes and the new codes' locations.
func (c *checker) hashStep(s shape, e *policy.Engine, layer int, b stepBufs, q, k []byte, qhs, qts, khs, kts int64, n int) (cuda.Probes, cuda.NewCodes) {
	rt, err := e.ProjectionOf(layer)
	must(err, "ProjectionOf")
	upload(c, b.rt, rt)
	upload(c, b.k, k)
	W := int64(wordsOf(s.bits))
	must(c.v.Hash(0, cuda.Rows{Data: b.k.p, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: n, HeadStride: khs, TokenStride: kts}, b.rt.p, s.bits, b.kc.p, b.bad.p), "Hash k")
	nc := cuda.NewCodes{Codes: b.kc.p, HeadStride: W, TokenStride: int64(s.kvh) * W}
	if s.probe == policy.ProbeKey {
		return cuda.Probes{Codes: b.kc.p, HeadStride: W, TokenStride: int64(s.kvh) * W, PerToken: 1, Tokens: n}, nc
	}
	upload(c, b.q, q)
	must(c.v.Hash(0, cuda.Rows{Data: b.q.p, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: n, HeadStride: qhs, TokenStride: qts}, b.rt.p, s.bits, b.qc.p, b.bad.p), "Hash q")
	g := int64(s.qh / s.kvh)
	return cuda.Probes{Codes: b.qc.p, HeadStride: g * W, TokenStride: int64(s.qh) * W, PerToken: int(g), Tokens: n}, nc
}

func (c *checker) shapes() []shape {
	var out []shape
	dts := []policy.DType{policy.F32, policy.F16, policy.BF16}
	i := 0
	for _, bits := range []int{8, 16, 32, 64, 128, 256} {
		for _, probe := range []policy.Probe{policy.ProbeQuery, policy.ProbeKey} {
			for _, score := range []policy.Score{policy.ScoreInstant, policy.ScoreAccumulated, policy.ScoreDecayed} {
				dims := []int{64, 100, 128, 1, 17, 256}
				out = append(out, shape{layers: 2, kvh: 1 + i%4, qh: (1 + i%4) * (1 + i%3), dim: dims[i%len(dims)], bits: bits,
					budget: 40 + 7*(i%5), probe: probe, score: score, dt: dts[i%3]})
				i++
			}
		}
	}
	return out
}

func (c *checker) slotChecks() {
	steps := 300
	if *quick {
		steps = 80
	}
	for _, s := range c.shapes() {
		t0 := time.Now()
		msg := c.slotCase(s, steps)
		report(msg == "", "slot mode, %v: prefill %d + %d decode steps, every slot as Engine.Place (%.1f s)%s", s, s.budget/2, steps, time.Since(t0).Seconds(), msg)
	}
}

// slotCase runs a prefill chunk and decode steps through the CPU engine
// and the device kernels and returns "" when every slot agrees.
func (c *checker) slotCase(s shape, steps int) string {
	e := engine(policy.ModeSlot, s.layers, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	must(e.AddSeq(0), "AddSeq")
	p := e.P
	prefill := s.budget / 2
	layers := make([]layerBufs, s.layers)
	for l := range layers {
		layers[l] = c.newLayer(s, s.budget)
	}
	b := c.newStep(s, prefill, s.budget)
	defer func() {
		for _, lb := range layers {
			c.free(lb.all()...)
		}
		c.free(b.all()...)
	}()
	// The device side's own record of each slot's position: the skip
	// lists are derived from it as the engine's guard derives them.
	pos := make([][][]int32, s.layers)
	used := make([]int, s.layers)
	for l := range pos {
		pos[l] = make([][]int32, s.kvh)
		for h := range pos[l] {
			pos[l][h] = make([]int32, s.budget)
		}
	}
	next := int32(0)
	for step := 0; step <= steps; step++ {
		n := 1
		if step == 0 {
			n = prefill
		}
		positions := make([]int32, n)
		for i := range positions {
			positions[i] = next
			next++
		}
		q, qhs, qts := c.randomRows(s.dt, s.dim, s.qh, n)
		k, khs, kts := c.randomRows(s.dt, s.dim, s.kvh, n)
		for l := 0; l < s.layers; l++ {
			wantSlots := make([]int32, n*s.kvh)
			wantEvicted := make([]int32, n*s.kvh)
			err := e.Place(0, l, &policy.Rows{Data: q, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: n, HeadStride: qhs, TokenStride: qts},
				&policy.Rows{Data: k, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: n, HeadStride: khs, TokenStride: kts}, positions, wantSlots, wantEvicted)
			if err != nil {
				return fmt.Sprintf(": step %d layer %d: Engine.Place: %v", step, l, err)
			}
			probes, nc := c.hashStep(s, e, l, b, q, k, qhs, qts, khs, kts, n)
			lb := layers[l]
			tb := cuda.Tables{Codes: lb.codes.p, Stride: lb.stride, Bits: s.bits, Slots: max(used[l], 1), Heads: s.kvh,
				Score: lb.score.p, Count: lb.count.p, ScoreStride: int64(s.budget)}
			free := s.budget - used[l]
			got := make([]int32, s.kvh)
			gotEvicted := make([]int32, s.kvh)
			place := cuda.Placement{OutSlots: b.out.p, Positions: lb.pos.p, PositionStride: int64(s.budget), OutEvicted: b.evicted.p,
				Guard: lb.guard.p, Sinks: p.Sinks, Recent: p.Recent}
			if n <= free {
				// Free slots: the cached entries' scores still take the
				// step (what Engine.Place's rescore does), then each
				// token takes the next free slot.
				if used[l] > 0 && s.score != policy.ScoreInstant {
					must(c.v.ScoreStep(0, tb, probes, cuda.Skip{}, s.score, p.Decay, 0, 0), "ScoreStep (update)")
				}
				all := tb
				all.Slots = s.budget // Store's bound: the table's capacity
				for tok := 0; tok < n; tok++ {
					place.Token, place.FixedSlot, place.Position = tok, used[l], positions[tok]
					must(c.v.Store(0, all, probes, nc, place), "Store (free slot)")
					download(c, got, b.out)
					download(c, gotEvicted, b.evicted)
					for h := 0; h < s.kvh; h++ {
						if got[h] != wantSlots[tok*s.kvh+h] || gotEvicted[h] != wantEvicted[tok*s.kvh+h] {
							return fmt.Sprintf(": step %d layer %d token %d head %d: device slot %d (evicted %d), CPU %d (%d)", step, l, tok, h, got[h], gotEvicted[h], wantSlots[tok*s.kvh+h], wantEvicted[tok*s.kvh+h])
						}
						pos[l][h][used[l]] = positions[tok]
					}
					used[l]++
				}
				continue
			}
			if n != 1 {
				return fmt.Sprintf(": step %d: a chunk of %d with evictions is not a device path", step, n)
			}
			// Full: the device guard's skip list per head (checked
			// against the protected slots of the check's own record),
			// then the scan.
			newest := positions[n-1]
			hi := max(newest-int32(p.Recent), int32(p.Sinks))
			sk := cuda.Skip{Slots: b.skip.p, Stride: p.Sinks + p.Recent, Count: b.skipN.p}
			must(c.v.Guard(0, lb.guard.p, p.Sinks, p.Recent, s.kvh, lb.pos.p, int64(s.budget), hi, sk), "Guard")
			if msg := c.checkSkip(b, s.kvh, sk.Stride, pos[l], int32(p.Sinks), hi); msg != "" {
				return fmt.Sprintf(": step %d layer %d: %s", step, l, msg)
			}
			if s.score == policy.ScoreInstant {
				must(c.v.Farthest(0, tb, probes, sk, b.keys.p, b.victims.p), "Farthest")
			} else {
				must(c.v.ScoreStep(0, tb, probes, sk, s.score, p.Decay, b.keys.p, b.victims.p), "ScoreStep")
			}
			place.FixedSlot, place.Victims, place.VictimStride, place.Position = -1, b.victims.p, 1, newest
			must(c.v.Store(0, tb, probes, nc, place), "Store (victim)")
			download(c, got, b.out)
			download(c, gotEvicted, b.evicted)
			for h := 0; h < s.kvh; h++ {
				if got[h] != wantSlots[h] || gotEvicted[h] != wantEvicted[h] {
					return fmt.Sprintf(": step %d layer %d head %d: device evicts slot %d (position %d), CPU slot %d (position %d)", step, l, h, got[h], gotEvicted[h], wantSlots[h], wantEvicted[h])
				}
				pos[l][h][got[h]] = newest
			}
		}
	}
	// The slots' positions at the end, as the engine reports them, in the
	// check's record and in the device's.
	for l := 0; l < s.layers; l++ {
		dp := make([]int32, s.budget*s.kvh)
		download(c, dp, layers[l].pos)
		for h := 0; h < s.kvh; h++ {
			wp := make([]int32, s.budget)
			must(e.SlotPositions(0, l, h, wp), "SlotPositions")
			if !slices.Equal(wp, pos[l][h]) || !slices.Equal(wp, dp[h*s.budget:(h+1)*s.budget]) {
				return fmt.Sprintf(": layer %d head %d: slot positions differ at the end", l, h)
			}
		}
	}
	return ""
}

// checkSkip compares the skip lists hev_guard wrote with the slots that
// hold protected positions in the check's record.
func (c *checker) checkSkip(b stepBufs, heads, stride int, pos [][]int32, sinks, hi int32) string {
	skip := make([]int32, heads*stride)
	n := make([]int32, heads)
	download(c, skip, b.skip)
	download(c, n, b.skipN)
	for h := 0; h < heads; h++ {
		var want []int32
		for slot, ps := range pos[h] {
			if ps >= 0 && (ps < sinks || ps >= hi) {
				want = append(want, int32(slot))
			}
		}
		got := skip[h*stride : h*stride+int(n[h])]
		if !slices.IsSorted(got) || !slices.Equal(slices.Compact(slices.Clone(got)), want) {
			return fmt.Sprintf("head %d: the device guard skips %v, the protected slots are %v", h, got, want)
		}
	}
	return ""
}

func (c *checker) tokenChecks() {
	steps := 200
	if *quick {
		steps = 60
	}
	for _, s := range c.shapes() {
		t0 := time.Now()
		msg := c.tokenCase(s, steps)
		report(msg == "", "token mode, %v: prefill %d + %d steps, every eviction as Engine.Evictions (%.1f s)%s", s, s.budget/2, steps, time.Since(t0).Seconds(), msg)
	}
}

// tokenCase runs token mode on both sides. The device keeps its own slot
// assignment (positions are what is compared): every table is updated over
// all its slots per step, new tokens are stored, and the evictions are
// chosen from the device's float64 totals.
func (c *checker) tokenCase(s shape, steps int) string {
	e := engine(policy.ModeToken, s.layers, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	must(e.AddSeq(0), "AddSeq")
	p := e.P
	prefill := s.budget / 2
	capacity := s.budget + 1
	layers := make([]layerBufs, s.layers)
	ptrs := make([]uint64, 0, s.layers*s.kvh)
	for l := range layers {
		layers[l] = c.newLayer(s, capacity)
		for h := 0; h < s.kvh; h++ {
			ptrs = append(ptrs, uint64(layers[l].score.p)+uint64(4*h*capacity))
		}
	}
	b := c.newStep(s, prefill, 1)
	tables, totals := c.alloc(int64(8*len(ptrs))), c.alloc(int64(8*capacity))
	defer func() {
		for _, lb := range layers {
			c.free(lb.all()...)
		}
		c.free(append(b.all(), tables, totals)...)
	}()
	upload(c, tables, ptrs)
	slotPos := make([]int32, capacity)
	for i := range slotPos {
		slotPos[i] = -1
	}
	next := int32(0)
	for step := 0; step <= steps; step++ {
		n := 1
		if step == 0 {
			n = prefill
		}
		positions := make([]int32, n)
		slots := make([]int, n)
		for i := range positions {
			positions[i] = next
			next++
			slots[i] = slices.Index(slotPos, -1)
			slotPos[slots[i]] = positions[i]
		}
		q, qhs, qts := c.randomRows(s.dt, s.dim, s.qh, n)
		k, khs, kts := c.randomRows(s.dt, s.dim, s.kvh, n)
		for l := 0; l < s.layers; l++ {
			err := e.Observe(0, l, &policy.Rows{Data: q, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: n, HeadStride: qhs, TokenStride: qts},
				&policy.Rows{Data: k, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: n, HeadStride: khs, TokenStride: kts}, positions)
			if err != nil {
				return fmt.Sprintf(": step %d layer %d: Engine.Observe: %v", step, l, err)
			}
			probes, nc := c.hashStep(s, e, l, b, q, k, qhs, qts, khs, kts, n)
			lb := layers[l]
			tb := cuda.Tables{Codes: lb.codes.p, Stride: lb.stride, Bits: s.bits, Slots: capacity, Heads: s.kvh,
				Score: lb.score.p, Count: lb.count.p, ScoreStride: int64(capacity)}
			must(c.v.ScoreStep(0, tb, probes, cuda.Skip{}, s.score, p.Decay, 0, 0), "ScoreStep (token update)")
			for tok := 0; tok < n; tok++ {
				must(c.v.Store(0, tb, probes, nc, cuda.Placement{Token: tok, FixedSlot: slots[tok]}), "Store")
			}
		}
		wantOut := make([]int32, 8)
		nw, err := e.Evictions(0, wantOut)
		if err != nil {
			return fmt.Sprintf(": step %d: Engine.Evictions: %v", step, err)
		}
		live := 0
		maxPos := int32(-1)
		for _, ps := range slotPos {
			if ps >= 0 {
				live++
				maxPos = max(maxPos, ps)
			}
		}
		var got []int32
		if excess := live - p.Budget; excess > 0 {
			must(c.v.TokenTotals(0, tables.p, len(ptrs), capacity, totals.p), "TokenTotals")
			tot := make([]float64, capacity)
			download(c, tot, totals)
			hi := max(maxPos-int32(p.Recent), int32(p.Sinks))
			var cand []int
			for slot, ps := range slotPos {
				if ps >= int32(p.Sinks) && ps < hi {
					cand = append(cand, slot)
				}
			}
			slices.SortFunc(cand, func(a, b int) int {
				if tot[a] != tot[b] {
					if tot[a] > tot[b] {
						return -1
					}
					return 1
				}
				return int(slotPos[a] - slotPos[b])
			})
			for _, slot := range cand[:min(excess, len(cand), len(wantOut))] {
				got = append(got, slotPos[slot])
				slotPos[slot] = -1
			}
			slices.Sort(got)
		}
		if !slices.Equal(got, wantOut[:nw]) {
			return fmt.Sprintf(": step %d: device evicts %v, CPU %v", step, got, wantOut[:nw])
		}
	}
	return ""
}

// --- 4. Layer.DecodeStep and the asynchronous path ------------------------

// layerChecks runs cuda.Layer.DecodeStep, the composed decode step, from an
// empty cache through evictions against Engine.Place for every shape.
func (c *checker) layerChecks() {
	steps := 400
	if *quick {
		steps = 100
	}
	for _, s := range c.shapes() {
		t0 := time.Now()
		msg := c.layerCase(s, steps)
		report(msg == "", "Layer.DecodeStep, %v: %d steps from empty, slots and evicted positions as Engine.Place (%.1f s)%s", s, steps, time.Since(t0).Seconds(), msg)
	}
}

func (c *checker) layerCase(s shape, steps int) string {
	e := engine(policy.ModeSlot, s.layers, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	must(e.AddSeq(0), "AddSeq")
	p := e.P
	sp := cuda.StepParams{Probe: p.Probe, Score: p.Score, Decay: p.Decay}
	sc, err := c.v.NewScratch(s.kvh, s.qh, s.bits, p.Sinks, p.Recent)
	must(err, "NewScratch")
	layers := make([]*cuda.Layer, s.layers)
	rts := make([]buf, s.layers)
	for l := range layers {
		layers[l], err = c.v.NewLayer(0, s.kvh, s.bits, s.budget, p.Sinks, p.Recent)
		must(err, "NewLayer")
		rt, _ := e.ProjectionOf(l)
		rts[l] = c.alloc(int64(4 * len(rt)))
		upload(c, rts[l], rt)
	}
	b := c.newStep(s, 1, 1)
	defer func() {
		for l := range layers {
			must(layers[l].Free(), "Layer.Free")
		}
		must(sc.Free(c.v), "Scratch.Free")
		c.free(append(b.all(), rts...)...)
	}()
	for step := 0; step < steps; step++ {
		q, qhs, qts := c.randomRows(s.dt, s.dim, s.qh, 1)
		k, khs, kts := c.randomRows(s.dt, s.dim, s.kvh, 1)
		upload(c, b.q, q)
		upload(c, b.k, k)
		for l := range layers {
			want := make([]int32, 2*s.kvh)
			must(e.Place(0, l, &policy.Rows{Data: q, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: 1, HeadStride: qhs, TokenStride: qts},
				&policy.Rows{Data: k, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: 1, HeadStride: khs, TokenStride: kts},
				[]int32{int32(step)}, want[:s.kvh], want[s.kvh:]), "Place")
			must(layers[l].DecodeStep(0, &cuda.Rows{Data: b.q.p, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: 1, HeadStride: qhs, TokenStride: qts},
				&cuda.Rows{Data: b.k.p, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: 1, HeadStride: khs, TokenStride: kts},
				rts[l].p, int32(step), sp, sc, b.out.p, b.evicted.p), "DecodeStep")
			got := make([]int32, 2*s.kvh)
			download(c, got[:s.kvh], b.out)
			download(c, got[s.kvh:], b.evicted)
			if !slices.Equal(got, want) {
				return fmt.Sprintf(": step %d layer %d: device slots/evicted %v, CPU %v", step, l, got, want)
			}
		}
	}
	return ""
}

// --- the asynchronous path ---------------------------------------------------

// asyncCheck queues decode steps on a non-blocking stream of its own behind
// a long kernel, with the inputs copied into place on that stream: the
// slots must match the CPU engine's (every kernel ran in stream order) and
// the stream must still be busy when the launches return (nothing in them
// waited for the device).
func (c *checker) asyncCheck() {
	s := shape{layers: 1, kvh: 8, qh: 32, dim: 128, bits: 16, budget: 4096, probe: policy.ProbeQuery, score: policy.ScoreInstant, dt: policy.BF16}
	e := engine(policy.ModeSlot, 1, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	must(e.AddSeq(0), "AddSeq")
	p := e.P
	st, err := c.v.NewStream()
	must(err, "NewStream")
	defer c.v.DestroyStream(st)
	lb := c.newLayer(s, s.budget)
	b := c.newStep(s, s.budget, s.budget)
	big := c.alloc(*delayBytes)
	sink := c.alloc(8)
	stageQ, stageK := c.alloc(b.q.n), c.alloc(b.k.n)
	defer func() { c.free(append(append(b.all(), lb.all()...), big, sink, stageQ, stageK)...) }()
	// Fill the table through the engine's prefill (slot i = token i in
	// every head), then compare decode steps.
	q, qhs, qts := c.randomRows(s.dt, s.dim, s.qh, s.budget)
	k, khs, kts := c.randomRows(s.dt, s.dim, s.kvh, s.budget)
	positions := make([]int32, s.budget)
	for i := range positions {
		positions[i] = int32(i)
	}
	want := make([]int32, s.budget*s.kvh)
	must(e.Place(0, 0, &policy.Rows{Data: q, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: s.budget, HeadStride: qhs, TokenStride: qts},
		&policy.Rows{Data: k, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: s.budget, HeadStride: khs, TokenStride: kts}, positions, want, nil), "Place (prefill)")
	rt, _ := e.ProjectionOf(0)
	upload(c, b.rt, rt)
	upload(c, b.k, k)
	must(c.v.Hash(0, cuda.Rows{Data: b.k.p, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: s.budget, HeadStride: khs, TokenStride: kts}, b.rt.p, s.bits, b.kc.p, b.bad.p), "Hash")
	kc := make([]uint64, s.budget*s.kvh)
	download(c, kc, b.kc)
	table := make([]uint64, lb.stride*int64(s.kvh))
	pos := make([][]int32, s.kvh) // each head's record of its slots' positions
	for h := 0; h < s.kvh; h++ {
		for i := 0; i < s.budget; i++ {
			simd.PutCode(table[int64(h)*lb.stride:], kc[i*s.kvh+h:i*s.kvh+h+1], s.bits, i)
		}
		pos[h] = slices.Clone(positions)
	}
	upload(c, lb.codes, table)
	devPos := make([]int32, 0, s.budget*s.kvh)
	for h := 0; h < s.kvh; h++ {
		devPos = append(devPos, positions...)
	}
	upload(c, lb.pos, devPos)
	// The guards after the prefill: what Store would have recorded.
	guards := cuda.NewGuards(s.kvh, p.Sinks, p.Recent)
	gw := cuda.GuardWords(p.Sinks, p.Recent)
	for h := 0; h < s.kvh; h++ {
		g := guards[h*gw : (h+1)*gw]
		for i := 0; i < s.budget; i++ {
			if i < p.Sinks {
				g[2+g[0]] = int32(i)
				g[0]++
			}
			g[2+p.Sinks+int(g[1])] = int32(i)
			g[1] = (g[1] + 1) % int32(p.Recent)
		}
	}
	upload(c, lb.guard, guards)
	busy, mismatch := 0, 0
	steps := 50
	tb := cuda.Tables{Codes: lb.codes.p, Stride: lb.stride, Bits: s.bits, Slots: s.budget, Heads: s.kvh, Score: lb.score.p, Count: lb.count.p, ScoreStride: int64(s.budget)}
	W := int64(1)
	g := s.qh / s.kvh
	sk := cuda.Skip{Slots: b.skip.p, Stride: p.Sinks + p.Recent, Count: b.skipN.p}
	for step := 0; step < steps; step++ {
		t := int32(s.budget + step)
		q1, qhs1, qts1 := c.randomRows(s.dt, s.dim, s.qh, 1)
		k1, khs1, kts1 := c.randomRows(s.dt, s.dim, s.kvh, 1)
		wantSlots := make([]int32, s.kvh)
		wantEvicted := make([]int32, s.kvh)
		must(e.Place(0, 0, &policy.Rows{Data: q1, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: 1, HeadStride: qhs1, TokenStride: qts1},
			&policy.Rows{Data: k1, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: 1, HeadStride: khs1, TokenStride: kts1}, []int32{t}, wantSlots, wantEvicted), "Place")
		hi := max(t-int32(p.Recent), int32(p.Sinks))
		// Staged before; the stream copies them into place after the long
		// kernel, so a launch on any other stream would read stale input.
		// Nothing else comes from the host: the guard names the protected
		// slots on the device.
		upload(c, stageQ, q1)
		upload(c, stageK, k1)
		must(c.v.Fill32(st, b.q.p, 0, int(b.q.n/4)), "Fill32")
		must(c.v.Fill32(st, b.k.p, 0, int(b.k.n/4)), "Fill32")
		must(c.v.ReadAll(st, big.p, big.n, sink.p), "ReadAll")
		must(c.v.CopyAsync(st, b.q.p, stageQ.p, int64(len(q1))), "CopyAsync q")
		must(c.v.CopyAsync(st, b.k.p, stageK.p, int64(len(k1))), "CopyAsync k")
		must(c.v.Hash(st, cuda.Rows{Data: b.k.p, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: 1, HeadStride: khs1, TokenStride: kts1}, b.rt.p, s.bits, b.kc.p, b.bad.p), "Hash k")
		must(c.v.Hash(st, cuda.Rows{Data: b.q.p, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: 1, HeadStride: qhs1, TokenStride: qts1}, b.rt.p, s.bits, b.qc.p, b.bad.p), "Hash q")
		probes := cuda.Probes{Codes: b.qc.p, HeadStride: int64(g) * W, TokenStride: int64(s.qh) * W, PerToken: g, Tokens: 1}
		must(c.v.Guard(st, lb.guard.p, p.Sinks, p.Recent, s.kvh, lb.pos.p, int64(s.budget), hi, sk), "Guard")
		must(c.v.Farthest(st, tb, probes, sk, b.keys.p, b.victims.p), "Farthest")
		must(c.v.Store(st, tb, probes, cuda.NewCodes{Codes: b.kc.p, HeadStride: W, TokenStride: int64(s.kvh) * W},
			cuda.Placement{FixedSlot: -1, Victims: b.victims.p, VictimStride: 1, OutSlots: b.out.p,
				Positions: lb.pos.p, PositionStride: int64(s.budget), Position: t, OutEvicted: b.evicted.p,
				Guard: lb.guard.p, Sinks: p.Sinks, Recent: p.Recent}), "Store")
		pending, err := c.v.Pending(st)
		must(err, "Pending")
		if pending {
			busy++
		}
		got := make([]int32, s.kvh)
		gotEvicted := make([]int32, s.kvh)
		must(c.v.Sync(st), "Sync")
		if msg := c.checkSkip(b, s.kvh, sk.Stride, pos, int32(p.Sinks), hi); msg != "" {
			report(false, "async path, step %d: %s", step, msg)
			return
		}
		must(c.v.Download(st, unsafe.Pointer(&got[0]), b.out.p, int64(4*s.kvh)), "Download")
		must(c.v.Download(st, unsafe.Pointer(&gotEvicted[0]), b.evicted.p, int64(4*s.kvh)), "Download")
		for h := range got {
			if got[h] != wantSlots[h] || gotEvicted[h] != wantEvicted[h] {
				mismatch++
			}
		}
		if mismatch > 0 {
			fmt.Printf("     async step %d: device slots %v evicting %v, CPU %v evicting %v\n", step, got, gotEvicted, wantSlots, wantEvicted)
			break
		}
		for h := range got {
			pos[h][got[h]] = t
		}
	}
	report(mismatch == 0, "async path on a non-blocking stream behind a %d MiB read: %d decode steps (device guard, scan, store; only the rows and t from the host), slots and evicted positions as Engine.Place (%d differ)", *delayBytes>>20, steps, mismatch)
	report(busy == steps, "async path: the stream was still busy when the step's launches returned in %d of %d steps (no host sync inside)", busy, steps)
}

// --- 5. benchmarks -----------------------------------------------------------

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

func spread(x []float64) string {
	s := slices.Clone(x)
	slices.Sort(s)
	return fmt.Sprintf("median %.4g [min %.4g, max %.4g]", s[len(s)/2], s[0], s[len(s)-1])
}

// timeDevice returns the device milliseconds of f (queued on stream 0),
// measured with events.
func (c *checker) timeDevice(f func()) float64 {
	a, err := c.v.NewEvent()
	must(err, "NewEvent")
	b, err := c.v.NewEvent()
	must(err, "NewEvent")
	defer c.v.DestroyEvent(a)
	defer c.v.DestroyEvent(b)
	must(c.v.Record(a, 0), "Record")
	f()
	must(c.v.Record(b, 0), "Record")
	ms, err := c.v.Elapsed(a, b)
	must(err, "Elapsed")
	return float64(ms)
}

func (c *checker) bench(budgets []int) {
	runtime.GC()
	// Device read bandwidth, then each scan over ~1 GiB of codes, rounds
	// interleaved so that clocks and temperature drift alike for both.
	total := *benchBytes
	big := c.alloc(total)
	sink := c.alloc(8)
	keys, out := c.alloc(8*64), c.alloc(4*64)
	defer c.free(big, sink, keys, out)
	probes := c.alloc(8 * 4 * 8 * 64)
	defer c.free(probes)
	upload(c, probes, make([]uint64, 4*8*64))
	for _, bits := range []int{8, 16, 32, 64, 128, 256} {
		heads := 8
		slots := int(total * 8 / int64(bits) / int64(heads))
		tb := cuda.Tables{Codes: big.p, Stride: int64(simd.CodeWords(bits, slots)), Bits: bits, Slots: slots, Heads: heads}
		pr := cuda.Probes{Codes: probes.p, HeadStride: 4 * int64(wordsOf(bits)), TokenStride: 32 * int64(wordsOf(bits)), PerToken: 4, Tokens: 1}
		var bw, scan, ratio []float64
		for r := 0; r < *rounds; r++ {
			msBW := c.timeDevice(func() { must(c.v.ReadAll(0, big.p, total, sink.p), "ReadAll") })
			msScan := c.timeDevice(func() { must(c.v.Farthest(0, tb, pr, cuda.Skip{}, keys.p, out.p), "Farthest") })
			bw = append(bw, float64(total)/msBW/1e6)
			scan = append(scan, float64(total)/msScan/1e6)
			ratio = append(ratio, msBW/msScan)
		}
		report(true, "bench Farthest %3d-bit codes, 8 heads x %d slots (%d MiB), GQA group 4: %s GB/s; device read bandwidth %s GB/s; ratio %s (target >= 0.7)",
			bits, slots, total>>20, spread(scan), spread(bw), spread(ratio))
	}
	// The decayed score's step reads codes, scores and counts and writes
	// the scores: bytes moved per slot = bits/8 + 8.
	{
		bits, heads := 16, 8
		slots := int(total / 64)
		codes := c.alloc(int64(simd.CodeWords(bits, slots)) * 8 * int64(heads))
		score := c.alloc(4 * int64(slots*heads))
		count := c.alloc(4 * int64(slots*heads))
		defer c.free(codes, score, count)
		tb := cuda.Tables{Codes: codes.p, Stride: int64(simd.CodeWords(bits, slots)), Bits: bits, Slots: slots, Heads: heads, Score: score.p, Count: count.p, ScoreStride: int64(slots)}
		pr := cuda.Probes{Codes: probes.p, HeadStride: 4, TokenStride: 32, PerToken: 4, Tokens: 1}
		var gbs, ratio []float64
		moved := float64(slots*heads) * (float64(bits)/8 + 8)
		for r := 0; r < *rounds; r++ {
			msBW := c.timeDevice(func() { must(c.v.ReadAll(0, big.p, total, sink.p), "ReadAll") })
			ms := c.timeDevice(func() {
				must(c.v.ScoreStep(0, tb, pr, cuda.Skip{}, policy.ScoreDecayed, 0.9, keys.p, out.p), "ScoreStep")
			})
			gbs = append(gbs, moved/ms/1e6)
			ratio = append(ratio, (moved/ms)/(float64(total)/msBW))
		}
		report(true, "bench ScoreStep (decayed) 16-bit, 8 heads x %d slots: %s GB/s moved; ratio to read bandwidth %s", slots, spread(gbs), spread(ratio))
	}
	for _, budget := range budgets {
		c.latency(budget)
	}
	for _, budget := range budgets {
		c.tokenLatency(budget)
	}
}

// latency compares one layer's decode decision, Llama-3-8B-shaped (8 KV
// heads, 32 query heads, head_dim 128, bf16, 16-bit codes, instant score,
// query probe), on the device and in the CPU engine, at a full budget, in
// paired interleaved rounds. Device: Guard, hash k and q, Farthest,
// Store (positions and guards kept on the device); "queue" is the device
// time of that (events), the second figure adds bringing the slots back to
// the host after each step (what a synchronous hashevict_place does), in
// wall time. CPU: Engine.Place, wall time.
func (c *checker) latency(budget int) {
	s := shape{layers: 1, kvh: 8, qh: 32, dim: 128, bits: 16, budget: budget, probe: policy.ProbeQuery, score: policy.ScoreInstant, dt: policy.BF16}
	e := engine(policy.ModeSlot, 1, s.kvh, s.qh, s.dim, s.bits, s.budget, s.probe, s.score)
	must(e.AddSeq(0), "AddSeq")
	chunk := min(budget, 4096)
	q, qhs, qts := c.randomRows(s.dt, s.dim, s.qh, chunk)
	k, khs, kts := c.randomRows(s.dt, s.dim, s.kvh, chunk)
	outSlots := make([]int32, chunk*s.kvh)
	next := int32(0)
	for filled := 0; filled < budget; filled += chunk {
		positions := make([]int32, chunk)
		for i := range positions {
			positions[i] = next
			next++
		}
		must(e.Place(0, 0, &policy.Rows{Data: q, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: chunk, HeadStride: qhs, TokenStride: qts},
			&policy.Rows{Data: k, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: chunk, HeadStride: khs, TokenStride: kts}, positions, outSlots, nil), "Place (fill)")
	}
	lb := c.newLayer(s, budget)
	b := c.newStep(s, 1, 16)
	defer func() { c.free(append(b.all(), lb.all()...)...) }()
	table := make([]uint64, lb.stride*int64(s.kvh))
	for i := range table {
		table[i] = c.r.Uint64()
	}
	upload(c, lb.codes, table)
	rt, _ := e.ProjectionOf(0)
	upload(c, b.rt, rt)
	q1, qhs1, qts1 := c.randomRows(s.dt, s.dim, s.qh, 1)
	k1, khs1, kts1 := c.randomRows(s.dt, s.dim, s.kvh, 1)
	upload(c, b.q, q1)
	upload(c, b.k, k1)
	tb := cuda.Tables{Codes: lb.codes.p, Stride: lb.stride, Bits: s.bits, Slots: budget, Heads: s.kvh, Score: lb.score.p, Count: lb.count.p, ScoreStride: int64(budget)}
	g := s.qh / s.kvh
	// The device's positions and guards as after a prefill of budget
	// tokens (slot i = position i), so that the guard names the sinks and
	// the recent slots as in a real step.
	p := e.P
	devPos := make([]int32, budget*s.kvh)
	guards := cuda.NewGuards(s.kvh, p.Sinks, p.Recent)
	gw := cuda.GuardWords(p.Sinks, p.Recent)
	for h := 0; h < s.kvh; h++ {
		gh := guards[h*gw : (h+1)*gw]
		for i := 0; i < budget; i++ {
			devPos[h*budget+i] = int32(i)
			if i < p.Sinks {
				gh[2+gh[0]] = int32(i)
				gh[0]++
			}
			gh[2+p.Sinks+int(gh[1])] = int32(i)
			gh[1] = (gh[1] + 1) % int32(p.Recent)
		}
	}
	upload(c, lb.pos, devPos)
	upload(c, lb.guard, guards)
	sk := cuda.Skip{Slots: b.skip.p, Stride: p.Sinks + p.Recent, Count: b.skipN.p}
	t := int32(budget)
	// One layer's step on the device, nothing from the host but t: the
	// guard's skip lists, the hashes of k and q, the scan, the store.
	stepDevice := func() {
		must(c.v.Guard(0, lb.guard.p, p.Sinks, p.Recent, s.kvh, lb.pos.p, int64(budget), max(t-int32(p.Recent), int32(p.Sinks)), sk), "Guard")
		must(c.v.Hash(0, cuda.Rows{Data: b.k.p, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: 1, HeadStride: khs1, TokenStride: kts1}, b.rt.p, s.bits, b.kc.p, b.bad.p), "Hash")
		must(c.v.Hash(0, cuda.Rows{Data: b.q.p, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: 1, HeadStride: qhs1, TokenStride: qts1}, b.rt.p, s.bits, b.qc.p, b.bad.p), "Hash")
		pr := cuda.Probes{Codes: b.qc.p, HeadStride: int64(g), TokenStride: int64(s.qh), PerToken: g, Tokens: 1}
		must(c.v.Farthest(0, tb, pr, sk, b.keys.p, b.victims.p), "Farthest")
		must(c.v.Store(0, tb, pr, cuda.NewCodes{Codes: b.kc.p, HeadStride: 1, TokenStride: int64(s.kvh)},
			cuda.Placement{FixedSlot: -1, Victims: b.victims.p, VictimStride: 1, OutSlots: b.out.p,
				Positions: lb.pos.p, PositionStride: int64(budget), Position: t, OutEvicted: b.evicted.p,
				Guard: lb.guard.p, Sinks: p.Sinks, Recent: p.Recent}), "Store")
		t++
	}
	got := make([]int32, s.kvh)
	const per = 50
	var devAsync, devSync, cpu, ratio []float64
	for r := 0; r < *rounds; r++ {
		ms := c.timeDevice(func() {
			for i := 0; i < per; i++ {
				stepDevice()
			}
		})
		devAsync = append(devAsync, ms*1e3/per)
		t0 := time.Now()
		for i := 0; i < per; i++ {
			stepDevice()
			download(c, got, b.out)
		}
		devSync = append(devSync, float64(time.Since(t0).Microseconds())/per)
		t0 = time.Now()
		for i := 0; i < per; i++ {
			must(e.Place(0, 0, &policy.Rows{Data: q1, DType: s.dt, Dim: s.dim, Heads: s.qh, Tokens: 1, HeadStride: qhs1, TokenStride: qts1},
				&policy.Rows{Data: k1, DType: s.dt, Dim: s.dim, Heads: s.kvh, Tokens: 1, HeadStride: khs1, TokenStride: kts1}, []int32{next}, got, nil), "Place")
			next++
		}
		cpu = append(cpu, float64(time.Since(t0).Microseconds())/per)
		ratio = append(ratio, cpu[r]/devSync[r])
	}
	report(true, "bench per-layer decision, budget %d (8/32 heads, dim 128, bf16, 16 bits): device queue %s us; device with the slots brought to the host %s us; CPU engine (%s) %s us; CPU/device-sync %s",
		budget, spread(devAsync), spread(devSync), simd.Active().Name, spread(cpu), spread(ratio))
}
