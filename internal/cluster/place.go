package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1"
	"github.com/hypercore-dev/hypercore/internal/cluster/membership"
	"github.com/hypercore-dev/hypercore/internal/cluster/scheduler"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/node"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
)

// maxAttempts bounds how many nodes one spawn tries before giving up.
const maxAttempts = 3

// Spawn implements server.Backend: it ranks the nodes, records the
// workload on the best one, and has that node start it, trying the next
// ones if it cannot. With DryRun it only answers where it would go.
func (c *Cluster) Spawn(ctx context.Context, req spec.SpawnRequest) (store.Workload, error) {
	ranked, err := c.rank(req.Spec, nil)
	if err != nil {
		return store.Workload{}, err
	}
	w := store.Workload{
		ID: string(spec.NewID()), Spec: req.Spec, Desired: store.DesiredRunning,
		State: store.StateCreating, Node: ranked[0].Name, CreatedAt: time.Now().UTC(),
	}
	if req.DryRun {
		return w, nil
	}
	// The start runs to its end even if the caller hangs up, so no record
	// is left half-made.
	ctx = context.WithoutCancel(ctx)
	if err := c.raft.Create(w); err != nil {
		return store.Workload{}, fmt.Errorf("cluster: record workload: %w", err)
	}
	var lastErr error
	for i, cand := range ranked {
		if i == maxAttempts {
			break
		}
		if i > 0 {
			c.log.Warn("spawn: trying the next node", "id", w.ID, "failed", ranked[i-1].Name, "err", lastErr, "next", cand.Name)
			if _, err := c.raft.Update(w.ID, func(r *store.Workload) error { r.Node = cand.Name; return nil }); err != nil {
				lastErr = err
				break
			}
		}
		w.Node = cand.Name
		got, err := c.runOn(ctx, cand.Name, w)
		if err == nil {
			return c.observe(got)
		}
		lastErr = err
		if !retryElsewhere(err) {
			break
		}
	}
	if err := c.raft.Delete(w.ID); err != nil {
		c.log.Error("spawn: could not delete the record of a failed spawn", "id", w.ID, "err", err)
	}
	return store.Workload{}, lastErr
}

// retryElsewhere says whether another node might succeed where one failed.
// A bad spec or a missing image fails the same everywhere.
func retryElsewhere(err error) bool {
	var fe *spec.FieldError
	return !errors.As(err, &fe) && !errors.Is(err, image.ErrNotFound)
}

// runOn has node name start w and returns what it observed.
func (c *Cluster) runOn(ctx context.Context, name string, w store.Workload) (store.Workload, error) {
	if name == c.cfg.NodeName {
		return c.local.Run(ctx, w)
	}
	rpc, ok := c.liveRPCAddr(name)
	if !ok {
		return store.Workload{}, fmt.Errorf("%w: %s", errHostDown, name)
	}
	data, err := json.Marshal(w)
	if err != nil {
		return store.Workload{}, err
	}
	resp, err := c.peers.service(name, rpc).Run(ctx, connect.NewRequest(&clusterv1.RunRequest{Workload: data}))
	if err != nil {
		return store.Workload{}, fromConnect(name, err)
	}
	var got store.Workload
	if err := json.Unmarshal(resp.Msg.Workload, &got); err != nil {
		return store.Workload{}, fmt.Errorf("node %s answered an unreadable record: %w", name, err)
	}
	return got, nil
}

// rank returns the nodes that can take s, best first, leaving out those in
// exclude. Reservations come from the cluster state, so they count
// workloads placed but not yet started.
func (c *Cluster) rank(s spec.Spec, exclude map[string]bool) ([]scheduler.Candidate, error) {
	members := c.mem.Members()
	list, err := c.raft.List()
	if err != nil {
		return nil, err
	}
	byName := make(map[string]*scheduler.Node, len(members))
	nodes := make([]scheduler.Node, 0, len(members))
	for _, m := range members {
		if exclude[m.Name] {
			continue
		}
		nodes = append(nodes, m.SchedulerNode())
	}
	for i := range nodes {
		byName[nodes[i].Name] = &nodes[i]
	}
	for _, w := range list {
		n := byName[w.Node]
		if n == nil || w.Desired != store.DesiredRunning {
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
		return nil, fmt.Errorf("%w: %v%s", node.ErrNoCapacity, err, portHolders(s, list))
	}
	return ranked, nil
}

// portHolders names the workloads that hold the raw TCP ports s asks for,
// so a refused spawn says what to stop to make room.
func portHolders(s spec.Spec, list []store.Workload) string {
	var b strings.Builder
	for _, p := range s.Ports {
		if p.Proto != spec.ProtoTCP {
			continue
		}
		for _, w := range list {
			if w.Desired != store.DesiredRunning {
				continue
			}
			for _, q := range w.Spec.Ports {
				if q.Proto == spec.ProtoTCP && q.Public == p.Public {
					fmt.Fprintf(&b, "; public TCP port %d is taken on node %s by workload %s", p.Public, w.Node, w.ID)
				}
			}
		}
	}
	return b.String()
}

// down reports whether gossip sees member name as failed or gone.
func down(m membership.Member) bool {
	return m.State == membership.StateFailed || m.State == membership.StateLeft
}
