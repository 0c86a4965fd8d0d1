package spawn

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

const (
	// ctrNamespace is the containerd namespace the benchmark works in; ctr
	// also names the containers' parent cgroup after it.
	ctrNamespace = "hypercore-bench"
	// ctrImage is the name the image is imported under.
	ctrImage = "127.0.0.1:5000/web:1"
	// snapshotter is what `ctr run` unpacks into; overlayfs is containerd's
	// default and what hypercore mounts too.
	snapshotter = "overlayfs"
)

// containerdConfig keeps the private containerd off the host's: its own
// root, state, sockets and opt dir, no CRI, no metrics or debug listener,
// and no snapshotters the benchmark does not use. (containerd 1.6's tasks
// service will not load without the v1 runtime, so that one stays.)
const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`

// ctr starts the image with `ctr run --rm --net-host` on a containerd of
// its own, running inside the bench namespace.
type ctr struct {
	t    *testing.T
	ns   *harness.NetNS
	sock string        // the private containerd's socket
	dir  string        // scratch: logs, ctr's FIFOs, the shim's runc state
	run  *exec.Cmd     // the `ctr run` of the run in progress
	done chan struct{} // closed when it has exited
	p    *poller       // to check that a removed run no longer serves
}

// newCtr starts a private containerd in ns and imports img into it.
func newCtr(t *testing.T, ns *harness.NetNS, img v1.Image) *ctr {
	t.Helper()
	dir := t.TempDir()
	c := &ctr{t: t, ns: ns, sock: filepath.Join(dir, "containerd.sock"), dir: dir, p: newPoller(ns)}
	cfg := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf(containerdConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"),
		c.sock, c.sock+".ttrpc", filepath.Join(dir, "opt"))
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	c.removeHostLeftovers()
	c.startContainerd(cfg, filepath.Join(dir, "containerd.log"))

	tarPath := filepath.Join(dir, "image.tar")
	ref, err := name.NewTag(ctrImage)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(tarPath, ref, img); err != nil {
		t.Fatalf("write image tarball: %v", err)
	}
	if out, err := c.ctr("images", "import", "--snapshotter", snapshotter, tarPath).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v: %s", err, out)
	}
	if out, err := c.ctr("images", "ls", "-q").Output(); err != nil || !strings.Contains(string(out), ctrImage) {
		t.Fatalf("ctr images ls: %v: %q, want %s", err, out, ctrImage)
	}
	return c
}

// removeHostLeftovers arranges, when the test ends, to remove the empty
// directories the private containerd makes outside its own: containerd
// 1.6's shim puts its socket in /run/containerd/s whatever the config
// says, and ctr makes a parent cgroup named after the namespace. Only what
// did not exist before is removed, and only if empty. Registered before
// containerd starts, so it runs after containerd has stopped.
func (c *ctr) removeHostLeftovers() {
	var dirs []string
	for _, d := range []string{"/run/containerd/s", "/run/containerd"} {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			dirs = append(dirs, d)
		}
	}
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		d := filepath.Join(h, ctrNamespace)
		if _, err := os.Stat(d); os.IsNotExist(err) {
			dirs = append(dirs, d)
		}
	}
	c.t.Cleanup(func() {
		for _, d := range dirs {
			os.Remove(d) // rmdir: fails, and keeps it, unless empty
		}
	})
}

// startContainerd runs containerd inside the namespace and waits until it
// answers. nsenter, unlike `ip netns exec`, keeps the host's /sys, whose
// cgroup mounts runc needs.
func (c *ctr) startContainerd(cfg, logPath string) {
	t := c.t
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := nsexec(c.ns, "containerd", "--config", cfg, "--address", c.sock)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c.ctr("version").Run() == nil {
			return
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("containerd exited at start; log:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("containerd did not answer in 30s; log:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctr returns `ctr` talking to the private containerd in the bench
// namespace.
func (c *ctr) ctr(args ...string) *exec.Cmd {
	return nsexec(c.ns, "ctr", append([]string{"-a", c.sock, "-n", ctrNamespace}, args...)...)
}

func (c *ctr) Name() string { return "ctr run --rm" }

// Returned is empty: `ctr run` is only forked when Launch returns.
func (c *ctr) Returned() string { return "" }

// Launch starts `ctr run` in the background: it stays in the foreground
// for as long as the container runs. With --net-host the container shares
// the bench namespace, so its httpd is on 127.0.0.1:8080 there.
func (c *ctr) Launch(i int) (target, error) {
	logf, err := os.OpenFile(filepath.Join(c.dir, "ctr-run.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return target{}, err
	}
	defer logf.Close()
	c.run = c.ctr("run", "--rm", "--net-host", "--snapshotter", snapshotter,
		// Keep ctr's FIFOs and the shim's runc state out of /run/containerd.
		"--fifo-dir", filepath.Join(c.dir, "fifo"), "--runc-root", filepath.Join(c.dir, "runc"),
		ctrImage, runID(i))
	// Files, not pipes: a pipe would make Wait wait for the container's
	// stdio as well.
	c.run.Stdout, c.run.Stderr = logf, logf
	if err := c.run.Start(); err != nil {
		return target{}, err
	}
	c.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(c.run, c.done)
	return target{url: "http://127.0.0.1:8080/", exited: c.done}, nil
}

// Remove kills the task and waits for `ctr run` to exit, which deletes the
// container and its snapshot (--rm); then checks that nothing is left.
func (c *ctr) Remove(i int) error {
	id := runID(i)
	if out, err := c.ctr("task", "kill", "-s", "SIGKILL", id).CombinedOutput(); err != nil {
		return fmt.Errorf("ctr task kill %s: %v: %s", id, err, out)
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.run.Process.Kill()
		<-c.done
		return fmt.Errorf("ctr run %s did not exit 30s after its task was killed", id)
	}
	for _, list := range [][]string{{"containers", "ls", "-q"}, {"tasks", "ls", "-q"}, {"snapshots", "--snapshotter", snapshotter, "ls"}} {
		out, err := c.ctr(list...).Output()
		if err != nil {
			return fmt.Errorf("ctr %s: %v", strings.Join(list, " "), err)
		}
		if strings.Contains(string(out), id) {
			return fmt.Errorf("ctr %s still shows %s after ctr run --rm exited:\n%s", strings.Join(list, " "), id, out)
		}
	}
	return c.p.waitRefused(target{url: "http://127.0.0.1:8080/"}, 10*time.Second)
}

// Logs returns what `ctr run` and containerd printed, for a failed run.
func (c *ctr) Logs() string {
	a, _ := os.ReadFile(filepath.Join(c.dir, "ctr-run.log"))
	b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	return fmt.Sprintf("ctr run log:\n%s\ncontainerd log:\n%s", a, b)
}

// nsexec runs a program in ns's network namespace only, keeping the
// host's mount namespace (and so /sys/fs/cgroup, which `ip netns exec`
// hides by remounting /sys).
func nsexec(ns *harness.NetNS, prog string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns.Name, "--", prog}, args...)...)
}
