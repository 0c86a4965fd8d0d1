// Package density measures what many idle workloads cost one node, against
// containerd with the same workloads. See bench/README.md.
package density

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

const (
	defaultN    = 500
	memoryMiB   = 32
	cores       = 0.1
	ctrNS       = "hypercore-density"
	ctrImage    = "127.0.0.1:5000/web:1"
	snapshotter = "overlayfs"
)

// containerdConfig is a private containerd: its own root, state, sockets,
// no CRI, no listeners.
const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`

// TestDensityBench spawns N idle busybox httpd workloads one after the
// other through the API, measures the node at idle, kills and restarts it,
// and removes them; then does the same N with `ctr run -d` on containerd.
func TestDensityBench(t *testing.T) {
	if os.Getenv("HYPERCORE_BENCH") != "1" {
		t.Skip("benchmark: set HYPERCORE_BENCH=1 to run it (bench/density/run.sh does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("benchmark: needs root")
	}
	for _, tool := range []string{"ip", "nsenter", "runc", "containerd", "containerd-shim-runc-v2", "ctr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("benchmark: %s is not installed (scripts/deps.sh --bench installs containerd)", tool)
		}
	}
	n := testutil.EnvInt(t, "N", defaultN)
	idleWindow := time.Duration(testutil.EnvInt(t, "IDLE_SECONDS", 30)) * time.Second
	img := testutil.HTTPDImage(t)
	ns := harness.NewNetNS(t)
	bin, err := harness.Build(t.TempDir(), "../..")
	if err != nil {
		t.Fatalf("build hypercore: %v", err)
	}
	ref := harness.StartRegistry(t, ns, img)

	var out strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&out, format+"\n", args...) }
	w("N = %d idle busybox httpd, %d MiB and %.1f core each", n, memoryMiB, cores)

	// hypercore
	node := harness.StartNode(t, ns, bin, filepath.Join(t.TempDir(), "data"))
	body := fmt.Sprintf(`{"cores":%g,"memory":%d,"image_ref":%q,"ports":{"80":8080}}`, cores, memoryMiB, ref)
	// A first spawn pulls and unpacks the image; not counted.
	warm := spawn(t, node, body)
	node.API("DELETE", "/v1/workloads/"+warm.ID, "")
	settle()
	availBefore := memAvailableKB(t)
	var lat []float64
	var hosts []string
	var ids []string
	for i := range n {
		t0 := time.Now()
		a := spawn(t, node, body)
		lat = append(lat, ms(time.Since(t0)))
		hosts, ids = append(hosts, a.URL), append(ids, a.ID)
		if i%50 == 49 {
			t.Logf("hypercore: %d spawned", i+1)
		}
	}
	first, last := median(lat[:min(10, n)]), median(lat[max(0, n-10):])
	pid := daemonPid(t, node)
	settle()
	cpu := cpuCores(t, []int{pid}, idleWindow)
	rss := rssKB(t, pid)
	perWorkload := float64(availBefore-memAvailableKB(t)) / float64(n)
	t0 := time.Now()
	code, listBody := node.API("GET", "/list", "")
	listMs := ms(time.Since(t0))
	if code != 200 || strings.Count(listBody, `"id"`) < n {
		t.Errorf("GET /list: %d, %d ids in the answer, want %d", code, strings.Count(listBody, `"id"`), n)
	}
	t0 = time.Now()
	node.Kill9()
	node.Start()
	serveAll(t, node, hosts)
	restart := time.Since(t0)
	t0 = time.Now()
	for _, id := range ids {
		if code, out := node.API("DELETE", "/v1/workloads/"+id, ""); code/100 != 2 {
			t.Errorf("DELETE %s: %d %s", id, code, out)
		}
	}
	removeAll := time.Since(t0)

	w("")
	w("hypercore")
	w("  spawn latency, median of the first 10      %8.1f ms", first)
	w("  spawn latency, median of the last 10       %8.1f ms", last)
	w("  daemon CPU over %v idle                   %8.4f cores", idleWindow, cpu)
	w("  daemon RSS                                 %8.1f MiB", float64(rss)/1024)
	w("  host memory per workload (MemAvailable)    %8.2f MiB", perWorkload/1024)
	w("  time to list all %d                        %8.1f ms", n, listMs)
	w("  kill -9, restart, all re-adopted, serving  %8.2f s", restart.Seconds())
	w("  time to remove all %d                      %8.2f s", n, removeAll.Seconds())
	w("  phases of a spawn, median ms (the daemon's \"workload started\" line):")
	phases := phasesByID(node.Log())
	for _, part := range []struct {
		name string
		ids  []string
	}{{"first 10", ids[:min(10, n)]}, {"last 10", ids[max(0, n-10):]}} {
		var line strings.Builder
		for _, k := range phaseKeys {
			var v []float64
			for _, id := range part.ids {
				v = append(v, phases[id][k])
			}
			fmt.Fprintf(&line, " %s %.1f", k, median(v))
		}
		w("    %-9s%s", part.name, line.String())
	}
	if os.Getenv("CTR") == "0" {
		t.Log("\n" + out.String())
		return
	}

	// containerd
	settle()
	c := startContainerd(t, ns)
	settle()
	ctrAvailBefore := memAvailableKB(t)
	var ctrLat []float64
	for i := range n {
		t0 := time.Now()
		if out, err := c.ctr("run", "-d", "--snapshotter", snapshotter, "--memory-limit", strconv.Itoa(memoryMiB<<20),
			"--cpus", fmt.Sprint(cores), ctrImage, "d-"+strconv.Itoa(i)).CombinedOutput(); err != nil {
			t.Fatalf("ctr run -d %d: %v: %s", i, err, out)
		}
		ctrLat = append(ctrLat, ms(time.Since(t0)))
		if i%50 == 49 {
			t.Logf("containerd: %d running", i+1)
		}
	}
	settle()
	shims := shimPids(t)
	if len(shims) == 0 {
		t.Errorf("found no shims of the private containerd")
	}
	ctrPids := append([]int{c.pid}, shims...)
	ctrCPU := cpuCores(t, ctrPids, idleWindow)
	var ctrRSS int64
	for _, p := range ctrPids {
		ctrRSS += rssKB(t, p)
	}
	ctrPer := float64(ctrAvailBefore-memAvailableKB(t)) / float64(n)
	c.removeAll(t, n)

	w("")
	w("containerd (ctr run -d)")
	w("  run latency, median of the first 10        %8.1f ms", median(ctrLat[:min(10, n)]))
	w("  run latency, median of the last 10         %8.1f ms", median(ctrLat[max(0, n-10):]))
	w("  containerd + %d shims CPU over %v idle    %8.4f cores", len(shims), idleWindow, ctrCPU)
	w("  containerd + shims RSS                     %8.1f MiB", float64(ctrRSS)/1024)
	w("  host memory per workload (MemAvailable)    %8.2f MiB", ctrPer/1024)

	w("")
	w("goals")
	verdict := func(ok bool) string {
		if ok {
			return "MET"
		}
		return "NOT MET"
	}
	w("  idle daemon CPU <= 0.02 cores              %s (%.4f)", verdict(cpu <= 0.02), cpu)
	w("  last 10 spawns <= 1.2x the first 10        %s (%.2fx)", verdict(last <= 1.2*first), last/first)
	w("  memory per workload <= containerd's        %s (%.2f vs %.2f MiB)", verdict(perWorkload <= ctrPer), perWorkload/1024, ctrPer/1024)
	w("  restart with all re-adopted <= 10 s        %s (%.2f s)", verdict(restart <= 10*time.Second), restart.Seconds())
	t.Log("\n" + out.String())
}

type answer struct{ ID, URL string }

// phaseKeys are the per-spawn timings the daemon logs with "workload
// started".
var phaseKeys = []string{"image_ms", "network_ms", "create_ms", "start_ms"}

var (
	startedLine = regexp.MustCompile(`msg="workload started" id=(\S+)`)
	phaseValue  = regexp.MustCompile(`\b([a-z]+_ms)=([0-9.]+)`)
)

// phasesByID reads each spawn's phase timings from the daemon's log.
func phasesByID(log string) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, l := range strings.Split(log, "\n") {
		m := startedLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		p := map[string]float64{}
		for _, kv := range phaseValue.FindAllStringSubmatch(l, -1) {
			p[kv[1]], _ = strconv.ParseFloat(kv[2], 64)
		}
		out[m[1]] = p
	}
	return out
}

func spawn(t *testing.T, node *harness.Node, body string) answer {
	t.Helper()
	code, out := node.API("POST", "/spawn", body)
	var a answer
	if code != 200 || json.Unmarshal([]byte(out), &a) != nil || a.ID == "" {
		t.Fatalf("POST /spawn: %d %s", code, out)
	}
	return a
}

// serveAll waits until every workload answers 200 through the proxy.
func serveAll(t *testing.T, node *harness.Node, hosts []string) {
	t.Helper()
	left := slices.Clone(hosts)
	deadline := time.Now().Add(5 * time.Minute)
	for len(left) > 0 {
		var next []string
		for _, h := range left {
			if code, _ := node.Page(80, h); code != 200 {
				next = append(next, h)
			}
		}
		left = next
		if len(left) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d workloads not served 5 minutes after the restart", len(left))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// daemonPid finds the node's daemon process by its data dir.
func daemonPid(t *testing.T, node *harness.Node) int {
	t.Helper()
	pids := pidsWith(t, "cluster\x00--data-dir\x00"+node.DataDir+"\x00")
	if len(pids) != 1 {
		t.Fatalf("found %d hypercore daemons for %s", len(pids), node.DataDir)
	}
	return pids[0]
}

// pidsWith lists the processes whose command line contains s.
func pidsWith(t *testing.T, s string) []int {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []int
	for _, d := range dirs {
		cmd, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !strings.Contains(string(cmd), s) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		out = append(out, pid)
	}
	return out
}

// cpuCores is the CPU the processes use over window, in cores.
func cpuCores(t *testing.T, pids []int, window time.Duration) float64 {
	t.Helper()
	ticks := func() (sum uint64) {
		for _, p := range pids {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
			if err != nil {
				t.Fatalf("process %d is gone: %v", p, err)
			}
			f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
			u, _ := strconv.ParseUint(f[11], 10, 64) // utime, field 14
			s, _ := strconv.ParseUint(f[12], 10, 64) // stime, field 15
			sum += u + s
		}
		return sum
	}
	before := ticks()
	time.Sleep(window)
	return float64(ticks()-before) / 100 / window.Seconds() // USER_HZ is 100
}

func rssKB(t *testing.T, pid int) int64 {
	t.Helper()
	return statusKB(t, fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
}

func memAvailableKB(t *testing.T) int64 { return statusKB(t, "/proc/meminfo", "MemAvailable:") }

func statusKB(t *testing.T, path, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	t.Fatalf("%s has no %s", path, field)
	return 0
}

// settle lets the page cache and background work calm down between
// measurements.
func settle() { time.Sleep(3 * time.Second) }

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// containerd is a private containerd in the bench namespace.
type containerd struct {
	sock, dir string
	ns        *harness.NetNS
	pid       int
}

func startContainerd(t *testing.T, ns *harness.NetNS) *containerd {
	t.Helper()
	dir := t.TempDir()
	c := &containerd{sock: filepath.Join(dir, "containerd.sock"), dir: dir, ns: ns}
	cfg := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf(containerdConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc", filepath.Join(dir, "opt"))
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+ns.Name, "--", "containerd", "--config", cfg, "--address", c.sock)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
		}
		logf.Close()
	})
	for i := 0; c.ctr("version").Run() != nil; i++ {
		if i > 600 {
			t.Fatal("containerd did not answer in 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	pids := pidsWith(t, "containerd\x00--config\x00"+cfg)
	if len(pids) != 1 {
		t.Fatalf("found %d containerd processes", len(pids))
	}
	c.pid = pids[0]
	tarPath := filepath.Join(dir, "image.tar")
	tag, _ := name.NewTag(ctrImage)
	if err := tarball.WriteToFile(tarPath, tag, testutil.HTTPDImage(t)); err != nil {
		t.Fatal(err)
	}
	if out, err := c.ctr("images", "import", "--snapshotter", snapshotter, tarPath).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v: %s", err, out)
	}
	return c
}

func (c *containerd) ctr(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + c.ns.Name, "--", "ctr", "-a", c.sock, "-n", ctrNS}, args...)...)
}

// shimPids lists the shims of the benchmark's containerd namespace.
func shimPids(t *testing.T) []int {
	return pidsWith(t, "containerd-shim-runc-v2\x00-namespace\x00"+ctrNS+"\x00")
}

func (c *containerd) removeAll(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		id := "d-" + strconv.Itoa(i)
		c.ctr("task", "kill", "-s", "SIGKILL", id).Run()
		for range 100 {
			if c.ctr("task", "delete", id).Run() == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if out, err := c.ctr("containers", "delete", id).CombinedOutput(); err != nil {
			t.Errorf("ctr containers delete %s: %v: %s", id, err, out)
		}
	}
}
