package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/runc"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/network"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/volume"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// waitLimit only bounds how long a broken test hangs; nothing asserts on time.
const waitLimit = 60 * time.Second

const testNodeName = "nodetest"

// childEnv names the test a re-executed test binary is to run for real.
const childEnv = "HYPERCORE_NODE_TEST_CHILD"

// isolated re-runs the calling test in a child process that unshare(1) has
// put in fresh network and mount namespaces, so the node's bridge,
// nftables rules, forwarding switch and netns mounts are the child's alone
// and vanish with it. It reports true in the parent, which must return at
// once; the child gets false, with loopback up, and runs the test body.
func isolated(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			t.Fatalf("loopback up: %v", err)
		}
		return false
	}
	if os.Getenv(childEnv) != "" {
		t.Fatalf("child for %s was asked to run %s", os.Getenv(childEnv), t.Name())
	}
	if os.Geteuid() != 0 {
		t.Skip("a node needs root (network namespaces, mounts, cgroups)")
	}
	for _, tool := range []string{"unshare", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (make deps)", tool)
		}
	}
	testutil.Busybox(t)
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--net", "--mount", "--propagation", "private", "--",
		exe, "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v", "-test.timeout=4m")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	switch {
	case err != nil:
		t.Fatalf("test failed in its namespaces: %v\n%s", err, out)
	case strings.Contains(string(out), "--- SKIP: "+t.Name()):
		t.Skipf("skipped in its namespaces:\n%s", out)
	case !strings.Contains(string(out), "--- PASS: "+t.Name()):
		t.Fatalf("test did not run in its namespaces:\n%s", out)
	case testing.Verbose():
		t.Logf("output in its namespaces:\n%s", out)
	}
	return true
}

// env is what outlives one daemon: a data dir, a registry holding the test
// image, and the cgroup the node's workloads go under. Nodes made by start
// on the same env find each other's state, as a restarted daemon does.
type env struct {
	t       *testing.T
	dir     string
	ref     string // the httpd test image in the registry
	missing string // a ref in the same registry that does not exist
	cgroup  string
	cfg     Config
	// runtime is the OCI runtime the driver runs; "runc" when empty.
	runtime string
}

// newEnv makes an env and arranges for everything workloads leave on the
// host (containers, mounts, cgroups) to be removed when the test ends,
// failing the test if something cannot be.
func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	var b [4]byte
	rand.Read(b[:])
	e := &env{t: t, dir: dir, cgroup: "/hypercore-nodetest-" + hex.EncodeToString(b[:])}
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node log:\n%s", logs)
		}
	})
	t.Cleanup(e.scrub)
	host := testutil.Registry(t)
	e.ref, e.missing = host+"/web:1", host+"/missing:1"
	testutil.Push(t, e.ref, testutil.HTTPDImage(t))
	e.cfg = Config{Name: testNodeName, StatusInterval: 50 * time.Millisecond, StopTimeout: 2 * time.Second,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	return e
}

// scrub force-deletes every container the runtime still knows, unmounts
// what is left under the data dir and removes the node's cgroups.
func (e *env) scrub() {
	t := e.t
	root := filepath.Join(e.dir, "containers", "runc-root")
	out, _ := exec.Command("runc", "--root", root, "list", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		t.Errorf("cleanup: container %s was left behind", id)
		if out, err := exec.Command("runc", "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
			t.Errorf("cleanup: runc delete %s: %v: %s", id, err, out)
		}
	}
	testutil.UnmountUnder(t, e.dir)
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		dir := filepath.Join(h, e.cgroup)
		// Workload cgroups first; runc delete removes them, so any
		// here is a leak.
		subs, _ := os.ReadDir(dir)
		for _, s := range subs {
			if s.IsDir() {
				t.Errorf("cleanup: cgroup %s/%s was left behind", dir, s.Name())
				unix.Rmdir(filepath.Join(dir, s.Name()))
			}
		}
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			t.Errorf("cleanup: remove cgroup %s: %v", dir, err)
		}
	}
}

// testNode is a started Node with the parts the daemon gives it, each on
// the env's data dir, and a record of what it reported.
type testNode struct {
	*Node
	e      *env
	st     *store.Bolt
	images *image.Store
	netm   *network.Manager
	runc   *runc.Driver
	// routes is only read by the node (PortOwner); tests reserve ports
	// in it, and check that the node never writes a route.
	routes  *proxy.Table
	reports *reports
	down    bool
}

// reports records every call of Config.Report, in order.
type reports struct {
	mu   sync.Mutex
	list []reported
}

type reported struct {
	id spec.ID
	o  workload.Observation
}

func (r *reports) add(id spec.ID, o workload.Observation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, reported{id, o})
}

// of returns what was reported about id, in order.
func (r *reports) of(id spec.ID) []workload.Observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []workload.Observation
	for _, x := range r.list {
		if x.id == id {
			out = append(out, x.o)
		}
	}
	return out
}

// states returns the states reported about id, in order.
func (r *reports) states(id spec.ID) []workload.State {
	var out []workload.State
	for _, o := range r.of(id) {
		out = append(out, o.State)
	}
	return out
}

// last returns the last observation reported about id.
func (r *reports) last(id spec.ID) (workload.Observation, bool) {
	list := r.of(id)
	if len(list) == 0 {
		return workload.Observation{}, false
	}
	return list[len(list)-1], true
}

// start makes and starts a node as runDaemon does; shutdown (or the end
// of the test) stops it as a daemon exits, leaving workloads running.
func (e *env) start() *testNode {
	t := e.t
	t.Helper()
	tn := &testNode{e: e, routes: proxy.NewTable(), reports: &reports{}}
	var err error
	if tn.st, err = store.OpenBolt(filepath.Join(e.dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	if tn.images, err = image.Open(filepath.Join(e.dir, "images")); err != nil {
		t.Fatal(err)
	}
	if tn.netm, err = network.New(network.Config{StateDir: filepath.Join(e.dir, "network")}); err != nil {
		t.Fatal(err)
	}
	if tn.runc, err = e.driver(); err != nil {
		t.Fatal(err)
	}
	vols, err := volume.Open(filepath.Join(e.dir, "volumes"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.cfg
	cfg.Report = tn.reports.add
	tn.Node, err = New(cfg, Parts{
		Store: tn.st, Images: tn.images, Network: tn.netm, Routes: tn.routes, Volumes: vols,
		Drivers: map[spec.Isolation]driver.Driver{spec.IsolationContainer: tn.runc},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tn.shutdown)
	return tn
}

// driver returns a runc driver on the env's container state dir.
func (e *env) driver() (*runc.Driver, error) {
	return runc.New(runc.Options{Runtime: e.runtime, StateDir: filepath.Join(e.dir, "containers"), CgroupParent: e.cgroup, LogCheckEvery: -1})
}

// shutdown closes the node and its parts, as the daemon does on SIGTERM.
func (tn *testNode) shutdown() {
	if tn.down {
		return
	}
	tn.down = true
	tn.Close()
	tn.runc.Close()
	tn.netm.Close()
	tn.images.Close()
	tn.st.Close()
}

// removeAll removes every workload through the node, as a user would
// before the test's scrub checks that nothing is left.
func (tn *testNode) removeAll() {
	t := tn.e.t
	t.Helper()
	list, err := tn.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range list {
		if err := tn.Remove(ctx(t), w.ID); err != nil {
			t.Errorf("remove %s: %v", w.ID, err)
		}
	}
}

// spawned is a workload a test had the node run: its id and what Run
// answered.
type spawned struct {
	ID spec.ID
	workload.Observation
}

// alloc is the allocation of s to this node, as the scheduler makes it.
func (tn *testNode) alloc(s spec.Spec) workload.Allocation {
	return workload.Allocation{
		ID: spec.NewID(), Spec: s, Node: tn.Name(), Desired: workload.DesiredRunning,
		Generation: 1, CreatedAt: time.Now().UTC(),
	}
}

// spawn has the node run body (a /spawn JSON body without image_ref,
// which is the env's image) and fails the test if it does not start.
func (tn *testNode) spawn(body string) spawned {
	t := tn.e.t
	t.Helper()
	a := tn.alloc(tn.e.request(body).Spec)
	o, err := tn.Run(ctx(t), a)
	if err != nil {
		t.Fatalf("run %s: %v", body, err)
	}
	return spawned{a.ID, o}
}

// request builds a spawn request from a /spawn JSON body; image_ref is
// the env's image unless the body names one.
func (e *env) request(body string) spec.SpawnRequest {
	e.t.Helper()
	if !strings.Contains(body, `"image_ref"`) {
		body = strings.Replace(body, "{", `{"image_ref":"`+e.ref+`",`, 1)
		body = strings.Replace(body, ",}", "}", 1)
	}
	req, err := spec.DecodeSpawnJSON(strings.NewReader(body))
	if err != nil {
		e.t.Fatalf("spawn body %s: %v", body, err)
	}
	return req
}

// status is what the runtime says of id.
func (tn *testNode) status(id spec.ID) (driver.Status, error) {
	return tn.runc.Status(ctx(tn.e.t), id)
}

// record is the node's store record of id.
func (tn *testNode) record(id spec.ID) (store.Record, error) {
	return tn.st.Get(id)
}

// page fetches / from the workload's httpd at ip.
func page(ip string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(ip, strconv.Itoa(testutil.HTTPPort)) + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// mustServe fails the test unless the workload at ip serves the test page.
func mustServe(t *testing.T, ip string) {
	t.Helper()
	if body, err := page(ip); err != nil || body != testutil.IndexHTML {
		t.Fatalf("page of %s: %q %v, want the test page", ip, body, err)
	}
}

// containers lists the ids the runtime knows.
func (e *env) containers() []string {
	out, err := exec.Command("runc", "--root", filepath.Join(e.dir, "containers", "runc-root"), "list", "-q").Output()
	if err != nil {
		e.t.Fatalf("runc list: %v", err)
	}
	return strings.Fields(string(out))
}

// leftovers describes every trace of a workload on the node: records,
// observations, routes (which the node must never write), leases, runtime
// containers, workload dirs and netns mounts. It is empty when the node
// holds nothing.
func (tn *testNode) leftovers() []string {
	t := tn.e.t
	t.Helper()
	var left []string
	list, err := tn.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range list {
		left = append(left, "record "+r.ID.String())
	}
	for id := range tn.Observations() {
		left = append(left, "observation of "+id.String())
	}
	if n := tn.routes.Len(); n > 0 {
		left = append(left, strconv.Itoa(n)+" routes")
	}
	leases, err := tn.netm.Leases()
	if err != nil {
		t.Fatal(err)
	}
	for id, ip := range leases {
		left = append(left, "lease "+ip.String()+" of "+id.String())
	}
	for _, id := range tn.e.containers() {
		left = append(left, "container "+id)
	}
	dirs, _ := os.ReadDir(filepath.Join(tn.e.dir, "containers"))
	for _, d := range dirs {
		if spec.ValidateID(d.Name()) == nil {
			left = append(left, "container dir "+d.Name())
		}
	}
	nsDirs, _ := os.ReadDir(filepath.Join(tn.e.dir, "network", "netns"))
	for _, d := range nsDirs {
		left = append(left, "netns "+d.Name())
	}
	return left
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return c
}

// logBuffer holds the node's log, which the test shows if it fails. A
// buffer rather than t.Log, since node goroutines may log after the test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
