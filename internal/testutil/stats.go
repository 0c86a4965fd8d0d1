package testutil

import (
	"math"
	"os"
	"slices"
	"strconv"
	"testing"
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

// EnvInt is the positive whole number in the environment variable name, or
// def when it is unset. Benchmarks take their sizes (RUNS, NODES) from the
// environment this way; anything else fails the test, so that a mistyped
// value does not quietly measure the default.
func EnvInt(t testing.TB, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive whole number", name, s)
	}
	return n
}
