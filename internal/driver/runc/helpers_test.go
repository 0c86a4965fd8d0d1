package runc

import (
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

func mustContain(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("%s = %q, want it to contain %q", what, got, want)
	}
}
