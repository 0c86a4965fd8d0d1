package runc

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
)

// TestDiskLimit writes past the workload's disk: the write fails with
// ENOSPC inside, df inside shows the limit, and the host's data dir grows
// by no more than the limit.
func TestDiskLimit(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	const limitMiB = 32
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	cfg.Spec.DiskMiB = limitMiB
	drivertest.Run(t, testCtx(t), d, cfg)

	out, code := drivertest.Exec(t, testCtx(t), d, cfg.ID, "sh", "-c", "head -c 64m /dev/zero | cat > /big")
	if code == 0 || !strings.Contains(out, "No space left on device") {
		t.Errorf("writing 64 MiB on a %d MiB disk: exit %d, %q; want a failure with ENOSPC", limitMiB, code, out)
	}
	df := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "df", "-k", "/")
	fields := strings.Fields(strings.Split(strings.TrimSpace(df), "\n")[1])
	if kb, err := strconv.Atoi(fields[1]); err != nil || kb > limitMiB*1024 || kb < limitMiB*1024/2 {
		t.Errorf("df inside: / has %s KiB (%v), want at most the %d MiB limit:\n%s", fields[1], err, limitMiB, df)
	}
	// The host side: what the workload wrote is inside its disk image, and
	// nothing else under the state dir grew.
	if used := hostUsage(t, d.opts.StateDir); used > (limitMiB+2)<<20 {
		t.Errorf("the state dir takes %d MiB on the host after a %d MiB workload filled its disk", used>>20, limitMiB)
	}
	// The workload can go on once it frees space.
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "rm /big && echo ok > /small")

	p := d.paths(cfg.ID)
	if err := d.Delete(testCtx(t), cfg.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.dir); !os.IsNotExist(err) {
		t.Errorf("after Delete, %s: %v; want it gone", p.dir, err)
	}
	// The kernel lets go of the loop device when the last mount of the
	// disk goes, which for the container's own copy is when its mount
	// namespace is freed: a moment after its processes are gone.
	deadline := time.Now().Add(5 * time.Second)
	dev := loopOf(t, p.diskImage)
	for dev != "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		dev = loopOf(t, p.diskImage)
	}
	if dev != "" {
		t.Errorf("5 s after Delete, %s still backs %s", p.diskImage, dev)
	}
}

// TestNoDiskLimit checks that DiskMiB 0 with no default leaves the upper
// dir on the host's filesystem, with no image made.
func TestNoDiskLimit(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo hi > /f")
	p := d.paths(cfg.ID)
	if _, err := os.Stat(p.diskImage); !os.IsNotExist(err) {
		t.Errorf("a workload with no disk limit has a disk image: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(p.upper, "f")); err != nil || string(b) != "hi\n" {
		t.Errorf("upper/f = %q, %v; want the workload's write", b, err)
	}
}

// hostUsage is the disk space used under dir on dir's own filesystem,
// not counting what is mounted below it.
func hostUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var root syscall.Stat_t
	if err := syscall.Stat(dir, &root); err != nil {
		t.Fatal(err)
	}
	var n int64
	filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Lstat(path, &st) != nil {
			return nil
		}
		if st.Dev != root.Dev {
			return filepath.SkipDir
		}
		n += st.Blocks * 512
		return nil
	})
	return n
}

// loopOf returns the loop device backed by file, or "".
func loopOf(t *testing.T, file string) string {
	t.Helper()
	names, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), file) {
			return strings.Split(n, "/")[3]
		}
	}
	return ""
}

// TestDefaultDisk gives workloads with no disk in their spec the driver's
// DefaultDiskMiB, from the spare image for all but possibly the first.
func TestDefaultDisk(t *testing.T) {
	t.Parallel()
	newTestDriver(t, "runc") // skips where the driver cannot run
	d, err := New(Options{Runtime: "runc", StateDir: t.TempDir(), LogCheckEvery: -1, DefaultDiskMiB: 24})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	rootfs := testRootfs(t)
	for range 2 {
		d.spare.Wait() // the second workload's disk is the spare
		cfg := testConfig(rootfs, "sleep", "1000")
		drivertest.Run(t, testCtx(t), d, cfg)
		df := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "df", "-k", "/")
		fields := strings.Fields(strings.Split(strings.TrimSpace(df), "\n")[1])
		if kb, err := strconv.Atoi(fields[1]); err != nil || kb > 24*1024 || kb < 12*1024 {
			t.Errorf("df inside: / has %s KiB (%v), want at most the 24 MiB default:\n%s", fields[1], err, df)
		}
		if err := d.Delete(testCtx(t), cfg.ID); err != nil {
			t.Fatal(err)
		}
	}
}
