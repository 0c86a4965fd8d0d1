package node

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/runc"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// TestProbesBackOffAndStopOnceReady checks the watcher's schedule: a
// ready workload whose driver tells of exits is never checked, and one not
// ready yet is probed at growing intervals up to maxProbeEvery.
func TestProbesBackOffAndStopOnceReady(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the runc driver needs root")
	}
	drv, err := runc.New(runc.Options{StateDir: t.TempDir(), LogCheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	interval := 100 * time.Millisecond
	n, err := New(Config{Name: "probe", StatusInterval: interval}, Parts{Drivers: map[spec.Isolation]driver.Driver{spec.IsolationContainer: drv}})
	if err != nil {
		t.Fatal(err)
	}
	ready, starting := spec.NewID(), spec.NewID()
	n.obs[ready] = workload.Observation{State: workload.StateRunning, Ready: true}
	n.obs[starting] = workload.Observation{State: workload.StateRunning}
	n.isolation[ready] = spec.IsolationContainer
	n.isolation[starting] = spec.IsolationContainer

	now := time.Unix(1000, 0)
	var probedAt []time.Duration
	for step := time.Duration(0); step < 30*time.Second; step += interval {
		due := n.dueChecks(now.Add(step))
		if slices.Contains(due, ready) {
			t.Fatalf("a ready workload of a driver that tells exits was checked at %v", step)
		}
		if slices.Contains(due, starting) {
			probedAt = append(probedAt, step)
		}
	}
	if len(probedAt) < 4 {
		t.Fatalf("probed at %v, want it probed again and again", probedAt)
	}
	for i := 2; i < len(probedAt); i++ {
		gap, prev := probedAt[i]-probedAt[i-1], probedAt[i-1]-probedAt[i-2]
		if gap < prev || gap > maxProbeEvery+interval {
			t.Fatalf("probed at %v: gaps must grow up to %v", probedAt, maxProbeEvery)
		}
	}
	if last := probedAt[len(probedAt)-1] - probedAt[len(probedAt)-2]; last < maxProbeEvery {
		t.Errorf("probed at %v: the gap should reach %v", probedAt, maxProbeEvery)
	}
	if len(probedAt) > 12 {
		t.Errorf("probed %d times in 30 s: %v, want the probes to back off", len(probedAt), probedAt)
	}
}
