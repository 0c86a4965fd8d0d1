package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/membership"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
)

const (
	// reconcileEvery bounds how stale a node's view can get when no change
	// notification arrives (gossip changes, a local workload exiting).
	reconcileEvery = time.Second
	// staleCreating is how long a record may stay "creating" before its
	// node treats it as pending: the node that drove the spawn died.
	staleCreating = 2 * time.Minute
	// leftGrace is how long a node that left on purpose (SIGTERM) keeps
	// its workloads: its own workloads keep running during a restart, and
	// moving them for a routine restart would be worse than waiting.
	leftGrace = 30 * time.Second
	// recordLag is how long a local workload may go unseen in this node's
	// copy of the state before it counts as removed: a spawn records it on
	// the leader, and this node's copy can trail the start by a moment.
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
	inflight := map[string]bool{}
	lastTry := map[string]time.Time{}
	done := make(chan string, 16)
	for {
		c.reconcile(inflight, lastTry, done)
		select {
		case <-c.quit:
			return
		case <-c.raft.Changes():
		case <-c.mem.Events():
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

// reconcile makes this node's local workloads match the cluster record and
// the proxy's routes to other nodes' workloads match it too.
func (c *Cluster) reconcile(inflight map[string]bool, lastTry map[string]time.Time, done chan<- string) {
	records, err := c.raft.List()
	if err != nil {
		return
	}
	locals, err := c.local.List()
	if err != nil {
		c.log.Error("reconcile: read local workloads", "err", err)
		return
	}
	byID := make(map[string]store.Workload, len(records))
	for _, r := range records {
		byID[r.ID] = r
	}
	localIDs := make(map[string]bool, len(locals))
	for _, l := range locals {
		localIDs[l.ID] = true
		if inflight[l.ID] {
			continue
		}
		r, ok := byID[l.ID]
		switch {
		case !ok && time.Since(l.CreatedAt) > recordLag:
			// Removed from the cluster while this node could not hear it.
			// Start waited for this node's copy to catch up, so a record
			// missing here was really removed; a young one may only not
			// have reached this node's copy yet.
			c.background(inflight, done, l.ID, "removed from the cluster", func(ctx context.Context) error {
				return c.local.Remove(ctx, l.ID)
			})
		case !ok:
		case r.Node != c.cfg.NodeName:
			c.background(inflight, done, l.ID, "moved to node "+r.Node, func(ctx context.Context) error {
				return c.local.Remove(ctx, l.ID)
			})
		case r.Desired == store.DesiredStopped && l.State == store.StateRunning:
			c.background(inflight, done, l.ID, "stopped in the cluster", func(ctx context.Context) error {
				_, err := c.local.Stop(ctx, l.ID, 0)
				return err
			})
		case !sameObserved(r, l) && (r.State != store.StateCreating || time.Since(r.CreatedAt) > staleCreating):
			// While a spawn call drives the record it reports the start
			// itself; after staleCreating that caller is taken for dead.
			if _, err := c.observe(l); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, errMoved) {
				c.log.Warn("reconcile: report state", "id", l.ID, "err", err)
			}
		}
	}
	for _, r := range records {
		if r.Node != c.cfg.NodeName || r.Desired != store.DesiredRunning || localIDs[r.ID] || inflight[r.ID] {
			continue
		}
		if r.State == store.StateCreating && time.Since(r.CreatedAt) < staleCreating {
			continue // a spawn call is starting it right now
		}
		if time.Since(lastTry[r.ID]) < retryFailedStart {
			continue
		}
		lastTry[r.ID] = time.Now()
		c.background(inflight, done, r.ID, "placed here", func(ctx context.Context) error {
			got, err := c.local.Run(ctx, r)
			if err != nil {
				c.raft.Update(r.ID, func(w *store.Workload) error { w.Error = err.Error(); return nil })
				return err
			}
			if _, err = c.observe(got); errors.Is(err, errMoved) {
				return nil // the next pass removes the local copy
			}
			return err
		})
	}
	for id := range lastTry {
		if _, ok := byID[id]; !ok {
			delete(lastTry, id)
		}
	}
	c.syncRoutes(records, localIDs)
}

// background runs one local change per workload at a time, off the loop.
func (c *Cluster) background(inflight map[string]bool, done chan<- string, id, why string, fn func(context.Context) error) {
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

// syncRoutes points this node's proxy at workloads on other nodes, through
// tunnels to their hosts. Local workloads' routes are the node's own.
func (c *Cluster) syncRoutes(records []store.Workload, localIDs map[string]bool) {
	live := map[string]string{}
	for _, m := range c.mem.Members() {
		if m.State == membership.StateAlive {
			live[m.Name] = m.Tags.RPCAddr
		}
	}
	keep := map[tunnelKey]bool{}
	remote := map[string]bool{}
	for _, w := range records {
		if w.Node == c.cfg.NodeName && !localIDs[w.ID] && w.Desired == store.DesiredRunning {
			// Placed here and being started: the node sets its own
			// route when it runs. Until then the old one stays, rather
			// than none (a 404 for a workload that exists); changing it
			// now could overwrite the route the start just set.
			remote[w.ID] = c.lastRemote[w.ID]
			continue
		}
		if w.Node == c.cfg.NodeName || localIDs[w.ID] || w.Desired != store.DesiredRunning || len(w.Spec.Ports) == 0 {
			continue
		}
		r := proxy.Route{ID: w.ID, Ready: w.Ready, HTTP: map[uint16]string{}, TCP: map[uint16]string{}}
		rpc, up := live[w.Node]
		if !up || w.State != store.StateRunning || w.IP == "" {
			// Being placed, started or moved: it exists, so the proxy
			// answers 503 (try again) rather than 404 (no such thing).
			r.Ready = false
			for _, p := range w.Spec.Ports {
				if p.Proto != spec.ProtoTCP {
					r.HTTP[p.Public] = ""
				}
			}
			remote[w.ID] = true
			if cur, ok := c.routes.Lookup(w.ID); !ok || !sameRoute(cur, &r) {
				c.routes.Set(r)
			}
			continue
		}
		for _, p := range w.Spec.Ports {
			k := tunnelKey{w.Node, rpc, joinHostPort(w.IP, p.Target)}
			addr, err := c.tunnels.addr(k.node, k.rpcAddr, k.target)
			if err != nil {
				c.log.Error("tunnel listener", "err", err)
				continue
			}
			keep[k] = true
			if p.Proto == spec.ProtoTCP {
				r.TCP[p.Public] = addr
			} else {
				r.HTTP[p.Public] = addr
			}
		}
		remote[w.ID] = true
		if cur, ok := c.routes.Lookup(w.ID); !ok || !sameRoute(cur, &r) {
			c.routes.Set(r)
		}
	}
	c.mu.Lock()
	for id := range c.lastRemote {
		if !remote[id] && !localIDs[id] {
			c.routes.Delete(id)
		}
	}
	c.lastRemote = remote
	c.mu.Unlock()
	c.tunnels.retain(keep)
}

func sameRoute(a, b *proxy.Route) bool {
	if a.Ready != b.Ready || len(a.HTTP) != len(b.HTTP) || len(a.TCP) != len(b.TCP) {
		return false
	}
	for k, v := range a.HTTP {
		if b.HTTP[k] != v {
			return false
		}
	}
	for k, v := range a.TCP {
		if b.TCP[k] != v {
			return false
		}
	}
	return true
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
					c.peers.forget(m.Name)
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
		if !due[w.Node] || w.Desired != store.DesiredRunning {
			continue
		}
		ranked, err := c.rank(w.Spec, downNow)
		if err != nil {
			c.log.Warn("failover: nowhere to place", "id", w.ID, "from", w.Node, "err", err)
			continue
		}
		to := ranked[0].Name
		from := w.Node
		_, err = c.raft.Update(w.ID, func(r *store.Workload) error {
			if r.Node != from {
				return nil // placed again meanwhile
			}
			r.Node, r.State, r.IP, r.Pid, r.Ready, r.Error = to, store.StatePending, "", 0, false, ""
			return nil
		})
		if err != nil {
			c.log.Warn("failover: record new placement", "id", w.ID, "err", err)
			continue
		}
		c.log.Info("failover: workload placed elsewhere", "id", w.ID, "from", from, "to", to)
	}
}
