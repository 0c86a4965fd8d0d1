package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// TestJoinAfterFirstNodeGone kills the node that made the cluster's CA
// for good, then has a new node join through another server, with the
// join token that server wrote once it had opened the replicated
// authority.
func TestJoinAfterFirstNodeGone(t *testing.T) {
	nodes, lan, _ := startCluster(t, 3)
	second := nodes[1]
	first := tokenOf(t, nodes[0])
	var token string
	harness.WaitFor(t, "the second server to write a join token of its own", 30*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(second.DataDir, "join-token"))
		token = strings.TrimSpace(string(b))
		return err == nil && token != "" && token != first
	})
	for _, n := range nodes[1:] {
		if !fileHasNo(t, n.DataDir, "ca.key") {
			t.Errorf("%s keeps the CA key on disk; it should hold it only sealed in the cluster state", n.name)
		}
	}
	nodes[0].Kill9()

	ns := harness.NewNetNS(t)
	lan.Attach(t, ns, "10.98.0.4/24")
	n4 := harness.StartNode(t, ns, hypercoreBin, filepath.Join(t.TempDir(), "data"),
		"--cluster-bind-addr", "10.98.0.4:7946", "--node-name", "n4", "--join-token", token, "10.98.0.2:7946")
	harness.WaitFor(t, "n4 to be an alive member", 30*time.Second, func() bool {
		for _, m := range members(t, second) {
			if m.Name == "n4" && m.State == "alive" {
				return true
			}
		}
		return false
	})
	if code, out := n4.API("GET", "/v1/workloads", ""); code != 200 {
		t.Fatalf("n4 API: %d %s", code, out)
	}
}

// fileHasNo reports whether no file called name is under dir.
func fileHasNo(t *testing.T, dir, name string) bool {
	found := false
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.Name() == name {
			found = true
		}
		return nil
	})
	return !found
}
