package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/cluster/scheduler"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// maxAttempts bounds how many nodes one spawn tries before giving up.
const maxAttempts = 3

// Spawn implements server.Backend. The cluster decides: the scheduler
// ranks the nodes, the allocation is recorded in raft for the best one, and
// that node is asked to run it at once (rather than waiting for its
// reconciler to notice), so the caller hears of a failure and the next node
// is tried. What the node saw comes back through its reports only. With
// DryRun it answers where the workload would go.
//
// With a RequestID (an idempotency key) that an existing workload's spawn
// claimed, it answers that workload as it is now and makes nothing: a
// client that retries after losing the answer gets the first result,
// whichever node it retries through and whether or not the nodes
// restarted meanwhile.
func (c *Cluster) Spawn(ctx context.Context, req spec.SpawnRequest) (workload.Workload, error) {
	if req.RequestID != "" && !req.DryRun {
		if w, ok := c.byRequestID(req.RequestID); ok {
			return w, nil
		}
	}
	if err := c.checkSecrets(req.Spec); err != nil {
		return workload.Workload{}, err
	}
	a, ranked, err := c.allocate(req)
	if errors.Is(err, raftstore.ErrExists) && req.RequestID != "" {
		// A spawn with the same key won the race to the log.
		if w, ok := c.byRequestID(req.RequestID); ok {
			return w, nil
		}
	}
	if err != nil || req.DryRun {
		return workload.Join(a, nil), err
	}
	// The start runs to its end even if the caller hangs up, so no
	// allocation is left half-made.
	ctx = context.WithoutCancel(ctx)
	var lastErr error
	for i, cand := range ranked {
		if i == maxAttempts {
			break
		}
		if i > 0 {
			c.log.Warn("spawn: trying the next node", "id", a.ID, "failed", ranked[i-1].Name, "err", lastErr, "next", cand.Name)
			w, err := c.raft.Update(a.ID, func(r *workload.Allocation) error { r.Node = cand.Name; return nil })
			if errors.Is(err, raftstore.ErrPortTaken) {
				// Placed there meanwhile by a spawn through another
				// node; the next candidate may still fit.
				lastErr = err
				continue
			}
			if err != nil {
				lastErr = err
				break
			}
			a = w.Allocation
		}
		index, err := c.hostOf(cand.Name).Run(ctx, a)
		if err == nil {
			return c.settled(ctx, a.ID, index)
		}
		lastErr = err
		if !retryElsewhere(err) {
			break
		}
	}
	if err := c.raft.Delete(a.ID); err != nil {
		c.log.Error("spawn: could not delete the allocation of a failed spawn", "id", a.ID, "err", err)
	}
	c.syncRoutes()
	return workload.Workload{}, lastErr
}

// allocate ranks the nodes for req and, unless it is a dry run, records the
// allocation on the best one. Ranking and recording happen under one lock,
// so two spawns through this node never both take the last of a node's
// memory; the state machine itself refuses two holders of one raw TCP port
// on a node, whichever nodes the spawns came through.
func (c *Cluster) allocate(req spec.SpawnRequest) (workload.Allocation, []scheduler.Candidate, error) {
	c.placeMu.Lock()
	defer c.placeMu.Unlock()
	ranked, err := c.rank(req.Spec, nil)
	if err != nil {
		return workload.Allocation{}, nil, err
	}
	a := workload.Allocation{
		ID: spec.NewID(), Spec: req.Spec, Node: ranked[0].Name, Desired: workload.DesiredRunning,
		Generation: 1, CreatedAt: time.Now().UTC(),
	}
	if req.DryRun {
		return a, ranked, nil
	}
	if err := c.raft.CreateKeyed(a, req.RequestID); err != nil {
		// raftstore.ErrPortTaken is a workload.ErrNoCapacity itself.
		return a, nil, fmt.Errorf("cluster: record allocation: %w", err)
	}
	return a, ranked, nil
}

// byRequestID returns the workload whose spawn claimed the idempotency
// key, if it still exists.
func (c *Cluster) byRequestID(key string) (workload.Workload, bool) {
	id, ok := c.raft.RequestKey(key)
	if !ok {
		return workload.Workload{}, false
	}
	w, err := c.raft.Get(id)
	return w, err == nil
}

// settled waits until this node's copy of the state holds the host's report
// at index (the caller reads its own writes), brings the routes up to date
// so the workload's URL works as soon as the caller is answered, and
// returns the workload.
func (c *Cluster) settled(ctx context.Context, id spec.ID, index uint64) (workload.Workload, error) {
	if err := c.waitIndex(ctx, index); err != nil {
		return workload.Workload{}, err
	}
	c.syncRoutes()
	return c.raft.Get(id)
}

// waitIndex waits until this node has applied the raft log up to index.
// It leaves raft.Changes to the reconcile loop, whose wake-ups it would
// otherwise take.
func (c *Cluster) waitIndex(ctx context.Context, index uint64) error {
	ctx, cancel := context.WithTimeout(ctx, raftstore.ApplyTimeout)
	defer cancel()
	if err := c.raft.WaitApplied(ctx, index); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// retryElsewhere says whether another node might succeed where one failed.
// A bad spec or a missing image fails the same everywhere.
func retryElsewhere(err error) bool {
	var fe *spec.FieldError
	return !errors.As(err, &fe) && !errors.Is(err, image.ErrNotFound)
}

// Stop implements server.Backend: the allocation says stopped first, so no
// reconciler starts it again, then the host stops it and reports.
func (c *Cluster) Stop(ctx context.Context, id spec.ID, timeout time.Duration) (workload.Workload, error) {
	w, err := c.raft.Update(id, func(a *workload.Allocation) error {
		a.Desired = workload.DesiredStopped
		return nil
	})
	if err != nil {
		return workload.Workload{}, err
	}
	c.syncRoutes()
	index, err := c.hostOf(w.Node).Stop(ctx, id, timeout)
	switch {
	case errors.Is(err, errHostDown):
		return w, nil // its reconciler stops it when it is back
	case errors.Is(err, workload.ErrNotFound):
		// The host holds nothing of it: its start failed, or a failover
		// placed it there and it has not started. Nothing runs, and the
		// allocation now keeps any reconciler from starting it.
		return w, nil
	case err != nil:
		return workload.Workload{}, err
	}
	return c.settled(ctx, id, index)
}

// Start implements server.Backend: the allocation says running again
// (a new generation), then its host runs it again with its spec. A host
// that is not this node starts it from its reconciler, which sees a
// workload meant to run that it holds stopped; the answer then shows it
// stopped or pending until that host reports.
func (c *Cluster) Start(ctx context.Context, id spec.ID) (workload.Workload, error) {
	w, err := c.raft.Get(id)
	if err != nil {
		return workload.Workload{}, err
	}
	if w.Desired == workload.DesiredRunning && w.Observed.State != workload.StateExited {
		return w, nil
	}
	before := w.Generation
	if w.Desired != workload.DesiredRunning {
		if w, err = c.raft.Update(id, func(a *workload.Allocation) error {
			a.Desired = workload.DesiredRunning
			return nil
		}); err != nil {
			return workload.Workload{}, err
		}
	}
	if w.Node != c.cfg.NodeName {
		if w.Observed.State == workload.StateExited && w.Desired == workload.DesiredRunning && w.Generation == before {
			// Exited while meant to run: nothing in the allocation
			// changed, so a new generation tells its node's reconciler
			// that the user asked for it to run again.
			if w, err = c.bumpGeneration(id); err != nil {
				return workload.Workload{}, err
			}
		}
		return w, nil
	}
	c.driving.Add(id)
	defer c.driving.Done(id)
	if _, err := c.local.StartAgain(context.WithoutCancel(ctx), w.Allocation); err != nil {
		return workload.Workload{}, err
	}
	index, err := c.reports.flush()
	if err != nil {
		return workload.Workload{}, err
	}
	return c.settled(ctx, id, index)
}

// bumpGeneration gives id's allocation a new generation without changing
// what it says: desired stopped, then running again, two writes that
// each make one.
func (c *Cluster) bumpGeneration(id spec.ID) (workload.Workload, error) {
	for _, d := range []workload.Desired{workload.DesiredStopped, workload.DesiredRunning} {
		if _, err := c.raft.Update(id, func(a *workload.Allocation) error { a.Desired = d; return nil }); err != nil {
			return workload.Workload{}, err
		}
	}
	return c.raft.Get(id)
}

// Remove implements server.Backend: the allocation goes first, so no
// reconciler starts the workload again meanwhile, then its host removes
// it. A host that is down, or whose removal fails, removes it when its
// reconciler finds no allocation for it.
func (c *Cluster) Remove(ctx context.Context, id spec.ID) error {
	w, err := c.raft.Get(id)
	if err != nil {
		return err
	}
	if err := c.raft.Delete(id); err != nil {
		return err
	}
	c.syncRoutes()
	err = c.hostOf(w.Node).Remove(ctx, id)
	if err != nil && !errors.Is(err, errHostDown) && !errors.Is(err, workload.ErrNotFound) {
		return fmt.Errorf("%w (node %s removes it by itself when it can)", err, w.Node)
	}
	return nil
}

// rank returns the nodes that can take s, best first, leaving out those in
// exclude. The scheduler is the only placer: reservations come from the
// allocations in the cluster state, so they count workloads placed but not
// yet started.
func (c *Cluster) rank(s spec.Spec, exclude map[string]bool) ([]scheduler.Candidate, error) {
	// A workload with volumes runs where they live, or nowhere.
	only, err := c.volumeNode(s)
	if err != nil {
		return nil, err
	}
	members := c.mem.Members()
	list, err := c.raft.List()
	if err != nil {
		return nil, err
	}
	nodes := make([]scheduler.Node, 0, len(members))
	for _, m := range members {
		if !exclude[m.Name] && (only == "" || m.Name == only) {
			nodes = append(nodes, m.SchedulerNode())
		}
	}
	byName := make(map[string]*scheduler.Node, len(nodes))
	for i := range nodes {
		byName[nodes[i].Name] = &nodes[i]
	}
	for _, w := range list {
		n := byName[w.Node]
		if n == nil || w.Desired != workload.DesiredRunning {
			continue
		}
		n.UsedMemoryMiB += w.Spec.MemoryMiB
		n.UsedCores += w.Spec.Cores
		for _, p := range w.Spec.Ports {
			if p.Proto == spec.ProtoTCP {
				if n.TakenPorts == nil {
					n.TakenPorts = map[uint16]bool{}
				}
				n.TakenPorts[p.Public] = true
			}
		}
	}
	ranked, err := scheduler.Rank(nodes, s, c.cfg.Strategy)
	if err != nil {
		return nil, fmt.Errorf("%w: %v%s", workload.ErrNoCapacity, err, portHolders(s, list))
	}
	return ranked, nil
}

// portHolders names the workloads that hold the raw TCP ports s asks for,
// so a refused spawn says what to stop to make room.
func portHolders(s spec.Spec, list []workload.Workload) string {
	var b strings.Builder
	for _, p := range s.Ports {
		if p.Proto != spec.ProtoTCP {
			continue
		}
		for _, w := range list {
			if w.Desired == workload.DesiredRunning && w.Spec.PublishesTCP(p.Public) {
				fmt.Fprintf(&b, "; public TCP port %d is taken on node %s by workload %s", p.Public, w.Node, w.ID)
			}
		}
	}
	return b.String()
}
