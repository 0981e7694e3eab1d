package simd

// HammingNarrow of every set against an independent reference: the codes
// unpacked to one word each and the probes masked to their low bits, run
// through the one-word generic Hamming kernel.

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// narrowWant is the reference: wide holds code i in its low bits.
func narrowWant(wide []uint64, bits int, probes []uint64) []uint32 {
	want := make([]uint32, len(wide))
	if len(probes) > 0 {
		hammingGeneric(want, wide, 1, narrowProbes(probes, bits))
	}
	return want
}

// packNarrow packs wide codes (low bits only) into a table of exactly
// CodeWords words.
func packNarrow(wide []uint64, bits int) []uint64 {
	table := make([]uint64, CodeWords(bits, len(wide)))
	for i := range wide {
		PutCode(table, wide[i:i+1], bits, i)
	}
	return table[:len(table):len(table)]
}

const narrowGuard = 0xdeadbeef

// checkNarrow runs ham on dist slices that end before guard words and
// start full of garbage, with a table of exactly CodeWords words.
func checkNarrow(t *testing.T, ham func([]uint32, []uint64, int, []uint64), rng *rand.Rand,
	wide, table []uint64, bits int, probes []uint64, what string) {
	t.Helper()
	n := len(wide)
	want := narrowWant(wide, bits, probes)
	off := rng.IntN(4) // dist need not be aligned
	buf := make([]uint32, off+n+8)
	for i := range buf {
		buf[i] = narrowGuard
	}
	for i := off; i < off+n; i++ {
		buf[i] = rng.Uint32()
	}
	dist := buf[off : off+n : off+n]
	ham(dist, table[:len(table):len(table)], bits, probes)
	for i := range n {
		if dist[i] != want[i] {
			t.Fatalf("%s: n %d bits %d probes %d: dist[%d] = %d, want %d", what, n, bits, len(probes), i, dist[i], want[i])
		}
	}
	for i := range off {
		if buf[i] != narrowGuard {
			t.Fatalf("%s: n %d bits %d probes %d: wrote before dist", what, n, bits, len(probes))
		}
	}
	for i := off + n; i < len(buf); i++ {
		if buf[i] != narrowGuard {
			t.Fatalf("%s: n %d bits %d probes %d: wrote %d past dist", what, n, bits, len(probes), i-off-n)
		}
	}
}

// narrowCases checks ham on random and adversarial tables for every length
// of lengths(1024), some large ones, and 1..40 probes (the byte sums of the
// kernels hold 31 probes).
func narrowCases(t *testing.T, ham func([]uint32, []uint64, int, []uint64), seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 91))
	ns := append(lengths(1024), 1025, 2047, 4096, 4097, 10000+rng.IntN(64))
	for _, bits := range []int{8, 16, 32} {
		mask := uint64(1)<<uint(bits) - 1
		for _, n := range ns {
			nps := []int{1 + n%40, 1 + (n*7+3)%40}
			if n <= 130 || n%37 == 0 || n >= 1024 {
				nps = append(nps, 1, 8, 31, 32, 40)
			}
			for _, np := range nps {
				_, wide, probes := randTable(rng, n, bits, np) // probes keep random high bits
				checkNarrow(t, ham, rng, wide, packNarrow(wide, bits), bits, probes, "random")
			}
			if n > 300 && n%37 != 0 && n < 1024 {
				continue
			}
			// Adversarial: every bit differs (the largest sums, up to 32
			// per probe) or none does, with the probes' high bits set.
			ones, zeros := make([]uint64, n), make([]uint64, n)
			for i := range ones {
				ones[i] = mask
			}
			for _, np := range []int{1, 31, 32, 40} {
				hiZero, hiOnes := make([]uint64, np), make([]uint64, np)
				for p := range hiZero {
					hiZero[p] = rng.Uint64() &^ mask
					hiOnes[p] = rng.Uint64() | mask
				}
				checkNarrow(t, ham, rng, ones, packNarrow(ones, bits), bits, hiZero, "ones vs zero probes")
				checkNarrow(t, ham, rng, zeros, packNarrow(zeros, bits), bits, hiOnes, "zeros vs ones probes")
				checkNarrow(t, ham, rng, ones, packNarrow(ones, bits), bits, hiOnes, "ones vs ones probes")
			}
		}
		// Many probes: past the 4095 of the word sums (16-bit codes).
		for _, n := range []int{1, 100, 257} {
			_, wide, probes := randTable(rng, n, bits, 4100)
			checkNarrow(t, ham, rng, wide, packNarrow(wide, bits), bits, probes, "many probes")
			ones := make([]uint64, n)
			for i := range ones {
				ones[i] = mask
			}
			checkNarrow(t, ham, rng, ones, packNarrow(ones, bits), bits, make([]uint64, 4100), "many probes, all differ")
		}
	}
}

func TestHammingNarrowMatchesReference(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		narrowCases(t, k.HammingNarrow, 101)
	})
}

// TestHammingNarrowWithoutBITALG runs the avx512 set as on a CPU without
// AVX512_BITALG (8- and 16-bit codes widened to dwords).
func TestHammingNarrowWithoutBITALG(t *testing.T) {
	k, ok := available["avx512"]
	if !ok {
		t.Skip("no avx512 set on this CPU/build")
	}
	if !hasBITALG {
		t.Skip("CPU lacks AVX512_BITALG: TestHammingNarrowMatchesReference covers this path")
	}
	old := hasBITALG
	hasBITALG = false
	t.Cleanup(func() { hasBITALG = old })
	narrowCases(t, k.HammingNarrow, 102)
}

// Odd calls behave as the generic kernel does, panics included.
func TestHammingNarrowOddCalls(t *testing.T) {
	forEachSet(t, func(t *testing.T, k Kernels) {
		rng := rand.New(rand.NewPCG(103, 104))
		for _, bits := range []int{1, 2, 4, 8, 16, 32} {
			for _, n := range []int{0, 1, 7, 64, 100} {
				wide := randCodes(rng, n)
				for i := range wide {
					wide[i] &= uint64(1)<<uint(bits) - 1
				}
				table := packNarrow(wide, bits)
				for _, np := range []int{0, 1, 3} {
					probes := randCodes(rng, np)
					want := make([]uint32, n)
					hammingNarrowGeneric(want, table, bits, probes)
					got := make([]uint32, n)
					for i := range got {
						got[i] = narrowGuard
					}
					k.HammingNarrow(got, table, bits, probes)
					for i := range got {
						if got[i] != want[i] {
							t.Fatalf("bits %d n %d probes %d: dist[%d] = %d, want %d", bits, n, np, i, got[i], want[i])
						}
					}
					if n > 0 {
						short := table[:len(table)-1]
						wantPanic := panics(func() { hammingNarrowGeneric(make([]uint32, n), short, bits, probes) })
						gotPanic := panics(func() { k.HammingNarrow(make([]uint32, n), short, bits, probes) })
						if gotPanic != wantPanic {
							t.Fatalf("bits %d n %d probes %d, short table: panic %v, want %v", bits, n, np, gotPanic, wantPanic)
						}
					}
				}
			}
		}
	})
}

func panics(f func()) (p bool) {
	defer func() { p = recover() != nil }()
	f()
	return false
}

func BenchmarkHammingNarrow(b *testing.B) {
	benchSets(b, func(b *testing.B, k Kernels) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, bits := range []int{8, 16, 32} {
			for _, np := range []int{1, 8} {
				for _, bytes := range []int{16 << 10, 64 << 20} {
					n := bytes * 8 / bits
					b.Run(fmt.Sprintf("bits=%d/probes=%d/table=%s", bits, np, sizeName(bytes)), func(b *testing.B) {
						table := randCodes(rng, bytes/8)
						probes := randCodes(rng, np)
						dist := make([]uint32, n)
						b.SetBytes(int64(bytes))
						for b.Loop() {
							k.HammingNarrow(dist, table, bits, probes)
						}
					})
				}
			}
		}
	})
}

// PutCode and GetCode against the layout's definition (code i in bits
// [(i%k)*bits, (i%k+1)*bits) of word i/k, k = 64/bits), for every narrow
// width, power of two or not, over a table of random words: PutCode
// changes exactly the code's bits (even when src has bits above the
// width), GetCode reads them back; and for wide codes, the words.
func TestPutGetCode(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 9))
	for bits := 1; bits <= 256; bits++ {
		if !Narrow(bits) && bits%64 != 0 {
			continue
		}
		for trial := 0; trial < 40; trial++ {
			table := randCodes(rng, 9)
			before := append([]uint64(nil), table...)
			n := len(table) / max(1, bits/64)
			if Narrow(bits) {
				n = len(table) * (64 / bits)
			}
			i := rng.IntN(n)
			w := max(1, bits/64)
			src := randCodes(rng, w)
			PutCode(table, src, bits, i)
			if Narrow(bits) {
				k := 64 / bits
				sh := uint(i%k) * uint(bits)
				mask := (uint64(1)<<uint(bits) - 1) << sh
				for j := range table {
					want := before[j]
					if j == i/k {
						want = want&^mask | src[0]<<sh&mask
					}
					if table[j] != want {
						t.Fatalf("bits %d, code %d: word %d = %#x, want %#x", bits, i, j, table[j], want)
					}
				}
				got := []uint64{^uint64(0)}
				GetCode(got, table, bits, i)
				if want := src[0] & (uint64(1)<<uint(bits) - 1); got[0] != want {
					t.Fatalf("bits %d, code %d: GetCode %#x, want %#x", bits, i, got[0], want)
				}
				continue
			}
			for j := range table {
				want := before[j]
				if j >= i*w && j < (i+1)*w {
					want = src[j-i*w]
				}
				if table[j] != want {
					t.Fatalf("bits %d, code %d: word %d = %#x, want %#x", bits, i, j, table[j], want)
				}
			}
		}
	}
}
