package raftstore

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// What the code before the allocation/observation split wrote, byte for
// byte: log entries as its encodeCommand made them from store.Workload
// records, and a snapshot as its fsmSnapshot.Persist wrote it. Do not
// regenerate these from the current code; they stand for data dirs that
// exist.
const (
	// The cluster recorded a spawn on n1 ...
	legacyCreate = "\x01" + `{"op":"create","id":"3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b","workload":{"id":"3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b","spec":{"image":"docker.io/library/postgres:16","cores":0.5,"memory_mib":512,"ports":[{"public":443,"target":8080,"proto":"http"},{"public":5432,"target":5432,"proto":"tcp"}],"env":["POSTGRES_PASSWORD=x"],"isolation":"container"},"desired":"running","state":"creating","node":"n1","created_at":"2026-03-01T10:00:00Z"}}`
	// ... and what n1 observed once it ran (compare-and-set on version 1) ...
	legacyUpdate = "\x01" + `{"op":"update","id":"3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b","workload":{"id":"3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b","spec":{"image":"docker.io/library/postgres:16","cores":0.5,"memory_mib":512,"ports":[{"public":443,"target":8080,"proto":"http"},{"public":5432,"target":5432,"proto":"tcp"}],"env":["POSTGRES_PASSWORD=x"],"isolation":"container"},"desired":"running","state":"running","node":"n1","ip":"10.88.0.5","pid":4242,"ready":true,"image_digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","created_at":"2026-03-01T10:00:00Z"},"version":1}`
	// ... then removed it.
	legacyDelete  = "\x01" + `{"op":"delete","id":"3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b"}`
	legacySetNode = "\x01" + `{"op":"set-node","id":"n3","node":{"name":"n3","state":"failed","down_since":"2026-03-01T11:00:00Z"}}`

	// A snapshot of four workloads: running on n1, exited on n2, pending
	// on n3 after a failover, stopped on n2; and member n3 down.
	legacySnapshot = `{"version":1,"workloads":{"3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b":{"workload":{"id":"3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b","spec":{"image":"docker.io/library/postgres:16","cores":0.5,"memory_mib":512,"ports":[{"public":443,"target":8080,"proto":"http"},{"public":5432,"target":5432,"proto":"tcp"}],"env":["POSTGRES_PASSWORD=x"],"isolation":"container"},"desired":"running","state":"running","node":"n1","ip":"10.88.0.5","pid":4242,"ready":true,"image_digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","created_at":"2026-03-01T10:00:00Z"},"version":10},"7c9e6679-7425-40de-944b-e07fc1f90ae7":{"workload":{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","spec":{"image":"alpine:3.20","cores":1,"memory_mib":256,"args":["sh","-c","exit 3"],"isolation":"gvisor"},"desired":"running","state":"exited","node":"n2","exit_code":3,"error":"process exited with code 3","created_at":"2026-03-01T10:01:00Z"},"version":11},"a8098c1a-f86e-41da-8d1f-0123456789ab":{"workload":{"id":"a8098c1a-f86e-41da-8d1f-0123456789ab","spec":{"image":"alpine:3.20","cores":1,"memory_mib":256,"args":["sh","-c","exit 3"],"isolation":"gvisor"},"desired":"running","state":"pending","node":"n3","created_at":"2026-03-01T10:02:00Z"},"version":12},"b1c2d3e4-f5a6-47b8-89c0-d1e2f3a4b5c6":{"workload":{"id":"b1c2d3e4-f5a6-47b8-89c0-d1e2f3a4b5c6","spec":{"image":"alpine:3.20","cores":1,"memory_mib":256,"args":["sh","-c","exit 3"],"isolation":"gvisor"},"desired":"stopped","state":"stopped","node":"n2","exit_code":137,"created_at":"2026-03-01T10:03:00Z"},"version":13}},"nodes":{"n3":{"name":"n3","state":"failed","down_since":"2026-03-01T11:00:00Z"}}}` + "\n"
)

// The ids in the literals above.
const (
	oldPostgres spec.ID = "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b"
	oldExited   spec.ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
	oldPending  spec.ID = "a8098c1a-f86e-41da-8d1f-0123456789ab"
	oldStopped  spec.ID = "b1c2d3e4-f5a6-47b8-89c0-d1e2f3a4b5c6"
)

const oldDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// checkOldPostgres checks the postgres workload's allocation as the old
// records describe it.
func checkOldPostgres(t *testing.T, w workload.Workload) {
	t.Helper()
	a := w.Allocation
	wantPorts := []spec.Port{{Public: 443, Target: 8080, Proto: spec.ProtoHTTP}, {Public: 5432, Target: 5432, Proto: spec.ProtoTCP}}
	if a.ID != oldPostgres || a.Node != "n1" || a.Desired != workload.DesiredRunning || a.Generation != 1 ||
		a.Spec.Image != "docker.io/library/postgres:16" || a.Spec.Cores != 0.5 || a.Spec.MemoryMiB != 512 ||
		!reflect.DeepEqual(a.Spec.Ports, wantPorts) || !reflect.DeepEqual(a.Spec.Env, []string{"POSTGRES_PASSWORD=x"}) ||
		a.Spec.Isolation != spec.IsolationContainer ||
		!a.CreatedAt.Equal(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("allocation from the old record: %+v", a)
	}
}

// wantOldRunning is the observation the old running record splits into.
var wantOldRunning = workload.Observation{
	Node: "n1", Generation: 1, State: workload.StateRunning, IP: "10.88.0.5", Pid: 4242, Ready: true, ImageDigest: oldDigest,
}

func TestFSMAppliesOldLogOps(t *testing.T) {
	f := newFSM()
	if err := applyRaw(t, f, 1, []byte(legacyCreate)); err != nil {
		t.Fatalf("old create: %v", err)
	}
	w, v := mustGet(t, f, oldPostgres)
	checkOldPostgres(t, w)
	if v != 1 || w.Observed != (workload.Observation{Node: "n1", Generation: 1, State: workload.StateCreating}) {
		t.Fatalf("after the old create: version %d, observed %+v", v, w.Observed)
	}

	if err := applyRaw(t, f, 2, []byte(legacyUpdate)); err != nil {
		t.Fatalf("old update: %v", err)
	}
	w, v = mustGet(t, f, oldPostgres)
	checkOldPostgres(t, w) // an observation alone keeps generation 1
	if v != 2 || w.Observed != wantOldRunning {
		t.Fatalf("after the old update: version %d, observed %+v, want %+v", v, w.Observed, wantOldRunning)
	}
	// Replayed, it carries a stale version now: compare-and-set as before.
	if err := applyRaw(t, f, 3, []byte(legacyUpdate)); !errors.Is(err, ErrConflict) {
		t.Fatalf("old update at a stale version: %v, want ErrConflict", err)
	}

	// The old failover wrote the new node and state pending: a move, so
	// generation 2 and no observation until n2 reports.
	moved := strings.NewReplacer(`"node":"n1"`, `"node":"n2"`, `"state":"running"`, `"state":"pending"`, `"version":1}`, `"version":2}`).Replace(legacyUpdate)
	if err := applyRaw(t, f, 4, []byte(moved)); err != nil {
		t.Fatalf("old failover update: %v", err)
	}
	w, _ = mustGet(t, f, oldPostgres)
	if w.Node != "n2" || w.Generation != 2 || w.Observed != (workload.Observation{Node: "n2", State: workload.StatePending}) {
		t.Fatalf("after the old failover: %+v", w)
	}
	// The new report path works on what the old ops made.
	if err := applyAt(t, f, 5, observe(report(oldPostgres, "n2", workload.StateRunning))); err != nil {
		t.Fatal(err)
	}
	if w, _ := mustGet(t, f, oldPostgres); w.Observed.State != workload.StateRunning {
		t.Fatalf("report after the old ops: %+v", w.Observed)
	}

	if err := applyRaw(t, f, 6, []byte(legacySetNode)); err != nil {
		t.Fatalf("old set-node: %v", err)
	}
	if n, ok := f.node("n3"); !ok || n.State != "failed" || !n.DownSince.Equal(time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)) {
		t.Fatalf("node after the old set-node: %+v %v", n, ok)
	}
	if err := applyRaw(t, f, 7, []byte(legacyDelete)); err != nil {
		t.Fatalf("old delete: %v", err)
	}
	if _, ok := f.get(oldPostgres); ok || len(f.observed) != 0 {
		t.Fatal("the old delete left the workload")
	}
	// Old ops are history: two holders of one raw TCP port that the old
	// code let through are both kept, not dropped on replay ...
	if err := applyRaw(t, f, 8, []byte(legacyCreate)); err != nil {
		t.Fatal(err)
	}
	other := strings.ReplaceAll(legacyCreate, string(oldPostgres), string(idA))
	if err := applyRaw(t, f, 9, []byte(other)); err != nil {
		t.Fatalf("old create of a taken tcp port: %v; an old log must replay as it was", err)
	}
	if _, ok := f.get(idA); !ok {
		t.Fatal("the second holder from the old log is gone")
	}
	// ... while a new write cannot add a third.
	if err := applyAt(t, f, 10, create(alloc(t, idB, "n1", map[string]int64{"5432": 1}))); !errors.Is(err, ErrPortTaken) {
		t.Fatalf("new create of a taken tcp port: %v, want ErrPortTaken", err)
	}
}

// checkOldSnapshot checks the state a version 1 snapshot restores to.
func checkOldSnapshot(t *testing.T, get func(spec.ID) (workload.Workload, bool), list func() []workload.Workload, node func(string) (Node, bool)) {
	t.Helper()
	ws := list()
	if len(ws) != 4 {
		t.Fatalf("%d workloads, want 4: %+v", len(ws), ws)
	}
	for i, id := range []spec.ID{oldPostgres, oldExited, oldPending, oldStopped} {
		if ws[i].ID != id || ws[i].Generation != 1 {
			t.Fatalf("workload %d: %s generation %d, want %s generation 1", i, ws[i].ID, ws[i].Generation, id)
		}
	}
	w, _ := get(oldPostgres)
	checkOldPostgres(t, w)
	if w.Observed != wantOldRunning {
		t.Fatalf("running: observed %+v, want %+v", w.Observed, wantOldRunning)
	}
	w, _ = get(oldExited)
	want := workload.Observation{Node: "n2", Generation: 1, State: workload.StateExited, ExitCode: 3, Error: "process exited with code 3"}
	if w.Observed != want || w.Spec.Isolation != spec.IsolationGVisor || !reflect.DeepEqual(w.Spec.Args, []string{"sh", "-c", "exit 3"}) {
		t.Fatalf("exited: %+v, want observed %+v", w, want)
	}
	w, _ = get(oldPending)
	if w.Node != "n3" || w.Observed != (workload.Observation{Node: "n3", State: workload.StatePending}) {
		t.Fatalf("pending: %+v", w)
	}
	w, _ = get(oldStopped)
	want = workload.Observation{Node: "n2", Generation: 1, State: workload.StateStopped, ExitCode: 137}
	if w.Desired != workload.DesiredStopped || w.Observed != want {
		t.Fatalf("stopped: %+v, want observed %+v", w, want)
	}
	if n, ok := node("n3"); !ok || n.State != "failed" {
		t.Fatalf("member n3: %+v %v", n, ok)
	}
}

func TestFSMRestoresVersion1Snapshot(t *testing.T) {
	f := newFSM()
	if err := f.Restore(io.NopCloser(strings.NewReader(legacySnapshot))); err != nil {
		t.Fatalf("restore of a version 1 snapshot: %v", err)
	}
	checkOldSnapshot(t, f.get, f.list, f.node)
	for id, want := range map[spec.ID]uint64{oldPostgres: 10, oldExited: 11, oldPending: 12, oldStopped: 13} {
		if _, v := mustGet(t, f, id); v != want {
			t.Errorf("%s: version %d, want the record's %d", id, v, want)
		}
	}
	// Compare-and-set goes on from the old versions.
	cur, _, _ := f.allocation(oldExited)
	cur.Desired = workload.DesiredStopped
	if err := applyAt(t, f, 20, update(cur, 11)); err != nil {
		t.Fatalf("update at the old version: %v", err)
	}

	// The next snapshot is version 2 and restores to the same state.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sink.buf.String(), `{"version":2,`) || strings.Contains(sink.buf.String(), `"workloads"`) {
		t.Fatalf("snapshot after an upgrade: %.80s", sink.buf.String())
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(&sink.buf)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.list(), f.list()) || !reflect.DeepEqual(g.allocs, f.allocs) || !reflect.DeepEqual(g.nodes, f.nodes) {
		t.Fatalf("version 2 round trip differs:\n%+v\n%+v", g.list(), f.list())
	}
}

// freeAddr returns a loopback address no one listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeOldDataDir lays out dir as a single server running the code before
// the split would have left it: a version 1 snapshot at index 5, and old
// log entries after it.
func writeOldDataDir(t *testing.T, dir, id, addr string, entries ...string) {
	t.Helper()
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotRetain, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(addr))
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)}}}
	sink, err := snaps.Create(raft.SnapshotVersionMax, 5, 1, conf, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte(legacySnapshot)); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	var ls []*raft.Log
	for i, e := range entries {
		ls = append(ls, &raft.Log{Index: uint64(6 + i), Term: 1, Type: raft.LogCommand, Data: []byte(e)})
	}
	if err := logs.StoreLogs(ls); err != nil {
		t.Fatal(err)
	}
	if err := logs.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		t.Fatal(err)
	}
}

// TestOpenOldDataDir opens a data dir written before the split, with a
// version 1 snapshot and old log entries after it, and checks that the
// state is all there, that new writes work on it, and that it survives a
// restart through a version 2 snapshot.
func TestOpenOldDataDir(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	// After the snapshot: postgres was deleted, spawned again, and ran.
	updated := strings.Replace(legacyUpdate, `"version":1}`, `"version":7}`, 1)
	writeOldDataDir(t, dir, "solo", addr, legacyDelete, legacyCreate, updated)

	n := openNode(t, Config{NodeID: "solo", BindAddr: addr, DataDir: dir, Bootstrap: true, Log: testLog()})
	if n.s.Bootstrapped() {
		t.Fatal("Open bootstrapped over existing state")
	}
	leaderOf(t, n)
	if err := n.s.Barrier(settle); err != nil {
		t.Fatal(err)
	}
	get := func(id spec.ID) (workload.Workload, bool) { w, err := n.s.Get(id); return w, err == nil }
	list := func() []workload.Workload { l, _ := n.s.List(); return l }
	checkOldSnapshot(t, get, list, n.s.Node)
	if _, v := mustGet(t, n.s.fsm, oldPostgres); v != 8 {
		t.Fatalf("postgres at version %d, want 8 (the old update's index)", v)
	}

	// New writes on old state: a report, an update, the port check.
	idx, err := n.s.Observe([]Report{report(oldPending, "n3", workload.StateRunning)})
	if err != nil || idx == 0 {
		t.Fatalf("observe: index %d, %v", idx, err)
	}
	if _, err := n.s.Update(oldStopped, func(a *workload.Allocation) error { a.Desired = workload.DesiredRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	clash := alloc(t, idA, "n1", map[string]int64{"5432": 1})
	if err := n.s.Create(clash); !errors.Is(err, ErrPortTaken) {
		t.Fatalf("create on the old postgres port: %v, want ErrPortTaken", err)
	}

	if err := n.s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	n.restart(t)
	leaderOf(t, n)
	if err := n.s.Barrier(settle); err != nil {
		t.Fatal(err)
	}
	w, err := n.s.Get(oldPending)
	if err != nil || w.Observed.State != workload.StateRunning {
		t.Fatalf("report after restart: %+v, %v", w, err)
	}
	if w, _ := n.s.Get(oldStopped); w.Desired != workload.DesiredRunning || w.Generation != 2 {
		t.Fatalf("update after restart: %+v", w.Allocation)
	}
	if w, _ := n.s.Get(oldPostgres); w.Observed != wantOldRunning {
		t.Fatalf("postgres after restart: %+v", w.Observed)
	}
}
