package raftstore

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hypercore-dev/hypercore/internal/store"
)

func mustEncode(t *testing.T, c command) []byte {
	t.Helper()
	data, err := encodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// applyAt applies c as the log entry at index and returns the result.
func applyAt(t *testing.T, f *fsm, index uint64, c command) error {
	t.Helper()
	res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: mustEncode(t, c)})
	if res == nil {
		return nil
	}
	err, ok := res.(error)
	if !ok {
		t.Fatalf("Apply returned %T, want error or nil", res)
	}
	return err
}

func TestFSMCreate(t *testing.T) {
	f := newFSM()
	w := store.Workload{ID: "a", Desired: store.DesiredRunning}
	if err := applyAt(t, f, 1, command{Op: opCreate, Workload: &w}); err != nil {
		t.Fatal(err)
	}
	r, ok := f.get("a")
	if !ok || r.Version != 1 || r.Workload.Desired != store.DesiredRunning {
		t.Fatalf("after create: %+v %v", r, ok)
	}
	if err := applyAt(t, f, 2, command{Op: opCreate, Workload: &w}); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	if r, _ := f.get("a"); r.Version != 1 {
		t.Fatalf("failed create changed the record: %+v", r)
	}
}

func TestFSMUpdateCompareAndSet(t *testing.T) {
	f := newFSM()
	w := store.Workload{ID: "a"}
	if err := applyAt(t, f, 3, command{Op: opCreate, Workload: &w}); err != nil {
		t.Fatal(err)
	}
	w.Pid = 7
	if err := applyAt(t, f, 4, command{Op: opUpdate, ID: "a", Workload: &w, Version: 3}); err != nil {
		t.Fatal(err)
	}
	if r, _ := f.get("a"); r.Workload.Pid != 7 || r.Version != 4 {
		t.Fatalf("after update: %+v", r)
	}
	// The same update again carries a stale version: it must lose.
	w.Pid = 8
	if err := applyAt(t, f, 5, command{Op: opUpdate, ID: "a", Workload: &w, Version: 3}); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	if r, _ := f.get("a"); r.Workload.Pid != 7 {
		t.Fatalf("stale update took effect: %+v", r)
	}
	missing := store.Workload{ID: "nope"}
	if err := applyAt(t, f, 6, command{Op: opUpdate, ID: "nope", Workload: &missing, Version: 1}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of missing: %v, want ErrNotFound", err)
	}
	other := store.Workload{ID: "b"}
	if err := applyAt(t, f, 7, command{Op: opUpdate, ID: "a", Workload: &other, Version: 4}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("update with mismatched ids: %v, want ErrBadCommand", err)
	}
}

func TestFSMDelete(t *testing.T) {
	f := newFSM()
	w := store.Workload{ID: "a"}
	if err := applyAt(t, f, 1, command{Op: opCreate, Workload: &w}); err != nil {
		t.Fatal(err)
	}
	if err := applyAt(t, f, 2, command{Op: opDelete, ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.get("a"); ok {
		t.Fatal("record survived delete")
	}
	if err := applyAt(t, f, 3, command{Op: opDelete, ID: "a"}); err != nil {
		t.Fatalf("delete of missing: %v", err)
	}
	if err := applyAt(t, f, 4, command{Op: opDelete}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("delete without id: %v, want ErrBadCommand", err)
	}
}

func TestFSMBadCommands(t *testing.T) {
	f := newFSM()
	good := mustEncode(t, command{Op: opDelete, ID: "a"})
	wrongVersion := append([]byte{commandVersion + 1}, good[1:]...)
	cases := map[string][]byte{
		"empty":          nil,
		"version":        wrongVersion,
		"json":           append([]byte{commandVersion}, "{not json"...),
		"unknown op":     mustEncode(t, command{Op: "frobnicate", ID: "a"}),
		"create no body": mustEncode(t, command{Op: opCreate}),
		"create no id":   mustEncode(t, command{Op: opCreate, Workload: &store.Workload{}}),
	}
	for name, data := range cases {
		res := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
		err, _ := res.(error)
		if !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: result %v, want ErrBadCommand", name, res)
		}
	}
}

func TestFSMSnapshotRestore(t *testing.T) {
	f := newFSM()
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, id := range []string{"b", "a"} {
		w := store.Workload{ID: id, CreatedAt: created, Pid: i + 1}
		w.Spec.Env = []string{"K=" + id}
		if err := applyAt(t, f, uint64(i+1), command{Op: opCreate, Workload: &w}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// A write after the snapshot must not show up in it.
	if err := applyAt(t, f, 3, command{Op: opDelete, ID: "a"}); err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	g := newFSM()
	stale := store.Workload{ID: "stale"}
	if err := applyAt(t, g, 1, command{Op: opCreate, Workload: &stale}); err != nil {
		t.Fatal(err)
	}
	if err := g.Restore(io.NopCloser(&sink.buf)); err != nil {
		t.Fatal(err)
	}
	got := g.list()
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" || got[0].Spec.Env[0] != "K=a" || !got[0].CreatedAt.Equal(created) {
		t.Fatalf("restored %+v", got)
	}
	if r, _ := g.get("b"); r.Version != 1 {
		t.Fatalf("restored version %d, want 1", r.Version)
	}
	if err := g.Restore(io.NopCloser(bytes.NewBufferString(`{"version":99}`))); err == nil {
		t.Fatal("restore of unknown snapshot version succeeded")
	}
}

func TestFSMReadsAreCopies(t *testing.T) {
	f := newFSM()
	w := store.Workload{ID: "a"}
	w.Spec.Args = []string{"x"}
	if err := applyAt(t, f, 1, command{Op: opCreate, Workload: &w}); err != nil {
		t.Fatal(err)
	}
	r, _ := f.get("a")
	r.Workload.Spec.Args[0] = "changed"
	f.list()[0].Spec.Args[0] = "changed"
	if r, _ := f.get("a"); r.Workload.Spec.Args[0] != "x" {
		t.Fatalf("caller reached into the FSM: %v", r.Workload.Spec.Args)
	}
}

type memSink struct {
	buf bytes.Buffer
}

func (s *memSink) Write(p []byte) (int, error) { return s.buf.Write(p) }
func (s *memSink) Close() error                { return nil }
func (s *memSink) ID() string                  { return "mem" }
func (s *memSink) Cancel() error               { return nil }

func TestFSMNodesSurviveSnapshot(t *testing.T) {
	f := newFSM()
	down := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	data, err := encodeCommand(command{Op: opSetNode, Node: &Node{Name: "n1", State: "failed", DownSince: down}})
	if err != nil {
		t.Fatal(err)
	}
	if res := f.Apply(&raft.Log{Index: 1, Data: data}); res != nil {
		t.Fatalf("set-node: %v", res)
	}
	bad, _ := encodeCommand(command{Op: opSetNode, Node: &Node{}})
	if res, _ := f.Apply(&raft.Log{Index: 2, Data: bad}).(error); !errors.Is(res, ErrBadCommand) {
		t.Fatalf("set-node without a name: %v, want ErrBadCommand", res)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(&sink.buf)); err != nil {
		t.Fatal(err)
	}
	n, ok := g.node("n1")
	if !ok || n.State != "failed" || !n.DownSince.Equal(down) {
		t.Fatalf("restored node %+v %v", n, ok)
	}
}
