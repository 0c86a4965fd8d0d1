package runc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

func TestLifecycle(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	testLifecycle(t, d)
}

// testLifecycle runs the busybox httpd through create, start, exec, stop
// and delete. The page is fetched from inside the workload, over the
// loopback of the netns the driver made for it.
func testLifecycle(t *testing.T, d *Driver) {
	ctx := testCtx(t)
	cfg := testConfig(testRootfs(t), "/bin/httpd", "-f", "-p", fmt.Sprint(testutil.HTTPPort), "-h", "/www")

	begin := time.Now()
	drivertest.Create(t, testCtx(t), d, cfg)
	st, err := d.Status(ctx, cfg.ID)
	if err != nil || st.State != driver.StateCreated {
		t.Fatalf("after Create: %+v, %v; want created", st, err)
	}
	if err := d.Start(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: create→running took %v", d.name, time.Since(begin))
	st, err = d.Status(ctx, cfg.ID)
	if err != nil || st.State != driver.StateRunning || st.Pid <= 0 || st.StartedAt.IsZero() {
		t.Fatalf("after Start: %+v, %v; want running with pid and start time", st, err)
	}
	if err := d.Start(ctx, cfg.ID); err != nil {
		t.Errorf("Start of a running workload: %v", err)
	}

	url := fmt.Sprintf("http://127.0.0.1:%d/", testutil.HTTPPort)
	var page string
	testutil.WaitFor(t, waitLimit, "httpd to serve", func() bool {
		out, code := drivertest.Exec(t, testCtx(t), d, cfg.ID, "wget", "-q", "-O-", url)
		page = out
		return code == 0
	})
	if page != testutil.IndexHTML {
		t.Errorf("page = %q, want %q", page, testutil.IndexHTML)
	}
	if _, code := drivertest.Exec(t, testCtx(t), d, cfg.ID, "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("exit code %d, want 3", code)
	}
	if _, err := d.Exec(ctx, cfg.ID, driver.ExecConfig{Args: []string{"/no/such/binary"}}); err == nil {
		t.Error("exec of a missing binary returned no error")
	}

	// httpd as pid 1 ignores SIGTERM, so this also covers the SIGKILL path.
	if err := d.Stop(ctx, cfg.ID, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st, err = d.Status(ctx, cfg.ID)
	if err != nil || st.State != driver.StateStopped || st.ExitCode != 137 || st.FinishedAt.IsZero() {
		t.Fatalf("after Stop: %+v, %v; want stopped, exit code 137 (SIGKILL), finish time", st, err)
	}
	if err := d.Stop(ctx, cfg.ID, time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := d.Exec(ctx, cfg.ID, driver.ExecConfig{Args: []string{"true"}}); err == nil {
		t.Error("exec in a stopped workload returned no error")
	}

	p := d.paths(cfg.ID)
	if err := d.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Status(ctx, cfg.ID); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Status after Delete: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(p.dir); !os.IsNotExist(err) {
		t.Errorf("workload dir left after Delete: %v", err)
	}
	if err := d.Delete(ctx, cfg.ID); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func TestUnknownWorkload(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	ctx := testCtx(t)
	id := spec.NewID()
	if err := d.Delete(ctx, id); err != nil {
		t.Errorf("Delete of an unknown id: %v", err)
	}
	if err := d.Stop(ctx, id, time.Second); err != nil {
		t.Errorf("Stop of an unknown id: %v", err)
	}
	if _, err := d.Status(ctx, id); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Status: %v, want ErrNotFound", err)
	}
	if err := d.Start(ctx, id); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Start: %v, want ErrNotFound", err)
	}
	if _, err := d.Logs(ctx, id, driver.LogOptions{}); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Logs: %v, want ErrNotFound", err)
	}
	if _, err := d.Exec(ctx, id, driver.ExecConfig{Args: []string{"true"}}); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Exec: %v, want ErrNotFound", err)
	}
	if _, err := d.Stats(ctx, id); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("Stats: %v, want ErrNotFound", err)
	}
	// The driver no longer checks ids: a path never becomes a spec.ID,
	// whose only makers are NewID and ParseID.
	if _, err := spec.ParseID("../../etc"); err == nil {
		t.Error("ParseID accepted a path as id, which Delete would then remove")
	}
}

// TestCreateTwice creates the same id over a running workload and over a
// half-made one: Create replaces whatever is there.
func TestCreateTwice(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	ctx := testCtx(t)
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo first > /marker")

	if err := d.Create(ctx, cfg); err != nil {
		t.Fatalf("second Create: %v", err)
	}
	st, err := d.Status(ctx, cfg.ID)
	if err != nil || st.State != driver.StateCreated {
		t.Fatalf("after second Create: %+v, %v; want created", st, err)
	}

	if _, err := d.Exec(ctx, cfg.ID, driver.ExecConfig{Args: []string{"true"}}); err == nil {
		t.Error("exec in a created, not started, workload returned no error")
	}
	if err := d.Stop(ctx, cfg.ID, time.Second); err != nil {
		t.Fatalf("Stop of a created workload: %v", err)
	}
	if st, err := d.Status(ctx, cfg.ID); err != nil || st.State != driver.StateStopped {
		t.Fatalf("after stopping a created workload: %+v, %v; want stopped", st, err)
	}

	// A half-made leftover: the runtime never heard of it, but the dir,
	// the overlay and the netns are there.
	if err := d.forceDelete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, cfg); err != nil {
		t.Fatalf("Create over leftovers: %v", err)
	}
	if err := d.Start(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if out, code := drivertest.Exec(t, testCtx(t), d, cfg.ID, "cat", "/marker"); code == 0 {
		t.Errorf("the new workload sees the old one's file: %q", out)
	}
}

// TestStopGraceful checks that Stop lets a workload that handles SIGTERM
// exit on its own, and that Start runs a stopped workload again.
func TestStopGraceful(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	ctx := testCtx(t)
	cfg := testConfig(testRootfs(t), "sh", "-c", `trap 'echo got TERM; exit 0' TERM; echo started; while true; do sleep 0.1; done`)
	drivertest.Run(t, testCtx(t), d, cfg)
	testutil.WaitFor(t, waitLimit, "the trap to be set", func() bool {
		return strings.Contains(drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "started")
	})
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo kept > /kept")
	if err := d.Stop(ctx, cfg.ID, waitLimit); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "log", drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "got TERM")

	// Start again: a new process, the same log and the same upper dir.
	if err := d.Start(ctx, cfg.ID); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	testutil.WaitFor(t, waitLimit, "the second start to log", func() bool {
		return strings.Count(drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "started") == 2
	})
	if out := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "cat", "/kept"); out != "kept\n" {
		t.Errorf("file in upper dir after restart = %q", out)
	}
}

// TestRootfsUntouched writes, overwrites and deletes image files from the
// workload and checks the shared image rootfs did not change.
func TestRootfsUntouched(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	rootfs := testRootfs(t)
	cfg := testConfig(rootfs, "sleep", "1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo new > /newfile && echo changed > /www/index.html && rm /bin/ls && mkdir /newdir")
	if out := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "cat", "/newfile", "/www/index.html"); out != "new\nchanged\n" {
		t.Errorf("workload reads %q, want its own writes", out)
	}
	check := func() {
		t.Helper()
		for _, p := range []string{"newfile", "newdir"} {
			if _, err := os.Lstat(filepath.Join(rootfs, p)); !os.IsNotExist(err) {
				t.Errorf("image rootfs has /%s: %v", p, err)
			}
		}
		if _, err := os.Lstat(filepath.Join(rootfs, "bin/ls")); err != nil {
			t.Errorf("image rootfs lost /bin/ls: %v", err)
		}
		if b, err := os.ReadFile(filepath.Join(rootfs, "www/index.html")); err != nil || string(b) != testutil.IndexHTML {
			t.Errorf("image index.html = %q, %v", b, err)
		}
	}
	check()
	if err := d.Delete(testCtx(t), cfg.ID); err != nil {
		t.Fatal(err)
	}
	check()
}

func TestCatchesSignal(t *testing.T) {
	// This test process has Go's SIGTERM handler only if signal.Notify ran;
	// a sleep child has none, and a shell with a trap has one.
	plain := exec.Command("sleep", "30")
	trapped := exec.Command("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done")
	for _, c := range []*exec.Cmd{plain, trapped} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer func(c *exec.Cmd) { c.Process.Kill(); c.Wait() }(c)
	}
	if catchesSignal(plain.Process.Pid, syscall.SIGTERM) {
		t.Error("sleep reported as catching SIGTERM")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !catchesSignal(trapped.Process.Pid, syscall.SIGTERM) {
		if time.Now().After(deadline) {
			t.Fatal("a shell with a TERM trap never reported as catching SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !catchesSignal(-1, syscall.SIGTERM) {
		t.Error("an unknown pid must keep the graceful path")
	}
}
