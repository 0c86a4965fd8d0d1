package driver

import (
	"slices"
	"testing"
)

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"A=1", "B=2"}, []string{"B=3", "C=4", "bad", "=x"}, []string{"A=5"})
	if want := []string{"A=5", "B=3", "C=4"}; !slices.Equal(got, want) {
		t.Errorf("MergeEnv = %q, want %q", got, want)
	}
	if !HasEnv(got, "C") || HasEnv(got, "BAD") || HasEnv(got, "") {
		t.Errorf("HasEnv on %q is wrong", got)
	}
}
