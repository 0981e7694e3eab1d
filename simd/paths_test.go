package simd

// Every kernel of every set this CPU runs against the generic one, for
// every length 0..1024 and every code width, on random and adversarial
// data. Results must be bit-identical (float32 results are compared by
// their bits, so -0 and +0 and NaN payloads count).

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// lengths returns 0..max, or a sparser selection under -short (the race
// detector makes the full sweep slow).
func lengths(max int) []int {
	var ns []int
	for n := 0; n <= max; n++ {
		if !testing.Short() || n < 80 || n%37 == 0 || n == max {
			ns = append(ns, n)
		}
	}
	return ns
}

// accelerated runs f once per set other than generic; the generic set is
// the reference, so comparing it with itself proves nothing.
func accelerated(t *testing.T, f func(t *testing.T, k Kernels)) {
	ran := false
	for _, name := range Available() {
		if name == "generic" {
			continue
		}
		ran = true
		t.Run(name, func(t *testing.T) { f(t, *available[name]) })
	}
	if !ran {
		t.Skip("no accelerated kernel set on this CPU/build; generic only")
	}
}

var (
	nan    = float32(math.NaN())
	inf    = float32(math.Inf(1))
	negZ   = float32(math.Copysign(0, -1))
	denorm = math.Float32frombits(1)
)

// floatKind fills x with values of one flavour.
func fillFloats(rng *rand.Rand, x []float32, kind int) {
	for i := range x {
		switch kind {
		case 0: // Gaussian
			x[i] = float32(rng.NormFloat64())
		case 1: // zeros of both signs
			x[i] = [2]float32{0, negZ}[rng.IntN(2)]
		case 2: // denormals and zeros
			x[i] = [4]float32{denorm, -denorm, math.Float32frombits(0x007fffff), negZ}[rng.IntN(4)]
		case 3: // huge: products overflow to ±Inf, sums to NaN
			x[i] = float32(rng.NormFloat64()) * 3e38
		case 4: // a mix with non-finite values (the policy refuses such rows,
			// but the kernels must not crash and must still agree)
			switch rng.IntN(10) {
			case 0:
				x[i] = nan
			case 1:
				x[i] = inf
			case 2:
				x[i] = -inf
			case 3:
				x[i] = math.Float32frombits(0x7f800000 | uint32(rng.IntN(1<<23)) | 1) // NaN payloads
			default:
				x[i] = float32(rng.NormFloat64())
			}
		case 5: // small integers: many exact cancellations to ±0
			x[i] = float32(rng.IntN(5) - 2)
		}
	}
}

func sameBits32(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

func TestHashMatchesGeneric(t *testing.T) {
	accelerated(t, func(t *testing.T, k Kernels) {
		rng := rand.New(rand.NewPCG(11, 12))
		for _, dim := range lengths(1024) {
			if dim == 0 {
				continue
			}
			for _, nb := range []int{8, 16, 32, 64, 128, 256, 1, 5, 13, 71} {
				if testing.Short() && nb > 64 && dim > 300 {
					continue
				}
				kind := (dim + nb) % 6
				x := make([]float32, dim)
				rt := make([]float32, nb*dim)
				fillFloats(rng, x, kind)
				fillFloats(rng, rt, []int{0, 0, 5, 1, kind, 2}[dim%6])
				words := (nb + 63) / 64
				want := make([]uint64, words)
				got := make([]uint64, words)
				for i := range got {
					got[i] = rng.Uint64() // must be overwritten
				}
				Generic.Hash(want, x, rt)
				k.Hash(got, x, rt)
				for w := range want {
					if got[w] != want[w] {
						t.Fatalf("dim %d bits %d kind %d word %d: got %#x, want %#x", dim, nb, kind, w, got[w], want[w])
					}
				}
			}
		}
	})
}

// TestHashLaneOrderAll repeats the lane-order check on every set and at
// every position of the 16-lane pattern, including the masked tail.
func TestHashLaneOrderAll(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		for dim := 17; dim <= 80; dim++ {
			for first := 0; first+16 < dim; first++ {
				// Lane first%16 cancels exactly (1e8 - 1e8) and lane
				// (first+1)%16 keeps ±1; a sequential sum would absorb it.
				x := make([]float32, dim)
				x[first], x[first+1], x[first+16] = 1e8, 1, -1e8
				r := make([]float32, 8*dim)
				for j := 0; j < 8; j++ {
					o := j * dim
					r[o+first], r[o+first+16] = 1, 1
					r[o+first+1] = float32(1 - 2*(j&1)) // bit j set for even j
				}
				code := make([]uint64, 1)
				k.Hash(code, x, r)
				if code[0] != 0x55 {
					t.Fatalf("dim %d first %d: code %#x, want 0x55", dim, first, code[0])
				}
			}
		}
	})
}

func TestHashZeroDimPanicsLikeGeneric(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		defer func() {
			if recover() == nil {
				t.Fatal("dim 0 did not panic")
			}
		}()
		k.Hash(make([]uint64, 1), nil, nil)
	})
}

func TestHammingMatchesGeneric(t *testing.T) {
	accelerated(t, func(t *testing.T, k Kernels) {
		testHamming(t, k.Hamming)
	})
}

func testHamming(t *testing.T, ham func([]uint32, []uint64, int, []uint64)) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, nb := range []int{8, 16, 32, 64, 128, 256, 192} {
		words := (nb + 63) / 64
		mask := ^uint64(0)
		if nb < 64 {
			mask = 1<<nb - 1
		}
		for _, n := range lengths(1024) {
			np := []int{1, 2, 4, 8, 3, 31, 32, 33, 40, 0}[n%10]
			fill := n % 5
			table := randCodes(rng, n*words+3) // a little slack after the table
			probes := randCodes(rng, np*words+words/2)
			for i := range table {
				switch fill {
				case 0:
					table[i] = ^uint64(0)
				case 1:
					table[i] = 0
				}
				table[i] &= mask
			}
			for i := range probes {
				if fill == 2 {
					probes[i] = ^uint64(0)
				}
				probes[i] &= mask
			}
			want := make([]uint32, n)
			got := make([]uint32, n+1)
			got[n] = 0xdeadbeef
			hammingGeneric(want, table, words, probes)
			ham(got[:n], table, words, probes)
			if got[n] != 0xdeadbeef {
				t.Fatalf("bits %d n %d: wrote past dist", nb, n)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("bits %d n %d np %d fill %d i %d: got %d, want %d", nb, n, np, fill, i, got[i], want[i])
				}
			}
		}
	}
}

func TestBitCountMatchesGeneric(t *testing.T) {
	sets := map[string]func([]uint32, []uint64, int, []uint32, uint32){"bitCountFast": bitCountFast}
	for _, name := range Available() {
		sets[name] = available[name].BitCount
	}
	for name, bc := range sets {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(31, 32))
			for _, nb := range []int{8, 16, 32, 64, 128, 256, 5, 100} {
				words := (nb + 63) / 64
				for _, n := range lengths(1024) {
					table := randCodes(rng, n*words)
					ones := make([]uint32, nb)
					total := uint32(rng.IntN(3000))
					for j := range ones {
						ones[j] = uint32(rng.IntN(int(total) + 1))
						if n%7 == 0 {
							ones[j] = rng.Uint32() // wrapping arithmetic
						}
					}
					want := make([]uint32, n)
					got := make([]uint32, n)
					bitCountDistGeneric(want, table, words, ones, total)
					bc(got, table, words, ones, total)
					for i := range want {
						if got[i] != want[i] {
							t.Fatalf("bits %d n %d i %d: got %d, want %d", nb, n, i, got[i], want[i])
						}
					}
				}
			}
		})
	}
}

func TestArgmaxMatchesGeneric(t *testing.T) {
	accelerated(t, func(t *testing.T, k Kernels) {
		rng := rand.New(rand.NewPCG(41, 42))
		for _, n := range lengths(1024) {
			for rep := 0; rep < 6; rep++ {
				score := make([]float32, n)
				pos := make([]int32, n)
				for i := range score {
					switch rep {
					case 0:
						score[i] = float32(rng.IntN(4)) // ties
					case 1:
						score[i] = [6]float32{nan, 0, negZ, -inf, inf, 1}[rng.IntN(6)]
					case 2:
						score[i] = -inf
					case 3:
						score[i] = nan
					default:
						score[i] = float32(rng.NormFloat64())
					}
					pos[i] = int32(rng.IntN(200)) - 20
				}
				if n > 0 && rep == 4 {
					score[rng.IntN(n)] = nan
				}
				ranges := [][2]int32{{0, 150}, {-5, 10}, {math.MinInt32, math.MaxInt32}, {50, 50}, {190, 300}, {int32(rng.IntN(100)), int32(rng.IntN(200))}}
				for _, r := range ranges {
					want := argmaxRangeGeneric(score, pos, r[0], r[1])
					got := k.ArgmaxIn(score, pos, r[0], r[1])
					if got != want {
						t.Fatalf("n %d rep %d range %v: got %d, want %d", n, rep, r, got, want)
					}
				}
			}
		}
	})
}

func TestUpdateMatchesGeneric(t *testing.T) {
	accelerated(t, func(t *testing.T, k Kernels) {
		rng := rand.New(rand.NewPCG(51, 52))
		for _, n := range lengths(1024) {
			for _, mode := range []int{ScoreInstant, ScoreAccumulated, ScoreDecayed, 7} {
				for _, tokens := range []uint32{1, 3, 7, 0, 100000} {
					dist := make([]uint32, n)
					count := make([]uint32, n)
					score := make([]float32, n)
					for i := range dist {
						switch rng.IntN(6) {
						case 0:
							dist[i] = rng.Uint32() // beyond 2^24: rounding, and 2^31+
						case 1:
							dist[i] = 0
						default:
							dist[i] = uint32(rng.IntN(1000))
						}
						switch rng.IntN(8) {
						case 0:
							count[i] = math.MaxUint32 // wraps to 0: division by zero
						case 1:
							count[i] = rng.Uint32()
						default:
							count[i] = uint32(rng.IntN(100))
						}
					}
					fillFloats(rng, score, []int{0, 1, 2, 3, 4, 5}[(n+int(tokens))%6])
					decay := []float32{0.9, 0.5, float32(rng.Float64()), 1e-30}[rng.IntN(4)]
					ws, wc := append([]float32(nil), score...), append([]uint32(nil), count...)
					updateGeneric(ws, wc, dist, tokens, mode, decay)
					k.Update(score, count, dist, tokens, mode, decay)
					if i := sameBits32(score, ws); i >= 0 {
						t.Fatalf("n %d mode %d tokens %d i %d: score %#x, want %#x", n, mode, tokens, i, math.Float32bits(score[i]), math.Float32bits(ws[i]))
					}
					for i := range wc {
						if count[i] != wc[i] {
							t.Fatalf("n %d mode %d i %d: count %d, want %d", n, mode, i, count[i], wc[i])
						}
					}
				}
			}
		}
	})
}

func TestConversionsMatchGeneric(t *testing.T) {
	// Every f16 and bf16 value, in rows of every length 0..1024: row r of
	// length n holds the values r*n .. r*n+n-1 (mod 2^16).
	accelerated(t, func(t *testing.T, k Kernels) {
		for _, n := range lengths(1024) {
			rows := 1
			if n > 0 {
				rows = (1<<16 + n - 1) / n
			}
			if testing.Short() || n > 64 && n%64 != 0 && n != 1023 && n != 1024 {
				rows = min(rows, 3)
			}
			src := make([]uint16, n)
			for r := 0; r < rows; r++ {
				for i := range src {
					src[i] = uint16(r*n + i)
				}
				for name, conv := range map[string][2]func([]float32, []uint16) bool{
					"f16":  {f16ToF32Generic, k.F16ToF32},
					"bf16": {bf16ToF32Generic, k.BF16ToF32},
				} {
					want := make([]float32, n+1)
					got := make([]float32, n+1)
					want[n], got[n] = 42, 42
					okWant := conv[0](want[:n], src)
					okGot := conv[1](got[:n], src)
					if okGot != okWant {
						t.Fatalf("%s n %d row %d: ok %v, want %v", name, n, r, okGot, okWant)
					}
					if i := sameBits32(got, want); i >= 0 {
						t.Fatalf("%s n %d row %d i %d (%#x): %#x, want %#x", name, n, r, i, src[min(i, n-1)], math.Float32bits(got[i]), math.Float32bits(want[i]))
					}
				}
			}
		}
	})
}

func TestFiniteMatchesGeneric(t *testing.T) {
	accelerated(t, func(t *testing.T, k Kernels) {
		rng := rand.New(rand.NewPCG(61, 62))
		bad := []float32{nan, inf, -inf, math.Float32frombits(0xffffffff), math.Float32frombits(0x7f800001)}
		good := []float32{0, negZ, denorm, -denorm, math.MaxFloat32, -math.MaxFloat32, math.Float32frombits(0x7f7fffff)}
		for _, n := range lengths(1024) {
			x := make([]float32, n)
			for i := range x {
				x[i] = good[rng.IntN(len(good))]
			}
			if k.FiniteF32(x) != true {
				t.Fatalf("n %d: finite row flagged", n)
			}
			at := []int{0, n - 1, n / 2, rng.IntN(n + 1)}
			if !testing.Short() {
				at = at[:0]
				for i := 0; i < n; i++ {
					at = append(at, i)
				}
			}
			for _, i := range at {
				if i < 0 || i >= n {
					continue
				}
				old := x[i]
				x[i] = bad[rng.IntN(len(bad))]
				if k.FiniteF32(x) != finiteGeneric(x) || k.FiniteF32(x) {
					t.Fatalf("n %d: %v at %d not flagged", n, x[i], i)
				}
				x[i] = old
			}
		}
	})
}

// TestKernelsDoNotReadPastEnd puts slices at the very end of their backing
// arrays with guard values behind them, for every length: the results must
// not depend on memory beyond the slices.
func TestKernelsDoNotReadPastEnd(t *testing.T) {
	accelerated(t, func(t *testing.T, k Kernels) {
		for _, n := range lengths(300) {
			for _, guard := range []uint32{0x7fc00000, 0xffffffff, 0} {
				x := make([]float32, n+16)
				for i := n; i < len(x); i++ {
					x[i] = math.Float32frombits(guard)
				}
				for i := 0; i < n; i++ {
					x[i] = 1
				}
				if !k.FiniteF32(x[:n]) {
					t.Fatalf("n %d guard %#x: finite row flagged", n, guard)
				}
				if n > 0 {
					rt := make([]float32, 16*n+16)
					for i := 16 * n; i < len(rt); i++ {
						rt[i] = math.Float32frombits(guard)
					}
					want, got := make([]uint64, 1), make([]uint64, 1)
					Generic.Hash(want, x[:n], rt[:16*n])
					k.Hash(got, x[:n], rt[:16*n])
					if got[0] != want[0] {
						t.Fatalf("n %d guard %#x: hash %#x, want %#x", n, guard, got[0], want[0])
					}
				}
				pos := make([]int32, n+16)
				score := make([]float32, n+16)
				for i := n; i < len(pos); i++ {
					pos[i], score[i] = 5, 1e30
				}
				if got, want := k.ArgmaxIn(score[:n], pos[:n], 0, 10), argmaxRangeGeneric(score[:n], pos[:n], 0, 10); got != want {
					t.Fatalf("n %d: argmax %d, want %d", n, got, want)
				}
			}
		}
	})
}

func TestHammingCountsBits(t *testing.T) {
	// A direct check independent of the generic kernel.
	forEachSet(t, func(t *testing.T, k Kernels) {
		for _, words := range []int{1, 2, 4} {
			n := 100
			table := make([]uint64, n*words)
			for i := 0; i < n; i++ {
				for w := 0; w < words; w++ {
					table[i*words+w] = 1<<uint(i%64) - 1 // i%64 ones
				}
			}
			probes := make([]uint64, 2*words)
			for w := 0; w < words; w++ {
				probes[words+w] = ^uint64(0)
			}
			dist := make([]uint32, n)
			k.Hamming(dist, table, words, probes)
			for i, d := range dist {
				ones := i % 64
				want := words * (ones + 64 - ones)
				if int(d) != want || bits.OnesCount64(table[i*words]) != ones {
					t.Fatalf("%s words %d i %d: %d, want %d", k.Name, words, i, d, want)
				}
			}
		}
	})
}

func ExampleAvailable() {
	sets := Available()
	fmt.Println(sets[len(sets)-1])
	// Output: generic
}

// TestEnvSelectsSet runs this test binary again with HASHEVICT_KERNELS set
// to each available set (and to an unknown name, which is ignored).
func TestEnvSelectsSet(t *testing.T) {
	if os.Getenv("HASHEVICT_ENV_CHILD") != "" {
		fmt.Printf("ACTIVE=%s\n", Active().Name)
		return
	}
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for _, name := range append(Available(), "no-such-set") {
		cmd := exec.Command(os.Args[0], "-test.run=^TestEnvSelectsSet$", "-test.v")
		cmd.Env = append(os.Environ(), "HASHEVICT_ENV_CHILD=1", "HASHEVICT_KERNELS="+name)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		want := name
		if name == "no-such-set" {
			want = Available()[0]
		}
		if !strings.Contains(string(out), "ACTIVE="+want+"\n") {
			t.Fatalf("HASHEVICT_KERNELS=%s: want active %s, got\n%s", name, want, out)
		}
	}
}

func TestScoreStepMatchesComposition(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		rng := rand.New(rand.NewPCG(71, 72))
		ns := lengths(1024)
		ns = append(ns, 1025, 2047, 2048, 3001, 5000)
		for _, n := range ns {
			for _, bits := range []int{8, 16, 32, 64, 128, 256, 192} {
				if testing.Short() && bits == 192 {
					continue
				}
				mode := []int{ScoreInstant, ScoreAccumulated, ScoreDecayed}[(n+bits/8)%3]
				np := 1 + n%5
				table, wide, probes := randTable(rng, n, bits, np)
				score := make([]float32, n)
				fillFloats(rng, score, []int{0, 4, 5}[n%3])
				count := make([]uint32, n)
				pos := make([]int32, n)
				for i := range pos {
					pos[i] = int32(rng.IntN(n + 20))
					count[i] = uint32(rng.IntN(50))
				}
				tokens := uint32(1 + n%3)
				lo, hi := int32(rng.IntN(10)), int32(n-rng.IntN(10))
				if n%7 == 3 {
					lo, hi = hi, lo // nothing qualifies
				}
				skip := skipOutside(rng, pos, lo, hi)
				before := append([]int32(nil), skip...)
				ws, wc := append([]float32(nil), score...), append([]uint32(nil), count...)
				gs, gc := append([]float32(nil), score...), append([]uint32(nil), count...)
				// The reference: the three generic kernels in sequence,
				// on the codes in the wide layout.
				dist := make([]uint32, n)
				hammingGeneric(dist, wide, max(1, bits/64), narrowProbes(probes, bits))
				updateGeneric(ws, wc, dist, tokens, mode, 0.9)
				want := argmaxRangeGeneric(ws, pos, lo, hi)
				got := k.ScoreStep(gs, gc, table, bits, probes, tokens, mode, 0.9, skip)
				if got != want {
					t.Fatalf("n %d bits %d mode %d [%d,%d): victim %d, want %d", n, bits, mode, lo, hi, got, want)
				}
				if !slices.Equal(skip, before) {
					t.Fatalf("n %d bits %d: ScoreStep changed skip", n, bits)
				}
				if i := sameBits32(gs, ws); i >= 0 {
					t.Fatalf("n %d bits %d mode %d: score[%d] %#x, want %#x", n, bits, mode, i, math.Float32bits(gs[i]), math.Float32bits(ws[i]))
				}
				for i := range wc {
					if gc[i] != wc[i] {
						t.Fatalf("n %d bits %d mode %d: count[%d] %d, want %d", n, bits, mode, i, gc[i], wc[i])
					}
				}
			}
		}
	})
}

// skipOutside returns, as a skip list, the entries whose positions are
// outside [lo, hi), shuffled, some twice, with out-of-range indices the
// kernels must ignore.
func skipOutside(rng *rand.Rand, pos []int32, lo, hi int32) []int32 {
	var skip []int32
	for i, p := range pos {
		if p < lo || p >= hi {
			skip = append(skip, int32(i))
			if rng.IntN(4) == 0 {
				skip = append(skip, int32(i))
			}
		}
	}
	skip = append(skip, int32(len(pos)), int32(len(pos)+7), -1)
	rng.Shuffle(len(skip), func(i, j int) { skip[i], skip[j] = skip[j], skip[i] })
	return skip
}

// randTable returns n random bits-bit codes in their table layout and in
// the wide layout (one word per code below 64 bits), and np random probes
// (wide; narrow probes keep random high bits, which the kernels ignore).
func randTable(rng *rand.Rand, n, bits, np int) (table, wide, probes []uint64) {
	w := max(1, bits/64)
	wide = randCodes(rng, n*w)
	probes = randCodes(rng, np*w)
	if !Narrow(bits) {
		return wide, wide, probes
	}
	mask := uint64(1)<<uint(bits) - 1
	table = make([]uint64, CodeWords(bits, n))
	for i := range n {
		wide[i] &= mask
		PutCode(table, wide[i:i+1], bits, i)
	}
	return table, wide, probes
}

// narrowProbes returns the probes as the narrow kernels read them: their
// low bits bits.
func narrowProbes(probes []uint64, bits int) []uint64 {
	if !Narrow(bits) {
		return probes
	}
	out := make([]uint64, len(probes))
	for i, p := range probes {
		out[i] = p & (uint64(1)<<uint(bits) - 1)
	}
	return out
}
