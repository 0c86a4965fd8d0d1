package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// partitionRules cut a node's namespace off its LAN (eth0) both ways,
// leaving loopback, so the test can still ask the node's own proxy.
const partitionRules = `table inet partition {
	chain in { type filter hook input priority -10; policy accept; iifname "eth0" drop; }
	chain out { type filter hook output priority -10; policy accept; oifname "eth0" drop; }
}
`

// runcStatus is what runc says of a container of node n: "running",
// "stopped", or "" when it has none of that id.
func runcStatus(n *clusterNode, id string) string {
	out, err := exec.Command("runc", "--root", filepath.Join(n.DataDir, "containers", "runc-root"), "state", id).Output()
	if err != nil {
		return ""
	}
	var st struct{ Status string }
	json.Unmarshal(out, &st)
	return st.Status
}

// TestSelfFencing partitions the node hosting a workload with nftables in
// its namespace. The partitioned node must stop serving the workload
// (503 through its own proxy) and stop it before another node runs it, so
// two copies never run at once; once the partition heals, it serves the
// workload again from its new host and keeps no copy.
func TestSelfFencing(t *testing.T) {
	nodes, _, ref := startCluster(t, 3)
	harness.WaitFor(t, "three alive members with one leader", 20*time.Second, func() bool {
		alive, leaders := 0, 0
		for _, m := range members(t, nodes[2]) {
			if m.State == "alive" {
				alive++
			}
			if m.Leader {
				leaders++
			}
		}
		return alive == 3 && leaders == 1
	})
	a := spawn(t, nodes[0].Node, `{"image_ref":"`+ref+`","ports":{"80":8080}}`)
	host := a.ID + ".localhost"
	var victim *clusterNode
	var others []*clusterNode
	for _, n := range nodes {
		if n.name == a.Node {
			victim = n
		} else {
			others = append(others, n)
		}
	}
	harness.WaitFor(t, "the host to serve it", 10*time.Second, func() bool {
		code, _ := victim.Page(80, host)
		return code == 200
	})

	cut := victim.NS.Command("nft", "-f", "-")
	cut.Stdin = strings.NewReader(partitionRules)
	if out, err := cut.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	t0 := time.Now()
	// Three watchers, each at its own pace: a proxy asked for a workload
	// on an unreachable node may take seconds to answer.
	var mu sync.Mutex
	var stoppedAt, refusedAt, movedAt time.Duration
	var overlap bool
	watch := func(what *time.Duration, cond func() bool) {
		for time.Since(t0) < 40*time.Second {
			if cond() {
				mu.Lock()
				*what = time.Since(t0)
				mu.Unlock()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { watch(&refusedAt, func() bool { code, _ := victim.Page(80, host); return code == 503 }) })
	wg.Go(func() { watch(&stoppedAt, func() bool { return runcStatus(victim, a.ID) != "running" }) })
	for _, o := range others {
		wg.Go(func() {
			watch(&movedAt, func() bool {
				code, body := o.Page(80, host)
				if code != 200 || body != testutil.IndexHTML || hostOf(t, o, a.ID) == victim.name {
					return false
				}
				if runcStatus(victim, a.ID) == "running" {
					mu.Lock()
					overlap = true
					mu.Unlock()
				}
				return true
			})
		})
	}
	wg.Wait()
	t.Logf("after the partition: the host's proxy answers 503 at %v, its copy stops at %v, another node serves it at %v",
		refusedAt.Round(10*time.Millisecond), stoppedAt.Round(10*time.Millisecond), movedAt.Round(10*time.Millisecond))
	if refusedAt == 0 || stoppedAt == 0 || movedAt == 0 {
		t.Fatal("within 40 s: the partitioned host did not answer 503, or did not stop its copy, or no other node served the workload")
	}
	if overlap || stoppedAt > movedAt {
		t.Errorf("another node served the workload while the partitioned host still ran its copy")
	}
	if refusedAt > stoppedAt+time.Second {
		t.Errorf("the partitioned host stopped serving (%v) well after it stopped its copy (%v)", refusedAt, stoppedAt)
	}

	heal := victim.NS.Command("nft", "delete", "table", "inet", "partition")
	if out, err := heal.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	harness.WaitFor(t, "the healed node to serve the workload from its new host and drop its copy", 40*time.Second, func() bool {
		code, body := victim.Page(80, host)
		return code == 200 && body == testutil.IndexHTML && runcStatus(victim, a.ID) == ""
	})
}
