package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// Fixed workload ids, in sort order, so tests can name them and check
// orderings that break ties by id.
const (
	idA spec.ID = "00000000-0000-4000-8000-00000000000a"
	idB spec.ID = "00000000-0000-4000-8000-00000000000b"
	idC spec.ID = "00000000-0000-4000-8000-00000000000c"
	idD spec.ID = "00000000-0000-4000-8000-00000000000d"
)

// testSpec builds a valid spec publishing ports (keys as the API takes
// them: "443" is HTTP, "5432" or "tcp:80" raw TCP).
func testSpec(t testing.TB, ports map[string]int64) spec.Spec {
	t.Helper()
	s, err := spec.Build(spec.Input{Image: "alpine:3.20", Ports: ports, Args: []string{"sleep", "1d"}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// alloc is an allocation of id, meant to run on node, publishing ports.
func alloc(t testing.TB, id spec.ID, node string, ports map[string]int64) workload.Allocation {
	t.Helper()
	return workload.Allocation{
		ID: id, Node: node, Desired: workload.DesiredRunning, Spec: testSpec(t, ports),
		CreatedAt: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC),
	}
}

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
	return applyRaw(t, f, index, mustEncode(t, c))
}

// applyRaw applies data as the log entry at index and returns the result.
func applyRaw(t *testing.T, f *fsm, index uint64, data []byte) error {
	t.Helper()
	res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
	if res == nil {
		return nil
	}
	err, ok := res.(error)
	if !ok {
		t.Fatalf("Apply returned %T, want error or nil", res)
	}
	return err
}

func create(a workload.Allocation) command {
	return command{Op: opCreateAllocation, ID: a.ID, Allocation: &a}
}

func update(a workload.Allocation, version uint64) command {
	return command{Op: opUpdateAllocation, ID: a.ID, Allocation: &a, Version: version}
}

func observe(reports ...Report) command {
	return command{Op: opObserve, Reports: reports}
}

func report(id spec.ID, node string, state workload.State) Report {
	return Report{ID: id, Observation: workload.Observation{Node: node, Generation: 1, State: state}}
}

// mustGet returns the joined view of id and its allocation's version.
func mustGet(t *testing.T, f *fsm, id spec.ID) (workload.Workload, uint64) {
	t.Helper()
	w, ok := f.get(id)
	if !ok {
		t.Fatalf("%s: no allocation", id)
	}
	_, v, _ := f.allocation(id)
	return w, v
}

func TestFSMCreate(t *testing.T) {
	f := newFSM()
	a := alloc(t, idA, "n1", nil)
	if err := applyAt(t, f, 1, create(a)); err != nil {
		t.Fatal(err)
	}
	w, v := mustGet(t, f, idA)
	if v != 1 || w.Generation != 1 || w.Desired != workload.DesiredRunning || w.Node != "n1" {
		t.Fatalf("after create: %+v version %d; want generation 1, version 1", w.Allocation, v)
	}
	// No report yet: the workload reads as pending on its node.
	if w.Observed.State != workload.StatePending || w.Observed.Node != "n1" {
		t.Fatalf("observed before any report: %+v, want pending on n1", w.Observed)
	}
	if err := applyAt(t, f, 2, create(a)); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	if _, v := mustGet(t, f, idA); v != 1 {
		t.Fatalf("failed create changed the allocation: version %d", v)
	}
	// A generation the caller set is kept.
	b := alloc(t, idB, "n1", nil)
	b.Generation = 7
	if err := applyAt(t, f, 3, create(b)); err != nil {
		t.Fatal(err)
	}
	if w, _ := mustGet(t, f, idB); w.Generation != 7 {
		t.Fatalf("generation %d, want the 7 it was created with", w.Generation)
	}
}

func TestFSMUpdateCompareAndSet(t *testing.T) {
	f := newFSM()
	a := alloc(t, idA, "n1", nil)
	if err := applyAt(t, f, 3, create(a)); err != nil {
		t.Fatal(err)
	}
	a.Desired = workload.DesiredStopped
	if err := applyAt(t, f, 4, update(a, 3)); err != nil {
		t.Fatal(err)
	}
	if w, v := mustGet(t, f, idA); w.Desired != workload.DesiredStopped || v != 4 || w.Generation != 2 {
		t.Fatalf("after update: %+v version %d; want stopped, version 4, generation 2", w.Allocation, v)
	}
	// The same update again carries a stale version: it must lose.
	a.Desired = workload.DesiredRunning
	if err := applyAt(t, f, 5, update(a, 3)); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	if w, _ := mustGet(t, f, idA); w.Desired != workload.DesiredStopped {
		t.Fatalf("stale update took effect: %+v", w.Allocation)
	}
	missing := alloc(t, idD, "n1", nil)
	if err := applyAt(t, f, 6, update(missing, 1)); !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("update of missing: %v, want workload.ErrNotFound", err)
	}
	other := alloc(t, idB, "n1", nil)
	if err := applyAt(t, f, 7, command{Op: opUpdateAllocation, ID: idA, Allocation: &other, Version: 4}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("update with mismatched ids: %v, want ErrBadCommand", err)
	}
}

// TestFSMGeneration: the generation grows by one exactly when node, spec
// or desired changes, whatever the update says it is, and ID and CreatedAt
// stay.
func TestFSMGeneration(t *testing.T) {
	f := newFSM()
	a := alloc(t, idA, "n1", nil)
	if err := applyAt(t, f, 1, create(a)); err != nil {
		t.Fatal(err)
	}
	index := uint64(1)
	step := func(what string, change func(*workload.Allocation), want uint64) {
		t.Helper()
		cur, v, _ := f.allocation(idA)
		change(&cur)
		index++
		if err := applyAt(t, f, index, update(cur, v)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if w, _ := mustGet(t, f, idA); w.Generation != want {
			t.Fatalf("%s: generation %d, want %d", what, w.Generation, want)
		}
	}
	step("nothing", func(*workload.Allocation) {}, 1)
	step("a claimed generation", func(a *workload.Allocation) { a.Generation = 40 }, 1)
	step("node", func(a *workload.Allocation) { a.Node = "n2" }, 2)
	step("desired", func(a *workload.Allocation) { a.Desired = workload.DesiredStopped }, 3)
	step("spec", func(a *workload.Allocation) { a.Spec.Env = append(a.Spec.Env, "K=v") }, 4)
	step("spec back", func(a *workload.Allocation) { a.Spec.Env = nil }, 5)
	// nil and empty slices encode alike: no change.
	step("nil vs empty", func(a *workload.Allocation) { a.Spec.Env = []string{} }, 5)
	step("created", func(a *workload.Allocation) { a.CreatedAt = a.CreatedAt.Add(time.Hour) }, 5)
	w, _ := mustGet(t, f, idA)
	if !w.CreatedAt.Equal(alloc(t, idA, "n1", nil).CreatedAt) {
		t.Fatalf("CreatedAt changed to %v", w.CreatedAt)
	}
}

func TestFSMObserve(t *testing.T) {
	f := newFSM()
	if err := applyAt(t, f, 1, create(alloc(t, idA, "n1", nil))); err != nil {
		t.Fatal(err)
	}
	if err := applyAt(t, f, 2, create(alloc(t, idB, "n2", nil))); err != nil {
		t.Fatal(err)
	}
	running := report(idA, "n1", workload.StateRunning)
	running.Observation.IP, running.Observation.Pid, running.Observation.Ready = "10.88.0.5", 42, true
	// One batch: a report from the right node, one from a node the
	// allocation does not name, and one about an id with no allocation.
	if err := applyAt(t, f, 3, observe(running, report(idB, "n1", workload.StateRunning), report(idC, "n1", workload.StateRunning))); err != nil {
		t.Fatal(err)
	}
	w, v := mustGet(t, f, idA)
	if w.Observed != running.Observation {
		t.Fatalf("observed %+v, want %+v", w.Observed, running.Observation)
	}
	if v != 1 {
		t.Fatalf("a report moved the allocation's version to %d: updates in flight would conflict", v)
	}
	// Join would hide it; the state must not even hold it.
	if o, ok := f.observed[idB]; ok {
		t.Fatalf("a report from a node b is not on was kept: %+v", o)
	}
	if _, ok := f.observed[idC]; ok {
		t.Fatal("a report about an id without allocation was kept")
	}
	if _, ok := f.get(idC); ok {
		t.Fatal("a report made an allocation")
	}

	// Moving a to n2 drops n1's observation, and n1's late reports.
	cur, ver, _ := f.allocation(idA)
	cur.Node = "n2"
	if err := applyAt(t, f, 4, update(cur, ver)); err != nil {
		t.Fatal(err)
	}
	if w, _ := mustGet(t, f, idA); w.Observed.State != workload.StatePending || w.Observed.Node != "n2" {
		t.Fatalf("after the move: %+v, want pending on n2", w.Observed)
	}
	if o, ok := f.observed[idA]; ok {
		t.Fatalf("the old node's observation survived the move: %+v", o)
	}
	if err := applyAt(t, f, 5, observe(running)); err != nil {
		t.Fatal(err)
	}
	if o, ok := f.observed[idA]; ok {
		t.Fatalf("a stale report from the old node was kept: %+v", o)
	}
	if err := applyAt(t, f, 6, observe(report(idA, "n2", workload.StateCreating))); err != nil {
		t.Fatal(err)
	}
	if w, _ := mustGet(t, f, idA); w.Observed.State != workload.StateCreating || w.Observed.Node != "n2" {
		t.Fatalf("the new node's report: %+v", w.Observed)
	}
	// An update that keeps the node keeps the observation.
	cur, ver, _ = f.allocation(idA)
	cur.Desired = workload.DesiredStopped
	if err := applyAt(t, f, 7, update(cur, ver)); err != nil {
		t.Fatal(err)
	}
	if w, _ := mustGet(t, f, idA); w.Observed.State != workload.StateCreating {
		t.Fatalf("an update on the same node lost the observation: %+v", w.Observed)
	}
}

func TestFSMDelete(t *testing.T) {
	f := newFSM()
	if err := applyAt(t, f, 1, create(alloc(t, idA, "n1", nil))); err != nil {
		t.Fatal(err)
	}
	if err := applyAt(t, f, 2, observe(report(idA, "n1", workload.StateRunning))); err != nil {
		t.Fatal(err)
	}
	if err := applyAt(t, f, 3, command{Op: opDelete, ID: idA}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.get(idA); ok {
		t.Fatal("allocation survived delete")
	}
	if _, ok := f.observed[idA]; ok {
		t.Fatal("observation survived delete")
	}
	// The id made again starts without the old observation.
	if err := applyAt(t, f, 4, create(alloc(t, idA, "n1", nil))); err != nil {
		t.Fatal(err)
	}
	if w, _ := mustGet(t, f, idA); w.Observed.State != workload.StatePending {
		t.Fatalf("re-created workload has an old observation: %+v", w.Observed)
	}
	if err := applyAt(t, f, 5, command{Op: opDelete, ID: idB}); err != nil {
		t.Fatalf("delete of missing: %v", err)
	}
	if err := applyAt(t, f, 6, command{Op: opDelete}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("delete without id: %v, want ErrBadCommand", err)
	}
}

func TestFSMPortTaken(t *testing.T) {
	f := newFSM()
	pg := map[string]int64{"5432": 5432, "443": 8080}
	if err := applyAt(t, f, 1, create(alloc(t, idB, "n1", pg))); err != nil {
		t.Fatal(err)
	}
	index := uint64(1)
	next := func() uint64 { index++; return index }

	// Same raw TCP port, same node: refused, naming port, node, holder.
	err := applyAt(t, f, next(), create(alloc(t, idC, "n1", map[string]int64{"5432": 1})))
	if !errors.Is(err, ErrPortTaken) {
		t.Fatalf("second holder of tcp 5432 on n1: %v, want ErrPortTaken", err)
	}
	// The API answers every "no room" alike (409), whichever layer found it.
	if !errors.Is(err, workload.ErrNoCapacity) {
		t.Fatalf("second holder of tcp 5432 on n1: %v is not a workload.ErrNoCapacity", err)
	}
	for _, want := range []string{"5432", "n1", string(idB)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if _, ok := f.get(idC); ok {
		t.Fatal("the refused create was stored")
	}
	// The same port on another node, the same HTTP port, another TCP
	// port, or not meant to run: all fine.
	fine := map[spec.ID]workload.Allocation{
		idC: alloc(t, idC, "n2", map[string]int64{"5432": 1}),
		idD: alloc(t, idD, "n1", map[string]int64{"443": 1, "5433": 1}),
	}
	stopped := alloc(t, idA, "n1", map[string]int64{"5432": 1})
	stopped.Desired = workload.DesiredStopped
	fine[idA] = stopped
	for id, a := range fine {
		if err := applyAt(t, f, next(), create(a)); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	// Starting the stopped one, or moving c onto n1, would share 5432.
	cur, ver, _ := f.allocation(idA)
	cur.Desired = workload.DesiredRunning
	if err := applyAt(t, f, next(), update(cur, ver)); !errors.Is(err, ErrPortTaken) {
		t.Fatalf("start of a second holder: %v, want ErrPortTaken", err)
	}
	cur, ver, _ = f.allocation(idC)
	cur.Node = "n1"
	if err := applyAt(t, f, next(), update(cur, ver)); !errors.Is(err, ErrPortTaken) || !errors.Is(err, workload.ErrNoCapacity) {
		t.Fatalf("move of a second holder: %v, want ErrPortTaken, a workload.ErrNoCapacity", err)
	}
	if w, _ := mustGet(t, f, idC); w.Node != "n2" {
		t.Fatalf("the refused move was stored: %+v", w.Allocation)
	}
	// Once the holder stops, the port is free.
	cur, ver, _ = f.allocation(idB)
	cur.Desired = workload.DesiredStopped
	if err := applyAt(t, f, next(), update(cur, ver)); err != nil {
		t.Fatal(err)
	}
	cur, ver, _ = f.allocation(idA)
	cur.Desired = workload.DesiredRunning
	if err := applyAt(t, f, next(), update(cur, ver)); err != nil {
		t.Fatalf("start after the holder stopped: %v", err)
	}
	// Now b cannot start again; a is named as the holder.
	cur, ver, _ = f.allocation(idB)
	cur.Desired = workload.DesiredRunning
	err = applyAt(t, f, next(), update(cur, ver))
	if !errors.Is(err, ErrPortTaken) || !strings.Contains(err.Error(), string(idA)) {
		t.Fatalf("restart of the old holder: %v, want ErrPortTaken naming %s", err, idA)
	}
}

// TestFSMPortTakenNamesLeastHolder: when several hold the port (as a log
// from before the check may leave them), every server names the same one.
func TestFSMPortTakenNamesLeastHolder(t *testing.T) {
	for range 20 {
		f := newFSM()
		for _, id := range []spec.ID{idC, idB, idD} {
			f.allocs[id] = allocRecord{Allocation: alloc(t, id, "n1", map[string]int64{"5432": 1}), Version: 1}
		}
		err := f.checkPorts(alloc(t, idA, "n1", map[string]int64{"5432": 1}))
		if !errors.Is(err, ErrPortTaken) || !strings.Contains(err.Error(), string(idB)) {
			t.Fatalf("%v, want ErrPortTaken naming %s", err, idB)
		}
	}
}

func TestFSMBadCommands(t *testing.T) {
	f := newFSM()
	good := mustEncode(t, command{Op: opDelete, ID: idA})
	wrongVersion := append([]byte{commandVersion + 1}, good[1:]...)
	noNode := alloc(t, idA, "", nil)
	cases := map[string][]byte{
		"empty":            nil,
		"version":          wrongVersion,
		"json":             append([]byte{commandVersion}, "{not json"...),
		"unknown op":       mustEncode(t, command{Op: "frobnicate", ID: idA}),
		"create no body":   mustEncode(t, command{Op: opCreateAllocation}),
		"create no id":     mustEncode(t, command{Op: opCreateAllocation, Allocation: &workload.Allocation{Node: "n1"}}),
		"create no node":   mustEncode(t, create(noNode)),
		"observe nothing":  mustEncode(t, command{Op: opObserve}),
		"observe no node":  mustEncode(t, observe(report(idA, "", workload.StateRunning))),
		"old create empty": mustEncode(t, command{Op: opLegacyCreate}),
		"old create no id": mustEncode(t, command{Op: opLegacyCreate, Workload: json.RawMessage(`{"node":"n1"}`)}),
	}
	for name, data := range cases {
		if err := applyRaw(t, f, 1, data); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: result %v, want ErrBadCommand", name, err)
		}
	}
	if len(f.allocs) != 0 || len(f.observed) != 0 {
		t.Fatalf("bad commands changed the state: %v %v", f.allocs, f.observed)
	}
}

// TestCheckForwarded: what another node forwards is checked as the API
// edge checks its input, beyond what the state machine needs.
func TestCheckForwarded(t *testing.T) {
	ok := alloc(t, idA, "n1", map[string]int64{"5432": 1})
	badID := ok
	badID.ID = "../../etc"
	badSpec := ok
	badSpec.Spec.MemoryMiB = 1
	badDesired := ok
	badDesired.Desired = "dancing"
	badState := report(idA, "n1", "failed")
	cases := map[string]command{
		"id":         create(badID),
		"spec":       create(badSpec),
		"desired":    update(badDesired, 1),
		"report id":  observe(report("nope", "n1", workload.StateRunning)),
		"state":      observe(badState),
		"delete id":  {Op: opDelete, ID: "x"},
		"old create": {Op: opLegacyCreate, Workload: json.RawMessage(legacyCreate[1:])},
	}
	for name, c := range cases {
		if err := checkForwarded(&c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v, want ErrBadCommand", name, err)
		}
	}
	for name, c := range map[string]command{
		"create":  create(ok),
		"update":  update(ok, 3),
		"observe": observe(report(idA, "n1", workload.StateExited)),
		"delete":  {Op: opDelete, ID: idA},
		"node":    {Op: opSetNode, Node: &Node{Name: "n1"}},
	} {
		if err := checkForwarded(&c); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestFSMSnapshotRestore(t *testing.T) {
	f := newFSM()
	for i, id := range []spec.ID{idB, idA} {
		a := alloc(t, id, "n1", nil)
		a.Spec.Env = []string{"K=" + string(id)}
		if err := applyAt(t, f, uint64(i+1), create(a)); err != nil {
			t.Fatal(err)
		}
	}
	running := report(idB, "n1", workload.StateRunning)
	running.Observation.Pid = 9
	if err := applyAt(t, f, 3, observe(running)); err != nil {
		t.Fatal(err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the snapshot must not show up in it.
	if err := applyAt(t, f, 4, command{Op: opDelete, ID: idA}); err != nil {
		t.Fatal(err)
	}
	if err := applyAt(t, f, 5, observe(report(idB, "n1", workload.StateExited))); err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !bytes.HasPrefix(sink.buf.Bytes(), []byte(`{"version":2,`)) {
		t.Fatalf("snapshot is not version 2: %.40s", sink.buf.String())
	}

	g := newFSM()
	if err := applyAt(t, g, 1, create(alloc(t, idD, "n1", nil))); err != nil {
		t.Fatal(err)
	}
	if err := g.Restore(io.NopCloser(&sink.buf)); err != nil {
		t.Fatal(err)
	}
	// The state machine counts what it holds: WaitApplied goes by it, as
	// raft's own count runs ahead of the state.
	if f.applied.Load() != 5 || g.applied.Load() != 3 {
		t.Errorf("applied: %d after entry 5, %d restored from a snapshot taken at 3", f.applied.Load(), g.applied.Load())
	}
	got := g.list()
	if len(got) != 2 || got[0].ID != idA || got[1].ID != idB || got[0].Spec.Env[0] != "K="+string(idA) {
		t.Fatalf("restored %+v", got)
	}
	if got[1].Observed.State != workload.StateRunning || got[1].Observed.Pid != 9 {
		t.Fatalf("restored observation %+v, want running with pid 9", got[1].Observed)
	}
	if _, v := mustGet(t, g, idB); v != 1 {
		t.Fatalf("restored version %d, want 1", v)
	}
	if err := g.Restore(io.NopCloser(bytes.NewBufferString(`{"version":99}`))); err == nil {
		t.Fatal("restore of unknown snapshot version succeeded")
	}
}

func TestFSMReadsAreCopies(t *testing.T) {
	f := newFSM()
	a := alloc(t, idA, "n1", nil)
	if err := applyAt(t, f, 1, create(a)); err != nil {
		t.Fatal(err)
	}
	w, _ := f.get(idA)
	w.Spec.Args[0] = "changed"
	f.list()[0].Spec.Args[0] = "changed"
	c, _, _ := f.allocation(idA)
	c.Spec.Args[0] = "changed"
	if w, _ := f.get(idA); w.Spec.Args[0] != "sleep" {
		t.Fatalf("caller reached into the FSM: %v", w.Spec.Args)
	}
}

func TestFSMListOrder(t *testing.T) {
	f := newFSM()
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for i, c := range []struct {
		id spec.ID
		at time.Time
	}{{idC, t0.Add(time.Minute)}, {idA, t0.Add(time.Minute)}, {idD, t0}, {idB, t0.Add(time.Minute)}} {
		a := alloc(t, c.id, "n1", nil)
		a.CreatedAt = c.at
		if err := applyAt(t, f, uint64(i+1), create(a)); err != nil {
			t.Fatal(err)
		}
	}
	var ids []spec.ID
	for _, w := range f.list() {
		ids = append(ids, w.ID)
	}
	want := []spec.ID{idD, idA, idB, idC}
	if len(ids) != 4 || ids[0] != want[0] || ids[1] != want[1] || ids[2] != want[2] || ids[3] != want[3] {
		t.Fatalf("order %v, want %v (oldest first, ties by id)", ids, want)
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
	if err := applyAt(t, f, 1, command{Op: opSetNode, Node: &Node{Name: "n1", State: "failed", DownSince: down}}); err != nil {
		t.Fatalf("set-node: %v", err)
	}
	if err := applyAt(t, f, 2, command{Op: opSetNode, Node: &Node{}}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("set-node without a name: %v, want ErrBadCommand", err)
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
