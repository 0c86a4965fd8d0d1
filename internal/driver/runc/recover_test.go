package runc

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/mountutil"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// restarted returns a new Driver on d's StateDir, as a restarted daemon
// would make.
func restarted(t *testing.T, d *Driver) *Driver {
	t.Helper()
	d2, err := New(Options{Runtime: d.opts.Runtime, StateDir: d.opts.StateDir, LogCheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Close() })
	return d2
}

func TestRecover(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	ctx := testCtx(t)
	cfg := testConfig(testRootfs(t), "sh", "-c", "echo before; sleep 1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	before, err := d.Status(ctx, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}

	d2 := restarted(t, d)
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
	testutil.WaitFor(t, waitLimit, "the log", func() bool { return drivertest.Logs(t, testCtx(t), d2, cfg.ID, driver.LogOptions{}) == "before\n" })
	if err := d2.Stop(ctx, cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := d2.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Recover(ctx, cfg); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Recover of a deleted workload: %v, want ErrNotFound", err)
	}
}

// TestRecoverAfterReboot loses what a reboot loses (processes, mounts, and
// with the runtime's state on disk, nothing else) and checks that Recover
// and Start bring the workload back with its files.
func TestRecoverAfterReboot(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	ctx := testCtx(t)
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	cfg.Spec.DiskMiB = 32 // its disk image is mounted again too
	drivertest.Run(t, testCtx(t), d, cfg)
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo persisted > /data")
	if err := d.Stop(ctx, cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	p := d.paths(cfg.ID)
	for _, m := range []string{p.rootfs, p.netns, p.disk} {
		if err := mountutil.UnmountAll(m); err != nil {
			t.Fatal(err)
		}
	}

	d2 := restarted(t, d)
	for range 2 { // twice: nothing is set up twice
		st, err := d2.Recover(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != driver.StateStopped {
			t.Fatalf("Recover: %+v, want stopped", st)
		}
	}
	for _, m := range []string{p.rootfs, p.netns, p.disk} {
		if mounted, err := mountutil.IsMountpoint(m); err != nil || !mounted {
			t.Errorf("%s not mounted again by Recover: %v", m, err)
		}
	}
	if out, err := exec.Command("sh", "-c", "grep -c "+p.rootfs+" /proc/self/mountinfo").Output(); err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("rootfs mounted %s times, want once (%v)", strings.TrimSpace(string(out)), err)
	}
	if err := d2.Start(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if out := drivertest.ExecOK(t, testCtx(t), d2, cfg.ID, "cat", "/data"); out != "persisted\n" {
		t.Errorf("file written before the reboot = %q", out)
	}

	// The runtime's state gone too (kept on tmpfs): the bundle is enough.
	if err := d2.Stop(ctx, cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := d2.forceDelete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if err := mountutil.UnmountAll(p.rootfs); err != nil {
		t.Fatal(err)
	}
	st, err := d2.Recover(ctx, cfg)
	if err != nil || st.State != driver.StateStopped {
		t.Fatalf("Recover without runtime state: %+v, %v", st, err)
	}
	if err := d2.Start(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if out := drivertest.ExecOK(t, testCtx(t), d2, cfg.ID, "cat", "/data"); out != "persisted\n" {
		t.Errorf("file after second recovery = %q", out)
	}
}

// Environment of the helper process TestDaemonKilled starts.
const (
	helperEnv      = "HYPERCORE_RUNC_HELPER"
	helperStateEnv = "HYPERCORE_RUNC_HELPER_STATE"
	helperRootEnv  = "HYPERCORE_RUNC_HELPER_ROOTFS"
	helperIDEnv    = "HYPERCORE_RUNC_HELPER_ID"
	helperTtyEnv   = "HYPERCORE_RUNC_HELPER_TTY"
)

func tickerConfig(rootfs string, id spec.ID) driver.Config {
	cfg := testConfig(rootfs, "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done")
	cfg.ID = id
	return cfg
}

// TestHelperDaemon is not a test: it is the daemon TestDaemonKilled starts
// a workload with and then kills with SIGKILL.
func TestHelperDaemon(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process for TestDaemonKilled")
	}
	d, err := New(Options{StateDir: os.Getenv(helperStateEnv), LogCheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	id, err := spec.ParseID(os.Getenv(helperIDEnv))
	if err != nil {
		t.Fatal(err)
	}
	cfg := tickerConfig(os.Getenv(helperRootEnv), id)
	if os.Getenv(helperTtyEnv) != "" {
		cfg = ttyConfig(os.Getenv(helperRootEnv))
		cfg.ID = id
	}
	ctx := context.Background()
	if err := d.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("\nREADY\n")
	time.Sleep(time.Hour)
}

// TestDaemonKilled starts a workload from another process, kills that
// process with SIGKILL, and checks the workload runs on, its output still
// reaches the log, and a new Driver can take it over.
func TestDaemonKilled(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	ctx := testCtx(t)
	rootfs := testRootfs(t)
	cfg := tickerConfig(rootfs, testConfig(rootfs).ID)
	t.Cleanup(func() { _ = d.Delete(context.Background(), cfg.ID) })

	killedHelper(t, d, rootfs, cfg.ID, false)
	st, err := d.Recover(ctx, cfg)
	if err != nil || st.State != driver.StateRunning {
		t.Fatalf("after the daemon was killed: %+v, %v; want running", st, err)
	}
	lines := func() int {
		return strings.Count(drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "tick")
	}
	n := lines()
	testutil.WaitFor(t, waitLimit, "more output after the daemon died", func() bool { return lines() > n+5 })
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "true")
	if err := d.Stop(ctx, cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
}

// TestDaemonKilledTty starts a workload with a terminal from another
// process and kills that process with SIGKILL: the pty master was never in
// this process, so attaching through d proves it was taken back from the
// container, and output written meanwhile waited in the terminal.
func TestDaemonKilledTty(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	ctx := testCtx(t)
	rootfs := testRootfs(t)
	cfg := ttyConfig(rootfs)
	t.Cleanup(func() { _ = d.Delete(context.Background(), cfg.ID) })

	killedHelper(t, d, rootfs, cfg.ID, true)
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo written while no daemon ran > /proc/1/fd/1")
	st, err := d.Recover(ctx, cfg)
	if err != nil || st.State != driver.StateRunning {
		t.Fatalf("after the daemon was killed: %+v, %v; want running", st, err)
	}
	// Recover adopted the terminal: its output reaches the log unasked.
	testutil.WaitFor(t, waitLimit, "output written while no daemon ran", func() bool {
		return strings.Contains(drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "written while no daemon ran")
	})
	echoes(t, d, cfg.ID, "recovered", driver.TermSize{Rows: 33, Cols: 77})
	mustContain(t, "log", drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "got recovered")
	if err := d.Stop(ctx, cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
}

// killedHelper has a helper daemon create and start workload id on d's
// StateDir, then kills it with SIGKILL.
func killedHelper(t *testing.T, d *Driver, rootfs string, id spec.ID, tty bool) {
	t.Helper()
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperDaemon$", "-test.v")
	helper.Env = append(os.Environ(), helperEnv+"=1", helperStateEnv+"="+d.opts.StateDir, helperRootEnv+"="+rootfs, helperIDEnv+"="+id.String())
	if tty {
		helper.Env = append(helper.Env, helperTtyEnv+"=1")
	}
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if s.Text() == "READY" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			helper.Wait()
			t.Fatal("the helper daemon ended without starting the workload")
		}
	case <-time.After(waitLimit):
		helper.Process.Kill()
		t.Fatal("the helper daemon did not start the workload")
	}
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	helper.Wait()
}
