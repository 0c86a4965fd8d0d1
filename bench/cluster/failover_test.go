package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

const (
	// pagePoll is the pause between two GETs of the page while it is down.
	// It bounds how much a sample can overshoot the real moment.
	pagePoll = 20 * time.Millisecond
	// pageTimeout is one GET's budget: long enough for a tunnel to a live
	// node, short enough that a GET stuck on the dead node's tunnel does
	// not blur the sample by much.
	pageTimeout = 500 * time.Millisecond
	// failoverTimeout is how long the page may stay down before the run
	// counts as a failed failover. Issue 5's black-box check allows 15 s.
	failoverTimeout = 60 * time.Second
	// rejoinTimeout bounds the wait for the killed node to come back,
	// rejoin and drop its stale copy.
	rejoinTimeout = 90 * time.Second
	// defaultFailoverRuns is how many timed failovers a run makes.
	defaultFailoverRuns = 10
)

// TestFailoverBench times failover with the daemon's default flags.
func TestFailoverBench(t *testing.T) { failoverBench(t) }

// TestFailoverBenchFast times failover with --fast-failure, which halves
// the gossip probe interval.
func TestFailoverBenchFast(t *testing.T) { failoverBench(t, "--fast-failure") }

// foNode is one node of the failover cluster.
type foNode struct {
	*harness.Node
	name string
}

// foRun is one timed failover, every time measured from the kill.
type foRun struct {
	victim    string // the node killed: the workload's host
	wasLeader bool   // the victim was the raft leader
	to        string // where the failover placed the workload
	// total is the first 200 through either survivor's proxy; tunneled
	// the first 200 through the survivor that did not get the workload,
	// whose proxy reaches it over a tunnel to the new host.
	total, tunneled time.Duration
	suspect         time.Duration // first survivor's "suspect" line about the victim (-1: none)
	failed          time.Duration // first survivor's serf "EventMemberFailed" for the victim
	elected         time.Duration // a survivor's "entering leader state", when the leader was killed
	placed          time.Duration // the leader's "failover: workload placed elsewhere"
	started         time.Duration // the new host's "workload started"
	rejoin          time.Duration // restart of the victim to a whole cluster again (not part of total)
	// down counts the answers the survivors' proxies gave while the page
	// was down, by status ("404", "502", "timeout", ...).
	down map[string]int
}

// failoverBench starts three servers in namespaces on one bridge, spawns
// the httpd image, and RUNS times kills its host with -9 and times until
// the page answers 200 again through a surviving node's proxy; then it
// restarts the killed node and waits until the cluster is whole before
// the next run.
func failoverBench(t *testing.T, extra ...string) {
	bin := hypercore(t)
	runs := testutil.EnvInt(t, "RUNS", defaultFailoverRuns)
	t.Logf("load before: %s; flags: %v", loadavg(), extra)

	lan := harness.NewLAN(t)
	img := testutil.HTTPDImage(t)
	var nodes []*foNode
	var ref, token string
	for i := 1; i <= 3; i++ {
		ns := harness.NewNetNS(t)
		ip := fmt.Sprintf("10.97.0.%d", i)
		lan.Attach(t, ns, ip+"/24")
		ref = harness.StartRegistry(t, ns, img)
		// Names no e2e test uses: a node's cgroup is /hypercore/<name>,
		// and e2e tests may run on this machine at the same time.
		name := fmt.Sprintf("fobench%d", i)
		args := append([]string{"--node-name", name, "--server", "--cluster-bind-addr", ip + ":7946"}, extra...)
		if i > 1 {
			args = append(args, "--join-token", token, "10.97.0.1:7946")
		}
		n := harness.StartNode(t, ns, bin, filepath.Join(t.TempDir(), "data"), args...)
		if i == 1 {
			b, err := os.ReadFile(filepath.Join(n.DataDir, "join-token"))
			if err != nil {
				t.Fatalf("first node wrote no join token: %v", err)
			}
			token = strings.TrimSpace(string(b))
		}
		nodes = append(nodes, &foNode{Node: n, name: name})
	}
	all := make([]*harness.Node, len(nodes))
	names := make([]string, len(nodes))
	for i, n := range nodes {
		all[i], names[i] = n.Node, n.name
	}
	untilAll(t, "three alive servers", all, names, time.Now(), 30*time.Second, 50*time.Millisecond, func(ms []member) bool {
		return countState(ms, "alive") == 3
	})
	// Every node has the image before the first run, so no sample holds
	// a pull: a real cluster would have pulled it long before a crash.
	for _, n := range nodes {
		if out, err := n.CLI("pull", ref); err != nil {
			t.Fatalf("pull on %s: %v\n%s", n.name, err, out)
		}
	}

	code, out := nodes[0].API("POST", "/spawn", `{"image_ref":"`+ref+`","ports":{"80":8080}}`)
	var sp struct{ ID, Node string }
	if code != http.StatusOK || json.Unmarshal([]byte(out), &sp) != nil || sp.ID == "" {
		t.Fatalf("spawn: %d %s", code, out)
	}
	host := sp.ID + ".localhost"
	for _, n := range nodes {
		harness.WaitFor(t, "the page through "+n.name, 30*time.Second, func() bool {
			code, body := n.Page(80, host)
			return code == http.StatusOK && body == testutil.IndexHTML
		})
	}
	t.Logf("workload %s on %s, served by all three proxies", sp.ID, sp.Node)

	var results []foRun
	for i := 1; i <= runs; i++ {
		r := failoverOnce(t, nodes, sp.ID, host)
		results = append(results, r)
		t.Logf("run %2d: kill %s%s, to %s: serving again after %s s, through the tunneling proxy %s s (suspect %s, failed %s, new leader %s, placed %s, started %s; answers while down %v); rejoined in %s s",
			i, r.victim, map[bool]string{true: " (leader)"}[r.wasLeader], r.to, secs(r.total), secs(r.tunneled),
			secs(r.suspect), secs(r.failed), secs(r.elected), secs(r.placed), secs(r.started), r.down, secs(r.rejoin))
	}
	t.Logf("load after: %s", loadavg())
	t.Log("\n" + failoverReport(results, extra))
}

// failoverOnce kills the workload's host, times until the page is served
// again through a survivor, then brings the host back and waits until the
// cluster is whole: three alive members on every node, the workload
// running once, and no copy of it left on the returning node.
func failoverOnce(t *testing.T, nodes []*foNode, id, host string) foRun {
	t.Helper()
	var victim *foNode
	var leader string
	harness.WaitFor(t, "the workload running on a known node", 30*time.Second, func() bool {
		code, out := nodes[0].API("GET", "/v1/workloads/"+id, "")
		var w struct{ Node, State string }
		if code != http.StatusOK || json.Unmarshal([]byte(out), &w) != nil || w.State != "running" {
			return false
		}
		victim = nil
		for _, n := range nodes {
			if n.name == w.Node {
				victim = n
			}
		}
		return victim != nil
	})
	ms, err := members(nodes[0].Node)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Leader {
			leader = m.Name
		}
	}
	var survivors []*foNode
	for _, n := range nodes {
		if n != victim {
			survivors = append(survivors, n)
		}
	}
	// Each survivor's proxy is polled on its own: one of them will host
	// the workload, the other reaches it through a tunnel, as most of a
	// cluster's proxies would.
	get := func(client *http.Client) (int, string, error) {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:80/", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	clients := make([]*http.Client, len(survivors))
	for i, n := range survivors {
		clients[i] = pageClient(n.NS, pageTimeout)
		harness.WaitFor(t, "the page through "+n.name+" before the kill", 30*time.Second, func() bool {
			code, body, _ := get(clients[i])
			return code == http.StatusOK && body == testutil.IndexHTML
		})
	}

	r := foRun{victim: victim.name, wasLeader: victim.name == leader, down: map[string]int{}}
	back := make([]time.Duration, len(survivors))
	last := make([]string, len(survivors))
	downs := make([]map[string]int, len(survivors))
	var wg sync.WaitGroup
	t0 := time.Now()
	victim.Kill9()
	for i := range survivors {
		downs[i] = map[string]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			back[i] = -1
			for time.Since(t0) < failoverTimeout {
				code, body, err := get(clients[i])
				if code == http.StatusOK && body == testutil.IndexHTML {
					back[i] = time.Since(t0)
					return
				}
				switch {
				case err != nil && strings.Contains(err.Error(), "Timeout"):
					downs[i]["timeout"]++
				case err != nil:
					downs[i]["error"]++
				default:
					downs[i][strconv.Itoa(code)]++
				}
				last[i] = fmt.Sprintf("%d %.100s %v", code, strings.TrimSpace(body), err)
				time.Sleep(pagePoll)
			}
		}()
	}
	wg.Wait()
	for i, n := range survivors {
		if back[i] < 0 {
			for _, n := range survivors {
				t.Logf("%s log (tail):\n%s", n.name, tail(n.Log(), 80))
			}
			t.Fatalf("kill -9 of %s: the page did not come back through %s in %v; last answer: %s",
				victim.name, n.name, failoverTimeout, last[i])
		}
		for k, v := range downs[i] {
			r.down[k] += v
		}
	}
	r.total = min(back[0], back[1])

	// The breakdown, from the survivors' logs (millisecond times, the
	// same clock as t0).
	logs := make([][]logLine, len(survivors))
	for i, n := range survivors {
		logs[i] = logLines(n.Log(), t0)
	}
	since := func(l logLine, ok bool) time.Duration {
		if !ok {
			return -1
		}
		return l.at.Sub(t0)
	}
	r.suspect = since(firstLine(logs, "Suspect "+victim.name+" has failed"))
	r.failed = since(firstLine(logs, "EventMemberFailed: "+victim.name))
	r.elected = -1
	if r.wasLeader {
		r.elected = since(firstLine(logs, "entering leader state"))
	}
	pl, ok := firstLine(logs, "failover: workload placed elsewhere", "id="+id)
	r.placed = since(pl, ok)
	r.to = field(pl.text, "to")
	var newHost *foNode
	r.tunneled = -1
	for i, n := range survivors {
		if n.name == r.to {
			newHost = n
		} else {
			r.tunneled = back[i]
		}
	}
	if newHost != nil {
		r.started = since(firstLine([][]logLine{logLines(newHost.Log(), t0)}, "workload started", "id="+id))
	} else {
		r.started = -1
	}

	// Bring the victim back and wait until the cluster is whole again.
	t1 := time.Now()
	victim.Start()
	all := []*harness.Node{nodes[0].Node, nodes[1].Node, nodes[2].Node}
	names := []string{nodes[0].name, nodes[1].name, nodes[2].name}
	untilAll(t, "three alive after "+victim.name+" restarted", all, names, t1, rejoinTimeout, 50*time.Millisecond,
		func(ms []member) bool { return countState(ms, "alive") == 3 })
	harness.WaitFor(t, victim.name+" drops its stale copy", rejoinTimeout, func() bool {
		return !strings.Contains(runcList(victim.DataDir), id)
	})
	// The cluster still holds the workload once, running.
	code, out := victim.API("GET", "/list", "")
	var list struct{ Workloads []struct{ ID, State string } }
	if code != http.StatusOK || json.Unmarshal([]byte(out), &list) != nil ||
		len(list.Workloads) != 1 || list.Workloads[0].ID != id || list.Workloads[0].State != "running" {
		t.Fatalf("after the rejoin, /list on %s: %d %s", victim.name, code, out)
	}
	r.rejoin = time.Since(t1)
	return r
}

// failoverReport formats the runs as a table and a summary.
func failoverReport(rs []foRun, extra []string) string {
	var b strings.Builder
	flags := "default flags"
	if len(extra) > 0 {
		flags = strings.Join(extra, " ")
	}
	fmt.Fprintf(&b, "failover after kill -9 of the host, 3 servers, %s; seconds from the kill\n", flags)
	fmt.Fprintf(&b, "%-4s %-10s %-7s %-10s %8s %8s %8s %8s %8s %8s %8s %8s\n",
		"run", "killed", "leader", "new host", "suspect", "failed", "elected", "placed", "started", "200", "200 tun", "rejoin")
	var total, tunneled, suspect, failed, elected, placed, started, rejoin []time.Duration
	down := map[string]int{}
	add := func(to *[]time.Duration, d time.Duration) {
		if d >= 0 {
			*to = append(*to, d)
		}
	}
	for i, r := range rs {
		fmt.Fprintf(&b, "%-4d %-10s %-7v %-10s %8s %8s %8s %8s %8s %8s %8s %8s\n", i+1, r.victim, r.wasLeader, r.to,
			secs(r.suspect), secs(r.failed), secs(r.elected), secs(r.placed), secs(r.started), secs(r.total), secs(r.tunneled), secs(r.rejoin))
		add(&total, r.total)
		add(&tunneled, r.tunneled)
		for k, v := range r.down {
			down[k] += v
		}
		add(&suspect, r.suspect)
		add(&failed, r.failed)
		add(&elected, r.elected)
		add(&placed, r.placed)
		add(&started, r.started)
		add(&rejoin, r.rejoin)
	}
	fmt.Fprintf(&b, "\n%-26s %4s %8s %8s %8s %8s\n", "from the kill to", "n", "median", "p90", "min", "max")
	for _, row := range []struct {
		what string
		ds   []time.Duration
	}{
		{"suspect (first probe miss)", suspect},
		{"failed (serf)", failed},
		{"new raft leader (if killed)", elected},
		{"placed elsewhere (leader)", placed},
		{"workload started", started},
		{"first 200 via a survivor", total},
		{"first 200 via the tunnel", tunneled},
		{"rejoin (from restart)", rejoin},
	} {
		s := summarize(row.ds)
		fmt.Fprintf(&b, "%-26s %4d %8s %8s %8s %8s\n", row.what, s.n, secs(s.median), secs(s.p90), secs(s.min), secs(s.max))
	}
	fmt.Fprintf(&b, "\nthe survivors' proxies answered, while the page was down (all runs): %v\n", down)
	s := summarize(total)
	verdict := "met"
	if s.median > 8*time.Second {
		verdict = "NOT met"
	}
	fmt.Fprintf(&b, "\ngoal: median <= 8 s: %s (median %s s, p90 %s s)\n", verdict, secs(s.median), secs(s.p90))
	return b.String()
}
