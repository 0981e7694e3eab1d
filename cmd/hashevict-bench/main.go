// Command hashevict-bench measures, on one core, in one run:
//
//  1. the machine's single-core memory-read bandwidth (read loops over a
//     buffer much larger than the last-level cache; see bench.ReadLoops);
//  2. every kernel of every available set (package simd) on tables larger
//     than the caches, as a fraction of that bandwidth, and on
//     cache-resident tables, as a multiple of the generic Go kernel;
//  3. the policy's cost per decode step (policy.Engine.Place in slot mode,
//     1 layer, 8 KV heads, 32 query heads, head_dim 128, 16-bit codes) for
//     4k, 32k and 128k cached tokens, next to the f32 attention that the
//     step would run over the same cache (package bench, bench.AttendMethod).
//
// Usage:
//
//	go run ./cmd/hashevict-bench            # full run (needs ~3 GiB of RAM)
//	go run ./cmd/hashevict-bench -quick     # smaller sizes, a smoke test
//
// The machine is shared, so no figure rests on a wall clock or on one
// timing: every call is timed by the thread's CPU time (bench.ThreadTime,
// the goroutine locked to its thread), which does not run while the
// thread waits for a core, and every figure is a ratio of two calls timed
// in the same round (bench.Paired: a kernel and the read loop over the
// same number of bytes, a set and the generic kernel, the policy step and
// the attention step), the order alternating between rounds. Tables give
// the median over the rounds and its range (min–max).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/klauspost/cpuid/v2"

	"github.com/hashevict/hashevict/bench"
	"github.com/hashevict/hashevict/policy"
	"github.com/hashevict/hashevict/simd"
)

var (
	flagMem    = flag.Int("mem", 0, "bytes of the large buffers (0: max(1 GiB, 2 × L3))")
	flagSmall  = flag.Int("small", 16<<10, "bytes of the cache-resident tables")
	flagTokens = flag.String("tokens", "4096,32768,131072", "cached tokens of the policy/attention comparison")
	flagQuick  = flag.Bool("quick", false, "small sizes: a smoke test, not a measurement")
	flagRounds = flag.Int("rounds", 7, "paired rounds per figure")
	flagBatch  = flag.Duration("batch", 20*time.Millisecond, "thread CPU time per timed batch of short calls")
	flagSkip   = flag.Bool("policy-only", false, "only the policy/attention comparison")
	flagKern   = flag.String("kernels", "", "only the kernels whose name matches this regular expression (and no policy section)")
	flagProf   = flag.String("cpuprofile", "", "write a CPU profile of the policy section to this file")
)

func main() {
	flag.Parse()
	runtime.LockOSThread()
	debug.SetGCPercent(-1) // no collector work inside the timings; buffers are reused

	large := *flagMem
	if large == 0 {
		large = max(1<<30, 2*cpuid.CPU.Cache.L3)
	}
	tokens := parseInts(*flagTokens)
	if *flagQuick {
		large = 64 << 20
		tokens = []int{4096, 32768}
		*flagRounds = 3
		*flagBatch = 5 * time.Millisecond
	}

	fmt.Printf("# hashevict-bench\n\n")
	fmt.Printf("CPU: %s; %d logical cores; L1d %s, L2 %s, L3 %s (cpuid)\n", cpuid.CPU.BrandName,
		runtime.NumCPU(), size(cpuid.CPU.Cache.L1D), size(cpuid.CPU.Cache.L2), size(cpuid.CPU.Cache.L3))
	fmt.Printf("Go %s %s/%s; kernel sets: %s (active: %s)\n", runtime.Version(), runtime.GOOS, runtime.GOARCH,
		strings.Join(simd.Available(), ", "), simd.Active().Name)
	fmt.Printf("command: %s\n\n", strings.Join(os.Args, " "))

	fmt.Printf("Timing: %s per call (batches of short calls: >= %v), %d paired rounds per figure, order alternating; median (min–max) over the rounds.\n\n",
		bench.ClockName, *flagBatch, *flagRounds)
	if !*flagSkip {
		buf := makeBuffer(large)
		fmt.Printf("## Memory-read bandwidth (one core)\n\n")
		fmt.Printf("Each read loop over %s, %d rounds (each loop once per round, in turn); the reference is the loop with the best median.\n\n", size(large), *flagRounds)
		ref := readBandwidth(buf)
		kernelTable(buf, ref, *flagSmall)
		buf = nil
		runtime.GC()
	}
	if *flagProf != "" {
		f, err := os.Create(*flagProf)
		if err != nil {
			panic(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if *flagKern == "" {
		policyTable(tokens, policy.ScoreInstant)
		policyTable(tokens, policy.ScoreAccumulated)
	}
}

func parseInts(s string) []int {
	var r []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bad -tokens entry %q\n", f)
			os.Exit(2)
		}
		r = append(r, n)
	}
	return r
}

func size(b int) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", b>>30)
	case b >= 1<<20:
		return fmt.Sprintf("%d MiB", b>>20)
	case b >= 1<<10:
		return fmt.Sprintf("%d KiB", b>>10)
	}
	return fmt.Sprintf("%d B", b)
}

// makeBuffer returns n bytes (as uint64) of random bits in which bit 14 of
// every 16-bit half is clear and bit 29 of every 32-bit word set: read as
// f16 or bf16 every value is finite, and read as f32 every value is a
// normal number of magnitude in [2^-63, 2) (no denormal products, which
// would run at microcode speed), so every kernel takes its normal path.
func makeBuffer(n int) []uint64 {
	b := make([]uint64, n/8)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range b {
		b[i] = rng.Uint64()&^0x4000400040004000 | 0x2000000020000000
	}
	return b
}

var sink uint64

// readBandwidth times every read loop over buf, the loops taking turns in
// each round, prints their bandwidth (median and range) and returns the
// fastest one by median: the reference the kernels are paired with.
func readBandwidth(buf []uint64) bench.ReadLoop {
	loops := bench.ReadLoops
	per := make([][]float64, len(loops))
	for r := 0; r < *flagRounds; r++ {
		for i := range loops {
			l := loops[(i+r)%len(loops)]
			t := bench.ThreadTime()
			sink += l.Sum(buf)
			d := bench.ThreadTime() - t
			j := (i + r) % len(loops)
			per[j] = append(per[j], float64(8*len(buf))/d.Seconds()/1e9)
		}
	}
	best := 0
	for i, l := range loops {
		sp := bench.SpreadOf(per[i])
		fmt.Printf("- %s GB/s: %s\n", sp.Format("%.2f"), l.Name)
		if sp.Median > bench.SpreadOf(per[best]).Median {
			best = i
		}
	}
	fmt.Printf("\nMemory-read bandwidth: %s GB/s, %s (the reference below)\n\n", bench.SpreadOf(per[best]).Format("%.2f"), loops[best].Name)
	return loops[best]
}

// timedBatch returns f repeated so that one call of the result takes at
// least -batch of thread CPU time (f itself when it does).
func timedBatch(f func()) (func(), int) {
	reps := bench.Batch(*flagBatch, f)
	return bench.Repeat(reps, f), reps
}

// Views of the buffer as other element types.
func u32s(b []uint64) []uint32  { return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), 2*len(b)) }
func f32s(b []uint64) []float32 { return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), 2*len(b)) }
func i32s(b []uint64) []int32   { return unsafe.Slice((*int32)(unsafe.Pointer(&b[0])), 2*len(b)) }
func u16s(b []uint64) []uint16  { return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), 4*len(b)) }

// A kernelCase prepares a run of one kernel over `bytes` bytes of input
// taken from buf, and returns the call to time (and the input bytes it
// reads). out is scratch for outputs, at least as large as buf.
type kernelCase struct {
	name string
	// maxLarge caps the large input of compute-bound kernels (whose speed
	// does not depend on where the data is) so that the generic runs stay
	// short; 0: no cap.
	maxLarge int
	prep     func(k simd.Kernels, buf, out []uint64, bytes int) (run func(), in, written int)
}

func hammingCase(bits, probes int) kernelCase {
	words := (bits + 63) / 64
	return kernelCase{
		name: fmt.Sprintf("Hamming %d-bit codes, %d probe(s)", bits, probes),
		prep: func(k simd.Kernels, buf, out []uint64, bytes int) (func(), int, int) {
			n := bytes / 8 / words
			pr := make([]uint64, probes*words)
			for i := range pr {
				pr[i] = uint64(0x9E3779B97F4A7C15) * uint64(i+1)
			}
			table, dist := buf[:n*words], u32s(out)[:n]
			return func() { k.Hamming(dist, table, words, pr) }, 8 * n * words, 4 * n
		},
	}
}

// narrowCase is HammingNarrow over a packed table of bits-bit codes.
func narrowCase(bits, probes int) kernelCase {
	return kernelCase{
		name: fmt.Sprintf("Hamming %d-bit codes packed, %d probe(s)", bits, probes),
		prep: func(k simd.Kernels, buf, out []uint64, bytes int) (func(), int, int) {
			bytes = min(bytes, len(out)*bits/4) // the distances (4 bytes per code) must fit in out
			n := bytes * 8 / bits
			pr := benchProbes(probes)
			table, dist := buf[:bytes/8], u32s(out)[:n]
			return func() { k.HammingNarrow(dist, table, bits, pr) }, bytes, 4 * n
		},
	}
}

// farthestCase is the scan of a decode step with the instant score: the
// distance of every code of the table, reduced to the farthest one, with
// a few entries protected; nothing is written.
func farthestCase(bits, probes int) kernelCase {
	return kernelCase{
		name: fmt.Sprintf("Farthest (scan to the victim), %d-bit codes, %d probe(s)", bits, probes),
		prep: func(k simd.Kernels, buf, out []uint64, bytes int) (func(), int, int) {
			n := bytes * 8 / bits
			pr := benchProbes(probes * max(1, bits/64))
			table := buf[:bytes/8]
			skip := []int32{0, 1, 2, 3, int32(n - 1), int32(n - 2)}
			return func() { sink += uint64(k.Farthest(table, bits, pr, n, skip)) }, bytes, 0
		},
	}
}

func benchProbes(n int) []uint64 {
	pr := make([]uint64, n)
	for i := range pr {
		pr[i] = uint64(0x9E3779B97F4A7C15) * uint64(i+1)
	}
	return pr
}

func kernelCases() []kernelCase {
	cases := []kernelCase{
		hammingCase(16, 1),
		hammingCase(16, 4),
		hammingCase(64, 4),
		hammingCase(128, 4),
		hammingCase(256, 1),
		hammingCase(256, 4),
		narrowCase(8, 1),
		narrowCase(16, 1),
		narrowCase(16, 4),
		narrowCase(32, 1),
	}
	for _, bits := range []int{8, 16, 32, 64, 128, 256} {
		cases = append(cases, farthestCase(bits, 1), farthestCase(bits, 4))
	}
	for _, nb := range []int{16, 256} {
		cases = append(cases, kernelCase{
			name:     fmt.Sprintf("Hash f32 rows, dim 128, %d bits", nb),
			maxLarge: 32 << 20,
			prep: func(k simd.Kernels, buf, out []uint64, bytes int) (func(), int, int) {
				const dim = 128
				rows := bytes / 4 / dim
				x := f32s(buf)[:rows*dim]
				rt := make([]float32, nb*dim)
				for i := range rt {
					rt[i] = float32(math.Sin(float64(i)))
				}
				code := out[:rows*((nb+63)/64)]
				w := (nb + 63) / 64
				return func() {
					for r := 0; r < rows; r++ {
						k.Hash(code[r*w:(r+1)*w], x[r*dim:(r+1)*dim], rt)
					}
				}, rows * dim * 4, 8 * len(code)
			},
		})
	}
	cases = append(cases,
		kernelCase{
			name: "ArgmaxIn (score + position)",
			prep: func(k simd.Kernels, buf, out []uint64, bytes int) (func(), int, int) {
				n := bytes / 8
				score, pos := f32s(buf)[:n], i32s(buf)[n:2*n]
				return func() { sink += uint64(k.ArgmaxIn(score, pos, 4, 1<<29)) }, 8 * n, 0
			},
		},
	)
	for _, mode := range []int{simd.ScoreInstant, simd.ScoreAccumulated, simd.ScoreDecayed} {
		name := []string{"Update instant (dist)", "Update accumulated (dist, score, count)", "Update decayed (dist, score)"}[mode]
		cases = append(cases, kernelCase{
			name: name,
			prep: func(k simd.Kernels, buf, out []uint64, bytes int) (func(), int, int) {
				arrays := []int{1, 3, 2}[mode]
				n := bytes / 4 / arrays
				dist := u32s(buf)[:n]
				score := f32s(out)[:n]
				var count []uint32
				if mode == simd.ScoreAccumulated {
					count = u32s(out)[n : 2*n]
				}
				return func() { k.Update(score, count, dist, 4, mode, 0.9) }, 4 * n * arrays, 4 * n * (arrays + 1) / 2
			},
		})
	}
	for _, kind := range []string{"F16ToF32", "BF16ToF32"} {
		cases = append(cases, kernelCase{
			name: kind + " rows of 128",
			prep: func(k simd.Kernels, buf, out []uint64, bytes int) (func(), int, int) {
				const dim = 128
				rows := bytes / 4 / dim // the float32 output must fit in out
				src, dst := u16s(buf)[:rows*dim], f32s(out)[:rows*dim]
				conv := k.F16ToF32
				if kind == "BF16ToF32" {
					conv = k.BF16ToF32
				}
				return func() {
					for r := 0; r < rows; r++ {
						if !conv(dst[r*dim:(r+1)*dim], src[r*dim:(r+1)*dim]) {
							panic("non-finite benchmark data")
						}
					}
				}, 2 * rows * dim, 4 * rows * dim
			},
		})
	}
	cases = append(cases,
		kernelCase{
			name: "FiniteF32 rows of 128",
			prep: func(k simd.Kernels, buf, out []uint64, bytes int) (func(), int, int) {
				const dim = 128
				rows := bytes / 4 / dim
				x := f32s(buf)[:rows*dim]
				return func() {
					for r := 0; r < rows; r++ {
						if !k.FiniteF32(x[r*dim : (r+1)*dim]) {
							panic("non-finite benchmark data")
						}
					}
				}, 4 * rows * dim, 0
			},
		},
		kernelCase{
			name:     "BitCount 16-bit codes (prefill)",
			maxLarge: 128 << 20,
			prep: func(k simd.Kernels, buf, out []uint64, bytes int) (func(), int, int) {
				n := bytes / 8
				ones := make([]uint32, 16)
				for j := range ones {
					ones[j] = uint32(j * 7)
				}
				table, dist := buf[:n], u32s(out)[:n]
				return func() { k.BitCount(dist, table, 1, ones, 200) }, 8 * n, 4 * n
			},
		},
	)
	return cases
}

func kernelTable(buf []uint64, ref bench.ReadLoop, small int) {
	sets := simd.Available()
	kernels := map[string]simd.Kernels{}
	for _, name := range sets {
		if err := simd.Use(name); err != nil {
			panic(err)
		}
		kernels[name] = simd.Active()
	}
	simd.Use(sets[0])
	out := make([]uint64, len(buf))
	for i := range out {
		out[i] = buf[len(buf)-1-i] // fault the pages in
	}
	smallBuf, smallOut := buf[:small/8], out[:small/8]

	fmt.Printf("## Kernels\n\n")
	fmt.Printf("Large: up to %s of input, beyond the caches. Each round times the kernel once and the reference read loop once over the same number of bytes;\n", size(8*len(buf)))
	fmt.Printf("\"%% of read\" is the kernel's input rate over the read loop's, per round (the generic set, far slower, is capped at %s of input).\n", size(genericLarge))
	fmt.Printf("\"in+out\" counts the bytes the kernel writes too. Small: %s of input (cache-resident), batches of calls of the set and of the generic kernel\n", size(small))
	fmt.Printf("in the same round; \"× generic\" is the ratio per round. GB/s columns are medians of input bytes per second.\n\n")
	tw := mdTable{os.Stdout}
	fmt.Fprintln(tw, "| kernel\t set\t large input\t large GB/s\t % of read: median (min–max)\t in+out % of read\t small GB/s\t × generic: median (min–max)\t")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t---\t")
	var only *regexp.Regexp
	if *flagKern != "" {
		only = regexp.MustCompile(*flagKern)
	}
	for _, c := range kernelCases() {
		if only != nil && !only.MatchString(c.name) {
			continue
		}
		runG, inG, _ := c.prep(kernels["generic"], smallBuf, smallOut, small)
		batchG, repsG := timedBatch(runG)
		for _, name := range sets {
			k := kernels[name]
			lb := 8 * len(buf)
			if c.maxLarge > 0 {
				lb = min(lb, c.maxLarge)
			}
			if name == "generic" {
				lb = min(lb, genericLarge)
			}
			run, in, written := c.prep(k, buf, out, lb)
			refBuf := buf[:in/8]
			readRef := func() { sink += ref.Sum(refBuf) }
			readRef() // warm-up: code, TLB and frequency
			run()
			tr, tk := bench.Paired(*flagRounds, readRef, run)
			large := make([]float64, len(tk))
			for i, d := range tk {
				large[i] = float64(in) / d.Seconds()
			}
			frac := bench.SpreadOf(bench.Ratios(tr, tk))
			moved := frac.Median * float64(in+written) / float64(in)

			runS, inS, _ := c.prep(k, smallBuf, smallOut, small)
			batchS, repsS := timedBatch(runS)
			tg, ts := bench.Paired(*flagRounds, batchG, batchS)
			rate := make([]float64, len(ts))
			speed := make([]float64, len(ts))
			for i := range ts {
				perS := ts[i].Seconds() / float64(repsS)
				rate[i] = float64(inS) / perS
				speed[i] = (tg[i].Seconds() / float64(repsG) / float64(inG)) / (perS / float64(inS))
			}
			fmt.Fprintf(tw, "| %s\t %s\t %s\t %.2f\t %s\t %.0f %%\t %.2f\t %s\t\n", c.name, name, size(in),
				bench.SpreadOf(large).Median/1e9, pct(frac), 100*moved, bench.SpreadOf(rate).Median/1e9, bench.SpreadOf(speed).Format("%.1f"))
		}
	}
	tw.Flush()
	fmt.Println()
}

// genericLarge caps the large input of the generic kernels, which run at
// a few hundred MB/s: the fraction of the bandwidth they reach does not
// need a table larger than the caches many times over.
const genericLarge = 64 << 20

// mdTable writes the rows of a markdown table, cells separated by tabs
// ("| a\t b\t\n" is "| a | b |"), so that the output pastes into the docs.
type mdTable struct{ w io.Writer }

func (t mdTable) Write(p []byte) (int, error) {
	_, err := t.w.Write(bytes.ReplaceAll(p, []byte("\t"), []byte(" |")))
	return len(p), err
}

func (mdTable) Flush() {}

func pct(s bench.Spread) string {
	return fmt.Sprintf("%.0f %% (%.0f–%.0f %%)", 100*s.Median, 100*s.Min, 100*s.Max)
}

// rowsOf wraps x, [tokens][heads][dim] float32, as policy rows.
func rowsOf(x []float32, tokens, heads, dim int) *policy.Rows {
	return &policy.Rows{
		Data:        unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x)),
		DType:       policy.F32,
		Dim:         dim,
		Heads:       heads,
		Tokens:      tokens,
		HeadStride:  int64(4 * dim),
		TokenStride: int64(4 * heads * dim),
	}
}

func gauss(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

const (
	kvHeads = 8
	qHeads  = 32
	headDim = 128
)

type engineRun struct {
	e     *policy.Engine
	pos   int32
	q, k  [][]float32 // per decode step variant
	slots []int32
}

func newEngineRun(tokens int, score policy.Score, rng *rand.Rand) *engineRun {
	p := policy.DefaultParams()
	p.Mode, p.Layers, p.KVHeads, p.QHeads, p.HeadDim, p.Bits = policy.ModeSlot, 1, kvHeads, qHeads, headDim, 16
	p.Score = score
	p.Budget, p.MaxSeqs = tokens, 1
	e, err := policy.NewEngine(p)
	if err != nil {
		panic(err)
	}
	if err := e.AddSeq(0); err != nil {
		panic(err)
	}
	r := &engineRun{e: e, slots: make([]int32, 512*kvHeads)}
	// Prefill in chunks of 512 tokens until the cache is full.
	const chunk = 512
	q := gauss(rng, chunk*qHeads*headDim)
	k := gauss(rng, chunk*kvHeads*headDim)
	for filled := 0; filled < tokens; {
		n := min(chunk, tokens-filled)
		positions := make([]int32, n)
		for i := range positions {
			positions[i] = r.pos
			r.pos++
		}
		if err := e.Place(0, 0, rowsOf(q, n, qHeads, headDim), rowsOf(k, n, kvHeads, headDim), positions, r.slots, nil); err != nil {
			panic(err)
		}
		filled += n
	}
	for i := 0; i < 16; i++ {
		r.q = append(r.q, gauss(rng, qHeads*headDim))
		r.k = append(r.k, gauss(rng, kvHeads*headDim))
	}
	return r
}

// step runs one decode step (one new token, full cache: one eviction per
// KV head) and returns its duration.
func (r *engineRun) step() time.Duration {
	i := int(r.pos) % len(r.q)
	q, k := rowsOf(r.q[i], 1, qHeads, headDim), rowsOf(r.k[i], 1, kvHeads, headDim)
	pos := []int32{r.pos}
	t := bench.ThreadTime()
	if err := r.e.Place(0, 0, q, k, pos, r.slots, nil); err != nil {
		panic(err)
	}
	d := bench.ThreadTime() - t
	r.pos++
	return d
}

func (r *engineRun) steps(n int) (minD, median time.Duration) {
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = r.step()
	}
	slices.Sort(ds)
	return ds[0], ds[n/2]
}

type attention struct {
	q, out, scratch []float32
	k, v            [][]float32 // per KV head, [tokens][headDim]
	tokens          int
}

func newAttention(tokens int, rng *rand.Rand) *attention {
	a := &attention{tokens: tokens, q: gauss(rng, qHeads*headDim), out: make([]float32, qHeads*headDim),
		scratch: make([]float32, bench.Group*tokens)}
	for h := 0; h < kvHeads; h++ {
		k := make([]float32, tokens*headDim)
		v := make([]float32, tokens*headDim)
		for i := range k {
			k[i] = float32(math.Sin(float64(i+h))) * 0.1
			v[i] = float32(math.Cos(float64(i-h))) * 0.1
		}
		a.k, a.v = append(a.k, k), append(a.v, v)
	}
	return a
}

// step runs the attention of one decode step: the 32 query heads over the
// cache of every KV head (GQA 4).
func (a *attention) step() time.Duration {
	t := bench.ThreadTime()
	for h := 0; h < kvHeads; h++ {
		o := h * bench.Group * headDim
		bench.Attend(a.out[o:o+bench.Group*headDim], a.q[o:o+bench.Group*headDim], a.k[h], a.v[h], a.tokens, a.scratch)
	}
	return bench.ThreadTime() - t
}

func policyTable(tokens []int, score policy.Score) {
	best := simd.Available()[0]
	fmt.Printf("## Policy cost per decode step vs. the attention of that step\n\n")
	fmt.Printf("Policy: policy.Engine.Place, slot mode, 1 layer, %d KV heads, %d query heads (GQA %d), head_dim %d, 16-bit codes, %s score,\n",
		kvHeads, qHeads, qHeads/kvHeads, headDim, []string{"instant (the default)", "accumulated", "decayed"}[score])
	fmt.Printf("full cache of N tokens (one eviction per KV head per step); f32 inputs.\n")
	fmt.Printf("Attention: %d query heads over N cached f32 keys and values per KV head (%s per step at N tokens: K and V), %s.\n",
		qHeads, "2·8·N·512 B", bench.AttendMethod)
	fmt.Printf("Each round: one attention step, then a policy step (\"after attention\": the K/V stream has evicted the policy's tables from the caches),\n")
	fmt.Printf("then another policy step (\"hot\"); the ratios are per round. Each step timed by thread CPU time; median (min–max) over the rounds.\n\n")
	tw := mdTable{os.Stdout}
	fmt.Fprintf(tw, "| N tokens\t policy hot, %s\t attention\t hot / attention\t policy after attention\t after / attention\t policy hot, generic\t generic / attention\t\n", best)
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t---\t")
	rng := rand.New(rand.NewPCG(9, 9))
	for _, n := range tokens {
		simd.Use(best)
		r := newEngineRun(n, score, rng)
		a := newAttention(n, rng)
		a.step()
		r.steps(8) // warm up
		rounds := max(*flagRounds, min(40, 4<<20/n))
		var hot, after, att []time.Duration
		for i := 0; i < rounds; i++ {
			att = append(att, a.step())
			after = append(after, r.step())
			hot = append(hot, r.step())
		}
		simd.Use("generic")
		var gen []time.Duration
		for i := 0; i < max(3, *flagRounds/2); i++ {
			d := a.step()
			r.step() // after attention: not timed
			att, gen = append(att, d), append(gen, r.step())
		}
		simd.Use(best)
		med := func(x []time.Duration) time.Duration {
			f := make([]float64, len(x))
			for i, d := range x {
				f[i] = float64(d)
			}
			return time.Duration(bench.SpreadOf(f).Median)
		}
		fmt.Fprintf(tw, "| %d\t %s\t %s\t %s\t %s\t %s\t %s\t %s\t\n", n,
			us(med(hot)), ms(med(att)), pct3(bench.SpreadOf(bench.Ratios(hot, att[:rounds]))),
			us(med(after)), pct3(bench.SpreadOf(bench.Ratios(after, att[:rounds]))),
			us(med(gen)), pct3(bench.SpreadOf(bench.Ratios(gen, att[rounds:]))))
		r, a = nil, nil
		runtime.GC()
	}
	tw.Flush()
	fmt.Println()
}

func pct3(s bench.Spread) string {
	return fmt.Sprintf("%.3f %% (%.3f–%.3f %%)", 100*s.Median, 100*s.Min, 100*s.Max)
}

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1e3) }
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Nanoseconds())/1e6) }
