package harness

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// StartRootlessNode runs `hypercore cluster --data-dir dataDir args...` as
// the user uid:gid under `unshare --map-auto --map-root-user --net
// --mount`, as a user without root starts it, and waits until its API is
// up. Node.NS is then the network namespace unshare made; the user must
// own dataDir and be able to run bin. env is added to a minimal
// environment (PATH).
func StartRootlessNode(t testing.TB, bin, dataDir string, uid, gid uint32, env []string, args ...string) *Node {
	t.Helper()
	n := &Node{t: t, Bin: bin, DataDir: dataDir, args: args, user: &syscall.Credential{Uid: uid, Gid: gid},
		logPath: dataDir + ".log", env: env}
	n.Start()
	t.Cleanup(n.cleanup)
	return n
}

// rootlessCommand is the user's `unshare ... sh -c 'ip link set lo up;
// exec bin args...'`: unshare execs rather than forks, so the command's
// pid is the daemon's, and its namespaces are the daemon's.
func rootlessCommand(user *syscall.Credential, env []string, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command("unshare", append([]string{"--map-auto", "--map-root-user", "--net", "--mount",
		"sh", "-c", `ip link set lo up && exec "$0" "$@"`, bin}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: user}
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent"}, env...)
	return cmd
}

// netNSOfPID is the network namespace of process pid, once it has left
// the test's own (unshare --net).
func netNSOfPID(t testing.TB, pid int) *NetNS {
	t.Helper()
	self, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		h, err := netns.GetFromPid(pid)
		if err != nil {
			t.Fatalf("network namespace of pid %d: %v", pid, err)
		}
		if !h.Equal(self) {
			t.Cleanup(func() { h.Close() })
			return &NetNS{Name: fmt.Sprintf("netns of pid %d", pid), h: h}
		}
		h.Close()
	}
	t.Fatalf("pid %d did not leave the test's network namespace in 10s", pid)
	return nil
}
