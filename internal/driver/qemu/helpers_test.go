package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/guest"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// waitLimit only bounds how long a broken test hangs; nothing asserts on time.
const waitLimit = 90 * time.Second

// The test binary is the guest agent: the driver puts it in the initramfs
// as /init (with its shared libraries, if it has any), and there it runs
// as PID 1.
func TestMain(m *testing.M) {
	if guest.IsInit() {
		guest.Init()
	}
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

var shared struct {
	once   sync.Once
	dir    string
	kernel Kernel
	err    error
	skip   string
}

// testKernel prepares the guest kernel once per run, from the shared cache.
func testKernel(t *testing.T) (Kernel, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("microVMs need root (TAPs, netns, /run)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (make deps)")
	}
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "qemu-test-")
		if shared.err != nil {
			return
		}
		cache := os.Getenv("HYPERCORE_CACHE")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		shared.kernel, shared.err = Prepare(ctx, PrepareOptions{CacheDir: cache})
	})
	if shared.err != nil {
		t.Fatalf("prepare guest kernel (make test runs `hypercore vm prepare`): %v", shared.err)
	}
	return shared.kernel, shared.dir
}

// newTestDriver returns a driver on a fresh state dir, its agent this
// test binary.
func newTestDriver(t *testing.T) *Driver {
	t.Helper()
	k, _ := testKernel(t)
	return newDriverAt(t, t.TempDir(), k)
}

func newDriverAt(t *testing.T, stateDir string, k Kernel) *Driver {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(testCtx(t), Options{StateDir: stateDir, Kernel: k, Agent: exe})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// testRootfs lays out the busybox test image as an image store would:
// <store>/rootfs/<digest hex>.
func testRootfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs", strings.Repeat("ab", 32))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.WriteRootfs(t, dir)
	return dir
}

func testConfig(rootfs string, args ...string) driver.Config {
	return driver.Config{
		ID:          spec.NewID(),
		Spec:        spec.Spec{Cores: 1, MemoryMiB: 256, Args: args, Isolation: spec.IsolationMicroVM},
		Rootfs:      rootfs,
		ImageConfig: v1.Config{Env: []string{"PATH=/bin"}},
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// boot creates and starts cfg, and deletes it when the test ends.
func boot(t *testing.T, d *Driver, cfg driver.Config) {
	t.Helper()
	t.Cleanup(func() {
		if err := d.Delete(context.Background(), cfg.ID); err != nil && !errors.Is(err, driver.ErrNotFound) {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := d.Create(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(testCtx(t), cfg.ID); err != nil {
		console, _ := os.ReadFile(d.paths(cfg.ID).console)
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
}
