package cluster

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/peer"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// errHostDown means the node that hosts a workload is not reachable now:
// gossip sees it down, or a call to it did not reach it.
var errHostDown = peer.ErrUnreachable

// host is a node that runs workloads, as the node deciding about them sees
// it: itself, or a peer over PeerService. Run and Stop answer the raft
// index of the host's report, so the caller can read what the host saw;
// the host's observations reach the cluster state only through its reports.
type host interface {
	Run(ctx context.Context, a workload.Allocation) (uint64, error)
	Stop(ctx context.Context, id spec.ID, timeout time.Duration) (uint64, error)
	Remove(ctx context.Context, id spec.ID) error
	Logs(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error)
	Exec(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error)
	Attach(ctx context.Context, id spec.ID, stdio driver.IO) error
}

// hostOf returns the host named name: this node, a live peer, or a host
// whose every call fails with errHostDown.
func (c *Cluster) hostOf(name string) host {
	if name == c.cfg.NodeName {
		return localHost{c}
	}
	rpc, ok := c.liveRPCAddr(name)
	if !ok {
		return downHost{name}
	}
	return remoteHost{c: c, name: name, rpc: rpc}
}

// localHost is this node as a host.
type localHost struct{ c *Cluster }

// Run starts a here and writes its report. While a caller (a spawn, here
// or on a peer) drives the start, the reconciler leaves the allocation
// alone: after a failure the caller moves or deletes it, and a start by
// the reconciler in between would only be undone.
func (h localHost) Run(ctx context.Context, a workload.Allocation) (uint64, error) {
	h.c.driving.Add(a.ID)
	defer h.c.driving.Done(a.ID)
	if _, err := h.c.local.Run(ctx, a); err != nil {
		return 0, err
	}
	return h.c.reports.flush()
}

// Stop stops id here and writes its report.
func (h localHost) Stop(ctx context.Context, id spec.ID, timeout time.Duration) (uint64, error) {
	if _, err := h.c.local.Stop(ctx, id, timeout); err != nil {
		return 0, err
	}
	return h.c.reports.flush()
}

// Remove removes id from this node.
func (h localHost) Remove(ctx context.Context, id spec.ID) error { return h.c.local.Remove(ctx, id) }

// Logs reads id's output here.
func (h localHost) Logs(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error) {
	return h.c.local.Logs(ctx, id, opts)
}

// Exec runs a process in id here.
func (h localHost) Exec(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error) {
	return h.c.local.Exec(ctx, id, cfg)
}

// Attach attaches to id here.
func (h localHost) Attach(ctx context.Context, id spec.ID, stdio driver.IO) error {
	return h.c.local.Attach(ctx, id, stdio)
}

// downHost is a host gossip does not see alive.
type downHost struct{ name string }

func (h downHost) err() error {
	return fmt.Errorf("%w: node %s is not reachable; its workloads move once it has been down for the failover grace", errHostDown, h.name)
}

func (h downHost) Run(context.Context, workload.Allocation) (uint64, error) { return 0, h.err() }
func (h downHost) Stop(context.Context, spec.ID, time.Duration) (uint64, error) {
	return 0, h.err()
}
func (h downHost) Remove(context.Context, spec.ID) error { return h.err() }
func (h downHost) Logs(context.Context, spec.ID, driver.LogOptions) (io.ReadCloser, error) {
	return nil, h.err()
}
func (h downHost) Exec(context.Context, spec.ID, driver.ExecConfig) (int, error) {
	return -1, h.err()
}
func (h downHost) Attach(context.Context, spec.ID, driver.IO) error { return h.err() }

// remoteHost is a live peer as a host, over PeerService on the one
// connection to it.
type remoteHost struct {
	c         *Cluster
	name, rpc string
}

// Run asks the peer to start a.
func (h remoteHost) Run(ctx context.Context, a workload.Allocation) (uint64, error) {
	return h.c.peers.Run(ctx, h.name, h.rpc, a)
}

// Stop asks the peer to stop id.
func (h remoteHost) Stop(ctx context.Context, id spec.ID, timeout time.Duration) (uint64, error) {
	return h.c.peers.Stop(ctx, h.name, h.rpc, id, timeout)
}

// Remove asks the peer to remove id.
func (h remoteHost) Remove(ctx context.Context, id spec.ID) error {
	return h.c.peers.Remove(ctx, h.name, h.rpc, id)
}

// Logs streams id's output from the peer.
func (h remoteHost) Logs(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error) {
	return h.c.peers.Logs(ctx, h.name, h.rpc, id, opts)
}

// Exec runs a process in id on the peer.
func (h remoteHost) Exec(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error) {
	return h.c.peers.Exec(ctx, h.name, h.rpc, id, cfg)
}

// Attach attaches to id on the peer.
func (h remoteHost) Attach(ctx context.Context, id spec.ID, stdio driver.IO) error {
	return h.c.peers.Attach(ctx, h.name, h.rpc, id, stdio)
}

// callers counts, per workload, the calls that drive its start now.
type callers struct {
	mu sync.Mutex
	n  map[spec.ID]int
}

// Add notes one more call driving id.
func (c *callers) Add(id spec.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[spec.ID]int{}
	}
	c.n[id]++
}

// Done notes that a call driving id returned.
func (c *callers) Done(id spec.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[id]--; c.n[id] <= 0 {
		delete(c.n, id)
	}
}

// Busy reports whether a call drives id now.
func (c *callers) Busy(id spec.ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id] > 0
}
