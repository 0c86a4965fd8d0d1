package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// settle bounds every wait on the cluster: elections take about a second
// with this package's timeouts, so this is generous even under -race.
const settle = 20 * time.Second

func testLog() *slog.Logger {
	if os.Getenv("RAFTSTORE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// node is one server of a test cluster, with what it takes to restart it.
type node struct {
	cfg Config
	s   *Store
}

func openNode(t *testing.T, cfg Config) *node {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.NodeID, err)
	}
	// Later opens must reuse the port the peers know this node by.
	cfg.BindAddr = s.Addr()
	n := &node{cfg: cfg, s: s}
	t.Cleanup(func() { n.s.Close() })
	return n
}

// restart closes n and opens it again on the same data dir and address.
func (n *node) restart(t *testing.T) {
	t.Helper()
	if err := n.s.Close(); err != nil {
		t.Fatalf("close %s: %v", n.cfg.NodeID, err)
	}
	s, err := Open(n.cfg)
	if err != nil {
		t.Fatalf("reopen %s: %v", n.cfg.NodeID, err)
	}
	n.s = s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaderOf waits until exactly one of nodes leads and all of them agree.
func leaderOf(t *testing.T, nodes ...*node) *node {
	t.Helper()
	var leader *node
	waitFor(t, "a leader all agree on", func() bool {
		leader = nil
		for _, n := range nodes {
			if n.s.IsLeader() {
				if leader != nil {
					return false
				}
				leader = n
			}
		}
		if leader == nil {
			return false
		}
		for _, n := range nodes {
			if addr, _ := n.s.Leader(); addr != leader.s.Addr() {
				return false
			}
		}
		return true
	})
	return leader
}

// newCluster bootstraps one server on loopback and joins the rest to it.
func newCluster(t *testing.T, size int) []*node {
	t.Helper()
	nodes := make([]*node, size)
	for i := range nodes {
		nodes[i] = openNode(t, Config{
			NodeID:    fmt.Sprintf("n%d", i),
			BindAddr:  "127.0.0.1:0",
			DataDir:   filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i)),
			Bootstrap: i == 0,
			Log:       testLog(),
		})
		if i == 0 {
			leaderOf(t, nodes[0])
			continue
		}
		if err := nodes[0].s.Join(nodes[i].cfg.NodeID, nodes[i].s.Addr()); err != nil {
			t.Fatalf("join %s: %v", nodes[i].cfg.NodeID, err)
		}
	}
	if l := leaderOf(t, nodes...); l != nodes[0] {
		t.Fatalf("leader is %s, want the bootstrap server", l.cfg.NodeID)
	}
	return nodes
}

func followers(leader *node, nodes []*node) []*node {
	var out []*node
	for _, n := range nodes {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

// newAlloc is an allocation meant to run on n1, created at created.
func newAlloc(t testing.TB, id spec.ID, created time.Time) workload.Allocation {
	t.Helper()
	a := alloc(t, id, "n1", nil)
	a.CreatedAt = created
	return a
}

// bump changes the spec, so each Update with it adds one to the
// generation: tests count updates by the generation.
func bump(a *workload.Allocation) error {
	a.Spec.Env = append(a.Spec.Env, fmt.Sprintf("N=%d", len(a.Spec.Env)))
	return nil
}

// waitVisible waits until every node has id at generation gen.
func waitVisible(t *testing.T, id spec.ID, gen uint64, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, fmt.Sprintf("%s at generation %d on %s", id, gen, n.cfg.NodeID), func() bool {
			w, err := n.s.Get(id)
			return err == nil && w.Generation == gen
		})
	}
}

func TestCreateReplicatesToAll(t *testing.T) {
	nodes := newCluster(t, 3)
	id := spec.NewID()
	if err := nodes[0].s.Create(newAlloc(t, id, time.Now())); err != nil {
		t.Fatal(err)
	}
	waitVisible(t, id, 1, nodes...)
	if err := nodes[0].s.Create(newAlloc(t, id, time.Now())); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate create: %v, want ErrExists", err)
	}
	if err := nodes[0].s.Create(workload.Allocation{ID: spec.NewID()}); err == nil {
		t.Fatal("create of an allocation without a node succeeded")
	}
	// Joining again with the same id and address changes nothing.
	if err := nodes[0].s.Join(nodes[1].cfg.NodeID, nodes[1].s.Addr()); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	servers, err := nodes[0].s.Servers()
	if err != nil || len(servers) != 3 {
		t.Fatalf("servers %v, %v; want 3", servers, err)
	}
}

func TestFollowerWritesReturnNotLeader(t *testing.T) {
	nodes := newCluster(t, 3)
	w1, w2 := spec.NewID(), spec.NewID()
	// On a loaded machine a leader can step down (its lease is short);
	// the write is then made again on whoever leads. What this test is
	// about is the followers' answer, below.
	var leader *node
	testutil.WaitFor(t, settle, "a write through the leader", func() bool {
		leader = leaderOf(t, nodes...)
		err := leader.s.Create(newAlloc(t, w1, time.Now()))
		return err == nil || errors.Is(err, ErrExists)
	})
	waitVisible(t, w1, 1, nodes...)
	f := followers(leader, nodes)[0].s
	checks := map[string]error{
		"create":  f.Create(newAlloc(t, w2, time.Now())),
		"delete":  f.Delete(w1),
		"join":    f.Join("x", "127.0.0.1:1"),
		"remove":  f.Remove("n2"),
		"barrier": f.Barrier(time.Second),
		"node":    f.SetNode(Node{Name: "n1"}),
	}
	_, checks["update"] = f.Update(w1, bump)
	_, checks["observe"] = f.Observe([]Report{report(w1, "n1", workload.StateRunning)})
	for op, err := range checks {
		var nl ErrNotLeader
		if !errors.As(err, &nl) {
			t.Errorf("%s on a follower: %v, want ErrNotLeader", op, err)
			continue
		}
		if nl.LeaderAddr != leader.s.Addr() || nl.LeaderID != leader.cfg.NodeID {
			t.Errorf("%s: leader %q at %q, want %q at %q", op, nl.LeaderID, nl.LeaderAddr, leader.cfg.NodeID, leader.s.Addr())
		}
	}
	// None of the refused writes happened.
	if w, err := leader.s.Get(w1); err != nil || w.Generation != 1 || w.Observed.State != workload.StatePending {
		t.Fatalf("w1 after refused writes: %+v, %v", w, err)
	}
	if _, err := leader.s.Get(w2); !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("w2: %v, want workload.ErrNotFound", err)
	}
}

func TestConcurrentUpdatesAreAtomic(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := nodes[0].s
	id := spec.NewID()
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := leader.Create(newAlloc(t, id, created)); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := leader.Update(id, bump)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitVisible(t, id, n+1, nodes...)
	if w, _ := leader.Get(id); len(w.Spec.Env) != n {
		t.Fatalf("%d updates kept of %d", len(w.Spec.Env), n)
	}

	// A failing fn changes nothing and its error comes back as is.
	boom := errors.New("boom")
	if _, err := leader.Update(id, func(a *workload.Allocation) error { a.Node = "n9"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("update with failing fn: %v", err)
	}
	if _, err := leader.Update(spec.NewID(), bump); !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("update of missing: %v, want workload.ErrNotFound", err)
	}
	// Update cannot rename, re-date or re-number a workload.
	got, err := leader.Update(id, func(a *workload.Allocation) error {
		a.ID, a.CreatedAt, a.Generation = spec.NewID(), time.Now(), 1000
		return nil
	})
	if err != nil || got.ID != id || !got.CreatedAt.Equal(created) || got.Generation != n+1 {
		t.Fatalf("rename attempt: %+v, %v", got.Allocation, err)
	}
	if w, err := leader.Get(id); err != nil || w.ID != id || w.Generation != n+1 || w.Node != "n1" {
		t.Fatalf("after failed and no-op updates: %+v, %v", w.Allocation, err)
	}
}

func TestDeleteAndListOrder(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := nodes[0].s
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	// Created out of order; c and b tie on time and sort by id.
	for _, a := range []workload.Allocation{
		newAlloc(t, idC, t0.Add(time.Minute)),
		newAlloc(t, idA, t0),
		newAlloc(t, idB, t0.Add(time.Minute)),
		newAlloc(t, idD, t0.Add(2*time.Minute)),
	} {
		if err := leader.Create(a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := leader.Observe([]Report{report(idD, "n1", workload.StateRunning)}); err != nil {
		t.Fatal(err)
	}
	if err := leader.Delete(idD); err != nil {
		t.Fatal(err)
	}
	if err := leader.Delete(spec.NewID()); err != nil {
		t.Fatalf("delete of missing: %v", err)
	}
	if _, err := leader.Get(idD); !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("get deleted: %v, want workload.ErrNotFound", err)
	}
	for _, n := range nodes {
		waitFor(t, "list a, b, c on "+n.cfg.NodeID, func() bool {
			list, err := n.s.List()
			if err != nil || len(list) != 3 {
				return false
			}
			return list[0].ID == idA && list[1].ID == idB && list[2].ID == idC
		})
	}
}

// TestObserve: one batch is one entry; its index tells a caller when a
// copy of the state has it; stale reports are dropped.
func TestObserve(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := nodes[0].s
	if err := leader.Create(newAlloc(t, idA, time.Now())); err != nil {
		t.Fatal(err)
	}
	running := report(idA, "n1", workload.StateRunning)
	running.Observation.IP, running.Observation.Pid = "10.88.0.7", 77
	before := leader.AppliedIndex()
	idx, err := leader.Observe([]Report{
		running,
		report(idB, "n1", workload.StateRunning), // no allocation
		report(idA, "n2", workload.StateExited),  // not a's node
	})
	if err != nil {
		t.Fatal(err)
	}
	if idx != before+1 {
		t.Fatalf("observe index %d, want %d: one entry for the batch", idx, before+1)
	}
	for _, n := range nodes {
		waitFor(t, "index on "+n.cfg.NodeID, func() bool { return n.s.AppliedIndex() >= idx })
		// At the index, not eventually: the index is the promise.
		w, err := n.s.Get(idA)
		if err != nil || w.Observed != running.Observation {
			t.Fatalf("%s at index %d: %+v, %v; want %+v", n.cfg.NodeID, idx, w.Observed, err, running.Observation)
		}
		if _, err := n.s.Get(idB); !errors.Is(err, workload.ErrNotFound) {
			t.Fatalf("%s: a report made workload b: %v", n.cfg.NodeID, err)
		}
	}
	// Update returns the joined view with what was reported.
	got, err := leader.Update(idA, bump)
	if err != nil || got.Observed.Pid != 77 || got.Generation != 2 {
		t.Fatalf("update after a report: %+v, %v", got, err)
	}
	if idx, err := leader.Observe(nil); idx != 0 || err != nil {
		t.Fatalf("empty batch: %d, %v; want 0, nil", idx, err)
	}
	if _, err := leader.Observe([]Report{report(idA, "", workload.StateRunning)}); err == nil {
		t.Fatal("a report without a node was accepted")
	}
	tooMany := make([]Report, MaxReports+1)
	for i := range tooMany {
		tooMany[i] = report(idA, "n1", workload.StateRunning)
	}
	if _, err := leader.Observe(tooMany); err == nil {
		t.Fatalf("a batch of %d reports was accepted; at most %d may be", len(tooMany), MaxReports)
	}
}

func TestSnapshotAndRestart(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := nodes[0]
	var ids []spec.ID
	for range 5 {
		ids = append(ids, spec.NewID())
		if err := leader.s.Create(newAlloc(t, ids[len(ids)-1], time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := leader.s.Observe([]Report{report(ids[4], "n1", workload.StateRunning)})
	if err != nil {
		t.Fatal(err)
	}
	f := nodes[1]
	waitFor(t, "the report on the follower", func() bool { return f.s.AppliedIndex() >= idx })
	if err := f.s.Snapshot(); err != nil {
		t.Fatalf("snapshot on follower: %v", err)
	}
	if err := leader.s.Snapshot(); err != nil {
		t.Fatalf("snapshot on leader: %v", err)
	}
	// Writes after the snapshot reach the restarted node through the log.
	if _, err := leader.s.Update(ids[0], bump); err != nil {
		t.Fatal(err)
	}
	if err := leader.s.Delete(ids[1]); err != nil {
		t.Fatal(err)
	}
	waitVisible(t, ids[0], 2, f)
	snaps, _ := filepath.Glob(filepath.Join(f.cfg.DataDir, "snapshots", "*", "state.bin"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot on disk")
	}

	f.restart(t)
	// Restored from the snapshot as soon as Open returns, before any
	// contact with the leader, observations included.
	if w, err := f.s.Get(ids[4]); err != nil || w.Observed.State != workload.StateRunning {
		t.Fatalf("ids[4] right after restart: %+v, %v", w, err)
	}
	waitVisible(t, ids[0], 2, f)
	waitFor(t, "ids[1] deleted on the restarted node", func() bool {
		_, err := f.s.Get(ids[1])
		return errors.Is(err, workload.ErrNotFound)
	})

	// The leader restarts too, from its own snapshot and log; someone
	// leads afterwards and nothing is lost.
	leader.restart(t)
	l := leaderOf(t, nodes...)
	if err := l.s.Create(newAlloc(t, spec.NewID(), time.Now())); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitFor(t, "full state on "+n.cfg.NodeID, func() bool {
			list, _ := n.s.List()
			return len(list) == 5 // ids 0, 2, 3, 4 and the new one
		})
	}
}

func TestSingleServerDurability(t *testing.T) {
	n := openNode(t, Config{
		NodeID:    "solo",
		BindAddr:  "127.0.0.1:0",
		DataDir:   t.TempDir(),
		Bootstrap: true,
		Log:       testLog(),
	})
	leaderOf(t, n)
	if err := n.s.Create(newAlloc(t, idA, time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := n.s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := n.s.Create(newAlloc(t, idB, time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := n.s.Observe([]Report{report(idB, "n1", workload.StateExited)}); err != nil {
		t.Fatal(err)
	}
	// Bootstrap stays set: it must be ignored now that state exists.
	n.restart(t)
	leaderOf(t, n)
	// The entries after the snapshot are replayed once this server leads
	// again; the barrier waits for that.
	if err := n.s.Barrier(settle); err != nil {
		t.Fatal(err)
	}
	for _, id := range []spec.ID{idA, idB} {
		if _, err := n.s.Get(id); err != nil {
			t.Fatalf("%s after restart: %v", id, err)
		}
	}
	if w, _ := n.s.Get(idB); w.Observed.State != workload.StateExited {
		t.Fatalf("report after restart: %+v", w.Observed)
	}
}

func TestLeaderLoss(t *testing.T) {
	nodes := newCluster(t, 3)
	old := nodes[0]
	var ids []spec.ID
	for range 3 {
		ids = append(ids, spec.NewID())
		if err := old.s.Create(newAlloc(t, ids[len(ids)-1], time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.s.Close(); err != nil {
		t.Fatal(err)
	}
	rest := followers(old, nodes)
	leader := leaderOf(t, rest...)
	fresh := spec.NewID()
	if err := leader.s.Create(newAlloc(t, fresh, time.Now())); err != nil {
		t.Fatalf("write after failover: %v", err)
	}
	if _, err := leader.s.Update(ids[0], bump); err != nil {
		t.Fatalf("update after failover: %v", err)
	}
	var other *node
	for _, n := range rest {
		if n != leader {
			other = n
		}
	}
	var nl ErrNotLeader
	if err := other.s.Create(newAlloc(t, spec.NewID(), time.Now())); !errors.As(err, &nl) || nl.LeaderAddr != leader.s.Addr() {
		t.Fatalf("write on the remaining follower: %v", err)
	}
	for _, n := range rest {
		waitFor(t, "all records on "+n.cfg.NodeID, func() bool {
			list, _ := n.s.List()
			w0, _ := n.s.Get(ids[0])
			return len(list) == 4 && w0.Generation == 2
		})
	}
	// The lost server is removed for good; the two left still commit.
	if err := leader.s.Remove(old.cfg.NodeID); err != nil {
		t.Fatal(err)
	}
	if err := leader.s.Delete(fresh); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateRetriesOnConflict makes a write land between Update's read and
// its compare-and-set, as a write from elsewhere would, and checks that
// Update reruns fn on the new allocation instead of overwriting it; and
// that a report landing there is no conflict at all.
func TestUpdateRetriesOnConflict(t *testing.T) {
	n := openNode(t, Config{NodeID: "solo", BindAddr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: true, Log: testLog()})
	leaderOf(t, n)
	if err := n.s.Create(newAlloc(t, idA, time.Now())); err != nil {
		t.Fatal(err)
	}
	calls := 0
	got, err := n.s.Update(idA, func(a *workload.Allocation) error {
		calls++
		if calls == 1 {
			cur, version, _ := n.s.fsm.allocation(idA)
			cur.Desired = workload.DesiredStopped
			if _, err := n.s.apply(update(cur, version)); err != nil {
				t.Errorf("concurrent write: %v", err)
			}
		}
		a.Spec.Env = []string{"K=v"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 || got.Desired != workload.DesiredStopped || len(got.Spec.Env) != 1 || got.Generation != 3 {
		t.Fatalf("after %d calls: %+v", calls, got.Allocation)
	}
	if w, _ := n.s.Get(idA); w.Desired != workload.DesiredStopped || len(w.Spec.Env) != 1 {
		t.Fatalf("stored %+v", w.Allocation)
	}

	calls = 0
	got, err = n.s.Update(idA, func(a *workload.Allocation) error {
		calls++
		if calls == 1 {
			if _, err := n.s.Observe([]Report{report(idA, "n1", workload.StateStopped)}); err != nil {
				t.Errorf("concurrent report: %v", err)
			}
		}
		a.Desired = workload.DesiredRunning
		return nil
	})
	if err != nil || calls != 1 {
		t.Fatalf("update with a report in between: %d calls, %v; want 1 call", calls, err)
	}
	if got.Desired != workload.DesiredRunning || got.Observed.State != workload.StateStopped {
		t.Fatalf("after the report and the update: %+v", got)
	}
}
