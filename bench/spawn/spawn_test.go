// Package spawn benchmarks a cached-image spawn up to the first HTTP 200:
// hypercore (POST /spawn, then the page through its proxy) against
// `ctr run --rm` on a private containerd and a plain `runc run -d` of the
// same rootfs. All three run in one network namespace the test makes, on
// the same image, interleaved run by run so that drift in the machine's
// load hits each of them alike.
//
// It is not a Go benchmark function: each sample is a whole container
// start, so a fixed number of runs (RUNS, default 20) and their median and
// p90 say more than ns/op. It runs only with HYPERCORE_BENCH=1 and as root;
// bench/spawn/run.sh runs it.
package spawn

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

const (
	// pollEvery is the pause between two GETs while waiting for the first
	// 200. It bounds how much a sample can overshoot the real moment.
	pollEvery = 2 * time.Millisecond
	// readyTimeout is how long one run may take to serve its first 200
	// before the benchmark gives up on it.
	readyTimeout = 60 * time.Second
	// defaultRuns is how many timed runs each contender gets.
	defaultRuns = 20
)

// target is what to GET to see whether a run serves its page yet.
type target struct {
	url  string // http://127.0.0.1:port/ inside the bench namespace
	host string // Host header; "" sends the URL's host
	id   string // hypercore's workload id, to find its phases in the log
	// exited, if not nil, is closed when the process that serves the page
	// exits, so a run that failed to start fails at once.
	exited <-chan struct{}
}

// contender is one way of starting the image and serving its page.
type contender interface {
	// Name labels the contender in the report.
	Name() string
	// Launch starts run i and says where its page will be. It is inside
	// the timed section.
	Launch(i int) (target, error)
	// Returned says what the end of Launch marks, or "" when Launch returns
	// before the container is even created, so its time says nothing.
	Returned() string
	// Remove stops and deletes run i and returns once nothing of it is
	// left, so the next run starts from the same state. It is not timed.
	Remove(i int) error
}

// sample is one timed run.
type sample struct {
	total  time.Duration // from just before Launch to the first 200
	launch time.Duration // how long Launch itself took
	id     string        // hypercore's workload id, to find its phases
	phases []float64     // hypercore's logged phase timings, ms, in phaseKeys order
}

func TestSpawnBench(t *testing.T) {
	if os.Getenv("HYPERCORE_BENCH") != "1" {
		t.Skip("benchmark: set HYPERCORE_BENCH=1 to run it (bench/spawn/run.sh does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("benchmark: needs root (network namespaces, runc, containerd)")
	}
	for _, tool := range []string{"ip", "nsenter", "runc", "containerd", "containerd-shim-runc-v2", "ctr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("benchmark: %s is not installed (make bench-deps installs containerd)", tool)
		}
	}
	runs := testutil.EnvInt(t, "RUNS", defaultRuns)

	img := testutil.HTTPDImage(t)
	ns := harness.NewNetNS(t)
	hc := newHypercore(t, ns, img)
	contenders := []contender{hc, newCtr(t, ns, img), newRunc(t, ns, img)}
	poller := newPoller(ns)

	results := measureAll(t, contenders, poller, runs)
	hc.readPhases(t, results[0])
	t.Log("\n" + report(contenders, results))
}

// measureAll gives each contender a warm-up run, which fills caches
// (hypercore's pull and unpack, page cache, runtime and shim binaries) and
// is not counted, then runs timed runs of them round-robin, so that each
// sees the same machine. It returns each contender's samples, in order.
func measureAll(t *testing.T, cs []contender, p *poller, runs int) [][]sample {
	t.Helper()
	width := 0 // the warm-up lines line up two past the longest name
	for _, c := range cs {
		width = max(width, len(c.Name())+2)
	}
	for _, c := range cs {
		s, err := measure(c, p, 0)
		if err != nil {
			t.Fatalf("%s warm-up: %v", c.Name(), err)
		}
		t.Logf("warm-up %-*s %7.1f ms", width, c.Name(), ms(s.total))
	}
	results := make([][]sample, len(cs))
	for i := 1; i <= runs; i++ {
		for k, c := range cs {
			s, err := measure(c, p, i)
			if err != nil {
				t.Fatalf("%s run %d: %v", c.Name(), i, err)
			}
			results[k] = append(results[k], s)
		}
	}
	return results
}

// measure times run i of c: from just before Launch to the first 200 on
// its page. Removal afterwards is not timed.
func measure(c contender, p *poller, i int) (sample, error) {
	t0 := time.Now()
	tg, err := c.Launch(i)
	if err != nil {
		return sample{}, fmt.Errorf("launch: %w", err)
	}
	launched := time.Since(t0)
	if err := p.waitOK(tg, t0.Add(readyTimeout)); err != nil {
		if l, ok := c.(interface{ Logs() string }); ok {
			err = fmt.Errorf("%w\n%s", err, l.Logs())
		}
		c.Remove(i)
		return sample{}, err
	}
	s := sample{total: time.Since(t0), launch: launched, id: tg.id}
	if err := c.Remove(i); err != nil {
		return sample{}, fmt.Errorf("remove: %w", err)
	}
	return s, nil
}

// poller GETs pages from inside the bench namespace. All contenders share
// it, so the cost of a poll is the same for each.
type poller struct{ client *http.Client }

func newPoller(ns *harness.NetNS) *poller {
	return &poller{client: &http.Client{
		// Short: a connection that hangs must not eat the run's budget.
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: ns.Dial,
			// A fresh connection each poll, as a first visitor would make.
			DisableKeepAlives: true,
		},
	}}
}

// get returns the status of one GET of tg, or an error if none came.
func (p *poller) get(tg target) (int, error) {
	req, err := http.NewRequest("GET", tg.url, nil)
	if err != nil {
		return 0, err
	}
	if tg.host != "" {
		req.Host = tg.host
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// waitOK polls tg every pollEvery until it answers 200 or deadline passes.
func (p *poller) waitOK(tg target, deadline time.Time) error {
	var last string
	for time.Now().Before(deadline) {
		code, err := p.get(tg)
		if code == http.StatusOK {
			return nil
		}
		if last = fmt.Sprint(code); err != nil {
			last = err.Error()
		}
		select {
		case <-tg.exited:
			return fmt.Errorf("its process exited before %s answered 200; last: %s", tg.url, last)
		case <-time.After(pollEvery):
		}
	}
	return fmt.Errorf("no 200 from %s (Host %q) in %v; last: %s", tg.url, tg.host, readyTimeout, last)
}

// waitRefused polls tg until nothing listens there, so a run cannot be
// answered by what the run before it left behind.
func (p *poller) waitRefused(tg target, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := p.get(tg); err != nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s still answers %v after its container was removed", tg.url, timeout)
}

// runID names run i's container for ctr and runc.
func runID(i int) string { return fmt.Sprintf("bench-%d", i) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
