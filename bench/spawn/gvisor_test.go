package spawn

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

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
	runs := testutil.EnvInt(t, "RUNS", defaultRuns)

	img := testutil.HTTPDImage(t)
	ns := harness.NewNetNS(t)
	hc := newHypercore(t, ns, img)
	sandboxed := &hypercoreIsolation{hypercore: &hypercore{node: hc.node, body: strings.Replace(hc.body, "{", `{"isolation":"gvisor",`, 1)}, label: "hypercore gvisor"}
	container := &hypercoreIsolation{hypercore: hc, label: "hypercore runc"}
	contenders := []contender{container, sandboxed, newRunc(t, ns, img), newRunsc(t, ns, img)}
	poller := newPoller(ns)

	results := measureAll(t, contenders, poller, runs)

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

// hypercoreIsolation is the hypercore contender under a name of its own,
// so two of them, spawning with different isolations, can share a node.
type hypercoreIsolation struct {
	*hypercore
	label string
}

func (h *hypercoreIsolation) Name() string { return h.label }

// newRunsc is gVisor's floor, `runsc run -detach` of a bundle made as
// newRunc makes one, on systrap, with the network of the bench namespace
// (--network=host: the sandbox's sockets are the namespace's, so no
// network setup is timed; hypercore's sandboxes use gVisor's own stack on
// their veth instead).
func newRunsc(t *testing.T, ns *harness.NetNS, img v1.Image) *plainRuntime {
	t.Helper()
	r := newRuntime(t, ns, img, "runsc", "--platform="+gvisor.DefaultPlatform, "--network=host")
	r.runFlags = func(string) []string { return []string{"-detach", "-bundle", r.bundle} }
	return r
}
