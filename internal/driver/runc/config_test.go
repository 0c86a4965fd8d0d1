package runc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/mountutil"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// TestImageConfig checks that the image's env, workdir and user, and the
// spec's env and args, are what the workload's processes get.
func TestImageConfig(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	rootfs := testRootfs(t)

	cfg := testConfig(rootfs)
	cfg.ImageConfig.Entrypoint = []string{"/bin/sh", "-c"}
	cfg.ImageConfig.Cmd = []string{"exit 9"}
	cfg.ImageConfig.Env = []string{"PATH=/bin", "GREETING=hello", "OVERRIDE=image"}
	cfg.ImageConfig.WorkingDir = "/www"
	cfg.ImageConfig.User = "nobody"
	cfg.Spec.Env = []string{"OVERRIDE=spec"}
	cfg.Spec.Args = []string{"echo args-used; sleep 1000"} // replaces the cmd that would exit
	cfg.Hostname = "web-1"
	drivertest.Run(t, testCtx(t), d, cfg)

	if out := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "id", "-u"); out != "65534\n" {
		t.Errorf("id -u = %q, want nobody's 65534", out)
	}
	if out := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "pwd"); out != "/www\n" {
		t.Errorf("pwd = %q, want /www", out)
	}
	env := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "env")
	for _, want := range []string{"GREETING=hello", "OVERRIDE=spec", "HOSTNAME=web-1", "HOME=/", "PATH=/bin"} {
		mustContain(t, "env", env, want+"\n")
	}
	if out := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "hostname"); out != "web-1\n" {
		t.Errorf("hostname = %q", out)
	}
	mustContain(t, "/etc/hosts", drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "cat", "/etc/hosts"), "web-1")
	// The entrypoint ran the spec's args (the image cmd would have exited).
	testutil.WaitFor(t, waitLimit, "the args' output", func() bool {
		return strings.Contains(drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "args-used")
	})
	// Exec overrides: extra env and another working dir.
	var out strings.Builder
	code, err := d.Exec(testCtx(t), cfg.ID, driver.ExecConfig{
		Args: []string{"sh", "-c", "echo $GREETING $EXTRA; pwd"}, Env: []string{"EXTRA=more"}, WorkDir: "/tmp",
		IO: driver.IO{Stdout: &out},
	})
	if err != nil || code != 0 || out.String() != "hello more\n/tmp\n" {
		t.Errorf("exec with env and workdir: %q, %d, %v", out.String(), code, err)
	}

	for _, c := range []struct{ user, want string }{
		{"65534", "65534 65534\n"},
		{"1234:5678", "1234 5678\n"},
		{"root", "0 0\n"},
	} {
		cfg := testConfig(rootfs, "sleep", "1000")
		cfg.ImageConfig.User = c.user
		drivertest.Run(t, testCtx(t), d, cfg)
		if out := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo $(id -u) $(id -g)"); out != c.want {
			t.Errorf("user %q: uid gid = %q, want %q", c.user, out, c.want)
		}
	}
}

// TestLimits reads the workload's limits back from its cgroup v1 files and
// checks Stats.
func TestLimits(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	if detectCgroups() == cgroupUnified {
		t.Skip("this test reads cgroup v1 files; the host runs cgroup v2 only")
	}
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	cfg.Spec.Cores, cfg.Spec.MemoryMiB = 0.5, 64
	drivertest.Run(t, testCtx(t), d, cfg)
	testLimits(t, d, cfg)
}

func testLimits(t *testing.T, d *Driver, cfg driver.Config) {
	read := func(controller, file string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, "hypercore", cfg.ID.String(), file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	limit := fmt.Sprint(cfg.Spec.MemoryMiB << 20)
	if got := read("memory", "memory.limit_in_bytes"); got != limit {
		t.Errorf("memory.limit_in_bytes = %s, want %s", got, limit)
	}
	if canLimitSwap() {
		if got := read("memory", "memory.memsw.limit_in_bytes"); got != limit {
			t.Errorf("memory.memsw.limit_in_bytes = %s, want %s (no swap)", got, limit)
		}
	}
	if got, want := read("cpu", "cpu.cfs_quota_us"), fmt.Sprint(int(cfg.Spec.Cores*100000)); got != want {
		t.Errorf("cpu.cfs_quota_us = %s, want %s", got, want)
	}
	if got := read("cpu", "cpu.cfs_period_us"); got != "100000" {
		t.Errorf("cpu.cfs_period_us = %s", got)
	}
	if got := read("pids", "pids.max"); got != "4096" {
		t.Errorf("pids.max = %s", got)
	}

	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
	st, err := d.Stats(testCtx(t), cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryLimit != uint64(cfg.Spec.MemoryMiB<<20) || st.CPUNanos == 0 || st.Pids < 1 || st.MemoryBytes == 0 {
		t.Errorf("stats %+v: want the memory limit, some cpu and memory use, at least one pid", st)
	}
}

// TestNetNSPath joins a network namespace made by the caller instead of
// making one, and leaves it alone on Delete.
func TestNetNSPath(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	nsPath := filepath.Join(t.TempDir(), "netns")
	if err := ensureNetNS(nsPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeNetNS(nsPath) })
	var st unix.Stat_t
	if err := unix.Stat(nsPath, &st); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(testRootfs(t), "sleep", "1000")
	cfg.Network = driver.Network{NetNSPath: nsPath, IP: "10.99.0.5"}
	drivertest.Run(t, testCtx(t), d, cfg)
	// With a private user namespace, the workload's netns is a new one
	// that namespace owns, mounted over the given path: the path names
	// what the workload joined, and the given one is below it.
	var now unix.Stat_t
	if err := unix.Stat(nsPath, &now); err != nil {
		t.Fatal(err)
	}
	if now.Ino == st.Ino {
		t.Errorf("the netns at %s is still the one given, not one owned by the workload's user namespace", nsPath)
	}
	mustContain(t, "the workload's netns", drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "ls", "-l", "/proc/self/ns/net"), fmt.Sprintf("net:[%d]", now.Ino))
	mustContain(t, "/etc/hosts", drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "cat", "/etc/hosts"), "10.99.0.5\t")
	if _, err := os.Stat(d.paths(cfg.ID).netns); !os.IsNotExist(err) {
		t.Errorf("the driver made a netns of its own although one was given: %v", err)
	}

	if err := d.Delete(testCtx(t), cfg.ID); err != nil {
		t.Fatal(err)
	}
	if mounted, err := mountutil.IsMountpoint(nsPath); err != nil || !mounted {
		t.Errorf("Delete unmounted the caller's netns: %v %v", mounted, err)
	}

	// In the host's user namespace the workload joins the given netns.
	host := testConfig(testRootfs(t), "sleep", "1000")
	host.Spec.Security.UserNS = spec.UserNSHost
	host.Network = driver.Network{NetNSPath: nsPath, IP: "10.99.0.5"}
	drivertest.Run(t, testCtx(t), d, host)
	mustContain(t, "the workload's netns", drivertest.ExecOK(t, testCtx(t), d, host.ID, "ls", "-l", "/proc/self/ns/net"), fmt.Sprintf("net:[%d]", now.Ino))
}
