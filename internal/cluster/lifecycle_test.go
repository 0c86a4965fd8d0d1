package cluster

import (
	"context"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/membership"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/node"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/routing"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// loneCluster is a one-node cluster with real raft and gossip on loopback
// and a node that has no drivers and no network: enough for the
// cluster's decisions about workloads the node does not hold. No root.
func loneCluster(t *testing.T) *Cluster {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	s, err := raftstore.Open(raftstore.Config{
		NodeID: "n1", BindAddr: "127.0.0.1:0", DataDir: filepath.Join(dir, "raft"), Bootstrap: true, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	key := make([]byte, 32)
	rand.Read(key)
	mem, err := membership.Start(membership.Config{
		NodeName: "n1", BindAddr: "127.0.0.1:0", GossipKey: key, Log: log,
		Tags: membership.Tags{Role: membership.RoleServer, Cores: 2, MemoryMiB: 1024, Public: true, Isolations: []string{"container"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Shutdown() })
	st, err := store.OpenBolt(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	local, err := node.New(node.Config{Name: "n1", Log: log}, node.Parts{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return &Cluster{
		cfg: Config{NodeName: "n1", BaseDomain: "test"}, log: log, local: local, raft: s, mem: mem,
		routes: routing.NewSyncer(proxy.NewTable()), routesDirty: make(chan struct{}, 1), quit: make(chan struct{}),
	}
}

// TestStopOfAWorkloadItsNodeDoesNotHold: a workload whose start failed on
// its node (or that a failover placed and its node has not started) is
// listed, and stopping it is what the user can do about it. The node has
// nothing to stop; the stop must still succeed and keep it from starting,
// not answer "not found" for a workload the list shows.
func TestStopOfAWorkloadItsNodeDoesNotHold(t *testing.T) {
	c := loneCluster(t)
	id := spec.NewID()
	a := workload.Allocation{
		ID: id, Node: "n1", Desired: workload.DesiredRunning, CreatedAt: time.Now().UTC(),
		Spec: spec.Spec{Image: "example.test/web:1", Cores: 1, MemoryMiB: 64, Isolation: spec.IsolationContainer},
	}
	if err := c.raft.Create(a); err != nil {
		t.Fatal(err)
	}
	// Its node tried and failed: it says so, and holds nothing.
	if _, err := c.raft.Observe([]raftstore.Report{{ID: id, Observation: workload.Observation{
		Node: "n1", Generation: 1, State: workload.StateExited, Error: "no such image",
	}}}); err != nil {
		t.Fatal(err)
	}

	w, err := c.Stop(context.Background(), id, 0)
	if err != nil {
		t.Fatalf("stop of a workload its node does not hold: %v", err)
	}
	if w.ID != id || w.Desired != workload.DesiredStopped {
		t.Fatalf("stop answered %+v, want %s desired stopped", w.Allocation, id)
	}
	if got, err := c.raft.Get(id); err != nil || got.Desired != workload.DesiredStopped {
		t.Fatalf("the cluster state has %+v, %v; want it desired stopped", got.Allocation, err)
	}
}
