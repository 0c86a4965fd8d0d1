// Package cluster benchmarks the multi-node cluster with real `hypercore
// cluster` daemons, each in a network namespace the test makes, all wired
// to one bridge (internal/testutil/harness): failover time after a
// `kill -9` of the node that hosts a workload (TestFailoverBench,
// TestFailoverBenchFast), and how fast 20 nodes agree on who is in the
// cluster (TestConvergenceBench).
//
// These are not Go benchmark functions: each sample is a crash, a failure
// detection and a restart, so a fixed number of runs and their median and
// p90 say more than ns/op. They run only with HYPERCORE_BENCH=1 and as
// root; bench/cluster/run.sh runs them. Each still fails if the cluster
// misbehaves (a page that never comes back, nodes that never agree).
package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

var (
	buildOnce sync.Once
	binDir    string
	bin       string
	buildErr  error
)

// TestMain removes the binary the benchmarks built, which lives outside
// any test's temporary directory so that all of them share one build.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// hypercore skips the test unless it is a benchmark run as root, and
// returns the hypercore binary, built once per test binary from this tree.
func hypercore(t *testing.T) string {
	t.Helper()
	if os.Getenv("HYPERCORE_BENCH") != "1" {
		t.Skip("benchmark: set HYPERCORE_BENCH=1 to run it (bench/cluster/run.sh does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("benchmark: needs root (network namespaces, runc)")
	}
	for _, tool := range []string{"ip", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("benchmark: %s is not installed", tool)
		}
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "hypercore-bench-cluster")
		if buildErr == nil {
			bin, buildErr = harness.Build(binDir, "../..")
		}
	})
	if buildErr != nil {
		t.Fatalf("build hypercore: %v", buildErr)
	}
	return bin
}

// loadavg is /proc/loadavg's first three fields, to print with the numbers:
// the machine is shared.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// member is one row of GET /v1/nodes.
type member struct {
	Name, State, Role string
	Leader            bool
}

// members asks n for GET /v1/nodes. A node that does not answer (it may be
// the one just killed, or still starting) gives an error, not a failure:
// the callers poll.
func members(n *harness.Node) ([]member, error) {
	code, out := n.API("GET", "/v1/nodes", "")
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/nodes: %d %s", code, out)
	}
	var v struct{ Nodes []member }
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, fmt.Errorf("GET /v1/nodes: %w", err)
	}
	return v.Nodes, nil
}

// countState counts the members in state.
func countState(ms []member, state string) int {
	c := 0
	for _, m := range ms {
		if m.State == state {
			c++
		}
	}
	return c
}

// stateOf returns name's state in ms, or "" if ms does not list it.
func stateOf(ms []member, name string) string {
	for _, m := range ms {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

// untilAll polls every node in nodes at once, each every `every`, until
// ok holds for its answer, and returns for each node how long after t0 it
// first held. Polling in parallel makes every node's time its own rather
// than its place in a round-robin. It fails the test if any node misses
// the deadline.
func untilAll(t *testing.T, what string, nodes []*harness.Node, names []string, t0 time.Time, timeout, every time.Duration,
	ok func(ms []member) bool) []time.Duration {
	t.Helper()
	got := make([]time.Duration, len(nodes))
	last := make([]string, len(nodes))
	var wg sync.WaitGroup
	deadline := t0.Add(timeout)
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = -1
			for time.Now().Before(deadline) {
				ms, err := members(n)
				if err == nil && ok(ms) {
					got[i] = time.Since(t0)
					return
				}
				if err != nil {
					last[i] = err.Error()
				} else {
					last[i] = fmt.Sprint(ms)
				}
				time.Sleep(every)
			}
		}()
	}
	wg.Wait()
	for i, d := range got {
		if d < 0 {
			t.Fatalf("%s: node %s did not get there in %v; its last answer: %s\nits log (tail):\n%s",
				what, names[i], timeout, last[i], tail(nodes[i].Log(), 60))
		}
	}
	return got
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logLine is one line of a node's log (slog's text format).
type logLine struct {
	at   time.Time
	text string
}

var timeField = regexp.MustCompile(`^time=(\S+)`)

// logLines parses the lines of a node's log written at or after since.
// Its times have millisecond resolution.
func logLines(log string, since time.Time) []logLine {
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	floor := since.Truncate(time.Millisecond)
	for sc.Scan() {
		m := timeField.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil || at.Before(floor) {
			continue
		}
		out = append(out, logLine{at, sc.Text()})
	}
	return out
}

// firstLine returns the earliest line containing every one of subs, over
// several nodes' parsed logs.
func firstLine(logs [][]logLine, subs ...string) (logLine, bool) {
	var best logLine
	found := false
	for _, lines := range logs {
		for _, l := range lines {
			all := true
			for _, s := range subs {
				if !strings.Contains(l.text, s) {
					all = false
					break
				}
			}
			if all && (!found || l.at.Before(best.at)) {
				best, found = l, true
			}
			if all {
				break // lines are in time order within one log
			}
		}
	}
	return best, found
}

// field returns key's value in a logfmt line.
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if s, err := strconv.QuotedPrefix(v); err == nil {
			u, _ := strconv.Unquote(s)
			return u
		}
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v
}

// stats is the summary of a set of durations.
type stats struct {
	n                     int
	median, p90, min, max time.Duration
}

// summarize returns the median, the p90 (nearest rank) and the range.
func summarize(ds []time.Duration) stats {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return stats{}
	}
	var med time.Duration
	if len(s)%2 == 1 {
		med = s[len(s)/2]
	} else {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	rank := (9*len(s) + 9) / 10 // ceil(0.9 n)
	return stats{n: len(s), median: med, p90: s[rank-1], min: s[0], max: s[len(s)-1]}
}

// secs formats d in seconds with two decimals, or "-" for a missing value.
func secs(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", d.Seconds())
}

// pageClient GETs a workload's page from inside a namespace with a short
// timeout: during a failover a poll must not hang on the dead node's
// tunnel for longer than the resolution we want.
func pageClient(ns *harness.NetNS, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       ns.Dial,
			DisableKeepAlives: true,
		},
	}
}

// runcList lists the containers of the node whose data dir is dataDir.
func runcList(dataDir string) string {
	out, _ := exec.Command("runc", "--root", filepath.Join(dataDir, "containers", "runc"), "list", "-q").Output()
	return string(out)
}
