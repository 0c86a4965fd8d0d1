package cluster

import (
	"context"
	"net/netip"

	"github.com/hypercore-dev/hypercore/internal/cluster/peer"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// peerServer is what this node serves its peers: raft writes and joins,
// and its own workloads as a host. Every call reaches the node through the
// same host functions a call from this node's own API uses.
func (c *Cluster) peerServer() *peer.Server {
	here := localHost{c}
	return &peer.Server{
		NodeName: c.cfg.NodeName,
		Apply: func(_ context.Context, command []byte) (uint64, error) {
			return c.raft.ApplyEncoded(command)
		},
		AddPeer: c.addPeer,
		Barrier: func(context.Context) (uint64, error) {
			return c.raft.LeaderBarrier(raftstore.ApplyTimeout)
		},
		Run:    here.Run,
		Stop:   here.Stop,
		Remove: here.Remove,
		Logs:   here.Logs,
		Exec:   here.Exec,
		Attach: here.Attach,
		Target: c.isWorkloadTarget,
		Log:    c.log,
	}
}

// isWorkloadTarget says whether target is a published port of a workload
// running on this node: the only thing a tunnel may reach, so a peer
// cannot use one to reach the host or anything else.
func (c *Cluster) isWorkloadTarget(target netip.AddrPort) bool {
	list, err := c.local.List()
	if err != nil {
		return false
	}
	return workloadTarget(target, list, c.local.Observations())
}

// workloadTarget is isWorkloadTarget over this node's notes and what it
// observes of them.
func workloadTarget(target netip.AddrPort, list []store.Record, seen map[spec.ID]workload.Observation) bool {
	for _, r := range list {
		o, ok := seen[r.ID]
		if !ok || o.State != workload.StateRunning || o.IP != target.Addr().String() {
			continue
		}
		for _, p := range r.Spec.Ports {
			if p.Target == target.Port() {
				return true
			}
		}
	}
	return false
}
