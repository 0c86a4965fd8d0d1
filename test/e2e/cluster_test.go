package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// clusterNode is one node of a test cluster: its namespace, address and
// daemon.
type clusterNode struct {
	*harness.Node
	name, ip string
}

// startCluster starts n nodes, each in its own namespace on one LAN, all
// with --server; the others join the first with its join token. Each
// namespace has its own registry on 127.0.0.1:5000 with the same image,
// as each machine would reach a registry of its own.
func startCluster(t *testing.T, n int, extra ...string) ([]*clusterNode, *harness.LAN, string) {
	t.Helper()
	return startClusterWith(t, n, n, true, func(int) bool { return true }, extra...)
}

// startClusterWith is startCluster where only the first servers nodes get
// --server (the rest are workers), withRegistry says which nodes
// (numbered from 1) can reach a registry, and named whether each gets a
// --node-name (n1, n2, ...) or is left to pick its own.
func startClusterWith(t *testing.T, n, servers int, named bool, withRegistry func(i int) bool, extra ...string) ([]*clusterNode, *harness.LAN, string) {
	t.Helper()
	lan := harness.NewLAN(t)
	img := testutil.HTTPDImage(t)
	var nodes []*clusterNode
	var ref, token string
	var err error
	for i := 1; i <= n; i++ {
		ns := harness.NewNetNS(t)
		ip := fmt.Sprintf("10.98.0.%d", i)
		lan.Attach(t, ns, ip+"/24")
		if withRegistry(i) {
			ref = harness.StartRegistry(t, ns, img)
		}
		name := fmt.Sprintf("n%d", i)
		args := append([]string{"--cluster-bind-addr", ip + ":7946"}, extra...)
		if i <= servers {
			args = append(args, "--server")
		}
		if named {
			args = append(args, "--node-name", name)
		} else if name, err = os.Hostname(); err != nil {
			t.Fatal(err)
		} else if i > 1 {
			// The namespaces share the hostname: a joining node whose
			// default name is taken picks <hostname>-<address>.
			name += "-" + strings.ReplaceAll(ip, ".", "-")
		}
		if i > 1 {
			args = append(args, "--join-token", token, "10.98.0.1:7946")
		}
		node := harness.StartNode(t, ns, hypercoreBin, filepath.Join(t.TempDir(), "data"), args...)
		if i == 1 {
			b, err := os.ReadFile(filepath.Join(node.DataDir, "join-token"))
			if err != nil {
				t.Fatalf("first node wrote no join token: %v", err)
			}
			token = strings.TrimSpace(string(b))
		}
		nodes = append(nodes, &clusterNode{Node: node, name: name, ip: ip})
	}
	return nodes, lan, ref
}

type nodeView struct {
	Name, State, Role string
	Leader            bool
}

func members(t *testing.T, n *clusterNode) []nodeView {
	t.Helper()
	code, out := n.API("GET", "/v1/nodes", "")
	if code != 200 {
		t.Fatalf("GET /v1/nodes on %s: %d %s", n.name, code, out)
	}
	var v struct{ Nodes []nodeView }
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	return v.Nodes
}

func hostOf(t *testing.T, n *clusterNode, id string) string {
	t.Helper()
	code, out := n.API("GET", "/v1/workloads/"+id, "")
	if code != 200 {
		return ""
	}
	var w struct{ Node, State string }
	json.Unmarshal([]byte(out), &w)
	if w.State != "running" {
		return ""
	}
	return w.Node
}

// TestCluster walks issue 5's contract: three servers join with a token,
// a spawn on one node is served by every node's proxy, the host is killed
// with -9 and the workload serves again elsewhere, the killed node comes
// back and drops its stale copy, spawns still succeed with one server
// down, and a node without the token is refused.
func TestCluster(t *testing.T) {
	nodes, lan, ref := startCluster(t, 3)

	harness.WaitFor(t, "three alive members with one leader", 20*time.Second, func() bool {
		alive, leaders := 0, 0
		for _, m := range members(t, nodes[2]) {
			if m.State == "alive" && m.Role == "server" {
				alive++
			}
			if m.Leader {
				leaders++
			}
		}
		return alive == 3 && leaders == 1
	})
	if out, err := nodes[1].CLI("nodes"); err != nil || !strings.Contains(out, "n1") || !strings.Contains(out, "n3") {
		t.Fatalf("hypercore nodes: %v\n%s", err, out)
	}

	// Spawn on the first node, as the black-box check does.
	a := spawn(t, nodes[0].Node, `{"image_ref":"`+ref+`","ports":{"80":8080}}`)
	if a.Node == "" {
		t.Fatalf("spawn answer names no node: %+v", a)
	}
	host := a.ID + ".localhost"
	for _, n := range nodes {
		harness.WaitFor(t, "page through "+n.name, 10*time.Second, func() bool {
			code, body := n.Page(80, host)
			return code == 200 && body == testutil.IndexHTML
		})
		if got := hostOf(t, n, a.ID); got != a.Node {
			t.Fatalf("%s says %s runs on %q, want %q", n.name, a.ID, got, a.Node)
		}
	}

	// A dry run answers where a workload would go and records nothing.
	code, out := nodes[2].API("POST", "/spawn", `{"image_ref":"`+ref+`","dry_run":true}`)
	if code != 200 || !strings.Contains(out, `"node"`) {
		t.Fatalf("dry run: %d %s", code, out)
	}
	if c := workloadCount(t, nodes[2].Node); c != 1 {
		t.Fatalf("after a dry run the cluster holds %d workloads, want 1", c)
	}

	// Kill -9 the hosting node: the page must come back through another
	// node's proxy.
	var victim *clusterNode
	var survivors []*clusterNode
	for _, n := range nodes {
		if n.name == a.Node {
			victim = n
		} else {
			survivors = append(survivors, n)
		}
	}
	victim.Kill9()
	killed := time.Now()
	harness.WaitFor(t, "the page served again after the host died", 15*time.Second, func() bool {
		code, body := survivors[0].Page(80, host)
		if code == 404 {
			// The workload exists throughout: while it moves the
			// answer is 502 or 503, never "no such workload".
			t.Errorf("a survivor answered 404 during the failover: %s", body)
		}
		return code == 200 && body == testutil.IndexHTML
	})
	t.Logf("failover: serving again %v after kill -9 of %s", time.Since(killed).Round(10*time.Millisecond), victim.name)
	var newHost string
	harness.WaitFor(t, "the other survivor sees the new placement", 5*time.Second, func() bool {
		newHost = hostOf(t, survivors[1], a.ID)
		return newHost != "" && newHost != victim.name
	})
	harness.WaitFor(t, "the other survivor serves it too", 10*time.Second, func() bool {
		code, _ := survivors[1].Page(80, host)
		return code == 200
	})

	// With one of three servers down, nothing is lost and spawns work.
	b := spawn(t, survivors[1].Node, `{"image_ref":"`+ref+`","ports":{"80":8080}}`)
	if b.Node == victim.name {
		t.Fatalf("spawned onto the dead node %s", victim.name)
	}
	if c := workloadCount(t, survivors[0].Node); c != 2 {
		t.Fatalf("cluster holds %d workloads with a server down, want 2", c)
	}

	// Streams and writes about a workload on another node go to that node.
	var away *clusterNode
	for _, n := range survivors {
		if n.name != b.Node {
			away = n
		}
	}
	if out, err := away.CLI("exec", b.ID, "--", "cat", "/www/index.html"); err != nil || out != testutil.IndexHTML {
		t.Fatalf("exec through %s into %s on %s: %v %q", away.name, b.ID, b.Node, err, out)
	}
	if code, out := away.API("GET", "/v1/workloads/"+b.ID+"/logs", ""); code != 200 {
		t.Fatalf("logs through %s: %d %s", away.name, code, out)
	}
	code, out = away.API("POST", "/v1/workloads/"+b.ID+"/stop?timeout=2", "")
	if code != 200 || !strings.Contains(out, `"state": "stopped"`) {
		t.Fatalf("stop through %s: %d %s", away.name, code, out)
	}
	if code, out := away.API("DELETE", "/v1/workloads/"+b.ID, ""); code != 200 {
		t.Fatalf("remove through %s: %d %s", away.name, code, out)
	}
	b = spawn(t, survivors[1].Node, `{"image_ref":"`+ref+`","ports":{"80":8080}}`)

	// The killed node comes back: it rejoins and drops the copy that was
	// moved away (its container kept running while its daemon was dead).
	victim.Start()
	harness.WaitFor(t, "the returning node stops its stale copy", 30*time.Second, func() bool {
		out, _ := exec.Command("runc", "--root", filepath.Join(victim.DataDir, "containers", "runc"), "list", "-q").Output()
		return !strings.Contains(string(out), a.ID)
	})
	harness.WaitFor(t, "the returning node serves the page from its new host", 15*time.Second, func() bool {
		code, body := victim.Page(80, host)
		return code == 200 && body == testutil.IndexHTML
	})
	harness.WaitFor(t, "all three alive again", 15*time.Second, func() bool {
		alive := 0
		for _, m := range members(t, victim) {
			if m.State == "alive" {
				alive++
			}
		}
		return alive == 3
	})

	t.Run("tokenless node refused", func(t *testing.T) {
		ns := harness.NewNetNS(t)
		lan.Attach(t, ns, "10.98.0.9/24")
		cmd := ns.Command(hypercoreBin, "cluster", "--data-dir", filepath.Join(t.TempDir(), "data"),
			"--node-name", "intruder", "--cluster-bind-addr", "10.98.0.9:7946", "10.98.0.1:7946")
		cmd.Env = append(os.Environ(), "HYPERCORE_JOIN_TOKEN=")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "join token") {
			t.Fatalf("a node without a token started or failed for another reason: %v\n%s", err, out)
		}

		// A made-up token with the right shape: the join is refused.
		forged := strings.Replace(tokenOf(t, nodes[0]), tokenOf(t, nodes[0])[len(tokenOf(t, nodes[0]))-8:], "AAAAAAAA", 1)
		cmd = ns.Command(hypercoreBin, "cluster", "--data-dir", filepath.Join(t.TempDir(), "data2"),
			"--node-name", "intruder", "--cluster-bind-addr", "10.98.0.9:7946", "--join-token", forged, "10.98.0.1:7946")
		out, err = cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("a node with a forged token started:\n%s", out)
		}

		// Node RPC without a cluster certificate: the handshake fails.
		var conn *tls.Conn
		ns.Do(func() error {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
			c, err := d.DialContext(context.Background(), "tcp", "10.98.0.2:7947")
			if err == nil {
				conn = c.(*tls.Conn)
			}
			return err
		})
		if conn != nil {
			defer conn.Close()
			fmt.Fprintf(conn, "GET /local/v1/workloads HTTP/1.1\r\nHost: x\r\n\r\n")
			buf := make([]byte, 64)
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			if n, err := conn.Read(buf); err == nil && strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
				t.Fatalf("node RPC answered a caller without a certificate: %q", buf[:n])
			}
		}
	})

	// Losing the raft leader: the two other servers elect another, and
	// nothing is lost.
	var leader *clusterNode
	var others []*clusterNode
	for _, m := range members(t, nodes[0]) {
		for _, n := range nodes {
			if m.Leader && m.Name == n.name {
				leader = n
			}
		}
	}
	if leader == nil {
		t.Fatal("no leader in GET /v1/nodes")
	}
	for _, n := range nodes {
		if n != leader {
			others = append(others, n)
		}
	}
	leader.Kill9()
	harness.WaitFor(t, "a new leader", 20*time.Second, func() bool {
		for _, m := range members(t, others[0]) {
			if m.Leader && m.Name != leader.name {
				return true
			}
		}
		return false
	})
	c := spawn(t, others[1].Node, `{"image_ref":"`+ref+`","ports":{"80":8080}}`)
	if c.Node == leader.name {
		t.Fatalf("spawned onto the dead leader %s", leader.name)
	}
	if n := workloadCount(t, others[0].Node); n != 3 {
		t.Fatalf("after losing the leader the cluster holds %d workloads, want 3", n)
	}
	harness.WaitFor(t, "the first workload served after the leader loss", 20*time.Second, func() bool {
		code, _ := others[0].Page(80, host)
		return code == 200
	})
}

// TestClusterTriesNextNode: when the best node cannot start a workload
// (here it cannot reach the registry), the spawn moves on to the next. The
// nodes get no --node-name, as a user on one machine per node would not
// give one, so this also shows two nodes with one hostname joining; and
// the second is a worker, which keeps a copy of the state without voting
// and forwards its writes to the leader.
func TestClusterTriesNextNode(t *testing.T) {
	nodes, _, ref := startClusterWith(t, 2, 1, false, func(i int) bool { return i != 1 })
	for i, n := range nodes {
		found := false
		for _, m := range members(t, nodes[0]) {
			role := map[int]string{0: "server", 1: "worker"}[i]
			found = found || (m.Name == n.name && m.State == "alive" && m.Role == role)
		}
		if !found {
			t.Fatalf("node %s is not an alive member with its role: %+v", n.name, members(t, nodes[0]))
		}
	}
	// Equal load ranks the first node first (ties break by name); it has
	// no registry.
	a := spawn(t, nodes[0].Node, `{"image_ref":"`+ref+`","ports":{"80":8080}}`)
	if a.Node != nodes[1].name {
		t.Fatalf("spawn landed on %q, want %s after %s failed to pull", a.Node, nodes[1].name, nodes[0].name)
	}
	if !strings.Contains(nodes[0].Log(), "spawn: trying the next node") {
		t.Fatal("n1's log does not show the spawn moving on from n1")
	}
	// 30 s: once in a full CI run (of four) 10 s did not suffice; see the
	// session notes. Alone it answers within a second.
	harness.WaitFor(t, "the page through n1", 30*time.Second, func() bool {
		code, body := nodes[0].Page(80, a.ID+".localhost")
		return code == 200 && body == testutil.IndexHTML
	})
	// The worker reads the state from its own copy and writes through
	// the leader: a spawn on it, with the classic 'hypercore cluster
	// spawn' command, is seen at once by both.
	out, err := nodes[1].CLI("cluster", "spawn", "--grpc-bind-addr", "127.0.0.1:8000", "--ports", "80:8080", "--image-ref", ref)
	m := idLine.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("hypercore cluster spawn: %v\n%s", err, out)
	}
	for _, n := range nodes {
		if got := hostOf(t, n, m[1]); got != nodes[1].name {
			t.Fatalf("%s says %s runs on %q, want %s", n.name, m[1], got, nodes[1].name)
		}
	}
}

func tokenOf(t *testing.T, n *clusterNode) string {
	b, err := os.ReadFile(filepath.Join(n.DataDir, "join-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
