package raftstore

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/store"
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

	if err := worker.s.Create(workload("a", time.Now())); err != nil {
		t.Fatalf("create through the worker: %v", err)
	}
	// Read your writes: the worker's own copy has it as soon as Create returns.
	if _, err := worker.s.Get("a"); err != nil {
		t.Fatalf("the worker cannot read what it just wrote: %v", err)
	}
	waitVisible(t, "a", 0, leader, worker)
	if _, err := worker.s.Update("a", func(w *store.Workload) error { w.Pid = 7; return nil }); err != nil {
		t.Fatalf("update through the worker: %v", err)
	}
	waitVisible(t, "a", 7, leader, worker)
	if err := worker.s.Create(workload("a", time.Now())); !errors.Is(err, ErrExists) {
		t.Fatalf("second create through the worker: %v, want ErrExists", err)
	}
	if forwarded < 3 {
		t.Fatalf("%d writes forwarded, want at least 3", forwarded)
	}
	idx, err := leader.s.LeaderBarrier(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the worker to catch up", func() bool { return worker.s.AppliedIndex() >= idx })
	select {
	case <-worker.s.Changes():
	default:
		t.Fatal("no change notification on the worker after replicated writes")
	}
	if _, err := leader.s.ApplyEncoded([]byte("garbage")); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("garbage command: %v, want ErrBadCommand", err)
	}
}
