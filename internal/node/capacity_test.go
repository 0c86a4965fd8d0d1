package node

import (
	"runtime"
	"testing"
)

// A node given a capacity (a batch job's allocation) offers that, not the
// machine's; one given none offers the machine's.
func TestCapacityOverride(t *testing.T) {
	n, err := New(Config{Name: "job", Cores: 1, MemoryMiB: 300}, Parts{})
	if err != nil {
		t.Fatal(err)
	}
	if info := n.Info(); info.Cores != 1 || info.MemoryMiB != 300 {
		t.Errorf("info %+v; want 1 core and 300 MiB", info)
	}
	m, err := New(Config{Name: "host"}, Parts{})
	if err != nil {
		t.Fatal(err)
	}
	if info := m.Info(); info.Cores != float64(runtime.NumCPU()) || info.MemoryMiB <= 0 {
		t.Errorf("info %+v; want the machine's %d cores and its memory", info, runtime.NumCPU())
	}
}
