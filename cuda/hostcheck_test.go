package cuda

import (
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/hashevict/hashevict/policy"
	"github.com/hashevict/hashevict/simd"
)

// The device kernels' arithmetic (kernels/hashevict_math.cuh), built for
// the host from kernels/hostcheck.cpp, against the generic Go kernels that
// define the results (package simd), bit for bit. No GPU is needed: this
// is the same code the GPU runs, minus the warp-level folds, whose order
// the header states next to hev_fold16 and hev_key.

var host struct {
	once     sync.Once
	err      string
	hash     func(rows unsafe.Pointer, dtype int32, nrows int64, dim int32, rt unsafe.Pointer, bits int32, codes unsafe.Pointer) int64
	farthest func(table unsafe.Pointer, bits, slots int32, probes unsafe.Pointer, np int32, skip unsafe.Pointer, ns, threads int32) int32
	step     func(score, count, table unsafe.Pointer, bits, slots int32, probes unsafe.Pointer, np, tokens, mode int32, decay float32, skip unsafe.Pointer, ns, argmax, threads int32) int32
	newScore func(code unsafe.Pointer, bits int32, probes unsafe.Pointer, np, tokens int32) float32
	totals   func(scores unsafe.Pointer, tables, slots int32, totals unsafe.Pointer)
	gInit    func(g unsafe.Pointer, sinks, recent int32)
	gStored  func(g unsafe.Pointer, sinks, recent, slot, pos int32)
	gSkip    func(g unsafe.Pointer, sinks, recent int32, pos unsafe.Pointer, hi int32, skip unsafe.Pointer) int32
}

// hostKernels builds kernels/hostcheck.cpp as a shared library and binds
// its functions (once per test binary).
func hostKernels(t *testing.T) {
	t.Helper()
	host.once.Do(func() {
		cxx, err := exec.LookPath("c++")
		if err != nil {
			host.err = "SKIPPED: no C++ compiler (c++): the host build of the kernel arithmetic cannot be tested"
			return
		}
		dir, err := filepathAbs(t)
		if err != nil {
			host.err = err.Error()
			return
		}
		out := filepath.Join(dir, "libhostcheck.so")
		// -ffp-contract=off: no fused multiply-add, as -fmad=false and the
		// _rn intrinsics on the device; -O2 as a real build would.
		cmd := exec.Command(cxx, "-shared", "-fPIC", "-O2", "-ffp-contract=off", "-Wall", "-Werror", "-o", out, "kernels/hostcheck.cpp")
		if b, err := cmd.CombinedOutput(); err != nil {
			host.err = "building kernels/hostcheck.cpp: " + err.Error() + "\n" + string(b)
			return
		}
		h, err := purego.Dlopen(out, purego.RTLD_NOW|purego.RTLD_LOCAL)
		if err != nil {
			host.err = err.Error()
			return
		}
		for name, fp := range map[string]any{
			"hev_host_hash": &host.hash, "hev_host_farthest": &host.farthest, "hev_host_score_step": &host.step,
			"hev_host_new_score": &host.newScore, "hev_host_totals": &host.totals,
			"hev_host_guard_init": &host.gInit, "hev_host_guard_stored": &host.gStored, "hev_host_guard_skip": &host.gSkip,
		} {
			a, err := purego.Dlsym(h, name)
			if err != nil {
				host.err = err.Error()
				return
			}
			purego.RegisterFunc(fp, a)
		}
	})
	if host.err != "" {
		if len(host.err) > 8 && host.err[:8] == "SKIPPED:" {
			t.Skip(host.err)
		}
		t.Fatal(host.err)
	}
}

var widths = []int{8, 16, 32, 64, 128, 256}

// randomRow fills row (dim elements of dtype, as raw bits) with values of
// every kind the hash meets: normal values over many magnitudes, exact and
// negative zeros, subnormals, and (for f16/bf16) any finite bit pattern.
func randomRow(r *rand.Rand, dtype policy.DType, raw []byte, dim int) {
	switch dtype {
	case policy.F32:
		for i := 0; i < dim; i++ {
			var v float32
			switch u := r.IntN(100); {
			case u < 5:
				v = 0
			case u < 7:
				v = float32(math.Copysign(0, -1))
			case u < 9:
				v = math.Float32frombits(r.Uint32() & 0x807fffff) // subnormal
			default:
				v = float32(r.NormFloat64() * math.Pow(10, r.Float64()*8-4))
			}
			*(*float32)(unsafe.Pointer(&raw[4*i])) = v
		}
	default:
		exp := uint16(0x7c00)
		if dtype == policy.BF16 {
			exp = 0x7f80
		}
		for i := 0; i < dim; i++ {
			h := uint16(r.Uint32())
			if r.IntN(3) == 0 {
				// Mostly moderate magnitudes, so that sums cancel and land
				// near zero, where a different order would flip a sign.
				if dtype == policy.F16 {
					h = h&0x83ff | uint16(10+r.IntN(10))<<10
				} else {
					h = h&0x807f | uint16(120+r.IntN(14))<<7
				}
			}
			if h&exp == exp {
				h &^= 0x0400 // finite
			}
			*(*uint16)(unsafe.Pointer(&raw[2*i])) = h
		}
	}
}

// goCodes hashes rows with the generic Go kernels, as policy does (widen,
// check, Hash); it returns the first non-finite row or -1.
func goCodes(dtype policy.DType, raw []byte, nrows, dim int, rt []float32, bits int, codes []uint64) int {
	W := words(bits)
	x := make([]float32, dim)
	bad := -1
	g := simd.Generic
	for r := 0; r < nrows; r++ {
		var ok bool
		switch dtype {
		case policy.F32:
			copy(x, unsafe.Slice((*float32)(unsafe.Pointer(&raw[4*r*dim])), dim))
			ok = g.FiniteF32(x)
		case policy.F16:
			ok = g.F16ToF32(x, unsafe.Slice((*uint16)(unsafe.Pointer(&raw[2*r*dim])), dim))
		case policy.BF16:
			ok = g.BF16ToF32(x, unsafe.Slice((*uint16)(unsafe.Pointer(&raw[2*r*dim])), dim))
		}
		code := codes[r*W : (r+1)*W]
		if !ok {
			clear(code)
			if bad < 0 {
				bad = r
			}
			continue
		}
		g.Hash(code, x, rt)
	}
	return bad
}

// hashCase hashes nrows random rows of (dtype, dim, bits) both ways and
// compares the codes; it returns the number of rows checked.
func hashCase(t *testing.T, r *rand.Rand, dtype policy.DType, dim, bits, nrows int, poison bool) int {
	t.Helper()
	rt := policy.Projection(uint64(dim)*31+uint64(bits), dim%7, dim, bits)
	es := int(dtype.Size())
	raw := make([]byte, nrows*dim*es)
	for i := 0; i < nrows; i++ {
		randomRow(r, dtype, raw[i*dim*es:], dim)
	}
	if nrows > 2 && r.IntN(3) == 0 {
		clear(raw[dim*es : 2*dim*es]) // a zero row: every bit set
	}
	if poison {
		// A NaN or Inf somewhere in a later row.
		row, i := 1+r.IntN(nrows-1), r.IntN(dim)
		switch dtype {
		case policy.F32:
			*(*uint32)(unsafe.Pointer(&raw[4*(row*dim+i)])) = 0x7f800000 | uint32(r.IntN(2))<<22
		case policy.F16:
			*(*uint16)(unsafe.Pointer(&raw[2*(row*dim+i)])) = 0x7c00 | uint16(r.IntN(2))<<9
		case policy.BF16:
			*(*uint16)(unsafe.Pointer(&raw[2*(row*dim+i)])) = 0xff80 | uint16(r.IntN(2))<<6
		}
	}
	W := words(bits)
	want := make([]uint64, nrows*W)
	got := make([]uint64, nrows*W)
	wantBad := goCodes(dtype, raw, nrows, dim, rt, bits, want)
	gotBad := host.hash(unsafe.Pointer(&raw[0]), int32(dtype), int64(nrows), int32(dim), unsafe.Pointer(&rt[0]), int32(bits), unsafe.Pointer(&got[0]))
	if int64(wantBad) != gotBad {
		t.Fatalf("%s dim %d bits %d: first non-finite row %d, Go says %d", dtype, dim, bits, gotBad, wantBad)
	}
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("%s dim %d bits %d row %d word %d: %#x, Go says %#x", dtype, dim, bits, i/W, i%W, got[i], want[i])
		}
	}
	return nrows
}

// TestHashMatchesGo: at least a million rows of every dtype, every width
// and head_dim 1…4096 give the codes of the generic Go kernel.
func TestHashMatchesGo(t *testing.T) {
	hostKernels(t)
	r := rand.New(rand.NewPCG(1, 2))
	dtypes := []policy.DType{policy.F32, policy.F16, policy.BF16}
	rows := 0
	// Every head_dim from 1 to 4096, each width in turn.
	step := 1
	if testing.Short() {
		step = 37
	}
	for dim := 1; dim <= policy.MaxHeadDim; dim += step {
		bits := widths[dim%len(widths)]
		if dim > 1024 && bits > 32 {
			bits = 16 // the long rows at every width come below, fewer
		}
		rows += hashCase(t, r, dtypes[dim%3], dim, bits, 2, dim%5 == 0)
	}
	// The bulk: every (dtype, width) over head_dims around the lane
	// boundaries and the common sizes.
	dims := []int{1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 80, 96, 112, 127, 128, 129, 160, 255, 256, 257}
	big := []int{511, 1000, 2048, 4095, 4096}
	perWidth := map[int]int{8: 1200, 16: 1200, 32: 500, 64: 250, 128: 100, 256: 50}
	scale := 1
	if testing.Short() {
		scale = 20
	}
	for _, bits := range widths {
		for _, dt := range dtypes {
			for i, dim := range dims {
				n := perWidth[bits] * 64 / max(dim, 16) / scale
				rows += hashCase(t, r, dt, dim, bits, max(n, 3), i%4 == 0)
			}
			for _, dim := range big {
				rows += hashCase(t, r, dt, dim, bits, 3, false)
			}
		}
	}
	// Decode-sized rows (head_dim 64 and 128, 16-bit codes) make up the
	// million.
	target := 1_000_000
	if testing.Short() {
		target = rows + 20000
	}
	for rows < target {
		dim := 64 << r.IntN(2)
		rows += hashCase(t, r, dtypes[r.IntN(3)], dim, 16, 20000, false)
	}
	t.Logf("%d rows hashed, codes identical to the generic Go kernel", rows)
}

// randomTable returns a code table of slots codes in the layout of
// simd.CodeWords, with probes np wide probes.
func randomTable(r *rand.Rand, bits, slots, np int) (table, probes []uint64) {
	table = make([]uint64, simd.CodeWords(bits, slots))
	for i := range table {
		table[i] = r.Uint64()
	}
	if bits < 64 && slots*bits%64 != 0 {
		// The unused tail of the last word holds garbage in real tables
		// too (PutCode leaves it): it must be ignored.
		table[len(table)-1] |= ^uint64(0) << uint(slots*bits%64)
	}
	W := words(bits)
	probes = make([]uint64, np*W)
	for i := range probes {
		probes[i] = r.Uint64()
		if bits < 64 && r.IntN(2) == 0 {
			probes[i] &= 1<<uint(bits) - 1 // as the hash writes them
		}
	}
	// Some probes equal to a code, and equal codes: ties.
	if slots > 4 {
		c := make([]uint64, W)
		simd.GetCode(c, table, bits, 1)
		simd.PutCode(table, c, bits, slots-1)
		simd.PutCode(table, c, bits, slots/2)
	}
	return table, probes
}

// randomSkip returns an ascending skip list: sinks at the start, some
// recent slots, repeats, and entries outside the table.
func randomSkip(r *rand.Rand, slots int) []int32 {
	var s []int32
	switch r.IntN(6) {
	case 0:
		return nil
	case 1:
		for i := 0; i < slots; i++ {
			s = append(s, int32(i)) // everything: no victim
		}
		return s
	}
	for i := 0; i < min(4, slots); i++ {
		s = append(s, int32(i))
	}
	for i := 0; i < r.IntN(20); i++ {
		s = append(s, int32(r.IntN(slots+3)))
	}
	if r.IntN(4) == 0 {
		s = append(s, -1, int32(slots+100))
	}
	slices.Sort(s)
	return s
}

func ptr[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

// dropNegative is what the launcher's caller must pass: the device list
// is searched as given, so negative entries (never a slot) are harmless
// but the Go kernel also accepts them; they are kept to show that.
var slotCounts = []int{1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 127, 128, 129, 1000, 1023, 1024, 1025, 4097}

// TestScansMatchGo: Farthest, ScoreStep in every mode (with and without
// the argmax), the new tokens' scores and token mode's float64 totals
// against the generic Go kernels.
func TestScansMatchGo(t *testing.T) {
	hostKernels(t)
	r := rand.New(rand.NewPCG(3, 4))
	g := simd.Generic
	cases := 0
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		for _, bits := range widths {
			for _, slots := range slotCounts {
				tokens := 1 + r.IntN(3)
				np := tokens * (1 + r.IntN(8)) // a GQA group per token
				if round == 0 {
					tokens, np = 1, 1
				}
				table, probes := randomTable(r, bits, slots, np)
				skip := randomSkip(r, slots)
				// The scans run as that many grid-stride walks, each
				// with its own skip cursor: one, fewer than the items, and
				// more.
				threads := []int32{1, 3, 256, 2048}[r.IntN(4)]
				want := g.Farthest(table, bits, probes, slots, skip)
				got := int(host.farthest(ptr(table), int32(bits), int32(slots), ptr(probes), int32(np), ptr(skip), int32(len(skip)), threads))
				if got != want {
					t.Fatalf("Farthest bits %d slots %d probes %d skip %v, %d threads: %d, Go says %d", bits, slots, np, skip, threads, got, want)
				}
				for mode := 0; mode <= 2; mode++ {
					decay := float32(r.Float64())
					score := make([]float32, slots)
					count := make([]uint32, slots)
					for i := range score {
						score[i] = float32(r.IntN(3*bits*np)) * float32(r.Float64())
						count[i] = uint32(r.IntN(1000))
					}
					if slots > 3 {
						score[2] = score[slots-1] // ties
						count[2] = count[slots-1]
					}
					ws, wc := slices.Clone(score), slices.Clone(count)
					want := g.ScoreStep(ws, wc, table, bits, probes, uint32(tokens), mode, decay, skip)
					got := int(host.step(ptr(score), ptr(count), ptr(table), int32(bits), int32(slots), ptr(probes), int32(np), int32(tokens), int32(mode), decay, ptr(skip), int32(len(skip)), 1, threads))
					if got != want {
						t.Fatalf("ScoreStep mode %d bits %d slots %d: victim %d, Go says %d", mode, bits, slots, got, want)
					}
					for i := range ws {
						if math.Float32bits(ws[i]) != math.Float32bits(score[i]) || (mode == 1 && wc[i] != count[i]) {
							t.Fatalf("ScoreStep mode %d bits %d slot %d: score %v count %d, Go says %v %d", mode, bits, i, score[i], count[i], ws[i], wc[i])
						}
					}
					// Token mode: the update alone, as Hamming then Update.
					dist := make([]uint32, slots)
					if bits < 64 {
						g.HammingNarrow(dist, table, bits, probes)
					} else {
						g.Hamming(dist, table, bits/64, probes)
					}
					g.Update(ws, wc, dist, uint32(tokens), mode, decay)
					if v := host.step(ptr(score), ptr(count), ptr(table), int32(bits), int32(slots), ptr(probes), int32(np), int32(tokens), int32(mode), decay, nil, 0, 0, threads); v != -1 {
						t.Fatalf("update without argmax returned %d", v)
					}
					for i := range ws {
						if math.Float32bits(ws[i]) != math.Float32bits(score[i]) || wc[i] != count[i] {
							t.Fatalf("token update mode %d bits %d slot %d: score %v count %d, Go says %v %d", mode, bits, i, score[i], count[i], ws[i], wc[i])
						}
					}
					cases++
				}
				// A new token's score: its own step distance.
				W := words(bits)
				code := make([]uint64, W)
				simd.GetCode(code, table, bits, r.IntN(slots))
				dist := make([]uint32, 1)
				g.Hamming(dist, code, W, probes)
				want32 := float32(dist[0]) * (1 / float32(tokens))
				if got := host.newScore(ptr(code), int32(bits), ptr(probes), int32(np), int32(tokens)); math.Float32bits(got) != math.Float32bits(want32) {
					t.Fatalf("new score bits %d: %v, Go says %v", bits, got, want32)
				}
			}
		}
	}
	// Token totals: float64 sums over (layer, head) tables in order.
	for _, tables := range []int{1, 2, 30, 240} {
		slots := 1 + r.IntN(3000)
		scores := make([]float32, tables*slots)
		for i := range scores {
			scores[i] = float32(r.NormFloat64() * math.Pow(10, r.Float64()*12-6))
		}
		got := make([]float64, slots)
		host.totals(ptr(scores), int32(tables), int32(slots), ptr(got))
		for i := 0; i < slots; i++ {
			var want float64
			for k := 0; k < tables; k++ {
				want += float64(scores[k*slots+i])
			}
			if math.Float64bits(want) != math.Float64bits(got[i]) {
				t.Fatalf("totals of %d tables, slot %d: %v, Go says %v", tables, i, got[i], want)
			}
		}
	}
	t.Logf("%d score-step cases identical to the generic Go kernels", cases)
}

// TestGuardNamesProtectedSlots: the device guard (hev_guard_stored as
// hev_store calls it, hev_guard_skip as hev_guard does) names exactly the
// slots whose positions are protected — below n_sink, or at or after
// max(t - n_recent, n_sink) — over random slot-mode sequences: prefill
// chunks, decode steps, gaps in the positions, every victim an unprotected
// slot.
func TestGuardNamesProtectedSlots(t *testing.T) {
	hostKernels(t)
	r := rand.New(rand.NewPCG(5, 6))
	checked := 0
	for trial := 0; trial < 300; trial++ {
		sinks, recent := r.IntN(6), r.IntN(12)
		budget := sinks + recent + 1 + r.IntN(40)
		g := make([]int32, GuardWords(sinks, recent))
		host.gInit(ptr(g), int32(sinks), int32(recent))
		if !slices.Equal(g, NewGuards(1, sinks, recent)) {
			t.Fatalf("NewGuards %v, hev_guard_init %v", NewGuards(1, sinks, recent), g)
		}
		pos := make([]int32, budget)
		for i := range pos {
			pos[i] = -1
		}
		used := 0
		next := int32(r.IntN(3) * sinks) // sometimes no position below n_sink
		for step := 0; step < 200; step++ {
			n := 1
			if step == 0 || r.IntN(20) == 0 {
				n = 1 + r.IntN(8)
			}
			newest := next + int32(n-1)
			hi := max(newest-int32(recent), int32(sinks))
			skip := make([]int32, sinks+recent)
			ns := int(host.gSkip(ptr(g), int32(sinks), int32(recent), ptr(pos), hi, ptr(skip)))
			got := slices.Compact(slices.Clone(skip[:ns]))
			if !slices.IsSorted(skip[:ns]) {
				t.Fatalf("skip list %v is not ascending", skip[:ns])
			}
			var want, evictable []int32
			for slot := 0; slot < used; slot++ {
				if pos[slot] < int32(sinks) || pos[slot] >= hi {
					want = append(want, int32(slot))
				} else {
					evictable = append(evictable, int32(slot))
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("trial %d step %d (n_sink %d, n_recent %d, hi %d): guard skips %v, protected slots are %v", trial, step, sinks, recent, hi, got, want)
			}
			checked++
			free := budget - used
			if n > free+len(evictable) {
				break
			}
			for tok := 0; tok < n; tok++ {
				var slot int32
				if used < budget {
					slot = int32(used)
					used++
				} else {
					k := r.IntN(len(evictable))
					slot = evictable[k]
					evictable = append(evictable[:k], evictable[k+1:]...)
				}
				pos[slot] = next
				host.gStored(ptr(g), int32(sinks), int32(recent), slot, next)
				next++
			}
			if r.IntN(10) == 0 {
				next += int32(r.IntN(30)) // a gap in the positions
			}
		}
	}
	t.Logf("%d steps: the guard named exactly the protected slots", checked)
}
