package runc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/procwatch"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// countingRuntime puts a wrapper named runc in front of the real one that
// logs each invocation's arguments, and returns a driver on it and a
// function that lists the invocations so far.
func countingRuntime(t *testing.T, stateDir string) (*Driver, func() []string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the runc driver needs root (mounts, cgroups, namespaces)")
	}
	real, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("runc is not installed (make deps)")
	}
	dir := t.TempDir()
	logPath := filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >>" + logPath + "\nexec " + real + " \"$@\"\n"
	wrapper := filepath.Join(dir, "runc")
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Runtime: wrapper, StateDir: stateDir, LogCheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, func() []string {
		data, _ := os.ReadFile(logPath)
		return strings.FieldsFunc(string(data), func(r rune) bool { return r == '\n' })
	}
}

// exits collects what a driver tells of exits.
func exits(d *Driver) <-chan driver.Exit {
	ch := make(chan driver.Exit, 4)
	d.NotifyExit(func(_ spec.ID, e driver.Exit) { ch <- e })
	return ch
}

func waitExit(t *testing.T, ch <-chan driver.Exit) driver.Exit {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(waitLimit):
		t.Fatal("no exit was told")
		return driver.Exit{}
	}
}

// TestRunTellsExitCode runs a workload that exits with 5 and checks that
// the driver tells the exit with its code at once, that Status has it, and
// that Run took one runtime process.
func TestRunTellsExitCode(t *testing.T) {
	t.Parallel()
	d, calls := countingRuntime(t, t.TempDir())
	ch := exits(d)
	ctx := testCtx(t)
	cfg := testConfig(testRootfs(t), "sh", "-c", "sleep 0.2; exit 5")
	if err := d.Run(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := calls(); len(got) != 1 || !strings.Contains(got[0], " run ") {
		t.Errorf("Run invoked the runtime as %v, want one run", got)
	}
	st, err := d.Status(ctx, cfg.ID)
	if err != nil || st.State != driver.StateRunning || st.Pid <= 0 {
		t.Fatalf("Status after Run: %+v %v, want running with a pid", st, err)
	}
	e := waitExit(t, ch)
	if e.Code != 5 || e.Reason != "" || e.Pid != st.Pid {
		t.Errorf("told exit %+v, want code 5 of pid %d", e, st.Pid)
	}
	if st, err := d.Status(ctx, cfg.ID); err != nil || st.State != driver.StateStopped || st.ExitCode != 5 {
		t.Errorf("Status after the exit: %+v %v, want stopped with code 5", st, err)
	}
	// It starts again from its bundle, and exits again with 5.
	if err := d.Start(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, ch); e.Code != 5 {
		t.Errorf("second run's exit %+v, want code 5", e)
	}
	if err := d.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	// A workload deleted while it runs is killed unwatched: its process,
	// this test process's child, is left to the orphan reaper.
	cfg = testConfig(testRootfs(t), "sleep", "1000")
	if err := d.Run(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	// The runtime's helper processes and the workloads were reparented to
	// this process (a subreaper); none is left a zombie. Other tests run
	// alongside, so a moment with none is enough.
	testutil.WaitFor(t, waitLimit, "no zombie children", func() bool { return len(procwatch.Zombies()) == 0 })
}

// TestCreateStartTellsExitCode covers the two-step path a workload with a
// terminal takes.
func TestCreateStartTellsExitCode(t *testing.T) {
	t.Parallel()
	d, _ := countingRuntime(t, t.TempDir())
	ch := exits(d)
	ctx := testCtx(t)
	cfg := testConfig(testRootfs(t), "sh", "-c", "exit 5")
	cfg.Spec.Tty = true
	if err := d.Run(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, ch); e.Code != 5 {
		t.Errorf("told exit %+v, want code 5", e)
	}
	if err := d.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
}

// TestRecoverWatchesWithoutRuntime re-adopts a running workload with a new
// Driver on the same StateDir and checks that neither Recover nor Status
// runs the runtime, and that the exit is still told.
func TestRecoverWatchesWithoutRuntime(t *testing.T) {
	t.Parallel()
	stateDir := t.TempDir()
	d, _ := countingRuntime(t, stateDir)
	ctx := testCtx(t)
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	if err := d.Run(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	before, _ := d.Status(ctx, cfg.ID)
	d.Close()

	d2, calls := countingRuntime(t, stateDir)
	ch := exits(d2)
	st, err := d2.Recover(ctx, cfg)
	if err != nil || st.State != driver.StateRunning || st.Pid != before.Pid {
		t.Fatalf("Recover: %+v %v, want running with pid %d", st, err, before.Pid)
	}
	for range 20 {
		if st, err := d2.Status(ctx, cfg.ID); err != nil || st.State != driver.StateRunning {
			t.Fatalf("Status: %+v %v", st, err)
		}
	}
	if got := calls(); len(got) != 0 {
		t.Errorf("Recover and 20 Status calls ran the runtime %v; the pidfd should answer", got)
	}
	if err := d2.Stop(ctx, cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	// This test process started it and stays its parent, so the code of
	// the kill is known; a daemon that was restarted as a new process gets
	// -1 (TestDaemonKilledExitUnknown).
	if e := waitExit(t, ch); e.Code != 137 {
		t.Errorf("told exit %+v, want 137 (SIGKILL)", e)
	}
	if err := d2.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
}
