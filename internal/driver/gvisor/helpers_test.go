package gvisor

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// waitLimit only bounds how long a broken test hangs; nothing asserts on time.
const waitLimit = 60 * time.Second

var (
	probeOnce sync.Once
	probeErr  error
)

// newTestDriver returns a Driver on a fresh StateDir, skipping the test
// when gVisor genuinely cannot run here (no runsc, not root, or the probe
// sandbox fails to boot).
func newTestDriver(t *testing.T) *Driver {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the gvisor driver needs root (mounts, cgroups, namespaces)")
	}
	probeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		_, probeErr = Probe(ctx, "", "")
	})
	if probeErr != nil {
		t.Skipf("gVisor cannot run here: %v", probeErr)
	}
	d, err := New(Options{StateDir: t.TempDir(), LogCheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// restarted returns a new Driver on d's StateDir, as a restarted daemon
// would make.
func restarted(t *testing.T, stateDir string) *Driver {
	t.Helper()
	d, err := New(Options{StateDir: stateDir, LogCheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// testConfig is a workload of a fresh busybox rootfs running args.
func testConfig(t *testing.T, args ...string) driver.Config {
	t.Helper()
	rootfs := t.TempDir()
	testutil.WriteRootfs(t, rootfs)
	return driver.Config{
		ID:          spec.NewID(),
		Spec:        spec.Spec{Cores: 1, MemoryMiB: 128, Args: args, Isolation: spec.IsolationGVisor},
		Rootfs:      rootfs,
		ImageConfig: v1.Config{Env: []string{"PATH=/bin"}},
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// hostKernel is the host's kernel release, as uname -r prints it.
func hostKernel(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// signalWriter closes ch once what was written contains match.
type signalWriter struct {
	testutil.LockedBuffer
	match string
	ch    chan struct{}
	once  sync.Once
}

func (s *signalWriter) Write(p []byte) (int, error) {
	n, err := s.LockedBuffer.Write(p)
	if strings.Contains(s.String(), s.match) {
		s.once.Do(func() { close(s.ch) })
	}
	return n, err
}
