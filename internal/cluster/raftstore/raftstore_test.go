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

	"github.com/hypercore-dev/hypercore/internal/store"
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

func workload(id string, created time.Time) store.Workload {
	return store.Workload{ID: id, Desired: store.DesiredRunning, State: store.StateCreating, CreatedAt: created}
}

// waitVisible waits until every node has id with the given pid.
func waitVisible(t *testing.T, id string, pid int, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, fmt.Sprintf("%s with pid %d on %s", id, pid, n.cfg.NodeID), func() bool {
			w, err := n.s.Get(id)
			return err == nil && w.Pid == pid
		})
	}
}

func TestCreateReplicatesToAll(t *testing.T) {
	nodes := newCluster(t, 3)
	if err := nodes[0].s.Create(workload("w1", time.Now())); err != nil {
		t.Fatal(err)
	}
	waitVisible(t, "w1", 0, nodes...)
	if err := nodes[0].s.Create(workload("w1", time.Now())); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate create: %v, want ErrExists", err)
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
	leader := nodes[0]
	if err := leader.s.Create(workload("w1", time.Now())); err != nil {
		t.Fatal(err)
	}
	waitVisible(t, "w1", 0, nodes...)
	f := nodes[1].s
	checks := map[string]error{
		"create":  f.Create(workload("w2", time.Now())),
		"delete":  f.Delete("w1"),
		"join":    f.Join("x", "127.0.0.1:1"),
		"remove":  f.Remove("n2"),
		"barrier": f.Barrier(time.Second),
	}
	_, checks["update"] = f.Update("w1", func(w *store.Workload) error { w.Pid = 1; return nil })
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
	if w, err := leader.s.Get("w1"); err != nil || w.Pid != 0 {
		t.Fatalf("w1 after refused writes: %+v, %v", w, err)
	}
	if _, err := leader.s.Get("w2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("w2: %v, want ErrNotFound", err)
	}
}

func TestConcurrentUpdatesAreAtomic(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := nodes[0].s
	if err := leader.Create(workload("w1", time.Now())); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := leader.Update("w1", func(w *store.Workload) error {
				w.Pid++
				return nil
			})
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
	waitVisible(t, "w1", n, nodes...)

	// A failing fn changes nothing and its error comes back as is.
	boom := errors.New("boom")
	if _, err := leader.Update("w1", func(w *store.Workload) error { w.Pid = -1; return boom }); !errors.Is(err, boom) {
		t.Fatalf("update with failing fn: %v", err)
	}
	if _, err := leader.Update("nope", func(*store.Workload) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of missing: %v, want ErrNotFound", err)
	}
	// Update cannot rename a record.
	got, err := leader.Update("w1", func(w *store.Workload) error { w.ID = "other"; return nil })
	if err != nil || got.ID != "w1" {
		t.Fatalf("rename attempt: %+v, %v", got, err)
	}
	if w, err := leader.Get("w1"); err != nil || w.Pid != n {
		t.Fatalf("w1 after failed update: %+v, %v", w, err)
	}
}

func TestDeleteAndListOrder(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := nodes[0].s
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	// Created out of order; c and b tie on time and sort by id.
	for _, w := range []store.Workload{
		workload("c", t0.Add(time.Minute)),
		workload("a", t0),
		workload("b", t0.Add(time.Minute)),
		workload("d", t0.Add(2*time.Minute)),
	} {
		if err := leader.Create(w); err != nil {
			t.Fatal(err)
		}
	}
	if err := leader.Delete("d"); err != nil {
		t.Fatal(err)
	}
	if err := leader.Delete("never-existed"); err != nil {
		t.Fatalf("delete of missing: %v", err)
	}
	if _, err := leader.Get("d"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get deleted: %v, want ErrNotFound", err)
	}
	for _, n := range nodes {
		waitFor(t, "list a, b, c on "+n.cfg.NodeID, func() bool {
			list, err := n.s.List()
			if err != nil || len(list) != 3 {
				return false
			}
			return list[0].ID == "a" && list[1].ID == "b" && list[2].ID == "c"
		})
	}
}

func TestSnapshotAndRestart(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := nodes[0]
	for i := range 5 {
		if err := leader.s.Create(workload(fmt.Sprintf("w%d", i), time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	waitVisible(t, "w4", 0, nodes...)
	f := nodes[1]
	if err := f.s.Snapshot(); err != nil {
		t.Fatalf("snapshot on follower: %v", err)
	}
	if err := leader.s.Snapshot(); err != nil {
		t.Fatalf("snapshot on leader: %v", err)
	}
	// Writes after the snapshot reach the restarted node through the log.
	if _, err := leader.s.Update("w0", func(w *store.Workload) error { w.Pid = 9; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := leader.s.Delete("w1"); err != nil {
		t.Fatal(err)
	}
	waitVisible(t, "w0", 9, f)
	snaps, _ := filepath.Glob(filepath.Join(f.cfg.DataDir, "snapshots", "*", "state.bin"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot on disk")
	}

	f.restart(t)
	// Restored from the snapshot as soon as Open returns, before any
	// contact with the leader.
	if _, err := f.s.Get("w4"); err != nil {
		t.Fatalf("w4 right after restart: %v", err)
	}
	waitVisible(t, "w0", 9, f)
	waitFor(t, "w1 deleted on the restarted node", func() bool {
		_, err := f.s.Get("w1")
		return errors.Is(err, store.ErrNotFound)
	})

	// The leader restarts too, from its own snapshot and log; someone
	// leads afterwards and nothing is lost.
	leader.restart(t)
	l := leaderOf(t, nodes...)
	if err := l.s.Create(workload("after", time.Now())); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitFor(t, "full state on "+n.cfg.NodeID, func() bool {
			list, _ := n.s.List()
			return len(list) == 5 // w0, w2, w3, w4, after
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
	if err := n.s.Create(workload("snap", time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := n.s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := n.s.Create(workload("log", time.Now())); err != nil {
		t.Fatal(err)
	}
	// Bootstrap stays set: it must be ignored now that state exists.
	n.restart(t)
	leaderOf(t, n)
	// The entry after the snapshot is replayed once this server leads
	// again; the barrier waits for that.
	if err := n.s.Barrier(settle); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"snap", "log"} {
		if _, err := n.s.Get(id); err != nil {
			t.Fatalf("%s after restart: %v", id, err)
		}
	}
}

func TestLeaderLoss(t *testing.T) {
	nodes := newCluster(t, 3)
	old := nodes[0]
	for i := range 3 {
		if err := old.s.Create(workload(fmt.Sprintf("w%d", i), time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.s.Close(); err != nil {
		t.Fatal(err)
	}
	rest := followers(old, nodes)
	leader := leaderOf(t, rest...)
	if err := leader.s.Create(workload("new", time.Now())); err != nil {
		t.Fatalf("write after failover: %v", err)
	}
	if _, err := leader.s.Update("w0", func(w *store.Workload) error { w.Pid = 1; return nil }); err != nil {
		t.Fatalf("update after failover: %v", err)
	}
	var other *node
	for _, n := range rest {
		if n != leader {
			other = n
		}
	}
	var nl ErrNotLeader
	if err := other.s.Create(workload("x", time.Now())); !errors.As(err, &nl) || nl.LeaderAddr != leader.s.Addr() {
		t.Fatalf("write on the remaining follower: %v", err)
	}
	for _, n := range rest {
		waitFor(t, "all records on "+n.cfg.NodeID, func() bool {
			list, _ := n.s.List()
			w0, _ := n.s.Get("w0")
			return len(list) == 4 && w0.Pid == 1
		})
	}
	// The lost server is removed for good; the two left still commit.
	if err := leader.s.Remove(old.cfg.NodeID); err != nil {
		t.Fatal(err)
	}
	if err := leader.s.Delete("new"); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateRetriesOnConflict makes a write land between Update's read and
// its compare-and-set, as a write from elsewhere would, and checks that
// Update reruns fn on the new record instead of overwriting it.
func TestUpdateRetriesOnConflict(t *testing.T) {
	n := openNode(t, Config{NodeID: "solo", BindAddr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: true, Log: testLog()})
	leaderOf(t, n)
	if err := n.s.Create(workload("w1", time.Now())); err != nil {
		t.Fatal(err)
	}
	calls := 0
	got, err := n.s.Update("w1", func(w *store.Workload) error {
		calls++
		if calls == 1 {
			cur, _ := n.s.fsm.get("w1")
			sneak := cur.Workload
			sneak.Error = "written concurrently"
			if err := n.s.apply(command{Op: opUpdate, ID: "w1", Workload: &sneak, Version: cur.Version}); err != nil {
				t.Errorf("concurrent write: %v", err)
			}
		}
		w.Pid = 42
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 || got.Pid != 42 || got.Error != "written concurrently" {
		t.Fatalf("after %d calls: %+v", calls, got)
	}
	if w, _ := n.s.Get("w1"); w.Pid != 42 || w.Error != "written concurrently" {
		t.Fatalf("stored %+v", w)
	}
}
