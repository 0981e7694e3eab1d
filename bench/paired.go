package bench

import (
	"fmt"
	"slices"
	"time"
)

// Paired times a and b in rounds on the calling thread, each call timed by
// ThreadTime, in the order a b, b a, a b, … so that a drift of the
// machine (another job starting, a frequency change) falls on both alike.
// It returns the time of each call, per round. A figure derived from one
// round of both (a ratio) is then paired: the machine was in the same
// state for both of its terms.
func Paired(rounds int, a, b func()) (ta, tb []time.Duration) {
	ta, tb = make([]time.Duration, rounds), make([]time.Duration, rounds)
	timed := func(f func()) time.Duration {
		t := ThreadTime()
		f()
		return ThreadTime() - t
	}
	for r := 0; r < rounds; r++ {
		if r%2 == 0 {
			ta[r] = timed(a)
			tb[r] = timed(b)
		} else {
			tb[r] = timed(b)
			ta[r] = timed(a)
		}
	}
	return ta, tb
}

// Batch returns how many calls of f make a batch of at least min thread
// CPU time (at least one call), for timing calls too short to time one by
// one.
func Batch(min time.Duration, f func()) int {
	for reps := 1; ; reps *= 2 {
		t := ThreadTime()
		for i := 0; i < reps; i++ {
			f()
		}
		if ThreadTime()-t >= min || reps >= 1<<24 {
			return reps
		}
	}
}

// Repeat returns f called reps times.
func Repeat(reps int, f func()) func() {
	return func() {
		for i := 0; i < reps; i++ {
			f()
		}
	}
}

// Spread is the median of a sample and its range.
type Spread struct{ Median, Min, Max float64 }

// SpreadOf returns the median (the mean of the two middle values for an
// even count), the minimum and the maximum of x; zeros for an empty x.
func SpreadOf(x []float64) Spread {
	if len(x) == 0 {
		return Spread{}
	}
	s := slices.Clone(x)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + m) / 2
	}
	return Spread{m, s[0], s[len(s)-1]}
}

// Ratios returns num[r]/den[r] per round.
func Ratios(num, den []time.Duration) []float64 {
	r := make([]float64, len(num))
	for i := range r {
		r[i] = float64(num[i]) / float64(den[i])
	}
	return r
}

// Format writes the spread as "median (min–max)" with the given verb.
func (s Spread) Format(verb string) string {
	return fmt.Sprintf(verb+" ("+verb+"–"+verb+")", s.Median, s.Min, s.Max)
}
