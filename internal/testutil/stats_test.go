package testutil

import (
	"math"
	"testing"
)

func TestMedian(t *testing.T) {
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Fatalf("odd: %v", got)
	}
	if got := Median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Fatalf("even: %v", got)
	}
	if !math.IsNaN(Median(nil)) {
		t.Fatal("empty is not NaN")
	}
}

func TestEnvInt(t *testing.T) {
	t.Setenv("HYPERCORE_TEST_N", "")
	if got := EnvInt(t, "HYPERCORE_TEST_N", 7); got != 7 {
		t.Errorf("unset: %d, want the default 7", got)
	}
	t.Setenv("HYPERCORE_TEST_N", "12")
	if got := EnvInt(t, "HYPERCORE_TEST_N", 7); got != 12 {
		t.Errorf("12: %d", got)
	}
}
