package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// The restart backoff: the first restart waits restartBackoffMin, each
// next one twice as long up to restartBackoffMax. A workload that ran for
// restartBackoffReset before it exited starts from the minimum again, as
// Docker does, so a service that crashes once a day comes back at once.
const (
	restartBackoffMin   = time.Second
	restartBackoffMax   = time.Minute
	restartBackoffReset = 10 * time.Second
)

// restartBackoff is how long to wait before restart number n+1 (n counted
// from 0) of a workload that ran for ran before it exited.
func restartBackoff(n int, ran time.Duration) time.Duration {
	if ran >= restartBackoffReset {
		return restartBackoffMin
	}
	d := restartBackoffMin
	for i := 0; i < n && d < restartBackoffMax; i++ {
		d *= 2
	}
	return min(d, restartBackoffMax)
}

// exited is the one place the node acts on a workload's process having
// ended by itself with code, after the exit was recorded and reported:
// by the workload's restart policy, it starts it again after a backoff.
// It does not block; the caller may hold id's lock.
func (n *Node) exited(id spec.ID, code int) {
	r, err := n.Store.Get(id)
	if err != nil || r.Desired != workload.DesiredRunning {
		return
	}
	if !r.Spec.RestartPolicy().Restarts(code, r.Restarts) {
		return
	}
	var ran time.Duration
	if o, ok := n.Observation(id); ok && !o.StartedAt.IsZero() && !o.FinishedAt.IsZero() {
		ran = o.FinishedAt.Sub(o.StartedAt)
	}
	wait := restartBackoff(r.Restarts, ran)
	if n.restartWait != nil {
		wait = n.restartWait(wait)
	}
	n.log.Info("workload exited; restarting it by its restart policy", "id", id, "exit_code", code,
		"restart", r.Spec.Restart, "restarts", r.Restarts, "in", wait)
	gen := r.Generation
	n.bg.Go(func() {
		select {
		case <-n.quit:
			return
		case <-time.After(wait):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := n.restartExited(ctx, id, gen); err != nil {
			n.log.Error("restart by policy failed", "id", id, "err", err)
		}
	})
}

// restartExited starts id again if it is still exited, meant to run and
// in generation gen: a stop, a remove or a start in between has the last
// word.
func (n *Node) restartExited(ctx context.Context, id spec.ID, gen uint64) error {
	unlock := n.locks.Lock(id.String())
	defer unlock()
	r, err := n.Store.Get(id)
	if err != nil || r.Desired != workload.DesiredRunning || r.State != workload.StateExited || r.Generation != gen {
		return nil
	}
	drv := n.Drivers[r.Spec.Isolation]
	if drv == nil {
		return fmt.Errorf("%w: node %s has no driver for %q workloads", ErrUnsupported, n.cfg.Name, r.Spec.Isolation)
	}
	if r, err = n.Store.Update(id, func(r *store.Record) error { r.Restarts++; return nil }); err != nil {
		return err
	}
	if err := n.restart(ctx, drv, r); err != nil {
		n.markExited(r, err)
		return err
	}
	return nil
}

// StartAgain runs a stopped or exited workload again with a's spec, with
// its id, record and logs, and returns what the node observes once it is
// ready (or ReadyTimeout passed), as Run does. A workload that runs is
// left as it is. The restart count starts again from 0.
func (n *Node) StartAgain(ctx context.Context, a workload.Allocation) (workload.Observation, error) {
	unlock := n.locks.Lock(a.ID.String())
	defer unlock()
	r, err := n.Store.Get(a.ID)
	if err != nil {
		return workload.Observation{}, err
	}
	if r.Desired == workload.DesiredRunning && (r.State == workload.StateRunning || r.State == workload.StateCreating) {
		return n.current(r), nil
	}
	drv := n.Drivers[a.Spec.Isolation]
	if drv == nil {
		return workload.Observation{}, fmt.Errorf("%w: node %s cannot run %q workloads", ErrUnsupported, n.cfg.Name, a.Spec.Isolation)
	}
	ctx = context.WithoutCancel(ctx)
	r, err = n.Store.Update(a.ID, func(r *store.Record) error {
		r.Desired, r.Spec, r.Generation, r.Restarts = workload.DesiredRunning, a.Spec, max(a.Generation, r.Generation), 0
		return nil
	})
	if err != nil {
		return workload.Observation{}, err
	}
	// Stop left the process ended; Delete clears what the driver kept so
	// Create can make it afresh.
	if err := drv.Stop(ctx, a.ID, 0); err != nil && !errors.Is(err, driver.ErrNotFound) {
		n.log.Warn("start: stop of the old process", "id", a.ID, "err", err)
	}
	if err := n.restart(ctx, drv, r); err != nil {
		n.markExited(r, err)
		return workload.Observation{}, err
	}
	o, _ := n.Observation(a.ID)
	return n.waitReady(ctx, a.ID, r.Spec, o), nil
}
