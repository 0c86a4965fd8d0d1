// Package proxy benchmarks hypercore's HTTP reverse proxy (internal/proxy)
// against nginx configured as the same reverse proxy, over HTTP and HTTPS,
// with wrk as the load. Both proxies forward Host <id>.localhost to the
// same backend (an nginx serving one small static file), and everything
// runs on loopback inside one network namespace the test makes.
//
// hypercore's proxy runs in a process of its own (cmd/proxybench: the real
// proxy.New, proxy.Server and proxy.HTTPSServer with one route), so that
// the comparison is proxy against proxy, not a whole node against nginx.
//
// It is not a Go benchmark function: each sample is a wrk run of fixed
// length; RUNS rounds (default 3) alternate the contenders, and the report
// gives each one's median requests per second and p99 latency. It runs
// only with HYPERCORE_BENCH=1, as root, with nginx and wrk installed;
// bench/proxy/run.sh runs it.
package proxy

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// The route both proxies serve: Host <workloadID>.<baseDomain>.
const (
	workloadID = "497b6ad8-11a3-4701-8b6a-11396e11ca7d"
	baseDomain = "localhost"
	host       = workloadID + "." + baseDomain
)

// Addresses inside the bench namespace.
const (
	backendAddr = "127.0.0.1:8081"
	hcHTTP      = "127.0.0.1:8001"
	hcHTTPS     = "127.0.0.1:8441"
	ngHTTP      = "127.0.0.1:8002"
	ngHTTPS     = "127.0.0.1:8442"
	pageSize    = 1024 // bytes of the static file the backend serves
)

// config is the load: wrk's threads, connections and run length, and the
// number of counted rounds; and how many processors each proxy may use
// (nginx's worker_processes, Go's GOMAXPROCS). The environment can change
// each.
type config struct {
	procs    int
	rounds   int
	duration time.Duration
	warmup   time.Duration
	threads  int
	conns    int
}

func loadConfig(t *testing.T) config {
	c := config{procs: runtime.NumCPU(), rounds: 3, duration: 10 * time.Second, warmup: 3 * time.Second, threads: 2, conns: 64}
	for _, v := range []struct {
		env string
		n   *int
	}{{"PROCS", &c.procs}, {"RUNS", &c.rounds}, {"THREADS", &c.threads}, {"CONNS", &c.conns}} {
		if s := os.Getenv(v.env); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive whole number", v.env, s)
			}
			*v.n = n
		}
	}
	for _, v := range []struct {
		env string
		d   *time.Duration
	}{{"DURATION", &c.duration}, {"WARMUP", &c.warmup}} {
		if s := os.Getenv(v.env); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d < time.Second || d%time.Second != 0 {
				t.Fatalf("%s=%q: want whole seconds, such as 10s", v.env, s)
			}
			*v.d = d
		}
	}
	return c
}

// contender is one proxy under test.
type contender struct {
	name string
	// addr is the listen address for each protocol, "http" and "https".
	addr map[string]string
	// cpu returns the CPU time its processes have used so far.
	cpu func() (time.Duration, error)
	pid int // its main process
}

func TestProxyBench(t *testing.T) {
	if os.Getenv("HYPERCORE_BENCH") != "1" {
		t.Skip("benchmark: set HYPERCORE_BENCH=1 to run it (bench/proxy/run.sh does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("benchmark: needs root (network namespace)")
	}
	for _, tool := range []string{"ip", "nginx", "wrk", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("benchmark: %s is not installed (make bench-deps installs nginx-light and wrk)", tool)
		}
	}
	cfg := loadConfig(t)
	t.Logf("machine: %s", machineFacts())
	t.Logf("load before: %s", loadAvg())

	ns := harness.NewNetNS(t)
	dir := benchDir(t)
	// Both proxies serve this self-signed P-256 certificate for *.localhost.
	certPath, keyPath, _ := testutil.SelfSignedCert(t, dir, "*."+baseDomain, baseDomain)
	page := writePage(t, dir)
	resolveInNS(t, ns)

	backend := startNginx(t, ns, dir, "backend", backendConf(dir))
	waitListening(t, ns, backendAddr)
	hc := startHypercore(t, ns, dir, certPath, keyPath, cfg.procs)
	ng := startNginx(t, ns, dir, "proxy", proxyConf(dir, certPath, keyPath, cfg.procs))
	t.Logf("processors per proxy: %d (nginx worker_processes %d, hypercore GOMAXPROCS=%d)", cfg.procs, cfg.procs, cfg.procs)
	for _, a := range []string{hcHTTP, hcHTTPS, ngHTTP, ngHTTPS} {
		waitListening(t, ns, a)
	}
	contenders := []contender{hc, ng}
	for _, c := range contenders {
		checkSameProxy(t, ns, c, certPath, page)
	}
	for _, c := range contenders {
		t.Logf("%-9s TLS as wrk's OpenSSL negotiates it: %s", c.name, tlsParams(ns, c.addr["https"]))
	}

	protos := []string{"http", "https"}
	w := wrk{ns: ns, threads: cfg.threads, conns: cfg.conns, skip: []int{backend.pid, hc.pid, ng.pid}}
	// The warm-up fills caches and both proxies' connection pools, and
	// lets Go's heap grow to its working size. It is not counted.
	for _, p := range protos {
		for _, c := range contenders {
			if _, err := w.run(c, p, cfg.warmup); err != nil {
				t.Fatalf("warm-up %s %s: %v", c.name, p, err)
			}
		}
	}
	t.Logf("warm-up done (%v per contender and protocol)", cfg.warmup)

	// Rounds alternate which contender goes first (ABBA), and each
	// protocol's runs of the two are back to back, so that drift in the
	// machine's load hits both alike.
	var results []result
	for r := 1; r <= cfg.rounds; r++ {
		order := contenders
		if r%2 == 0 {
			order = []contender{contenders[1], contenders[0]}
		}
		for _, p := range protos {
			for _, c := range order {
				res, err := w.run(c, p, cfg.duration)
				if err != nil {
					t.Fatalf("round %d %s %s: %v", r, c.name, p, err)
				}
				res.round = r
				t.Logf("round %d %-5s %-9s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  proxy CPU %5.1f µs/req  other programs %4.2f CPUs",
					r, p, c.name, res.rps, res.p50, res.p99, res.cpuPerReq, res.others)
				results = append(results, res)
			}
		}
	}
	t.Logf("load after: %s (this benchmark loads both CPUs itself)", loadAvg())
	t.Logf("wrk -t%d -c%d -d%s --latency -H 'Host: %s' <scheme>://%s:<port>/, %d rounds\n%s",
		cfg.threads, cfg.conns, wrkDuration(cfg.duration), host, host, cfg.rounds, report(contenders, protos, results))
}

// machineFacts says what the numbers were measured on.
func machineFacts() string {
	var facts []string
	facts = append(facts, fmt.Sprintf("%d CPUs (%s)", runtime.NumCPU(), cpuModel()))
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		facts = append(facts, "kernel "+strings.TrimSpace(string(b)))
	}
	facts = append(facts, runtime.Version())
	for _, c := range [][]string{{"nginx", "-v"}, {"wrk", "-v"}, {"openssl", "version"}} {
		out, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		line, _, _ = strings.Cut(line, " Copyright")
		line, _, _ = strings.Cut(line, " (Library")
		facts = append(facts, strings.TrimSpace(strings.TrimPrefix(line, "nginx version: ")))
	}
	return strings.Join(facts, ", ")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown model"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
