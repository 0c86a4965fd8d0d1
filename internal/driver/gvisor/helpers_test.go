package gvisor

import (
	"bytes"
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

// run creates and starts cfg, and deletes it when the test ends.
func run(t *testing.T, d *Driver, cfg driver.Config) {
	t.Helper()
	t.Cleanup(func() {
		if err := d.Delete(context.Background(), cfg.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := d.Create(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(testCtx(t), cfg.ID); err != nil {
		t.Fatal(err)
	}
	st, err := d.Status(testCtx(t), cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != driver.StateRunning || st.Pid <= 0 {
		t.Fatalf("after Start: status %+v, want running with a pid", st)
	}
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
func logText(t *testing.T, d *Driver, id string) string {
	t.Helper()
	r, err := d.Logs(testCtx(t), id, driver.LogOptions{})
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

// hostKernel is the host's kernel release, as uname -r prints it.
func hostKernel(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// signalWriter closes ch once what was written contains match.
type signalWriter struct {
	lockedBuffer
	match string
	ch    chan struct{}
	once  sync.Once
}

func (s *signalWriter) Write(p []byte) (int, error) {
	n, err := s.lockedBuffer.Write(p)
	if strings.Contains(s.String(), s.match) {
		s.once.Do(func() { close(s.ch) })
	}
	return n, err
}
