package cluster

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// TestRefusalAtTheMemoryReservationNamesTheFlag: once the workloads meant to
// run on the one node reserve its memory, a spawn is refused as no
// capacity, with an error that says which flag raises the reservation.
func TestRefusalAtTheMemoryReservationNamesTheFlag(t *testing.T) {
	c := loneCluster(t) // n1 offers 1024 MiB
	s := spec.Spec{Image: "example.test/app:1", Cores: 0.1, MemoryMiB: 512, Isolation: spec.IsolationContainer}
	for i := range 2 {
		if _, err := c.rank(s, nil); err != nil {
			t.Fatalf("workload %d of 512 MiB on a 1024 MiB node: %v", i+1, err)
		}
		a := workload.Allocation{ID: spec.NewID(), Node: "n1", Desired: workload.DesiredRunning, CreatedAt: time.Now(), Spec: s}
		if err := c.raft.Create(a); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.rank(s, nil)
	if !errors.Is(err, workload.ErrNoCapacity) || !strings.Contains(err.Error(), "raise --memory") {
		t.Errorf("a third 512 MiB workload on a 1024 MiB node: %v, want no capacity naming --memory", err)
	}
}
