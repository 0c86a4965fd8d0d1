package raftstore

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/workload"
)

// TestNonvoterForwardsWrites: a worker joins as a non-voter, reads the
// replicated state locally, and its writes reach the leader through
// Forward, with the leader's errors still recognisable.
func TestNonvoterForwardsWrites(t *testing.T) {
	nodes := newCluster(t, 1)
	leader := nodes[0]
	var forwarded int
	worker := openNode(t, Config{
		NodeID: "w1", BindAddr: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "w1"), Log: testLog(),
		Forward: func(leaderID, leaderAddr string, cmd []byte) (uint64, error) {
			forwarded++
			if leaderID != "n0" {
				t.Errorf("forwarded to %q, want n0", leaderID)
			}
			return leader.s.ApplyEncoded(cmd)
		},
	})
	if err := leader.s.JoinNonvoter("w1", worker.s.Addr()); err != nil {
		t.Fatal(err)
	}
	servers, err := leader.s.Servers()
	if err != nil || len(servers) != 2 || servers[1].Suffrage.String() != "Nonvoter" {
		t.Fatalf("configuration %+v, %v: want n0 and a non-voter w1", servers, err)
	}
	waitFor(t, "the worker to know the leader", func() bool { addr, _ := worker.s.Leader(); return addr != "" })

	a := alloc(t, idA, "n1", map[string]int64{"5432": 5432})
	if err := worker.s.Create(a); err != nil {
		t.Fatalf("create through the worker: %v", err)
	}
	// Read your writes: the worker's own copy has it as soon as Create returns.
	if _, err := worker.s.Get(idA); err != nil {
		t.Fatalf("the worker cannot read what it just wrote: %v", err)
	}
	waitVisible(t, idA, 1, leader, worker)
	if w, err := worker.s.Update(idA, bump); err != nil || w.Generation != 2 {
		t.Fatalf("update through the worker: %+v, %v", w, err)
	}
	waitVisible(t, idA, 2, leader, worker)

	// A node's report: the index it returns is the leader's, and the
	// worker's copy has applied it already.
	idx, err := worker.s.Observe([]Report{report(idA, "n1", workload.StateRunning)})
	if err != nil || idx == 0 {
		t.Fatalf("observe through the worker: %d, %v", idx, err)
	}
	if worker.s.AppliedIndex() < idx {
		t.Fatalf("worker at index %d after observe returned %d", worker.s.AppliedIndex(), idx)
	}
	if w, _ := worker.s.Get(idA); w.Observed.State != workload.StateRunning {
		t.Fatalf("the worker cannot read its own report: %+v", w.Observed)
	}

	if err := worker.s.Create(a); !errors.Is(err, ErrExists) {
		t.Fatalf("second create through the worker: %v, want ErrExists", err)
	}
	clash := alloc(t, idB, "n1", map[string]int64{"5432": 1})
	if err := worker.s.Create(clash); !errors.Is(err, ErrPortTaken) {
		t.Fatalf("port clash through the worker: %v, want ErrPortTaken", err)
	}
	if forwarded < 5 {
		t.Fatalf("%d writes forwarded, want at least 5", forwarded)
	}
	idx, err = leader.s.LeaderBarrier(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker to catch up", func() bool { return worker.s.AppliedIndex() >= idx })
	select {
	case <-worker.s.Changes():
	default:
		t.Fatal("no change notification on the worker after replicated writes")
	}

	// What arrives from the network is checked before it is logged.
	before := leader.s.AppliedIndex()
	bad := alloc(t, "not-an-id", "n1", nil)
	for name, data := range map[string][]byte{
		"garbage":    []byte("garbage"),
		"bad id":     mustEncode(t, create(bad)),
		"old create": []byte(legacyCreate),
		"huge batch": mustEncode(t, command{Op: opObserve, Reports: slices.Repeat([]Report{report(idA, "n1", workload.StateRunning)}, MaxReports+1)}),
	} {
		if _, err := leader.s.ApplyEncoded(data); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v, want ErrBadCommand", name, err)
		}
	}
	if leader.s.AppliedIndex() != before {
		t.Fatal("a refused command reached the log")
	}
}
