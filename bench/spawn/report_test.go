package spawn

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// report formats the results as the table bench/README.md shows: each
// contender's median and p90, hypercore's ratios to the other two, and the
// median of each phase of hypercore's spawn.
func report(cs []contender, results [][]sample) string {
	var b strings.Builder
	totals := make([][]float64, len(cs))
	fmt.Fprintf(&b, "%-14s %4s %9s %8s %8s %8s   %s\n", "contender", "runs", "median_ms", "p90_ms", "min_ms", "max_ms", "launch returned (median ms)")
	for k, c := range cs {
		for _, s := range results[k] {
			totals[k] = append(totals[k], ms(s.total))
		}
		t := totals[k]
		launch := "-"
		if c.Returned() != "" {
			launch = fmt.Sprintf("%.1f  %s", testutil.Median(launches(results[k])), c.Returned())
		}
		fmt.Fprintf(&b, "%-14s %4d %9.1f %8.1f %8.1f %8.1f   %s\n", c.Name(), len(t), testutil.Median(t), p90(t), slices.Min(t), slices.Max(t), launch)
	}
	b.WriteString("\n")
	for k := 1; k < len(cs); k++ {
		fmt.Fprintf(&b, "%s / %-14s median %.2fx   p90 %.2fx\n", cs[0].Name(), cs[k].Name(),
			testutil.Median(totals[0])/testutil.Median(totals[k]), p90(totals[0])/p90(totals[k]))
	}
	b.WriteString("\n" + phaseBreakdown(results[0]))
	return b.String()
}

// phaseBreakdown lists the median of each logged phase of hypercore's
// spawns, then the two parts of the sample the log does not cover: the
// rest of the POST (placement, records, waiting for the port, HTTP) and
// the time from the answer to the first 200 through the proxy.
func phaseBreakdown(samples []sample) string {
	var b strings.Builder
	per := make([][]float64, len(phaseKeys))
	var rest, after []float64
	for _, s := range samples {
		if s.phases == nil {
			continue
		}
		sum := 0.0
		for i, v := range s.phases {
			per[i] = append(per[i], v)
			sum += v
		}
		rest = append(rest, ms(s.launch)-sum)
		after = append(after, ms(s.total-s.launch))
	}
	if len(rest) == 0 {
		return "hypercore phases: none found in the node's log\n"
	}
	fmt.Fprintf(&b, "hypercore phases, median ms over %d spawns:\n", len(rest))
	for i, k := range phaseKeys {
		fmt.Fprintf(&b, "  %-50s %7.1f\n", strings.TrimSuffix(k, "_ms"), testutil.Median(per[i]))
	}
	fmt.Fprintf(&b, "  %-50s %7.1f\n", "rest of POST /spawn (place, wait for port, HTTP)", testutil.Median(rest))
	fmt.Fprintf(&b, "  %-50s %7.1f\n", "answer to first 200 through the proxy", testutil.Median(after))
	return b.String()
}

func launches(ss []sample) []float64 {
	var out []float64
	for _, s := range ss {
		out = append(out, ms(s.launch))
	}
	return out
}

// p90 is the nearest-rank 90th percentile: the smallest value that at
// least 90% of the samples do not exceed.
func p90(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(v))
	return s[int(math.Ceil(0.9*float64(len(s))))-1]
}
