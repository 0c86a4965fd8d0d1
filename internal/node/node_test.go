package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/network"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// TestRunStopRemove follows one workload through its life: run, it runs,
// serves, holds a lease and is observed running and ready, with no route
// written by the node; stopped, it keeps its record and logs but nothing on
// the host; removed, nothing of it is left, its observation included.
func TestRunStopRemove(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	a := n.alloc(e.request(`{"memory":64,"ports":{"80":8080},"env":["A=b"]}`).Spec)
	a.Generation = 7
	w, err := n.Run(ctx(t), a)
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(w.IP)
	if err != nil || !network.DefaultSubnet.Contains(ip) {
		t.Fatalf("the workload's IP %q is not in %s", w.IP, network.DefaultSubnet)
	}
	if w.State != workload.StateRunning || !w.Ready || w.Pid <= 0 || w.Node != testNodeName || w.Generation != 7 ||
		!strings.HasPrefix(w.ImageDigest, "sha256:") || w.StartedAt.IsZero() || w.Error != "" {
		t.Fatalf("Run answered %+v, want running, ready, with a pid, the image digest, a start time, this node and generation 7", w)
	}
	if got, ok := n.Observation(a.ID); !ok || got != w {
		t.Fatalf("Observation after Run: %+v (found: %v), want what Run answered %+v", got, ok, w)
	}
	if last, _ := n.reports.last(a.ID); last != w {
		t.Errorf("last report %+v, want what Run answered %+v", last, w)
	}
	if r, err := n.record(a.ID); err != nil || r.State != workload.StateRunning || r.Desired != workload.DesiredRunning ||
		r.Generation != 7 || r.ImageDigest != w.ImageDigest || r.Spec.MemoryMiB != 64 {
		t.Fatalf("record after Run: %+v %v", r, err)
	}
	mustServe(t, w.IP)
	if st, err := n.status(a.ID); err != nil || st.State != driver.StateRunning || st.Pid != w.Pid {
		t.Fatalf("runtime says %+v %v, want running with pid %d", st, err, w.Pid)
	}
	if n.routes.Len() != 0 {
		t.Errorf("the node wrote %d routes; routes are derived from its reports, never written by it", n.routes.Len())
	}
	if l, ok := n.netm.Lookup(a.ID); !ok || l.IP.String() != w.IP {
		t.Fatalf("lease %+v (found: %v), want %s", l, ok, w.IP)
	}
	var env bytes.Buffer
	if code, err := n.Exec(ctx(t), a.ID, driver.ExecConfig{Args: []string{"env"}, IO: driver.IO{Stdout: &env}}); err != nil || code != 0 {
		t.Fatalf("exec env: %d %v", code, err)
	}
	if !strings.Contains(env.String(), "A=b\n") || !strings.Contains(env.String(), "GREETING=hello\n") {
		t.Errorf("workload env %q lacks the allocation's A=b or the image's GREETING", env.String())
	}

	// Run with the same id, as a retried call would, starts nothing new
	// and reports nothing new.
	before := len(n.reports.of(a.ID))
	again, err := n.Run(ctx(t), a)
	if err != nil || again != w || len(e.containers()) != 1 || len(n.reports.of(a.ID)) != before {
		t.Fatalf("Run of a running id: %+v %v, %d containers, %d new reports; want the same observation, one container, no report",
			again, err, len(e.containers()), len(n.reports.of(a.ID))-before)
	}

	stopped, err := n.Stop(ctx(t), a.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if stopped.State != workload.StateStopped || stopped.Pid != 0 || stopped.IP != "" || stopped.Ready ||
		stopped.FinishedAt.IsZero() || stopped.Generation != 7 || stopped.ImageDigest != w.ImageDigest {
		t.Errorf("after stop: %+v, want stopped with no pid, IP or readiness, an end time, and generation and digest kept", stopped)
	}
	if last, _ := n.reports.last(a.ID); last != stopped {
		t.Errorf("last report after stop %+v, want %+v", last, stopped)
	}
	if r, err := n.record(a.ID); err != nil || r.Desired != workload.DesiredStopped || r.State != workload.StateStopped {
		t.Errorf("record after stop: %+v %v, want desired and state stopped", r, err)
	}
	if st, err := n.status(a.ID); err != nil || st.State != driver.StateStopped {
		t.Errorf("runtime after stop: %+v %v, want stopped", st, err)
	}
	if _, ok := n.netm.Lookup(a.ID); ok {
		t.Error("the lease is still held after stop")
	}
	logs := readLogs(t, n, a.ID)
	if !strings.Contains(logs, "response:200") {
		t.Errorf("logs after stop = %q, want httpd's line for the page served", logs)
	}
	// A second stop changes nothing, reports nothing and does not fail.
	before = len(n.reports.of(a.ID))
	if again, err := n.Stop(ctx(t), a.ID, 0); err != nil || again != stopped || len(n.reports.of(a.ID)) != before {
		t.Errorf("second stop: %+v %v, %d new reports; want %+v and none", again, err, len(n.reports.of(a.ID))-before, stopped)
	}

	if err := n.Remove(ctx(t), a.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Observation(a.ID); ok {
		t.Error("Observation after remove still has the workload")
	}
	if _, err := n.status(a.ID); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("runtime after remove: %v, want ErrNotFound", err)
	}
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("after remove, left behind: %v", left)
	}
	for name, err := range map[string]error{
		"remove": n.Remove(ctx(t), a.ID),
		"stop":   second(n.Stop(ctx(t), a.ID, 0)),
		"logs":   second(n.Logs(ctx(t), a.ID, driver.LogOptions{})),
		"exec":   second(n.Exec(ctx(t), a.ID, driver.ExecConfig{Args: []string{"true"}})),
	} {
		if !errors.Is(err, workload.ErrNotFound) {
			t.Errorf("%s of a removed workload: %v, want workload.ErrNotFound", name, err)
		}
	}
}

// TestReportSequenceOfAnExitingWorkload runs a workload that serves, then
// exits by itself, and checks that Report heard each step once and in
// order: creating, running (IP, pid, digest, start time), ready, exited
// (exit code, end time), all from this node for the allocation's
// generation; and that the exited workload keeps its record, is still
// desired running, and can be removed.
func TestReportSequenceOfAnExitingWorkload(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	a := n.alloc(e.request(`{"ports":{"80":8080},"args":["sh","-c","httpd -p 8080 -h /www; while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 3"]}`).Spec)
	a.Generation = 4
	w, err := n.Run(ctx(t), a)
	if err != nil {
		t.Fatal(err)
	}
	if w.State != workload.StateRunning || !w.Ready {
		t.Fatalf("Run answered %+v, want running and ready", w)
	}
	var out bytes.Buffer
	if code, err := n.Exec(ctx(t), a.ID, driver.ExecConfig{Args: []string{"mkdir", "/tmp/go"}, IO: driver.IO{Stdout: &out, Stderr: &out}}); err != nil || code != 0 {
		t.Fatalf("exec mkdir: %d %v %s", code, err, out.String())
	}
	testutil.WaitFor(t, waitLimit, "the workload to be reported exited", func() bool {
		o, ok := n.reports.last(a.ID)
		return ok && o.State == workload.StateExited
	})
	st, err := n.status(a.ID)
	if err != nil || st.State != driver.StateStopped {
		t.Fatalf("runtime after the exit: %+v %v", st, err)
	}

	got := n.reports.of(a.ID)
	want := []workload.State{workload.StateCreating, workload.StateRunning, workload.StateRunning, workload.StateExited}
	if states := n.reports.states(a.ID); !slices.Equal(states, want) {
		t.Fatalf("reported states %v, want %v (creating, running, running and ready, exited): %+v", states, want, got)
	}
	for i, o := range got {
		if o.Node != testNodeName || o.Generation != 4 || o.Error != "" {
			t.Errorf("report %d: %+v, want node %s, generation 4, no error", i, o, testNodeName)
		}
	}
	creating, running, ready, exited := got[0], got[1], got[2], got[3]
	if creating.IP != "" || creating.Pid != 0 || creating.Ready {
		t.Errorf("creating report %+v has what only a running workload has", creating)
	}
	if running.Ready || running.IP != w.IP || running.Pid != w.Pid || running.ImageDigest != w.ImageDigest || running.StartedAt.IsZero() {
		t.Errorf("running report %+v, want not yet ready, with the IP, pid, digest and start time of %+v", running, w)
	}
	readied := running
	readied.Ready = true
	if readied != ready || ready != w {
		t.Errorf("ready report %+v, want the running report made ready, as Run answered %+v", ready, w)
	}
	if exited.Pid != 0 || exited.Ready || exited.ExitCode != st.ExitCode || exited.ExitCode != 3 ||
		exited.FinishedAt.Before(exited.StartedAt) || exited.StartedAt != running.StartedAt || exited.ImageDigest != w.ImageDigest {
		t.Errorf("exited report %+v, want no pid, not ready, exit code 3 as the driver's %d, an end time after the start", exited, st.ExitCode)
	}
	if o, ok := n.Observation(a.ID); !ok || o != exited {
		t.Errorf("Observation %+v (found: %v), want the last report %+v", o, ok, exited)
	}
	if r, err := n.record(a.ID); err != nil || r.State != workload.StateExited || r.ExitCode != st.ExitCode || r.Desired != workload.DesiredRunning {
		t.Errorf("record %+v %v, want exited with exit code %d, still desired running", r, err, st.ExitCode)
	}
	// Nothing more happens to an exited workload until it is told.
	time.Sleep(5 * e.cfg.StatusInterval)
	if after := n.reports.of(a.ID); len(after) != len(got) {
		t.Errorf("reports after the exit: %+v", after[len(got):])
	}
	if err := n.Remove(ctx(t), a.ID); err != nil {
		t.Fatal(err)
	}
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
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
	if states := n.reports.states(w.ID); states[len(states)-1] != workload.StateStopped {
		t.Errorf("reports %v, want the workload reported stopped last", states)
	}
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("after removing a running workload, left behind: %v", left)
	}
}

// TestRunAdmitsOnlyWhatTheSchedulerCannotKnow checks the node's own
// admission check: a raw TCP public port held on the host by something
// that is not a workload (here the API) is refused, with an error that
// names the port and its holder and says the scheduler could not know,
// and leaves nothing behind. What the scheduler owns, the node does not
// check again: more memory than the host has, and a TCP port another
// workload here maps, both run.
func TestRunAdmitsOnlyWhatTheSchedulerCannotKnow(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	n.routes.Reserve(8000, "the API")
	n.routes.Reserve(443, "the HTTPS proxy")

	a := n.alloc(e.request(`{"memory":32,"ports":{"tcp:8000":8080}}`).Spec)
	_, err := n.Run(ctx(t), a)
	if !errors.Is(err, ErrPortInUse) || !errors.Is(err, ErrNoCapacity) || !strings.Contains(err.Error(), "8000") ||
		!strings.Contains(err.Error(), "the API") || !strings.Contains(err.Error(), "scheduler could not know") {
		t.Errorf("Run on the API's TCP port: %v, want ErrPortInUse (an ErrNoCapacity) naming port 8000, the API, and the scheduler", err)
	}
	if o, ok := n.reports.last(a.ID); !ok || o.State != workload.StateExited || o.Error != err.Error() || o.Node != testNodeName {
		t.Errorf("report of the refused run: %+v (found: %v), want exited with its error", o, ok)
	}
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("a refused run left behind: %v", left)
	}

	// An HTTP port is routed by host name through the daemon's own
	// listener, so that listener holding the number is no conflict.
	b := n.spawn(`{"memory":32,"ports":{"443":8080}}`)
	mustServe(t, b.IP)
	c := n.spawn(`{"memory":32,"ports":{"tcp:5432":8080}}`)
	d := n.spawn(`{"memory":` + itoa(2*n.Info().MemoryMiB) + `,"ports":{"tcp:5432":8080}}`)
	for _, w := range []spawned{c, d} {
		if w.State != workload.StateRunning {
			t.Errorf("%s: %+v, want it run: placement is the scheduler's", w.ID, w.Observation)
		}
	}
	n.removeAll()
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRefusedRunsLeaveNothing checks every way a run can fail, before or
// after the node began making the workload: each returns its error,
// reports the workload exited with that error, and leaves no record,
// observation, lease, container, mount or directory behind.
func TestRefusedRunsLeaveNothing(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	cases := []struct {
		name, body string
		want       error
		says       string
	}{
		{"image not in the registry", `{"image_ref":"` + e.missing + `"}`, image.ErrNotFound, ""},
		{"isolation the node lacks", `{"isolation":"microvm","memory":256}`, ErrUnsupported, "scheduler could not know"},
		// This one fails in the runtime, after the lease and netns exist.
		{"program not in the image", `{"args":["/no/such/program"]}`, nil, "/no/such/program"},
	}
	for _, c := range cases {
		a := n.alloc(e.request(c.body).Spec)
		o, err := n.Run(ctx(t), a)
		switch {
		case err == nil:
			t.Errorf("%s: ran %+v, want an error", c.name, o)
			continue
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		case !strings.Contains(err.Error(), c.says):
			t.Errorf("%s: %v, want it to say %q", c.name, err, c.says)
		default:
			t.Logf("%s: %v", c.name, err)
		}
		if last, ok := n.reports.last(a.ID); !ok || last.State != workload.StateExited || last.Error != err.Error() {
			t.Errorf("%s: last report %+v (found: %v), want exited with the error", c.name, last, ok)
		}
		if left := n.leftovers(); len(left) > 0 {
			t.Errorf("%s: left behind: %v", c.name, left)
		}
	}

	// An allocation for another node is not this node's to run.
	a := n.alloc(e.request(`{}`).Spec)
	a.Node = "elsewhere"
	if _, err := n.Run(ctx(t), a); err == nil || !strings.Contains(err.Error(), "elsewhere") {
		t.Errorf("Run of another node's allocation: %v, want an error naming that node", err)
	}
	if left := n.leftovers(); len(left) > 0 {
		t.Errorf("another node's allocation left behind: %v", left)
	}

	// The node still runs workloads after all that.
	ok := n.spawn(`{"ports":{"80":8080}}`)
	mustServe(t, ok.IP)
	n.removeAll()
}

// TestRestartReadoptsRunningWorkload stops the daemon (the workload keeps
// running) and starts a new one, under another node name, on the same
// data dir: it must adopt the same process with its address, report it,
// and be able to manage it. The name changes because every record in the
// store is the node's own, whatever it was called when it wrote it.
func TestRestartReadoptsRunningWorkload(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	w := n.spawn(`{"ports":{"80":8080,"tcp:2222":8080}}`)
	n.shutdown()
	mustServe(t, w.IP) // a daemon going away leaves workloads alone

	e.cfg.Name = "renamed"
	n2 := e.start()
	got, ok := n2.Observation(w.ID)
	if !ok || got.State != workload.StateRunning || got.Pid != w.Pid || got.IP != w.IP || !got.Ready ||
		got.Node != "renamed" || got.Generation != w.Generation || got.ImageDigest != w.ImageDigest {
		t.Fatalf("after restart: %+v (found: %v), want running and ready with pid %d, IP %s, on node renamed", got, ok, w.Pid, w.IP)
	}
	if states := n2.reports.states(w.ID); !slices.Equal(states, []workload.State{workload.StateRunning}) {
		t.Errorf("reports at restart %v, want one: running", states)
	}
	if l, ok := n2.netm.Lookup(w.ID); !ok || l.IP.String() != w.IP {
		t.Errorf("lease after restart: %+v %v", l, ok)
	}
	mustServe(t, w.IP)
	if out := execOut(t, n2, w.ID, "echo", "adopted"); out != "adopted\n" {
		t.Errorf("exec after restart: %q", out)
	}
	if res, err := n2.PruneImages(ctx(t)); err != nil || len(res.Removed) != 0 {
		t.Errorf("image GC after the rename removed %v (%v); the adopted workload's image is in use", res.Removed, err)
	}
	n2.removeAll()
	if left := n2.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRestartAdoptsOldRecords starts the node on records in the format of
// the release before the allocation/observation split (ip, pid, ready and
// node in the record; no generation): a running workload is re-adopted
// with its own pid and IP, and one that had exited is reported exited with
// the exit code its record holds, not restarted.
func TestRestartAdoptsOldRecords(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	// Generation 5, so a generation of 1 afterwards shows the old
	// record, which has none, was what the node read.
	spawn := func() spawned {
		a := n.alloc(e.request(`{"ports":{"80":8080}}`).Spec)
		a.Generation = 5
		o, err := n.Run(ctx(t), a)
		if err != nil {
			t.Fatal(err)
		}
		return spawned{a.ID, o}
	}
	run, gone := spawn(), spawn()
	records := map[spec.ID]store.Record{}
	for _, id := range []spec.ID{run.ID, gone.ID} {
		r, err := n.record(id)
		if err != nil {
			t.Fatal(err)
		}
		records[id] = r
	}
	n.shutdown()
	d, err := e.driver()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(ctx(t), gone.ID, 0); err != nil {
		t.Fatal(err)
	}
	d.Close()
	// Overwrite both records as the old daemon wrote them.
	old := func(w spawned, state string, extra map[string]any) []byte {
		r := records[w.ID]
		rec := map[string]any{
			"id": w.ID, "spec": r.Spec, "desired": "running", "state": state, "node": "old-name",
			"ip": w.IP, "image_digest": w.ImageDigest, "created_at": r.CreatedAt,
		}
		for k, v := range extra {
			rec[k] = v
		}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	runRec := old(run, "running", map[string]any{"pid": run.Pid, "ready": true})
	goneRec := old(gone, "exited", map[string]any{"exit_code": 3, "error": "an old error"})
	db, err := bolt.Open(filepath.Join(e.dir, "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("workloads"))
		if err := bk.Put([]byte(run.ID), runRec); err != nil {
			return err
		}
		return bk.Put([]byte(gone.ID), goneRec)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	n2 := e.start()
	if got, ok := n2.Observation(run.ID); !ok || got.State != workload.StateRunning || got.Pid != run.Pid || got.IP != run.IP ||
		got.Generation != 1 || got.Node != testNodeName {
		t.Errorf("old running record after start: %+v (found: %v), want running with pid %d and IP %s, generation 1", got, ok, run.Pid, run.IP)
	}
	mustServe(t, run.IP)
	if got, ok := n2.Observation(gone.ID); !ok || got.State != workload.StateExited || got.ExitCode != 3 || got.Pid != 0 || got.Generation != 1 {
		t.Errorf("old exited record after start: %+v (found: %v), want exited with exit code 3, generation 1", got, ok)
	}
	if st, err := n2.status(gone.ID); err != nil || st.State != driver.StateStopped {
		t.Errorf("runtime of the old exited workload: %+v %v, want it left stopped", st, err)
	}
	if states := n2.reports.states(gone.ID); !slices.Equal(states, []workload.State{workload.StateExited}) {
		t.Errorf("reports of the old exited workload %v, want one: exited", states)
	}
	n2.removeAll()
	if left := n2.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRestartRestartsWorkloadThatDied kills a workload while no daemon
// runs, as a host reboot does; the next daemon must start it again, with
// the same address, and report it creating, running, and ready.
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
	// The start again runs in the background: Start has reported it
	// creating and returned.
	testutil.WaitFor(t, waitLimit, "the workload to run again", func() bool {
		o, ok := n2.Observation(w.ID)
		return ok && o.State == workload.StateRunning
	})
	got, ok := n2.Observation(w.ID)
	if !ok || got.State != workload.StateRunning || got.Pid <= 0 || got.Pid == w.Pid || got.IP != w.IP {
		t.Fatalf("after restart: %+v (found: %v), want running again with a new pid and IP %s", got, ok, w.IP)
	}
	testutil.WaitFor(t, waitLimit, "the restarted workload to be reported ready", func() bool {
		o, ok := n2.Observation(w.ID)
		return ok && o.Ready
	})
	mustServe(t, w.IP)
	want := []workload.State{workload.StateCreating, workload.StateRunning, workload.StateRunning}
	if states := n2.reports.states(w.ID); !slices.Equal(states, want) {
		t.Errorf("reports at restart %v, want %v (creating, running, running and ready)", states, want)
	}
	n2.removeAll()
	if left := n2.leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestRestartFinishesInterruptedStop leaves a workload as a daemon killed
// in the middle of Stop does, desired stopped but still running, and
// checks that the next daemon finishes the stop, frees its network and
// reports it stopped.
func TestRestartFinishesInterruptedStop(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	w := n.spawn(`{"ports":{"80":8080}}`)
	// Stop's first step, and the crash right after it.
	if _, err := n.st.Update(w.ID, func(r *store.Record) error { r.Desired = workload.DesiredStopped; return nil }); err != nil {
		t.Fatal(err)
	}
	n.shutdown()

	n2 := e.start()
	got, ok := n2.Observation(w.ID)
	if !ok || got.State != workload.StateStopped || got.Pid != 0 || got.IP != "" || got.FinishedAt.IsZero() {
		t.Errorf("after restart: %+v (found: %v), want stopped with an end time", got, ok)
	}
	if states := n2.reports.states(w.ID); !slices.Equal(states, []workload.State{workload.StateStopped}) {
		t.Errorf("reports at restart %v, want one: stopped", states)
	}
	if r, err := n2.record(w.ID); err != nil || r.State != workload.StateStopped {
		t.Errorf("record after restart: %+v %v, want stopped", r, err)
	}
	if st, err := n2.status(w.ID); err != nil || st.State != driver.StateStopped {
		t.Errorf("runtime after restart: %+v %v, want stopped", st, err)
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
// the creating state, as a crash in the middle of Run leaves it, and
// checks that the workload is started from scratch and reported so.
func TestRestartFinishesInterruptedSpawn(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	st, err := store.OpenBolt(filepath.Join(e.dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	r := store.Record{ID: spec.NewID(), Spec: e.request(`{"ports":{"80":8080}}`).Spec, Generation: 2,
		Desired: workload.DesiredRunning, State: workload.StateCreating, CreatedAt: time.Now().UTC()}
	err = st.Create(r)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	n := e.start()
	testutil.WaitFor(t, waitLimit, "the interrupted start to finish", func() bool {
		o, ok := n.Observation(r.ID)
		return ok && o.State == workload.StateRunning
	})
	got, ok := n.Observation(r.ID)
	if !ok || got.State != workload.StateRunning || got.Pid <= 0 || got.IP == "" || got.Generation != 2 {
		t.Fatalf("after start: %+v (found: %v), want the workload running, generation 2", got, ok)
	}
	if states := n.reports.states(r.ID); len(states) < 2 || states[0] != workload.StateCreating || states[1] != workload.StateRunning {
		t.Errorf("reports at start %v, want creating then running", states)
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
	stray := spec.NewID()
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
func readLogs(t *testing.T, n *testNode, id spec.ID) string {
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
func execOut(t *testing.T, n *testNode, id spec.ID, args ...string) string {
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

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestRestartDoesNotWaitForHungPull leaves a record in the creating state
// whose image is on a registry that accepts connections and never
// answers, as a crash in the middle of such a spawn leaves it. Start must
// return with the workload reported creating (so nothing routes to it),
// the pull going on in the background, and Close must end that pull.
func TestRestartDoesNotWaitForHungPull(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	hung := testutil.HangingListener(t)
	st, err := store.OpenBolt(filepath.Join(e.dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	r := store.Record{ID: spec.NewID(), Spec: e.request(`{"image_ref":"` + hung.Addr().String() + `/hangs:1","ports":{"80":8080}}`).Spec,
		Generation: 1, Desired: workload.DesiredRunning, State: workload.StateCreating, CreatedAt: time.Now().UTC()}
	err = st.Create(r)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	n := e.start() // fails the test if Start returns an error; a hang hits the test timeout
	got, ok := n.Observation(r.ID)
	if !ok || got.State != workload.StateCreating || got.IP != "" {
		t.Fatalf("after start: %+v (found: %v), want creating with no address while the pull hangs", got, ok)
	}
	testutil.WaitFor(t, waitLimit, "the background start to reach the registry", func() bool { return hung.Accepted() > 0 })
	n.shutdown() // returns only once the hung pull has ended
	st2, err := store.OpenBolt(filepath.Join(e.dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if rec, err := st2.Get(r.ID); err != nil || rec.State != workload.StateCreating {
		t.Errorf("record after shutdown: %+v %v, want still creating, for the next start to finish", rec, err)
	}
}
