package testutil

import (
	"math"
	"slices"
)

// Median is the middle value of v, or the mean of the two middle ones;
// NaN for no samples.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(v))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
