package spawn

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// phaseKeys are the per-spawn timings the daemon logs with "workload
// started", in the order the spawn runs them.
var phaseKeys = []string{"image_ms", "network_ms", "create_ms", "start_ms"}

// hypercore spawns through a node's API and reads the page through its
// proxy on port 80, as a user of the URL it answers would.
type hypercore struct {
	node   *harness.Node
	body   string // the POST /spawn body, the same every run
	lastID string // the workload of the run in progress
}

// newHypercore builds the daemon, serves img from a registry in ns and
// starts a node there. The image is pulled by the warm-up run.
func newHypercore(t *testing.T, ns *harness.NetNS, img v1.Image) *hypercore {
	t.Helper()
	bin, err := harness.Build(t.TempDir(), "../..")
	if err != nil {
		t.Fatalf("build hypercore: %v", err)
	}
	ref := harness.StartRegistry(t, ns, img)
	node := harness.StartNode(t, ns, bin, filepath.Join(t.TempDir(), "data"))
	return &hypercore{
		node: node,
		body: `{"cores":1,"memory":128,"image_ref":"` + ref + `","ports":{"80":8080}}`,
	}
}

func (h *hypercore) Name() string { return "hypercore" }

func (h *hypercore) Returned() string { return "POST /spawn answered" }

// Launch asks for the workload; the node answers once its port accepts
// TCP. The page is then fetched through the proxy by the workload's Host.
func (h *hypercore) Launch(int) (target, error) {
	code, out := h.node.API("POST", "/spawn", h.body)
	if code != 200 {
		return target{}, fmt.Errorf("POST /spawn: %d %s", code, out)
	}
	var a struct{ ID, URL string }
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.ID == "" || a.URL == "" {
		return target{}, fmt.Errorf("POST /spawn answered %q: %v", out, err)
	}
	h.lastID = a.ID
	return target{url: "http://127.0.0.1:80/", host: a.URL, id: a.ID}, nil
}

// Remove deletes the workload; the node kills it at once.
func (h *hypercore) Remove(int) error {
	if code, out := h.node.API("DELETE", "/v1/workloads/"+h.lastID, ""); code/100 != 2 {
		return fmt.Errorf("DELETE %s: %d %s", h.lastID, code, out)
	}
	return nil
}

// readPhases finds each sample's spawn in the daemon's log and fills in
// its phase timings (ms, in phaseKeys order).
func (h *hypercore) readPhases(t *testing.T, samples []sample) {
	t.Helper()
	lines := map[string]string{}
	for _, l := range strings.Split(h.node.Log(), "\n") {
		if m := startedID.FindStringSubmatch(l); m != nil {
			lines[m[1]] = l
		}
	}
	for i := range samples {
		l, ok := lines[samples[i].id]
		if !ok {
			t.Errorf("no %q line for workload %s in the node's log", "workload started", samples[i].id)
			continue
		}
		var p []float64
		for _, k := range phaseKeys {
			m := phaseValue[k].FindStringSubmatch(l)
			if m == nil {
				t.Errorf("no %s in %q", k, l)
				break
			}
			v, _ := strconv.ParseFloat(m[1], 64)
			p = append(p, v)
		}
		if len(p) == len(phaseKeys) {
			samples[i].phases = p
		}
	}
}

// phaseValue matches each phase key's value in that line.
var phaseValue = func() map[string]*regexp.Regexp {
	m := map[string]*regexp.Regexp{}
	for _, k := range phaseKeys {
		m[k] = regexp.MustCompile(`\b` + k + `=([0-9.]+)`)
	}
	return m
}()

// startedID matches the daemon's "workload started" line and takes its id.
var startedID = regexp.MustCompile(`msg="workload started" id=(\S+)`)
