package node

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/network"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// TestSpawnStopRemove follows one workload through its life: spawned, it
// runs, serves, is routed and holds a lease; stopped, it keeps its record
// and logs but nothing on the host; removed, nothing of it is left.
func TestSpawnStopRemove(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	w := n.spawn(`{"memory":64,"ports":{"80":8080},"env":["A=b"]}`)
	ip, err := netip.ParseAddr(w.IP)
	if err != nil || !network.DefaultSubnet.Contains(ip) {
		t.Fatalf("spawned workload's IP %q is not in %s", w.IP, network.DefaultSubnet)
	}
	if w.State != store.StateRunning || w.Desired != store.DesiredRunning || !w.Ready || w.Pid <= 0 ||
		w.Node != testNodeName || !strings.HasPrefix(w.ImageDigest, "sha256:") {
		t.Fatalf("spawned workload %+v, want running, ready, with a pid and the image digest", w)
	}
	if got, err := n.Get(w.ID); err != nil || got.Pid != w.Pid || got.State != store.StateRunning {
		t.Fatalf("record after spawn: %+v %v", got, err)
	}
	mustServe(t, w.IP)
	if st, err := n.status(w.ID); err != nil || st.State != driver.StateRunning || st.Pid != w.Pid {
		t.Fatalf("runtime says %+v %v, want running with pid %d", st, err, w.Pid)
	}
	if r, ok := n.routes.Lookup(w.ID); !ok || !r.Ready || r.HTTP[80] != w.IP+":8080" {
		t.Fatalf("route %+v (found: %v), want port 80 to %s:8080, ready", r, ok, w.IP)
	}
	if a, ok := n.netm.Lookup(w.ID); !ok || a.IP.String() != w.IP {
		t.Fatalf("lease %+v (found: %v), want %s", a, ok, w.IP)
	}
	var env bytes.Buffer
	if code, err := n.Exec(ctx(t), w.ID, driver.ExecConfig{Args: []string{"env"}, IO: driver.IO{Stdout: &env}}); err != nil || code != 0 {
		t.Fatalf("exec env: %d %v", code, err)
	}
	if !strings.Contains(env.String(), "A=b\n") || !strings.Contains(env.String(), "GREETING=hello\n") {
		t.Errorf("workload env %q lacks the spawn's A=b or the image's GREETING", env.String())
	}

	// Run with the same id, as a retried placement would, starts nothing new.
	again, err := n.Run(ctx(t), w)
	if err != nil || again.Pid != w.Pid || len(e.containers()) != 1 {
		t.Fatalf("Run of a running id: %+v %v, %d containers; want the same workload and one container", again, err, len(e.containers()))
	}

	stopped, err := n.Stop(ctx(t), w.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if stopped.State != store.StateStopped || stopped.Desired != store.DesiredStopped || stopped.Pid != 0 || stopped.IP != "" || stopped.Ready {
		t.Errorf("after stop: %+v, want stopped with no pid, IP or readiness", stopped)
	}
	if st, err := n.status(w.ID); err != nil || st.State != driver.StateStopped {
		t.Errorf("runtime after stop: %+v %v, want stopped", st, err)
	}
	if _, ok := n.routes.Lookup(w.ID); ok {
		t.Error("the route is still there after stop")
	}
	if _, ok := n.netm.Lookup(w.ID); ok {
		t.Error("the lease is still held after stop")
	}
	logs := readLogs(t, n, w.ID)
	if !strings.Contains(logs, "response:200") {
		t.Errorf("logs after stop = %q, want httpd's line for the page served", logs)
	}
	// A second stop changes nothing and does not fail.
	if again, err := n.Stop(ctx(t), w.ID, 0); err != nil || again.State != store.StateStopped {
		t.Errorf("second stop: %+v %v", again, err)
	}

	if err := n.Remove(ctx(t), w.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Get(w.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after remove: %v, want ErrNotFound", err)
	}
	if _, err := n.status(w.ID); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("runtime after remove: %v, want ErrNotFound", err)
	}
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("after remove, left behind: %v", left)
	}
	for name, err := range map[string]error{
		"remove": n.Remove(ctx(t), w.ID),
		"stop":   second(n.Stop(ctx(t), w.ID, 0)),
		"logs":   second(n.Logs(ctx(t), w.ID, driver.LogOptions{})),
		"exec":   second(n.Exec(ctx(t), w.ID, driver.ExecConfig{Args: []string{"true"}})),
	} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of a removed workload: %v, want ErrNotFound", name, err)
		}
	}
}

// TestRemoveRunningKillsIt checks that Remove needs no Stop first, as
// `docker rm -f`.
func TestRemoveRunningKillsIt(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	w := n.spawn(`{"ports":{"80":8080}}`)
	if err := n.Remove(ctx(t), w.ID); err != nil {
		t.Fatal(err)
	}
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("after removing a running workload, left behind: %v", left)
	}
}

// TestPortConflicts checks that a raw TCP public port belongs to one
// running workload on a node, and to nothing the daemon reserved, while
// HTTP ports are shared by host name; a refused spawn leaves nothing.
func TestPortConflicts(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	n.routes.Reserve(8000, "the API")
	a := n.spawn(`{"memory":32,"ports":{"80":8080,"5432":8080}}`)

	for _, dry := range []bool{false, true} {
		req := e.request(`{"memory":32,"ports":{"443":8080,"5432":8080}}`)
		req.DryRun = dry
		_, err := n.Spawn(ctx(t), req)
		if !errors.Is(err, ErrNoCapacity) || !strings.Contains(err.Error(), "5432") || !strings.Contains(err.Error(), a.ID) {
			t.Errorf("second workload on TCP port 5432 (dry run %v): %v, want ErrNoCapacity naming the port and %s", dry, err, a.ID)
		}
	}
	_, err := n.Spawn(ctx(t), e.request(`{"memory":32,"ports":{"8000":8080}}`))
	if !errors.Is(err, ErrNoCapacity) || !strings.Contains(err.Error(), "the API") {
		t.Errorf("workload on the API's port: %v, want ErrNoCapacity naming the API", err)
	}
	if list, _ := n.List(); len(list) != 1 {
		t.Errorf("refused spawns left records: %v", list)
	}
	if leases, _ := n.netm.Leases(); len(leases) != 1 {
		t.Errorf("refused spawns left leases: %v", leases)
	}

	// Port 80 is HTTP, routed by host name: a second workload may map it.
	b := n.spawn(`{"memory":32,"ports":{"80":8080}}`)
	mustServe(t, b.IP)

	// A stopped workload holds no port.
	if _, err := n.Stop(ctx(t), a.ID, 0); err != nil {
		t.Fatal(err)
	}
	c := n.spawn(`{"memory":32,"ports":{"5432":8080}}`)
	if r, ok := n.routes.Lookup(c.ID); !ok || r.TCP[5432] != c.IP+":8080" {
		t.Errorf("route of the new owner of 5432: %+v %v", r, ok)
	}
	n.removeAll()
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestConcurrentSpawnsShareNoPort spawns several workloads at once on the
// same raw TCP port, and then on more memory than the node has for two:
// placement must let exactly one through each time.
func TestConcurrentSpawnsShareNoPort(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	half := n.Info().MemoryMiB/2 + 1
	for _, body := range []string{
		`{"memory":32,"ports":{"7000":8080}}`,
		`{"memory":` + strconv.FormatInt(half, 10) + `}`,
	} {
		const tries = 4
		errs := make(chan error, tries)
		for range tries {
			go func() {
				_, err := n.Spawn(ctx(t), e.request(body))
				errs <- err
			}()
		}
		won := 0
		for range tries {
			switch err := <-errs; {
			case err == nil:
				won++
			case !errors.Is(err, ErrNoCapacity):
				t.Errorf("%s: %v, want ErrNoCapacity for all but one", body, err)
			}
		}
		if list, _ := n.List(); won != 1 || len(list) != 1 {
			t.Errorf("%s: %d of %d concurrent spawns won, %d records; want exactly one", body, won, tries, len(list))
		}
		n.removeAll()
	}
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRefusedSpawnsLeaveNothing checks every way a spawn can fail, before
// or after the node began making the workload, and that none leaves a
// record, lease, route, container, mount or directory behind.
func TestRefusedSpawnsLeaveNothing(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	cases := []struct {
		name, body string
		want       error
	}{
		{"image not in the registry", `{"image_ref":"` + e.missing + `"}`, image.ErrNotFound},
		{"isolation the node lacks", `{"isolation":"microvm"}`, ErrUnsupported},
		{"more memory than the node", `{"memory":1048576}`, ErrNoCapacity},
		{"more cores than the node", `{"cores":256}`, ErrNoCapacity},
		// This one fails in the runtime, after the lease and netns exist.
		{"program not in the image", `{"args":["/no/such/program"]}`, nil},
	}
	for _, c := range cases {
		w, err := n.Spawn(ctx(t), e.request(c.body))
		switch {
		case err == nil:
			t.Errorf("%s: spawned %s, want an error", c.name, w.ID)
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		default:
			t.Logf("%s: %v", c.name, err)
		}
		if left := n.leftovers(); len(left) > 0 {
			t.Errorf("%s: left behind: %v", c.name, left)
		}
	}

	// A dry run places without making anything.
	req := e.request(`{"ports":{"5432":8080}}`)
	req.DryRun = true
	w, err := n.Spawn(ctx(t), req)
	if err != nil || w.Node != testNodeName {
		t.Errorf("dry run: %+v %v, want this node", w, err)
	}
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("dry run left behind: %v", left)
	}

	// The node still spawns after all that.
	ok := n.spawn(`{"ports":{"80":8080}}`)
	mustServe(t, ok.IP)
	n.removeAll()
}

// TestExitedWorkloadIsMarked checks that the watcher records a workload
// whose process ends by itself as exited, keeps its route (so its URL
// answers 502, not 404), and that it can still be removed.
func TestExitedWorkloadIsMarked(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	w := n.spawn(`{"ports":{"80":8080},"args":["sh","-c","httpd -p 8080 -h /www; while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 3"]}`)
	if w.State != store.StateRunning {
		t.Fatalf("spawned %+v, want running", w)
	}
	var out bytes.Buffer
	if code, err := n.Exec(ctx(t), w.ID, driver.ExecConfig{Args: []string{"mkdir", "/tmp/go"}, IO: driver.IO{Stdout: &out, Stderr: &out}}); err != nil || code != 0 {
		t.Fatalf("exec mkdir: %d %v %s", code, err, out.String())
	}
	testutil.WaitFor(t, waitLimit, "the workload to be marked exited", func() bool {
		got, err := n.Get(w.ID)
		return err == nil && got.State == store.StateExited
	})
	got, _ := n.Get(w.ID)
	if got.Pid != 0 || got.Ready || got.Desired != store.DesiredRunning {
		t.Errorf("exited workload %+v, want no pid, not ready, still desired running", got)
	}
	if _, ok := n.routes.Lookup(w.ID); !ok {
		t.Error("the route of an exited workload is gone")
	}
	if err := n.Remove(ctx(t), w.ID); err != nil {
		t.Fatal(err)
	}
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRestartReadoptsRunningWorkload stops the daemon (the workload keeps
// running) and starts a new one on the same data dir, which must adopt the
// same process with its address and route, and be able to manage it.
func TestRestartReadoptsRunningWorkload(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	w := n.spawn(`{"ports":{"80":8080,"tcp:2222":8080}}`)
	n.shutdown()
	mustServe(t, w.IP) // a daemon going away leaves workloads alone

	n2 := e.start()
	got, err := n2.Get(w.ID)
	if err != nil || got.State != store.StateRunning || got.Pid != w.Pid || got.IP != w.IP {
		t.Fatalf("after restart: %+v %v, want running with pid %d and IP %s", got, err, w.Pid, w.IP)
	}
	if r, ok := n2.routes.Lookup(w.ID); !ok || r.HTTP[80] != w.IP+":8080" || r.TCP[2222] != w.IP+":8080" {
		t.Errorf("route after restart: %+v (found: %v)", r, ok)
	}
	if a, ok := n2.netm.Lookup(w.ID); !ok || a.IP.String() != w.IP {
		t.Errorf("lease after restart: %+v %v", a, ok)
	}
	mustServe(t, w.IP)
	// The adopted workload still holds its TCP port.
	if _, err := n2.Spawn(ctx(t), e.request(`{"ports":{"2222":8080}}`)); !errors.Is(err, ErrNoCapacity) {
		t.Errorf("spawn on the adopted workload's TCP port: %v, want ErrNoCapacity", err)
	}
	if out := execOut(t, n2, w.ID, "echo", "adopted"); out != "adopted\n" {
		t.Errorf("exec after restart: %q", out)
	}
	n2.removeAll()
	if left := n2.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRestartRestartsWorkloadThatDied kills a workload while no daemon
// runs, as a host reboot does; the next daemon must start it again, with
// the same address.
func TestRestartRestartsWorkloadThatDied(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	w := n.spawn(`{"ports":{"80":8080}}`)
	n.shutdown()
	d, err := e.driver()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(ctx(t), w.ID, 0); err != nil {
		t.Fatal(err)
	}
	d.Close()

	n2 := e.start()
	got, err := n2.Get(w.ID)
	if err != nil || got.State != store.StateRunning || got.Pid <= 0 || got.Pid == w.Pid || got.IP != w.IP {
		t.Fatalf("after restart: %+v %v, want running again with a new pid and IP %s", got, err, w.IP)
	}
	testutil.WaitFor(t, waitLimit, "the restarted workload to serve", func() bool { _, err := page(w.IP); return err == nil })
	mustServe(t, w.IP)
	testutil.WaitFor(t, waitLimit, "the restarted workload to be ready", func() bool {
		r, ok := n2.routes.Lookup(w.ID)
		return ok && r.Ready
	})
	n2.removeAll()
	if left := n2.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRestartFinishesInterruptedStop leaves a workload as a daemon killed
// in the middle of Stop does, desired stopped but still running, and
// checks that the next daemon finishes the stop and frees its network.
func TestRestartFinishesInterruptedStop(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	w := n.spawn(`{"ports":{"80":8080}}`)
	// Stop's first step, and the crash right after it.
	if _, err := n.st.Update(w.ID, func(r *store.Workload) error { r.Desired = store.DesiredStopped; return nil }); err != nil {
		t.Fatal(err)
	}
	n.shutdown()

	n2 := e.start()
	got, err := n2.Get(w.ID)
	if err != nil || got.State != store.StateStopped || got.Pid != 0 || got.IP != "" {
		t.Errorf("after restart: %+v %v, want stopped", got, err)
	}
	if st, err := n2.status(w.ID); err != nil || st.State != driver.StateStopped {
		t.Errorf("runtime after restart: %+v %v, want stopped", st, err)
	}
	if _, ok := n2.routes.Lookup(w.ID); ok {
		t.Error("a stopped workload got a route back")
	}
	if _, ok := n2.netm.Lookup(w.ID); ok {
		t.Error("a stopped workload kept its lease")
	}
	n2.removeAll()
	if left := n2.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRestartFinishesInterruptedSpawn starts a daemon on a record left in
// the creating state, as a crash in the middle of Spawn leaves it, and
// checks that the workload is started from scratch.
func TestRestartFinishesInterruptedSpawn(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	st, err := store.OpenBolt(filepath.Join(e.dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	w := store.Workload{ID: string(spec.NewID()), Spec: e.request(`{"ports":{"80":8080}}`).Spec, Desired: store.DesiredRunning,
		State: store.StateCreating, Node: testNodeName}
	err = st.Create(w)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	n := e.start()
	got, err := n.Get(w.ID)
	if err != nil || got.State != store.StateRunning || got.Pid <= 0 || got.IP == "" {
		t.Fatalf("after start: %+v %v, want the workload running", got, err)
	}
	testutil.WaitFor(t, waitLimit, "the workload to serve", func() bool { _, err := page(got.IP); return err == nil })
	mustServe(t, got.IP)
	n.removeAll()
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRestartReleasesStrayLeases checks that a lease with no record, as a
// crash between the lease and the record's removal leaves, is released
// at start.
func TestRestartReleasesStrayLeases(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	stray := string(spec.NewID())
	if _, err := n.netm.Attach(ctx(t), stray); err != nil {
		t.Fatal(err)
	}
	n.shutdown()
	n2 := e.start()
	if left := n2.leftovers(); len(left) > 0 {
		t.Errorf("after restart, left behind: %v", left)
	}
}

// readLogs returns the whole log of id.
func readLogs(t *testing.T, n *testNode, id string) string {
	t.Helper()
	rc, err := n.Logs(ctx(t), id, driver.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// execOut runs args in id and returns its stdout, failing unless it exits 0.
func execOut(t *testing.T, n *testNode, id string, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	code, err := n.Exec(ctx(t), id, driver.ExecConfig{Args: args, IO: driver.IO{Stdout: &out, Stderr: &errOut}})
	if err != nil || code != 0 {
		t.Fatalf("exec %q: %d %v %s", args, code, err, errOut.String())
	}
	return out.String()
}

// second returns the error of a two-valued call.
func second[T any](_ T, err error) error { return err }
