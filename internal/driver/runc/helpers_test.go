package runc

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// waitLimit only bounds how long a broken test hangs; nothing asserts on time.
const waitLimit = 30 * time.Second

// newTestDriver returns a Driver for runtime on a fresh StateDir, skipping
// the test when it cannot run here.
func newTestDriver(t *testing.T, runtime string) *Driver {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the runc driver needs root (mounts, cgroups, namespaces)")
	}
	if _, err := exec.LookPath(runtime); err != nil {
		t.Skipf("%s is not installed (apt-get install %s, or make deps)", runtime, runtime)
	}
	d, err := New(Options{Runtime: runtime, StateDir: t.TempDir(), LogCheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// testRootfs lays out the busybox test image rootfs in a fresh dir.
func testRootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteRootfs(t, dir)
	return dir
}

// testConfig is a workload of the test rootfs running args.
func testConfig(rootfs string, args ...string) driver.Config {
	return driver.Config{
		ID:     spec.NewID(),
		Spec:   spec.Spec{Cores: 1, MemoryMiB: 128, Args: args, Isolation: spec.IsolationContainer},
		Rootfs: rootfs,
		ImageConfig: v1.Config{
			Env: []string{"PATH=/bin"},
		},
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// create creates cfg and makes sure the test leaves nothing behind.
func create(t *testing.T, d *Driver, cfg driver.Config) {
	t.Helper()
	t.Cleanup(func() {
		if err := d.Delete(context.Background(), cfg.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := d.Create(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
}

// run creates and starts cfg and returns how long until it was running.
func run(t *testing.T, d *Driver, cfg driver.Config) time.Duration {
	t.Helper()
	begin := time.Now()
	create(t, d, cfg)
	if err := d.Start(testCtx(t), cfg.ID); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	st, err := d.Status(testCtx(t), cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != driver.StateRunning || st.Pid <= 0 {
		t.Fatalf("after Start: status %+v, want running with a pid", st)
	}
	return took
}

// execOut runs args in the workload and returns its combined output and
// exit code.
func execOut(t *testing.T, d *Driver, id string, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code, err := d.Exec(testCtx(t), id, driver.ExecConfig{Args: args, IO: driver.IO{Stdout: &out, Stderr: &out}})
	if err != nil {
		t.Fatalf("exec %q: %v", args, err)
	}
	return out.String(), code
}

// execOK runs args and fails the test unless they exit 0.
func execOK(t *testing.T, d *Driver, id string, args ...string) string {
	t.Helper()
	out, code := execOut(t, d, id, args...)
	if code != 0 {
		t.Fatalf("exec %q exited %d: %s", args, code, out)
	}
	return out
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logText returns the workload's whole log.
func logText(t *testing.T, d *Driver, id string, opts driver.LogOptions) string {
	t.Helper()
	r, err := d.Logs(testCtx(t), id, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func mustContain(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("%s = %q, want it to contain %q", what, got, want)
	}
}
