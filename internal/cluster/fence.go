package cluster

import (
	"context"
	"time"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// Self-fencing. A node cut off from the raft quorum cannot know whether
// the cluster has moved its workloads: the leader places the workloads of
// a node that gossip has seen failed for FailoverGrace on other nodes.
// So a node that has heard from no quorum for FailoverGrace plus
// fenceSlack first stops serving (every route answers 503, and its reconciler stops acting on
// its stale copy of the state), then stops its running workloads. That
// happens before the others can have moved them: they need gossip to
// find the node failed (2-4 s) and then FailoverGrace more. fenceSlack
// keeps a raft election (a leader lost, a new one chosen within about a
// second) from fencing the nodes that only wait for it. When the
// quorum is back, the node serves again, and the workloads it stopped
// that are still allocated to it are removed so its reconciler starts
// them afresh; those moved away are removed as any moved workload is.
const (
	// fenceCheckEvery is how often a node checks its contact with the
	// quorum.
	fenceCheckEvery = 100 * time.Millisecond
	// fenceStopGrace is how long a fenced workload gets after SIGTERM:
	// short, as a copy may start elsewhere a few seconds later.
	fenceStopGrace = time.Second
	// fenceSlack is added to FailoverGrace before a node fences itself.
	fenceSlack = time.Second
	// unfenceAfter is how fresh the contact must be to count as back.
	unfenceAfter = 500 * time.Millisecond
)

// fenced reports whether this node has fenced itself.
func (c *Cluster) isFenced() bool { return c.fencedFlag.Load() }

// fenceLoop fences and unfences this node as its contact with the raft
// quorum comes and goes.
func (c *Cluster) fenceLoop() {
	defer c.wg.Done()
	t := time.NewTicker(fenceCheckEvery)
	defer t.Stop()
	var stopped []spec.ID
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
		since := time.Since(c.raft.LastQuorumContact())
		switch {
		case !c.isFenced() && since > c.cfg.FailoverGrace+fenceSlack:
			c.log.Warn("no raft quorum reached; fencing this node: the proxy stops serving, then its workloads stop, as the cluster may move them",
				"no_contact_for", since.Round(time.Millisecond), "failover_grace", c.cfg.FailoverGrace)
			c.fencedFlag.Store(true)
			c.syncRoutes()
			stopped = c.stopForFence()
		case c.isFenced() && since < unfenceAfter:
			c.log.Info("raft quorum reached again; serving again", "stopped_while_fenced", len(stopped))
			c.unfence(stopped)
			stopped = nil
			c.fencedFlag.Store(false)
			c.syncRoutes()
			c.routesChanged()
		}
	}
}

// stopForFence stops every workload running here and returns their ids.
func (c *Cluster) stopForFence() []spec.ID {
	locals, err := c.local.List()
	if err != nil {
		c.log.Error("fence: read local workloads", "err", err)
		return nil
	}
	var ids []spec.ID
	for _, r := range locals {
		if r.Desired != workload.DesiredRunning {
			continue
		}
		if _, err := c.local.Stop(context.Background(), r.ID, fenceStopGrace); err != nil {
			c.log.Error("fence: stop workload", "id", r.ID, "err", err)
			continue
		}
		ids = append(ids, r.ID)
	}
	c.log.Warn("fence: local workloads stopped", "count", len(ids))
	return ids
}

// unfence removes the workloads stopped by the fence that the cluster
// still allocates here, for the reconciler to start them again; the
// others were moved or removed, and the reconciler removes them.
func (c *Cluster) unfence(stopped []spec.ID) {
	for _, id := range stopped {
		w, err := c.raft.Get(id)
		if err != nil || w.Node != c.cfg.NodeName || w.Desired != workload.DesiredRunning {
			continue
		}
		if err := c.local.Remove(context.Background(), id); err != nil {
			c.log.Error("unfence: remove the stopped copy", "id", id, "err", err)
		}
	}
}
