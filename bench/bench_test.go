package bench

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
)

func TestReadSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 63, 64, 65, 1000, 4096, 4099} {
		x := make([]uint64, n)
		var want uint64
		for i := range x {
			x[i] = rng.Uint64()
			want += x[i]
		}
		for _, l := range ReadLoops {
			if got := l.Sum(x); got != want {
				t.Fatalf("%s, n %d: %d, want %d", l.Name, n, got, want)
			}
		}
	}
}

// reference is attention in float64.
func reference(q, k, v []float32, n int) []float64 {
	out := make([]float64, Group*HeadDim)
	for h := 0; h < Group; h++ {
		l := make([]float64, n)
		mx := math.Inf(-1)
		for i := 0; i < n; i++ {
			var s float64
			for d := 0; d < HeadDim; d++ {
				s += float64(q[h*HeadDim+d]) * float64(k[i*HeadDim+d])
			}
			l[i] = s / math.Sqrt(HeadDim)
			mx = math.Max(mx, l[i])
		}
		var z float64
		for i := range l {
			l[i] = math.Exp(l[i] - mx)
			z += l[i]
		}
		for i := range l {
			for d := 0; d < HeadDim; d++ {
				out[h*HeadDim+d] += l[i] / z * float64(v[i*HeadDim+d])
			}
		}
	}
	return out
}

func TestAttend(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	gauss := func(n int, s float64) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * s)
		}
		return x
	}
	for _, n := range []int{1, 2, 3, 4, 5, 17, 64, 65, 130, 1000} {
		q, k, v := gauss(Group*HeadDim, 1), gauss(n*HeadDim, 1), gauss(n*HeadDim, 1)
		want := reference(q, k, v, n)
		for name, f := range map[string]func(out, q, k, v []float32, n int, p []float32){"active": attendImpl, "go": attendGo} {
			out := make([]float32, Group*HeadDim)
			Attend(out, q, k, v, n, make([]float32, Group*n)) // bounds checks
			f(out, q, k, v, n, make([]float32, Group*n))
			for i := range out {
				if d := math.Abs(float64(out[i]) - want[i]); d > 1e-4*(1+math.Abs(want[i])) {
					t.Fatalf("%s n %d i %d: %v, want %v", name, n, i, out[i], want[i])
				}
			}
		}
	}
}

func BenchmarkAttend(b *testing.B) {
	for _, n := range []int{4096, 32768} {
		q := make([]float32, Group*HeadDim)
		k := make([]float32, n*HeadDim)
		v := make([]float32, n*HeadDim)
		out := make([]float32, Group*HeadDim)
		p := make([]float32, Group*n)
		b.Run("keys="+itoa(n), func(b *testing.B) {
			b.SetBytes(int64(8 * n * HeadDim)) // K and V
			for b.Loop() {
				Attend(out, q, k, v, n, p)
			}
		})
	}
}

func itoa(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func TestSpreadOf(t *testing.T) {
	for _, c := range []struct {
		x    []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{3}, Spread{3, 3, 3}},
		{[]float64{5, 1, 3}, Spread{3, 1, 5}},
		{[]float64{4, 1, 3, 2}, Spread{2.5, 1, 4}},
	} {
		in := append([]float64(nil), c.x...)
		if got := SpreadOf(c.x); got != c.want {
			t.Fatalf("SpreadOf(%v) = %v, want %v", c.x, got, c.want)
		}
		if !slices.Equal(in, c.x) {
			t.Fatalf("SpreadOf sorted its argument")
		}
	}
}

// Paired alternates the order of the two calls, round by round, and times
// each: a call that burns CPU takes more thread time than one that does
// not, and sleeping does not count.
func TestPaired(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var order []string
	busy := func() {
		order = append(order, "a")
		x := 0.0
		for i := 0; i < 2_000_000; i++ {
			x += float64(i)
		}
		sinkF = x
	}
	sleep := func() {
		order = append(order, "b")
		time.Sleep(20 * time.Millisecond)
	}
	ta, tb := Paired(4, busy, sleep)
	if want := []string{"a", "b", "b", "a", "a", "b", "b", "a"}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	for r := range ta {
		if ta[r] <= 0 {
			t.Fatalf("round %d: busy call took %v", r, ta[r])
		}
		if ClockName != "wall time (no per-thread CPU clock on this OS)" && tb[r] > 10*time.Millisecond {
			t.Fatalf("round %d: a 20 ms sleep counted %v of thread time", r, tb[r])
		}
	}
	if got := Ratios([]time.Duration{2, 9}, []time.Duration{4, 3}); !slices.Equal(got, []float64{0.5, 3}) {
		t.Fatalf("Ratios: %v", got)
	}
}

var sinkF float64
