package spawn

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// TestSandboxBench measures what the container sandbox's defaults cost at
// spawn, to the first 200: hypercore's spawn as it comes (Docker's seccomp
// profile and a private user namespace), with only seccomp (userns host),
// and with neither (seccomp unconfined, userns host), on one node,
// interleaved run by run as in TestSpawnBench. It runs with
// HYPERCORE_BENCH=1 as root: RUN=TestSandboxBench bench/spawn/run.sh.
func TestSandboxBench(t *testing.T) {
	if os.Getenv("HYPERCORE_BENCH") != "1" {
		t.Skip("benchmark: set HYPERCORE_BENCH=1 to run it (RUN=TestSandboxBench bench/spawn/run.sh does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("benchmark: needs root (network namespaces, runc)")
	}
	for _, tool := range []string{"ip", "nsenter", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("benchmark: %s is not installed (make deps installs it)", tool)
		}
	}
	runs := testutil.EnvInt(t, "RUNS", defaultRuns)

	img := testutil.HTTPDImage(t)
	ns := harness.NewNetNS(t)
	hc := newHypercore(t, ns, img)
	with := func(label, security string) *hypercoreIsolation {
		body := strings.Replace(hc.body, "{", `{"security":`+security+`,`, 1)
		return &hypercoreIsolation{hypercore: &hypercore{node: hc.node, body: body}, label: label}
	}
	contenders := []*hypercoreIsolation{
		with("default sandbox", `{}`),
		with("seccomp only", `{"userns":"host"}`),
		with("neither", `{"seccomp":"unconfined","userns":"host"}`),
	}
	all := make([]contender, len(contenders))
	for i, c := range contenders {
		all[i] = c
	}
	results := measureAll(t, all, newPoller(ns), runs)

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
	b.WriteString("\n")
	for _, a := range []int{0, 1} {
		fmt.Fprintf(&b, "%s - neither: median %+.1f ms\n", contenders[a].Name(), testutil.Median(totals[a])-testutil.Median(totals[2]))
	}
	for k, h := range contenders {
		h.readPhases(t, results[k])
		b.WriteString("\n" + h.Name() + ": " + phaseBreakdown(results[k]))
	}
	t.Log("\n" + b.String())
}
