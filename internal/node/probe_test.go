package node

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/runc"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
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

// TestRestartWatchesWithoutRuntime restarts the node over the same data
// dir and checks that the re-adopted workload costs no runtime process,
// neither at recovery nor per status tick, and that its exit is still
// reported as it happens.
func TestRestartWatchesWithoutRuntime(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	real, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(t.TempDir(), "calls")
	e.runtime = filepath.Join(t.TempDir(), "runc")
	script := "#!/bin/sh\necho \"$*\" >>" + calls + "\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(e.runtime, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	n := e.start()
	w := n.spawn(`{"ports":{"80":8080}}`)
	n.shutdown()
	if err := os.Remove(calls); err != nil {
		t.Fatal(err)
	}

	n2 := e.start()
	if o, ok := n2.Observation(w.ID); !ok || o.State != workload.StateRunning || !o.Ready || o.Pid != w.Pid {
		t.Fatalf("after restart: %+v (found %v), want running and ready with pid %d", o, ok, w.Pid)
	}
	time.Sleep(20 * e.cfg.StatusInterval)
	if data, err := os.ReadFile(calls); err == nil {
		t.Errorf("the restarted node ran the runtime for a re-adopted workload:\n%s", data)
	}
	if err := unix.Kill(w.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitLimit, "the exit to be reported", func() bool {
		o, ok := n2.reports.last(w.ID)
		return ok && o.State == workload.StateExited
	})
	if o, _ := n2.reports.last(w.ID); o.ExitCode != 137 {
		// This test process made the workload, so it is still its parent;
		// a daemon that is a new process reports -1 (ADR 7).
		t.Errorf("exited report %+v, want exit code 137 (SIGKILL)", o)
	}
	if data, err := os.ReadFile(calls); err == nil {
		t.Errorf("the node ran the runtime to notice an exit:\n%s", data)
	}
	n2.removeAll()
}
