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
