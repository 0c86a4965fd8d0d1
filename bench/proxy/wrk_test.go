package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// wrk runs the load generator inside the bench namespace.
type wrk struct {
	ns             *harness.NetNS
	threads, conns int
	skip           []int // the proxies' and the backend's processes
}

// result is one wrk run against one contender.
type result struct {
	contender, proto string
	round            int
	requests         int64
	rps              float64
	p50, p99         float64 // ms
	cpuPerReq        float64 // µs of the proxy's CPU time per request
	// others is the CPU time that programs other than the proxies, the
	// backend, wrk and the test used while wrk ran, in CPUs (a lower
	// bound, see othersCPU). It says how quiet the machine was.
	others float64
	out    string // wrk's output
}

// run loads c over proto ("http" or "https") for d, with keep-alive
// connections, and returns what wrk measured. wrk stops by itself after d;
// the context only guards against a hang.
func (w wrk) run(c contender, proto string, d time.Duration) (result, error) {
	_, port, _ := strings.Cut(c.addr[proto], ":")
	url := fmt.Sprintf("%s://%s:%s/", proto, host, port)
	ctx, cancel := context.WithTimeout(context.Background(), d+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", w.ns.Name, "wrk",
		"-t"+strconv.Itoa(w.threads), "-c"+strconv.Itoa(w.conns), "-d"+wrkDuration(d),
		"--latency", "-H", "Host: "+host, url)
	cpu0, err := c.cpu()
	if err != nil {
		return result{}, err
	}
	others0, err := othersCPU(w.skip...)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk %s: %v\n%s", url, err, out)
	}
	elapsed := time.Since(start)
	others1, err1 := othersCPU(w.skip...)
	cpu1, err2 := c.cpu()
	if err := errors.Join(err1, err2); err != nil {
		return result{}, err
	}
	res, err := parseWrk(string(out))
	if err != nil {
		return result{}, fmt.Errorf("wrk %s: %v\n%s", url, err, out)
	}
	res.contender, res.proto = c.name, proto
	res.cpuPerReq = float64((cpu1 - cpu0).Microseconds()) / float64(res.requests)
	res.others = othersUsed(others0, others1).Seconds() / elapsed.Seconds()
	return res, nil
}

// othersCPU returns, per process, the CPU time (utime and stime) of every
// process on the machine but the test's own and those in skip, with their
// children. A process that both starts and ends between two calls is not
// seen: the figure is a lower bound, which catches other tests' daemons
// and test binaries but not every short compiler run.
func othersCPU(skip ...int) (map[int]time.Duration, error) {
	mine := map[int]bool{}
	for pid := os.Getpid(); pid > 1; {
		mine[pid] = true
		f, err := statFields(pid)
		if err != nil {
			break
		}
		pid, _ = strconv.Atoi(f[1])
	}
	for _, pid := range skip {
		mine[pid] = true
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := map[int]time.Duration{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || mine[pid] {
			continue
		}
		f, err := statFields(pid)
		if err != nil {
			continue // gone meanwhile
		}
		if ppid, _ := strconv.Atoi(f[1]); mine[ppid] {
			continue // nginx's workers, wrk
		}
		var ticks int64
		for _, i := range []int{11, 12} { // utime stime
			n, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += n
		}
		out[pid] = time.Duration(ticks) * clockTick
	}
	return out, nil
}

// othersUsed is what the processes in after used since before.
func othersUsed(before, after map[int]time.Duration) time.Duration {
	var d time.Duration
	for pid, t := range after {
		d += t - before[pid] // a new process counts whole
	}
	return d
}

func wrkDuration(d time.Duration) string { return strconv.Itoa(int(d/time.Second)) + "s" }

var (
	wrkRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)\s*$`)
	wrkRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkPct      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m|h)\s*$`)
	wrkErrors   = regexp.MustCompile(`(?m)^\s*(Socket errors:.*|Non-2xx or 3xx responses:.*)$`)
)

// parseWrk reads requests/s, the request count and the p50 and p99
// latencies from wrk --latency output. Socket errors or non-2xx/3xx
// answers make the run invalid.
func parseWrk(out string) (result, error) {
	var r result
	r.out = out
	if m := wrkErrors.FindAllString(out, -1); m != nil {
		return r, fmt.Errorf("wrk saw errors: %s", strings.Join(m, "; "))
	}
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec line")
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m = wrkRequests.FindStringSubmatch(out); m == nil {
		return r, fmt.Errorf("no request count")
	}
	r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	if r.requests == 0 {
		return r, fmt.Errorf("no request completed")
	}
	found := 0
	for _, m := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		v *= map[string]float64{"us": 1e-3, "ms": 1, "s": 1e3, "m": 60e3, "h": 3600e3}[m[3]]
		if m[1] == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
		found++
	}
	if found != 2 {
		return r, fmt.Errorf("no latency distribution (run wrk with --latency)")
	}
	return r, nil
}

// report is the table bench/README.md shows: per protocol and contender,
// the median over the rounds of requests/s, p50 and p99 latency, the
// proxy's CPU per request and the CPUs other programs used meanwhile, then
// hypercore against nginx and the goal.
func report(cs []contender, protos []string, rs []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-5s %-9s %4s %10s %10s %10s %8s %8s %8s %12s %8s\n",
		"proto", "contender", "runs", "rps_median", "rps_min", "rps_max", "p50_ms", "p99_ms", "p99_max", "cpu_us/req", "others")
	med := map[[2]string]result{}
	for _, p := range protos {
		for _, c := range cs {
			var rps, p50, p99, cpu, others []float64
			for _, r := range rs {
				if r.proto == p && r.contender == c.name {
					rps, p50, p99 = append(rps, r.rps), append(p50, r.p50), append(p99, r.p99)
					cpu, others = append(cpu, r.cpuPerReq), append(others, r.others)
				}
			}
			m := result{rps: testutil.Median(rps), p50: testutil.Median(p50), p99: testutil.Median(p99), cpuPerReq: testutil.Median(cpu), others: testutil.Median(others)}
			med[[2]string{p, c.name}] = m
			fmt.Fprintf(&b, "%-5s %-9s %4d %10.0f %10.0f %10.0f %8.2f %8.2f %8.2f %12.1f %8.2f\n",
				p, c.name, len(rps), m.rps, minOf(rps), maxOf(rps), m.p50, m.p99, maxOf(p99), m.cpuPerReq, m.others)
		}
	}
	b.WriteString("\n")
	for _, p := range protos {
		h, n := med[[2]string{p, cs[0].name}], med[[2]string{p, cs[1].name}]
		ok := h.rps >= n.rps && h.p99 <= n.p99+1
		verdict := "goal met"
		if !ok {
			verdict = "goal NOT met"
		}
		fmt.Fprintf(&b, "%-5s %s / %s: rps %.2fx, p99 %+.2f ms, CPU per request %.2fx  (goal: rps >= 1.00x and p99 <= +1 ms: %s)\n",
			p, cs[0].name, cs[1].name, h.rps/n.rps, h.p99-n.p99, h.cpuPerReq/n.cpuPerReq, verdict)
	}
	b.WriteString(paired(cs, protos, rs))
	return b.String()
}

// paired compares the contenders round by round: a round's two runs of a
// protocol are back to back, so their ratio is less moved by the machine's
// drift over the sitting (other VMs on the host move both proxies' rps by
// ±10% from one minute to the next) than a ratio of medians taken over
// the whole sitting.
func paired(cs []contender, protos []string, rs []result) string {
	var b strings.Builder
	for _, p := range protos {
		by := map[int]map[string]result{}
		for _, r := range rs {
			if r.proto == p {
				if by[r.round] == nil {
					by[r.round] = map[string]result{}
				}
				by[r.round][r.contender] = r
			}
		}
		var rps, p99, cpu []float64
		for _, round := range by {
			h, okH := round[cs[0].name]
			n, okN := round[cs[1].name]
			if okH && okN {
				rps, p99, cpu = append(rps, h.rps/n.rps), append(p99, h.p99-n.p99), append(cpu, h.cpuPerReq/n.cpuPerReq)
			}
		}
		fmt.Fprintf(&b, "%-5s round by round, median (min to max) of %d: rps %.2fx (%.2f to %.2f), p99 %+.2f ms (%+.2f to %+.2f), CPU per request %.2fx\n",
			p, len(rps), testutil.Median(rps), minOf(rps), maxOf(rps), testutil.Median(p99), minOf(p99), maxOf(p99), testutil.Median(cpu))
	}
	return b.String()
}

func minOf(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	return slices.Min(v)
}

func maxOf(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	return slices.Max(v)
}

// TestParseWrk runs without HYPERCORE_BENCH: it checks the parser on
// output wrk 4.1.0 printed.
func TestParseWrk(t *testing.T) {
	const out = `Running 10s test @ http://x.localhost:8001/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.57ms    2.61ms  40.03ms   80.00%
    Req/Sec     6.46k   583.54     7.52k    70.50%
  Latency Distribution
     50%  457.00us
     75%    5.68ms
     90%    7.31ms
     99%    1.03s
  128563 requests in 10.00s, 45.00MB read
Requests/sec:  12853.61
Transfer/sec:      4.50MB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if !near(r.rps, 12853.61) || r.requests != 128563 || !near(r.p50, 0.457) || !near(r.p99, 1030) {
		t.Fatalf("parsed %+v", r)
	}
	bad := strings.Replace(out, "Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec", 1)
	if _, err := parseWrk(bad); err == nil {
		t.Fatal("non-2xx answers were not reported")
	}
	if _, err := parseWrk(strings.Replace(out, "     99%    1.03s\n", "", 1)); err == nil {
		t.Fatal("missing p99 was not reported")
	}
}

// TestPaired runs without HYPERCORE_BENCH: it checks the round-by-round
// comparison on made-up rounds.
func TestPaired(t *testing.T) {
	cs := []contender{{name: "hypercore"}, {name: "nginx"}}
	var rs []result
	for i, pair := range [][2]float64{{110, 100}, {90, 100}, {210, 200}} {
		rs = append(rs,
			result{contender: "hypercore", proto: "http", round: i + 1, rps: pair[0], p99: 5, cpuPerReq: 20},
			result{contender: "nginx", proto: "http", round: i + 1, rps: pair[1], p99: 4, cpuPerReq: 25})
	}
	got := paired(cs, []string{"http"}, rs)
	want := "http  round by round, median (min to max) of 3: rps 1.05x (0.90 to 1.10), p99 +1.00 ms (+1.00 to +1.00), CPU per request 0.80x\n"
	if got != want {
		t.Errorf("paired =\n%q\nwant\n%q", got, want)
	}
}
