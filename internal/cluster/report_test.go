package cluster

import (
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// fakeRaft records what the reporter writes, one batch per Observe.
type fakeRaft struct {
	mu      sync.Mutex
	batches [][]raftstore.Report
	fail    error // returned, and nothing recorded, while set
}

func (f *fakeRaft) Observe(reports []raftstore.Report) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return 0, f.fail
	}
	f.batches = append(f.batches, append([]raftstore.Report(nil), reports...))
	return uint64(len(f.batches)), nil
}

// last is the observation of id the state holds: the one in the last
// batch that named it.
func (f *fakeRaft) last(id spec.ID) (workload.Observation, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.batches) - 1; i >= 0; i-- {
		for _, r := range f.batches[i] {
			if r.ID == id {
				return r.Observation, true
			}
		}
	}
	return workload.Observation{}, false
}

// fakeNode is the node's memory of its observations, as node.Observation
// gives it.
type fakeNode struct {
	mu  sync.Mutex
	obs map[spec.ID]workload.Observation
}

func (n *fakeNode) observation(id spec.ID) (workload.Observation, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	o, ok := n.obs[id]
	return o, ok
}

// see is what the node does on a change: record it, then report it.
func (n *fakeNode) see(r *reporter, id spec.ID, o workload.Observation) {
	n.mu.Lock()
	n.obs[id] = o
	n.mu.Unlock()
	r.report(id, o)
}

// TestResendNeverWritesAnOlderObservation: the reconciler reads the node's
// observations, finds one the cluster state lacks, and asks for it to be
// reported again; meanwhile the node has moved on. What ends up in the
// state must be the node's newest observation, not the copy the reconciler
// read before.
func TestResendNeverWritesAnOlderObservation(t *testing.T) {
	id := spec.NewID()
	raft := &fakeRaft{}
	n := &fakeNode{obs: map[spec.ID]workload.Observation{}}
	r := newReporter(raft, n.observation, slog.Default(), nil)

	running := workload.Observation{Node: "n1", Generation: 1, State: workload.StateRunning, IP: "10.77.0.2", Pid: 7}
	n.see(r, id, running)
	// The report is lost: no leader.
	raft.fail = errors.New("no leader")
	if _, err := r.flush(); err == nil {
		t.Fatal("flush with no leader succeeded")
	}
	raft.fail = nil

	// The reconciler reads "running" and sees the state lacks it...
	seen := map[spec.ID]workload.Observation{id: running}
	// ...the node finds the workload ready and reports that...
	ready := running
	ready.Ready = true
	n.see(r, id, ready)
	// ...and the reconciler asks for what it saw to be reported again.
	if _, ok := seen[id]; ok {
		r.resend(id)
	}
	if _, err := r.flush(); err != nil {
		t.Fatal(err)
	}
	if got, _ := raft.last(id); !got.Equal(ready) {
		t.Fatalf("the state holds %+v, want the node's newest observation %+v", got, ready)
	}

	// The same after the newer report was written first: a resend must
	// not put an older one after it.
	exited := ready
	exited.State, exited.Pid, exited.Ready, exited.ExitCode = workload.StateExited, 0, false, 3
	n.see(r, id, exited)
	if _, err := r.flush(); err != nil {
		t.Fatal(err)
	}
	r.resend(id)
	if _, err := r.flush(); err != nil {
		t.Fatal(err)
	}
	if got, _ := raft.last(id); !got.Equal(exited) {
		t.Fatalf("the state holds %+v, want %+v", got, exited)
	}

	// A workload the node no longer has is not reported again.
	gone := spec.NewID()
	r.resend(gone)
	if _, err := r.flush(); err != nil {
		t.Fatal(err)
	}
	if o, ok := raft.last(gone); ok {
		t.Fatalf("a workload the node does not have was reported: %+v", o)
	}
}

// TestReporterKeepsReportsRaftRefused: a batch raft refuses stays noted,
// unless a newer observation of the same workload replaced it meanwhile.
func TestReporterKeepsReportsRaftRefused(t *testing.T) {
	a, b := spec.NewID(), spec.NewID()
	raft := &fakeRaft{fail: errors.New("no leader")}
	n := &fakeNode{obs: map[spec.ID]workload.Observation{}}
	r := newReporter(raft, n.observation, slog.Default(), nil)
	n.see(r, a, workload.Observation{Node: "n1", State: workload.StateCreating})
	n.see(r, b, workload.Observation{Node: "n1", State: workload.StateRunning})
	if _, err := r.flush(); err == nil {
		t.Fatal("flush with no leader succeeded")
	}
	n.see(r, a, workload.Observation{Node: "n1", State: workload.StateRunning})
	raft.fail = nil
	if _, err := r.flush(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[spec.ID]workload.State{a: workload.StateRunning, b: workload.StateRunning} {
		if got, ok := raft.last(id); !ok || got.State != want {
			t.Errorf("%s: the state holds %+v (%v), want %s", id, got, ok, want)
		}
	}
}

// TestReporterWritesManyReportsInBoundedEntries: a node that has more
// changes at once than one entry takes (a restart re-adopting all its
// workloads) writes them all, in several entries each within the bound,
// instead of one entry that is refused every time it is tried.
func TestReporterWritesManyReportsInBoundedEntries(t *testing.T) {
	raft := &boundedRaft{}
	n := &fakeNode{obs: map[spec.ID]workload.Observation{}}
	r := newReporter(raft, n.observation, slog.Default(), nil)
	total := 2*raftstore.MaxReports + 7
	ids := make([]spec.ID, total)
	for i := range ids {
		ids[i] = spec.NewID()
		n.see(r, ids[i], workload.Observation{Node: "n1", Generation: 1, State: workload.StateRunning})
	}
	index, err := r.flush()
	if err != nil {
		t.Fatalf("flush of %d reports: %v", total, err)
	}
	if index != uint64(len(raft.batches)) || len(raft.batches) != 3 {
		t.Fatalf("flush answered index %d after %d entries, want the last of 3", index, len(raft.batches))
	}
	for _, id := range ids {
		if _, ok := raft.last(id); !ok {
			t.Fatalf("report of %s never written", id)
		}
	}
}

// boundedRaft refuses an entry over raftstore.MaxReports, as the leader
// refuses such a forwarded one.
type boundedRaft struct{ fakeRaft }

func (b *boundedRaft) Observe(reports []raftstore.Report) (uint64, error) {
	if len(reports) > raftstore.MaxReports {
		return 0, errors.New("too many reports in one entry")
	}
	return b.fakeRaft.Observe(reports)
}
