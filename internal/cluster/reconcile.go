package cluster

import (
	"context"
	"net/netip"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/membership"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/routing"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

const (
	// reconcileEvery bounds how stale a node's view can get when no change
	// notification arrives (gossip changes, a local workload exiting).
	reconcileEvery = time.Second
	// leftGrace is how long a node that left on purpose (SIGTERM) keeps
	// its workloads: its own workloads keep running during a restart, and
	// moving them for a routine restart would be worse than waiting.
	leftGrace = 30 * time.Second
	// recordLag is how long a local workload may go unseen in this node's
	// copy of the state before it counts as removed: a spawn records its
	// allocation on the leader, and this node's copy can trail the start
	// by a moment.
	recordLag = 30 * time.Second
	// tagsEvery is how often a node refreshes the free memory it announces.
	tagsEvery = 30 * time.Second
	// retryFailedStart spaces out attempts to start a workload that failed.
	retryFailedStart = 10 * time.Second
)

func (c *Cluster) reconcileLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	tags := time.NewTicker(tagsEvery)
	defer tags.Stop()
	inflight := map[spec.ID]bool{}
	lastTry := map[spec.ID]time.Time{}
	done := make(chan spec.ID, 16)
	for {
		c.reconcile(inflight, lastTry, done)
		c.syncRoutes()
		select {
		case <-c.quit:
			return
		case <-c.raft.Changes():
		case <-c.mem.Events():
		case <-c.routesDirty:
		case id := <-done:
			delete(inflight, id)
		case <-tick.C:
		case <-tags.C:
			// Free memory drifts; the rest of the tags is fixed.
			if err := c.mem.UpdateTags(c.tags()); err != nil {
				c.log.Warn("update gossip tags", "err", err)
			}
		}
	}
}

// reconcile makes this node's workloads match their allocations: it
// removes what moved away or was removed, stops what should be stopped,
// starts what was placed here without a caller driving the start (a
// failover, a restart), and reports again what the cluster state has
// wrong (a report lost while raft had no leader).
func (c *Cluster) reconcile(inflight map[spec.ID]bool, lastTry map[spec.ID]time.Time, done chan<- spec.ID) {
	if c.isFenced() {
		return // its copy of the state is stale; fence.go acts instead
	}
	records, err := c.raft.List()
	if err != nil {
		return
	}
	locals, err := c.local.List()
	if err != nil {
		c.log.Error("reconcile: read local workloads", "err", err)
		return
	}
	byID := make(map[spec.ID]workload.Workload, len(records))
	for _, r := range records {
		byID[r.ID] = r
	}
	seen := c.local.Observations()
	localIDs := make(map[spec.ID]bool, len(locals))
	for _, l := range locals {
		localIDs[l.ID] = true
		if inflight[l.ID] {
			continue
		}
		r, ok := byID[l.ID]
		switch {
		case !ok && time.Since(l.CreatedAt) > recordLag:
			// Removed from the cluster while this node could not hear it.
			// Start waited for this node's copy to catch up, so an
			// allocation missing here was really removed; a young one may
			// only not have reached this node's copy yet.
			c.background(inflight, done, l.ID, "removed from the cluster", func(ctx context.Context) error {
				return c.local.Remove(ctx, l.ID)
			})
		case !ok:
		case r.Node != c.cfg.NodeName:
			c.background(inflight, done, l.ID, "moved to node "+r.Node, func(ctx context.Context) error {
				return c.local.Remove(ctx, l.ID)
			})
		case r.Desired == workload.DesiredRunning && !c.driving.Busy(l.ID) &&
			(l.Desired == workload.DesiredStopped || (l.State == workload.StateExited && l.Generation < r.Generation)):
			c.background(inflight, done, l.ID, "started in the cluster", func(ctx context.Context) error {
				if _, err := c.local.StartAgain(ctx, r.Allocation); err != nil {
					return err
				}
				_, err := c.reports.flush()
				return err
			})
		case r.Desired == workload.DesiredStopped && l.Desired != workload.DesiredStopped:
			c.background(inflight, done, l.ID, "stopped in the cluster", func(ctx context.Context) error {
				_, err := c.local.Stop(ctx, l.ID, 0)
				return err
			})
		default:
			// seen may be older than what the node has reported since;
			// resend takes the node's observation as it is now.
			if o, ok := seen[l.ID]; ok && !o.Equal(r.Observed) {
				c.reports.resend(l.ID)
			}
		}
	}
	for _, r := range records {
		if r.Node != c.cfg.NodeName || r.Desired != workload.DesiredRunning || localIDs[r.ID] || inflight[r.ID] || c.driving.Busy(r.ID) {
			continue
		}
		if time.Since(lastTry[r.ID]) < retryFailedStart {
			continue
		}
		lastTry[r.ID] = time.Now()
		// A start that fails is reported by the node itself, with its
		// error, and tried again after retryFailedStart.
		c.background(inflight, done, r.ID, "placed here", func(ctx context.Context) error {
			if _, err := c.local.Run(ctx, r.Allocation); err != nil {
				return err
			}
			_, err := c.reports.flush()
			return err
		})
	}
	for id := range lastTry {
		if _, ok := byID[id]; !ok {
			delete(lastTry, id)
		}
	}
	c.removeOrphanVolumes(context.Background())
}

// background runs one local change per workload at a time, off the loop.
func (c *Cluster) background(inflight map[spec.ID]bool, done chan<- spec.ID, id spec.ID, why string, fn func(context.Context) error) {
	inflight[id] = true
	c.log.Info("reconcile", "id", id, "why", why)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := fn(ctx); err != nil {
			c.log.Warn("reconcile failed", "id", id, "why", why, "err", err)
		}
		select {
		case done <- id:
		case <-c.quit:
		}
	}()
}

// syncRoutes derives this node's proxy routes from the cluster state, with
// this node's own observations in place of the reported copies, which can
// trail them by a raft round trip.
func (c *Cluster) syncRoutes() {
	c.routes.Sync(c.deriveRoutes)
}

// deriveRoutes is syncRoutes' derivation, run under the syncer's lock.
func (c *Cluster) deriveRoutes() ([]proxy.Route, bool) {
	list, err := c.raft.List()
	if err != nil {
		return nil, false
	}
	seen := c.local.Observations()
	for i, w := range list {
		if o, ok := seen[w.ID]; ok && w.Node == c.cfg.NodeName && o.Node == w.Node {
			list[i].Observed = o
		}
	}
	alive := map[string]bool{}
	var nodeAddrs []netip.Addr
	for _, m := range c.mem.Members() {
		alive[m.Name] = m.State == membership.StateAlive
		if ap, err := netip.ParseAddrPort(m.Addr); err == nil {
			nodeAddrs = append(nodeAddrs, ap.Addr())
		}
	}
	// Workloads may not reach the cluster's nodes, wherever they are.
	if c.local.Network != nil {
		if err := c.local.Network.SetNodeAddrs(nodeAddrs); err != nil {
			c.log.Error("egress policy", "err", err)
		}
	}
	self, up := c.cfg.NodeName, func(n string) bool { return alive[n] }
	if c.isFenced() {
		// Serve nothing: every workload, here or anywhere, answers 503.
		self, up = "", func(string) bool { return false }
	}
	return routing.Derive(routing.Input{
		Self: self, Workloads: list,
		Alive: up,
		Dial:  c.dialVia,
	}), true
}

// failoverLoop, on the leader, records in the cluster state when members
// go down and come back, and places the workloads of a member down for
// longer than the grace elsewhere. Recording it in raft means a new
// leader continues the count where the old one stopped: the failover of
// a node that was the leader is not delayed by a fresh grace period.
func (c *Cluster) failoverLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.quit:
			return
		case <-tick.C:
		}
		if !c.raft.IsLeader() {
			continue
		}
		now := time.Now()
		due := map[string]bool{}
		downNow := map[string]bool{}
		for _, m := range c.mem.Members() {
			rec, _ := c.raft.Node(m.Name)
			want := raftstore.Node{Name: m.Name, State: string(m.State)}
			if down(m) {
				downNow[m.Name] = true
				want.DownSince = rec.DownSince
				if want.DownSince.IsZero() {
					want.DownSince = now
					c.peers.Forget(m.Name)
				}
				grace := c.cfg.FailoverGrace
				if m.State == membership.StateLeft {
					grace = max(grace, leftGrace)
				}
				if now.Sub(want.DownSince) >= grace {
					due[m.Name] = true
				}
			}
			if rec.State != want.State || !rec.DownSince.Equal(want.DownSince) {
				if err := c.raft.SetNode(want); err != nil {
					c.log.Warn("failover: record node state", "node", m.Name, "err", err)
				}
			}
		}
		if len(due) > 0 {
			c.failover(due, downNow)
		}
	}
}

// failover re-places every running workload of the nodes in due.
func (c *Cluster) failover(due, downNow map[string]bool) {
	records, err := c.raft.List()
	if err != nil {
		return
	}
	for _, w := range records {
		if !due[w.Node] || w.Desired != workload.DesiredRunning {
			continue
		}
		ranked, err := c.rank(w.Spec, downNow)
		if err != nil {
			c.log.Warn("failover: nowhere to place", "id", w.ID, "from", w.Node, "err", err)
			continue
		}
		to := ranked[0].Name
		from := w.Node
		// The new node's observation starts out pending: the old
		// node's report names the old node and no longer counts.
		_, err = c.raft.Update(w.ID, func(r *workload.Allocation) error {
			if r.Node == from {
				r.Node = to
			}
			return nil // placed again meanwhile otherwise
		})
		if err != nil {
			c.log.Warn("failover: record new placement", "id", w.ID, "err", err)
			continue
		}
		c.log.Info("failover: workload placed elsewhere", "id", w.ID, "from", from, "to", to)
	}
}

// down reports whether gossip sees member m as failed or gone.
func down(m membership.Member) bool {
	return m.State == membership.StateFailed || m.State == membership.StateLeft
}
