package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// TestTwoNodesOneHost runs the quick start's second node beside the first
// in one network namespace: its own --cluster-bind-addr port (the next
// one up), API port, proxy port and data dir. The two form a cluster, each
// runs a workload on a bridge, subnet, nftables tables and cgroup parent
// of its own, and each proxy serves both workloads.
func TestTwoNodesOneHost(t *testing.T) {
	ns := harness.NewNetNS(t)
	harness.NewLAN(t).Attach(t, ns, "10.98.0.1/24")
	ref := harness.StartRegistry(t, ns, testutil.HTTPDImage(t))
	first := harness.StartNode(t, ns, hypercoreBin, filepath.Join(t.TempDir(), "data"),
		"--node-name", "n1", "--cluster-bind-addr", "10.98.0.1:7946", "--placement", "spread")
	token := tokenOf(t, &clusterNode{Node: first})
	second := harness.StartNode(t, ns, hypercoreBin, filepath.Join(t.TempDir(), "data"),
		"--node-name", "n2", "--cluster-bind-addr", "10.98.0.1:7947", "--grpc-bind-addr", "127.0.0.1:8001",
		"--http-addr", ":8080", "--placement", "spread", "--join-token", token, "10.98.0.1:7946")

	harness.WaitFor(t, "two alive members", 20*time.Second, func() bool {
		out, err := second.CLI("nodes")
		return err == nil && strings.Count(out, "alive") == 2
	})

	// Spread puts the second workload on the node without one.
	hosts := map[string]string{}
	for range 2 {
		out, err := second.CLI("spawn", "--json", "--cores", "0.5", "--memory", "64", "--ports", "80:8080", ref)
		var a spawnAnswer
		if err != nil || json.Unmarshal([]byte(out), &a) != nil {
			t.Fatalf("spawn on n2: %v\n%s", err, out)
		}
		hosts[a.ID] = a.Node
	}
	if nodes := mapValues(hosts); len(nodes) != 2 || nodes[0] == nodes[1] {
		t.Fatalf("workloads placed on %v, want one on each node", hosts)
	}
	for id := range hosts {
		for _, p := range []struct {
			n    *harness.Node
			port int
		}{{first, 80}, {second, 8080}} {
			harness.WaitFor(t, "the page of "+id+" through port "+p.n.DataDir, 30*time.Second, func() bool {
				code, body := p.n.Page(p.port, id+".localhost")
				return code == 200 && body == testutil.IndexHTML
			})
		}
	}

	a, b := nodeNames(t, first), nodeNames(t, second)
	if a.Bridge == b.Bridge || a.Table == b.Table || a.CgroupParent == b.CgroupParent {
		t.Errorf("the nodes share names: %+v and %+v", a, b)
	}
	subnets := map[string]bool{}
	for _, n := range []*harness.Node{first, second} {
		out, err := n.NS.Command("cat", filepath.Join(n.DataDir, "network", "subnet")).Output()
		if err != nil {
			t.Fatal(err)
		}
		subnets[strings.TrimSpace(string(out))] = true
	}
	if len(subnets) != 2 {
		t.Errorf("the nodes share a workload subnet: %v", subnets)
	}
}

// TestSubnetClashWithTheHost is a host whose own interface sits inside
// the first candidate workload subnet, 10.77.0.0/16: a node left to choose
// picks another, and a node told to use it refuses to start, naming the
// subnet, the host's address and the flag.
func TestSubnetClashWithTheHost(t *testing.T) {
	ns := harness.NewNetNS(t)
	harness.NewLAN(t).Attach(t, ns, "10.77.0.5/24")
	ref := harness.StartRegistry(t, ns, testutil.HTTPDImage(t))
	n := harness.StartNode(t, ns, hypercoreBin, filepath.Join(t.TempDir(), "data"))
	a := spawn(t, n, `{"cores":0.5,"memory":64,"image_ref":"`+ref+`"}`)
	harness.WaitFor(t, "the workload running", 30*time.Second, func() bool {
		out, err := n.CLI("list")
		return err == nil && strings.Contains(out, "running")
	})
	if ip := isoWorkloadIP(t, n, a.ID); strings.HasPrefix(ip, "10.77.") {
		t.Errorf("workload got %s, inside the host's network 10.77.0.0/24", ip)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := ns.Command(hypercoreBin, "cluster", "--data-dir", filepath.Join(t.TempDir(), "data"), "--subnet", "10.77.0.0/16",
		"--grpc-bind-addr", "127.0.0.1:8002", "--http-addr", ":8082", "--cluster-bind-addr", "127.0.0.1:7950")
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			cmd.Process.Kill()
		case <-done:
		}
	}()
	out, err := cmd.CombinedOutput()
	close(done)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("a node on a subnet overlapping the host did not refuse to start: %v\n%s", err, out)
	}
	for _, want := range []string{"10.77.0.0/16", "10.77.0.5/24", "--subnet"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("refusal does not name %s:\n%s", want, out)
		}
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
