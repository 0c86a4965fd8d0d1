package spawn

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/driver/gvisor"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// TestGvisorBench measures what a gVisor sandbox costs at spawn, against a
// container, to the first 200: hypercore's spawn with "isolation":"gvisor"
// and with "container" (the default, runc), on the same node, and the raw
// floors of each, `runsc run -d` and `runc run -d` of one bundle. All four
// run interleaved, run by run, as in TestSpawnBench. It runs with
// HYPERCORE_BENCH=1 as root: RUN=TestGvisorBench bench/spawn/run.sh.
func TestGvisorBench(t *testing.T) {
	if os.Getenv("HYPERCORE_BENCH") != "1" {
		t.Skip("benchmark: set HYPERCORE_BENCH=1 to run it (RUN=TestGvisorBench bench/spawn/run.sh does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("benchmark: needs root (network namespaces, runc, runsc)")
	}
	for _, tool := range []string{"ip", "nsenter", "runc", "runsc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("benchmark: %s is not installed (make deps installs it)", tool)
		}
	}
	if version, err := gvisor.Probe(t.Context(), "", ""); err != nil {
		t.Skipf("benchmark: gVisor cannot run here: %v", err)
	} else {
		t.Logf("runsc: %s, platform %s", version, gvisor.DefaultPlatform)
	}
	runs := runsFromEnv(t)

	img := testutil.HTTPDImage(t)
	ns := harness.NewNetNS(t)
	hc := newHypercore(t, ns, img)
	sandboxed := &hypercoreIsolation{hypercore: &hypercore{node: hc.node, body: strings.Replace(hc.body, "{", `{"isolation":"gvisor",`, 1)}, label: "hypercore gvisor"}
	container := &hypercoreIsolation{hypercore: hc, label: "hypercore runc"}
	contenders := []contender{container, sandboxed, newRunc(t, ns, img), newRunsc(t, ns, img)}
	poller := newPoller(ns)

	for _, c := range contenders {
		s, err := measure(c, poller, 0)
		if err != nil {
			t.Fatalf("%s warm-up: %v", c.Name(), err)
		}
		t.Logf("warm-up %-18s %7.1f ms", c.Name(), ms(s.total))
	}
	results := make([][]sample, len(contenders))
	for i := 1; i <= runs; i++ {
		for k, c := range contenders {
			s, err := measure(c, poller, i)
			if err != nil {
				t.Fatalf("%s run %d: %v", c.Name(), i, err)
			}
			results[k] = append(results[k], s)
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "%-18s %4s %9s %8s %8s %8s\n", "contender", "runs", "median_ms", "p90_ms", "min_ms", "max_ms")
	totals := make([][]float64, len(contenders))
	for k, c := range contenders {
		for _, s := range results[k] {
			totals[k] = append(totals[k], ms(s.total))
		}
		v := totals[k]
		fmt.Fprintf(&b, "%-18s %4d %9.1f %8.1f %8.1f %8.1f\n", c.Name(), len(v), testutil.Median(v), p90(v), slices.Min(v), slices.Max(v))
	}
	ratio := func(a, z int) {
		fmt.Fprintf(&b, "%s / %s: median %.2fx (+%.1f ms)\n", contenders[a].Name(), contenders[z].Name(),
			testutil.Median(totals[a])/testutil.Median(totals[z]), testutil.Median(totals[a])-testutil.Median(totals[z]))
	}
	b.WriteString("\n")
	ratio(1, 0)
	ratio(3, 2)
	for k, h := range []*hypercoreIsolation{container, sandboxed} {
		h.readPhases(t, results[k])
		b.WriteString("\n" + h.Name() + ": " + phaseBreakdown(results[k]))
	}
	t.Log("\n" + b.String())
}

// runsFromEnv is RUNS, or defaultRuns.
func runsFromEnv(t *testing.T) int {
	t.Helper()
	runs := defaultRuns
	if s := os.Getenv("RUNS"); s != "" {
		if _, err := fmt.Sscan(s, &runs); err != nil || runs < 1 {
			t.Fatalf("RUNS=%q: want a positive whole number", s)
		}
	}
	return runs
}

// hypercoreIsolation is the hypercore contender under a name of its own,
// so two of them, spawning with different isolations, can share a node.
type hypercoreIsolation struct {
	*hypercore
	label string
}

func (h *hypercoreIsolation) Name() string { return h.label }

// plainRunsc is gVisor's floor: `runsc run -d` of a bundle made once from
// the image's files, on systrap, with the network of the bench namespace
// (--network=host: the sandbox's sockets are the namespace's, so no
// network setup is timed; hypercore's sandboxes use gVisor's own stack on
// their veth instead).
type plainRunsc struct {
	ns     *harness.NetNS
	args   []string // runsc and its global flags
	bundle string
	dir    string
	p      *poller
}

// newRunsc makes a bundle as newRunc does, in a directory of its own.
func newRunsc(t *testing.T, ns *harness.NetNS, img v1.Image) *plainRunsc {
	t.Helper()
	base := newRunc(t, ns, img)
	dir := t.TempDir()
	r := &plainRunsc{
		ns:     ns,
		args:   []string{"--root", filepath.Join(dir, "runsc"), "--platform=" + gvisor.DefaultPlatform, "--network=host"},
		bundle: base.bundle,
		dir:    dir,
		p:      newPoller(ns),
	}
	t.Cleanup(func() {
		out, _ := r.runsc("list", "-quiet").Output()
		for _, id := range strings.Fields(string(out)) {
			r.runsc("delete", "-force", id).Run()
		}
	})
	return r
}

func (r *plainRunsc) runsc(args ...string) *exec.Cmd {
	return nsexec(r.ns, "runsc", append(append([]string{}, r.args...), args...)...)
}

func (r *plainRunsc) Name() string { return "runsc run -d" }

func (r *plainRunsc) Returned() string { return "runsc run -d exited" }

// Launch runs the sandbox detached; runsc returns once httpd was started.
func (r *plainRunsc) Launch(i int) (target, error) {
	logf, err := os.OpenFile(filepath.Join(r.dir, "runsc.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return target{}, err
	}
	defer logf.Close()
	id := runID(i)
	cmd := r.runsc("run", "-detach", "-bundle", r.bundle, id)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(filepath.Join(r.dir, "runsc.log"))
		return target{}, fmt.Errorf("runsc run %s: %v; log:\n%s", id, err, b)
	}
	return target{url: "http://127.0.0.1:8080/"}, nil
}

// Remove kills and deletes the sandbox, then checks that it is gone.
func (r *plainRunsc) Remove(i int) error {
	id := runID(i)
	if out, err := r.runsc("delete", "-force", id).CombinedOutput(); err != nil {
		return fmt.Errorf("runsc delete %s: %v: %s", id, err, out)
	}
	out, err := r.runsc("list", "-quiet").Output()
	if err != nil {
		return fmt.Errorf("runsc list: %v", err)
	}
	if ids := strings.Fields(string(out)); len(ids) != 0 {
		return fmt.Errorf("runsc still lists %v after delete", ids)
	}
	return r.p.waitRefused(target{url: "http://127.0.0.1:8080/"}, 10*time.Second)
}

// Logs returns what runsc printed, for a failed run.
func (r *plainRunsc) Logs() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "runsc.log"))
	return "runsc log:\n" + string(b)
}
