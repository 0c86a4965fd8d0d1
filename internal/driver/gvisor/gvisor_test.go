package gvisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// TestLifecycle runs a workload through create, start, logs, exec, stop and
// delete, and checks it runs on gVisor's kernel rather than the host's.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t)
	ctx := testCtx(t)
	cfg := testConfig(t, "sh", "-c", "echo hello from the sandbox; echo to stderr >&2; exec sleep 1000")
	drivertest.Run(t, testCtx(t), d, cfg)

	testutil.WaitFor(t, waitLimit, "the log", func() bool {
		return drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}) == "hello from the sandbox\nto stderr\n"
	})
	if got, host := strings.TrimSpace(drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "uname", "-r")), hostKernel(t); got == "" || got == host {
		t.Errorf("uname -r in the sandbox = %q, want gVisor's release, not the host's %q", got, host)
	}
	if out, code := drivertest.Exec(t, testCtx(t), d, cfg.ID, "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exec exit code = %d (%q), want 7", code, out)
	}
	// The workload's writes land in its overlay upper dir on the host (in
	// disk/, where a disk limit mounts its image).
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo written > /data")
	if data, err := os.ReadFile(filepath.Join(d.stateDir(), cfg.ID.String(), "disk", "upper", "data")); err != nil || string(data) != "written\n" {
		t.Errorf("the workload's write in the upper dir: %q, %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Rootfs, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the workload wrote into the shared image rootfs: %v", err)
	}

	if err := d.Stop(ctx, cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	st, err := d.Status(ctx, cfg.ID)
	if err != nil || st.State != driver.StateStopped {
		t.Fatalf("after Stop: %+v, %v; want stopped", st, err)
	}
	if err := d.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Status(ctx, cfg.ID); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Status after Delete: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(d.stateDir(), cfg.ID.String())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workload dir after Delete: %v, want it gone", err)
	}
	if left := testutil.CgroupDirs(t, cfg.ID.String()); len(left) > 0 {
		t.Errorf("cgroups left after Delete: %q", left)
	}
}

// TestTtyRefused checks that a workload with a terminal is refused with an
// error that says why, and leaves nothing behind.
func TestTtyRefused(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t)
	if d.Capabilities().Tty {
		t.Fatal("Capabilities().Tty is true, but tty workloads cannot run in gVisor")
	}
	if iso := d.Capabilities().Isolation; iso != spec.IsolationGVisor {
		t.Errorf("Capabilities().Isolation = %q, want gvisor", iso)
	}
	cfg := testConfig(t, "sh")
	cfg.Spec.Tty = true
	err := d.Create(testCtx(t), cfg)
	if err == nil || !strings.Contains(err.Error(), "gVisor") {
		t.Fatalf("Create with tty: %v, want an error naming gVisor", err)
	}
	if _, err := os.Stat(filepath.Join(d.stateDir(), cfg.ID.String())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused Create left %s/%s behind (%v)", d.stateDir(), cfg.ID, err)
	}
}

// TestRecover adopts a running sandbox from a new Driver on the same
// StateDir, as a restarted daemon does, then stops it and brings it back
// with the files it wrote.
func TestRecover(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t)
	ctx := testCtx(t)
	cfg := testConfig(t, "sh", "-c", "echo before; exec sleep 1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	before, err := d.Status(ctx, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo persisted > /data")

	d2 := restarted(t, d.stateDir())
	st, err := d2.Recover(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != driver.StateRunning || st.Pid != before.Pid {
		t.Fatalf("Recover: %+v, want running with pid %d", st, before.Pid)
	}
	if out := drivertest.ExecOK(t, testCtx(t), d2, cfg.ID, "echo", "still here"); out != "still here\n" {
		t.Errorf("exec after recover = %q", out)
	}
	if got := drivertest.Logs(t, testCtx(t), d2, cfg.ID, driver.LogOptions{}); got != "before\n" {
		t.Errorf("log after recover = %q", got)
	}

	if err := d2.Stop(ctx, cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	d3 := restarted(t, d.stateDir())
	st, err = d3.Recover(ctx, cfg)
	if err != nil || st.State != driver.StateStopped {
		t.Fatalf("Recover of a stopped sandbox: %+v, %v; want stopped", st, err)
	}
	if err := d3.Start(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if out := drivertest.ExecOK(t, testCtx(t), d3, cfg.ID, "cat", "/data"); out != "persisted\n" {
		t.Errorf("file written before the restart = %q", out)
	}
	if got := drivertest.Logs(t, testCtx(t), d3, cfg.ID, driver.LogOptions{}); got != "before\nbefore\n" {
		t.Errorf("log after the restart = %q, want both runs' output", got)
	}
	if err := d3.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d3.Recover(ctx, cfg); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Recover of a deleted workload: %v, want ErrNotFound", err)
	}
}

// TestStopGraceful checks that SIGTERM reaches the workload inside the
// sandbox and that it may exit on its own.
func TestStopGraceful(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t)
	ctx := testCtx(t)
	cfg := testConfig(t, "sh", "-c", `trap "echo got TERM; exit 0" TERM; echo ready; while true; do sleep 0.1; done`)
	drivertest.Run(t, testCtx(t), d, cfg)
	testutil.WaitFor(t, waitLimit, "the trap to be set", func() bool {
		return strings.Contains(drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "ready")
	})
	if err := d.Stop(ctx, cfg.ID, waitLimit); err != nil {
		t.Fatal(err)
	}
	if got := drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}); !strings.Contains(got, "got TERM") {
		t.Errorf("log after Stop = %q, want the workload's answer to SIGTERM", got)
	}
}

// TestExecCancel checks that ending an exec's context kills its process in
// the sandbox, not only runsc on the host.
func TestExecCancel(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t)
	cfg := testConfig(t, "sleep", "999")
	drivertest.Run(t, testCtx(t), d, cfg)

	ctx, cancel := context.WithCancel(testCtx(t))
	started := make(chan struct{})
	out := &signalWriter{match: "started", ch: started}
	done := make(chan error, 1)
	go func() {
		_, err := d.Exec(ctx, cfg.ID, driver.ExecConfig{Args: []string{"sh", "-c", "echo started; exec sleep 1000"}, IO: driver.IO{Stdout: out}})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("exec ended before it started: %v", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Exec after cancel: %v, want context.Canceled", err)
	}
	testutil.WaitFor(t, waitLimit, "the exec'd process to be gone", func() bool {
		return !strings.Contains(drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "ps"), "sleep 1000")
	})
}

// TestExecTty runs a process on a terminal: exec -t works in gVisor.
func TestExecTty(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t)
	cfg := testConfig(t, "sleep", "999")
	drivertest.Run(t, testCtx(t), d, cfg)
	resize := make(chan driver.TermSize, 1)
	resize <- driver.TermSize{Rows: 33, Cols: 101}
	var out testutil.LockedBuffer
	code, err := d.Exec(testCtx(t), cfg.ID, driver.ExecConfig{
		Args: []string{"sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo on-a-tty; stty size"},
		IO:   driver.IO{Tty: true, Stdout: &out, Resize: resize},
	})
	if err != nil || code != 0 {
		t.Fatalf("exec -t: code %d, %v: %q", code, err, out.String())
	}
	if got := out.String(); !strings.Contains(got, "on-a-tty") || !strings.Contains(got, "33 101") {
		t.Errorf("exec -t output = %q, want on-a-tty and the size 33 101", got)
	}
}

// TestAttach types into a workload's stdin through Attach and reads its
// answer back.
func TestAttach(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t)
	cfg := testConfig(t, "sh", "-c", "while read line; do echo got $line; done")
	drivertest.Run(t, testCtx(t), d, cfg)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	got := make(chan struct{})
	out := &signalWriter{match: "got hello", ch: got}
	done := make(chan error, 1)
	go func() { done <- d.Attach(ctx, cfg.ID, driver.IO{Stdin: strings.NewReader("hello\n"), Stdout: out}) }()
	select {
	case <-got:
	case err := <-done:
		t.Fatalf("Attach ended without the answer: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("no answer through Attach")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Attach: %v", err)
	}
}

// TestStats checks that the sandbox runs in the workload's cgroup, with
// its memory limit.
func TestStats(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t)
	cfg := testConfig(t, "sleep", "999")
	drivertest.Run(t, testCtx(t), d, cfg)
	st, err := d.Stats(testCtx(t), cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryLimit != uint64(cfg.Spec.MemoryMiB)<<20 || st.MemoryBytes == 0 || st.Pids == 0 {
		t.Errorf("Stats = %+v, want a %d MiB limit and some memory and pids in use", st, cfg.Spec.MemoryMiB)
	}
}

// TestGoTooNew checks the rule that refuses runsc builds made with a Go
// newer than their gVisor, such as Debian sid's.
func TestGoTooNew(t *testing.T) {
	for _, c := range []struct {
		goVersion, runsc string
		want             bool
	}{
		{"go1.22.1", "runsc version 0.0~20240729.0", false}, // bookworm-backports
		{"go1.26.2", "runsc version 0.0~20240729.0", true},  // sid
		{"go1.23.0", "runsc version 0.0~20240729.0", true},
		{"go1.24.4", "runsc version release-20250301.0", false},
		{"go1.25.0", "runsc version release-20250301.0", true},
		{"go1.19", "runsc version 0.0~20221219.0", false},
		{"go1.26.2", "runsc version dev", false},
		{"devel +abc", "runsc version 0.0~20240729.0", false},
	} {
		if got := goTooNew(c.goVersion, c.runsc); got != c.want {
			t.Errorf("goTooNew(%q, %q) = %v, want %v", c.goVersion, c.runsc, got, c.want)
		}
	}
}
