package cluster

import (
	"log/slog"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// soloRaft is a one-server raft store that leads, on loopback.
func soloRaft(t *testing.T) *raftstore.Store {
	t.Helper()
	s, err := raftstore.Open(raftstore.Config{
		NodeID: "n1", BindAddr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: true, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	testutil.WaitFor(t, 10*time.Second, "a raft leader", s.IsLeader)
	return s
}

func allocated(t *testing.T, s *raftstore.Store, node string) spec.ID {
	t.Helper()
	a := workload.Allocation{
		ID: spec.NewID(), Node: node, Desired: workload.DesiredRunning, Generation: 1, CreatedAt: time.Now().UTC(),
		Spec: spec.Spec{Image: "busybox", Cores: 1, MemoryMiB: 64, Isolation: spec.IsolationContainer},
	}
	if err := s.Create(a); err != nil {
		t.Fatal(err)
	}
	return a.ID
}

// TestReporterWritesTheNewestAndReadsBack: reports are the node's one way
// into the cluster state. Only the newest report of a workload is written,
// all noted reports go in one flush, the flush's index is enough for the
// caller to read them, and the routes hear of every report at once.
func TestReporterWritesTheNewestAndReadsBack(t *testing.T) {
	s := soloRaft(t)
	a, b := allocated(t, s, "n1"), allocated(t, s, "n1")
	changed := 0
	seen := map[spec.ID]workload.Observation{}
	current := func(id spec.ID) (workload.Observation, bool) { o, ok := seen[id]; return o, ok }
	r := newReporter(s, current, slog.New(slog.DiscardHandler), func() { changed++ })

	r.report(a, workload.Observation{Node: "n1", Generation: 1, State: workload.StateCreating})
	r.report(a, workload.Observation{Node: "n1", Generation: 1, State: workload.StateRunning, IP: "10.77.0.2", Pid: 7})
	r.report(b, workload.Observation{Node: "n1", Generation: 1, State: workload.StateExited, ExitCode: 3})
	if changed != 3 {
		t.Errorf("routes told of %d reports, want 3", changed)
	}
	before := s.AppliedIndex()
	index, err := r.flush()
	if err != nil {
		t.Fatal(err)
	}
	if index != before+1 {
		t.Errorf("flush wrote up to index %d after %d: want one entry for the batch", index, before)
	}
	if s.AppliedIndex() < index {
		t.Fatalf("applied %d, flush answered %d", s.AppliedIndex(), index)
	}
	wa, _ := s.Get(a)
	wb, _ := s.Get(b)
	if wa.Observed.State != workload.StateRunning || wa.Observed.Pid != 7 || wb.Observed.ExitCode != 3 {
		t.Fatalf("state holds %+v and %+v", wa.Observed, wb.Observed)
	}
	// Nothing new: the last index still covers what was reported.
	if again, err := r.flush(); err != nil || again != index {
		t.Fatalf("empty flush = %d, %v; want %d", again, err, index)
	}
}
