package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// TestSandbox checks, through a node and its CLI as a user would, the
// container sandbox a workload gets by default (docs/security.md): Docker's
// seccomp filter, root as an unprivileged host uid, no way back to
// capabilities through a new user namespace; and the opt-outs, shown by
// list. The page through the proxy shows the network still works with the
// workload's own network namespace.
func TestSandbox(t *testing.T) {
	n, ref := newNode(t)
	exec := func(id string, args ...string) (string, error) {
		return n.CLI(append([]string{"exec", id, "--"}, args...)...)
	}

	id := cliSpawn(t, n, "--ports", "80:8080", ref)
	if code, body := n.Page(80, id+".localhost"); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("page through the proxy: %d %q", code, body)
	}
	if out, err := exec(id, "busybox", "grep", "Seccomp:", "/proc/self/status"); err != nil || strings.Fields(out)[1] != "2" {
		t.Errorf("grep Seccomp: %q, %v; want Seccomp: 2", out, err)
	}
	out, err := exec(id, "cat", "/proc/self/uid_map")
	f := strings.Fields(out)
	if err != nil || len(f) != 3 || f[0] != "0" {
		t.Fatalf("uid_map %q, %v", out, err)
	}
	if host, _ := strconv.Atoi(f[1]); host == 0 {
		t.Errorf("root inside is host root: uid_map %q", out)
	}
	if out, err := exec(id, "busybox", "unshare", "-U", "-r", "-m", "-n", "sh", "-c", "mount -t tmpfs t /tmp && echo mounted"); err == nil || strings.Contains(out, "mounted") {
		t.Errorf("unshare -U -r and a mount inside worked: %q", out)
	}

	open := cliSpawn(t, n, "--security-opt", "seccomp=unconfined", "--security-opt", "userns=host", ref)
	if out, err := exec(open, "busybox", "grep", "Seccomp:", "/proc/self/status"); err != nil || strings.Fields(out)[1] != "0" {
		t.Errorf("grep Seccomp with seccomp=unconfined: %q, %v; want Seccomp: 0", out, err)
	}
	if out, err := exec(open, "cat", "/proc/self/uid_map"); err != nil || strings.Fields(out)[1] != "0" {
		t.Errorf("uid_map with userns=host: %q, %v; want root as host root", out, err)
	}

	list, err := n.CLI("list")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(list, "\n") {
		switch {
		case strings.HasPrefix(line, id) && !strings.Contains(line, " default "):
			t.Errorf("list shows the default sandbox as %q", line)
		case strings.HasPrefix(line, open) && !strings.Contains(line, "seccomp=unconfined,userns=host"):
			t.Errorf("list does not show the opt-outs: %q", line)
		}
	}
	if _, err := n.CLI("spawn", "--security-opt", "seccomp=off", ref); err == nil {
		t.Error("spawn with --security-opt seccomp=off was accepted")
	}
}
