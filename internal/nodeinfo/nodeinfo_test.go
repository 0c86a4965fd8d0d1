package nodeinfo

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
)

// TestInfoJSONKeys pins the snake_case names GET /v1/node answers with:
// every field, none in Go case, even when empty.
func TestInfoJSONKeys(t *testing.T) {
	b, err := json.Marshal(Info{})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"api_addr", "base_domain", "cores", "free_memory_mib", "isolations", "memory_mib", "microvm_accel", "name"}
	if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, want) {
		t.Errorf("Info JSON keys %v, want %v", got, want)
	}
}
