package runc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// hostUIDOfRoot reads the host uid of the workload's root from its
// uid_map, as seen from inside.
func hostUIDOfRoot(t *testing.T, d *Driver, id spec.ID) uint64 {
	t.Helper()
	out := drivertest.ExecOK(t, testCtx(t), d, id, "cat", "/proc/self/uid_map")
	f := strings.Fields(out)
	if len(f) != 3 || f[0] != "0" {
		t.Fatalf("uid_map %q: want one line mapping root", out)
	}
	host, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return host
}

// The sandbox a workload gets by default: Docker's seccomp filter and a
// private user namespace whose root is an unprivileged host uid.
func TestSandboxDefault(t *testing.T) {
	t.Parallel()
	for _, rt := range []string{"runc", "crun"} {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			testSandboxDefault(t, newTestDriver(t, rt))
		})
	}
}

func testSandboxDefault(t *testing.T, d *Driver) {
	rootfs := testRootfs(t)
	// An image file owned by uid 1000, as images that run as a non-root
	// user ship their app: that user must still own it inside.
	app := filepath.Join(rootfs, "home", "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(app, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "data"), []byte("mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{app, filepath.Join(app, "data")} {
		if err := os.Chown(p, 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(rootfs, "sleep", "1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	ctx, id := testCtx(t), cfg.ID

	status := drivertest.ExecOK(t, ctx, d, id, "busybox", "grep", "Seccomp:", "/proc/self/status")
	if f := strings.Fields(status); len(f) != 2 || f[1] != "2" {
		t.Errorf("%q: want Seccomp: 2 (filter mode)", status)
	}
	host := hostUIDOfRoot(t, d, id)
	if host < idRangeFirst {
		t.Errorf("root inside is host uid %d, want one from %d on", host, idRangeFirst)
	}

	// What the probe did: a new user namespace gets all
	// capabilities in it, and with them mount. The filter denies unshare.
	out, code := drivertest.Exec(t, ctx, d, id, "busybox", "unshare", "-U", "-r", "-m", "-n", "sh", "-c", "mount -t tmpfs t /tmp && echo mounted")
	if code == 0 || strings.Contains(out, "mounted") {
		t.Errorf("unshare -U -r -m -n and mount inside: exit %d, %q; want it refused", code, out)
	}
	// Without a new user namespace, mount needs CAP_SYS_ADMIN, which
	// root inside does not have.
	if out, code := drivertest.Exec(t, ctx, d, id, "busybox", "mount", "-t", "tmpfs", "t", "/tmp"); code == 0 {
		t.Errorf("mount inside the workload succeeded: %q", out)
	}

	// Root's files land in the upper dir owned by its host uid.
	drivertest.ExecOK(t, ctx, d, id, "busybox", "touch", "/made-by-root")
	fi, err := os.Stat(filepath.Join(d.paths(id).upper, "made-by-root"))
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uint64(uid) != host {
		t.Errorf("a file root made inside is host uid %d, want %d", uid, host)
	}
	// On the host, the workload's dir is host root's, and only the
	// workload's root group may pass through it.
	if fi, err := os.Stat(d.paths(id).dir); err != nil {
		t.Error(err)
	} else if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o710 || st.Uid != 0 || uint64(st.Gid) != host {
		t.Errorf("workload dir mode %v owner %d:%d, want 710 owned by 0:%d", fi.Mode(), st.Uid, st.Gid, host)
	}

	// The netns the user namespace owns replaced the one made first, which
	// is unmounted rather than left beneath it, alive.
	if n := mountsAt(t, d.paths(id).netns); n != 1 {
		t.Errorf("%d mounts at the workload's netns path, want 1 (the one its user namespace owns)", n)
	}
	// This kernel (5.19 or later) idmaps the image rather than copy it.
	if mounted, err := isBindMounted(shiftedLowerDir(d.paths(id))); err != nil || !mounted || d.noIDMap.Load() {
		t.Errorf("the image is not seen through an idmapped mount (mounted %v, %v; fell back to a copy: %v)", mounted, err, d.noIDMap.Load())
	}
	// The image's own files keep their owners inside.
	if out := drivertest.ExecOK(t, ctx, d, id, "busybox", "stat", "-c", "%u %g", "/home/app/data", "/bin/busybox"); out != "1000 1000\n0 0\n" {
		t.Errorf("owners inside %q, want 1000 for the app's file and 0 for busybox", out)
	}
	// Root may set its groups (su does), as in any container.
	drivertest.ExecOK(t, ctx, d, id, "busybox", "su", "-s", "/bin/sh", "-c", "true", "root")

	// An image that runs as uid 1000 (as python images often do) still
	// reads and writes its own files.
	user := testConfig(rootfs, "sh", "-c", "cat /home/app/data && echo more >> /home/app/data && id -u && sleep 1000")
	user.ImageConfig.User = "1000:1000"
	drivertest.Create(t, testCtx(t), d, user)
	if err := d.Start(ctx, user.ID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitLimit, "the uid 1000 workload to write", func() bool {
		return strings.Contains(drivertest.Logs(t, testCtx(t), d, user.ID, driver.LogOptions{}), "1000")
	})
	if out := drivertest.Logs(t, testCtx(t), d, user.ID, driver.LogOptions{}); out != "mine\n1000\n" {
		t.Errorf("uid 1000 workload wrote %q, want its file and its uid", out)
	}
	// sysfs shows the workload's own network devices, not the host's.
	if out := drivertest.ExecOK(t, ctx, d, id, "ls", "/sys/class/net"); strings.TrimSpace(out) != "lo" {
		t.Errorf("/sys/class/net inside lists %q, want only lo", out)
	}
	if _, code := drivertest.Exec(t, ctx, d, id, "busybox", "touch", "/sys/kernel/x"); code == 0 {
		t.Error("/sys is writable inside")
	}
}

// Opting out: seccomp unconfined, and the host's user namespace.
func TestSandboxOptOut(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	cfg.Spec.Security = spec.Security{Seccomp: spec.SeccompUnconfined, UserNS: spec.UserNSHost}
	drivertest.Run(t, testCtx(t), d, cfg)
	ctx, id := testCtx(t), cfg.ID

	status := drivertest.ExecOK(t, ctx, d, id, "busybox", "grep", "Seccomp:", "/proc/self/status")
	if f := strings.Fields(status); len(f) != 2 || f[1] != "0" {
		t.Errorf("%q: want Seccomp: 0 with seccomp unconfined", status)
	}
	if host := hostUIDOfRoot(t, d, id); host != 0 {
		t.Errorf("root inside is host uid %d, want 0 with userns host", host)
	}
}

// Each workload gets its own range, and a restarted driver knows which
// ranges are taken from the bundles.
func TestUserNSRanges(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	rootfs := testRootfs(t)
	a, b := testConfig(rootfs, "sleep", "1000"), testConfig(rootfs, "sleep", "1000")
	drivertest.Run(t, testCtx(t), d, a)
	hostA := hostUIDOfRoot(t, d, a.ID)

	// A new Driver on the same state dir, as after a daemon restart.
	d2, err := New(d.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	drivertest.Run(t, testCtx(t), d2, b)
	hostB := hostUIDOfRoot(t, d2, b.ID)
	if hostA == hostB {
		t.Fatalf("two workloads share host uid %d for root", hostA)
	}
	if diff := max(hostA, hostB) - min(hostA, hostB); diff < idRangeSize {
		t.Errorf("ranges at %d and %d overlap", hostA, hostB)
	}
	if err := d2.Delete(testCtx(t), b.ID); err != nil {
		t.Fatal(err)
	}
	if _, taken := d2.ids.used[uint32(hostB)]; taken {
		t.Errorf("range %d still taken after Delete", hostB)
	}
}

// Where the kernel cannot idmap a mount, the workload gets a copy of the
// image with shifted owners instead; inside, it looks the same. The
// fallback is forced here: this kernel can idmap.
func TestUserNSWithoutIDMap(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	d.noIDMap.Store(true)
	rootfs := testRootfs(t)
	data := filepath.Join(rootfs, "www", "index.html")
	if err := os.Chown(data, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(filepath.Join(rootfs, "bin", "busybox"), 0o4755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(rootfs, "sleep", "1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	ctx, id := testCtx(t), cfg.ID
	host := hostUIDOfRoot(t, d, id)

	if out := drivertest.ExecOK(t, ctx, d, id, "busybox", "stat", "-c", "%u %g %a", "/www/index.html", "/bin/busybox"); out != "1000 1000 644\n0 0 4755\n" {
		t.Errorf("owners and modes inside %q, want the image's", out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(shiftedLowerDir(d.paths(id)), "www", "index.html"), &st); err != nil {
		t.Fatal(err)
	}
	if uint64(st.Uid) != host+1000 {
		t.Errorf("the copy's file is host uid %d, want %d", st.Uid, host+1000)
	}
	if err := syscall.Stat(data, &st); err != nil || st.Uid != 1000 {
		t.Errorf("the image's own file changed owner: uid %d, %v", st.Uid, err)
	}
}

// mountsAt counts the mounts stacked at path in this mount namespace.
func mountsAt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			n++
		}
	}
	return n
}
