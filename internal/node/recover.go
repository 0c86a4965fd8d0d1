package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/store"
)

// recover brings host state back in line with the records after a restart,
// whether the daemon was stopped cleanly, killed, or the host rebooted:
//   - a workload still running is re-adopted: network repaired, route set;
//   - one that was running but is gone (reboot) is started again;
//   - one caught halfway through a spawn is started from scratch;
//   - one meant to be stopped is stopped;
//   - leases and interfaces of workloads with no record are released.
func (n *Node) recover(ctx context.Context) error {
	list, err := n.Store.List()
	if err != nil {
		return fmt.Errorf("node: read workloads: %w", err)
	}
	keep := map[string]bool{}
	for _, w := range list {
		if w.Node != n.cfg.Name {
			continue
		}
		if w.Desired == store.DesiredStopped {
			n.finishStop(ctx, w)
			continue
		}
		keep[w.ID] = true
		if err := n.recoverOne(ctx, w); err != nil {
			n.log.Error("recover: workload could not be brought back; it is marked exited", "id", w.ID, "err", err)
			n.Store.Update(w.ID, func(r *store.Workload) error {
				r.State, r.Error, r.Ready, r.Pid = store.StateExited, err.Error(), false, 0
				return nil
			})
		}
	}
	if err := n.Network.Reconcile(ctx, keep); err != nil {
		n.log.Warn("recover: network reconcile", "err", err)
	}
	return nil
}

func (n *Node) recoverOne(ctx context.Context, w store.Workload) error {
	unlock := n.locks.Lock(w.ID)
	defer unlock()
	drv := n.Drivers[w.Spec.Isolation]
	if drv == nil {
		return fmt.Errorf("%w: %s", ErrUnsupported, w.Spec.Isolation)
	}
	if w.State == store.StateCreating {
		n.log.Info("recover: finishing a spawn that a crash interrupted", "id", w.ID)
		if err := drv.Delete(ctx, w.ID); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return err
		}
		w, err := n.start(ctx, w)
		if err == nil {
			go n.waitReady(ctx, w)
		}
		return err
	}
	img, err := n.Images.Get(w.ImageDigest)
	if err != nil {
		if img, err = n.Images.Ensure(ctx, w.Spec.Image, nil); err != nil {
			return err
		}
	}
	// The recorded attachment names the netns path the driver was given;
	// nothing on the host is touched until we know whether it still runs.
	att, _ := n.Network.Lookup(w.ID)
	st, err := drv.Recover(ctx, n.driverConfig(w, img, att))
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	if st.State == driver.StateRunning {
		// Re-bind the workload's own namespace: a daemon restarted in a new
		// mount namespace no longer sees the old bind mount.
		if att, err = n.Network.Adopt(ctx, w.ID, fmt.Sprintf("/proc/%d/ns/net", st.Pid)); err != nil {
			return err
		}
	}
	switch {
	case st.State == driver.StateRunning:
		w, err = n.Store.Update(w.ID, func(r *store.Workload) error {
			r.State, r.Pid, r.IP = store.StateRunning, st.Pid, att.IP.String()
			return nil
		})
		if err != nil {
			return err
		}
		n.setRoute(w)
		n.log.Info("recover: re-adopted running workload", "id", w.ID, "pid", st.Pid)
	case w.State == store.StateRunning:
		// It was running when we last looked and nobody stopped it: the
		// host rebooted or it died while we were away. Start it again.
		n.log.Info("recover: restarting workload that is no longer running", "id", w.ID)
		if err := drv.Delete(ctx, w.ID); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return err
		}
		w, err = n.start(ctx, w)
		if err != nil {
			return err
		}
		go n.waitReady(ctx, w)
	default:
		n.setRoute(w)
	}
	return nil
}

// finishStop completes a stop that a crash may have interrupted.
func (n *Node) finishStop(ctx context.Context, w store.Workload) {
	if drv := n.Drivers[w.Spec.Isolation]; drv != nil {
		if err := drv.Stop(ctx, w.ID, n.cfg.StopTimeout); err != nil && !errors.Is(err, driver.ErrNotFound) {
			n.log.Warn("recover: stop", "id", w.ID, "err", err)
		}
	}
	if w.State != store.StateStopped {
		n.Store.Update(w.ID, func(r *store.Workload) error {
			r.State, r.Pid, r.Ready, r.IP = store.StateStopped, 0, false, ""
			return nil
		})
	}
}

// watch follows the workloads' status until Close: it notices processes
// that exit by themselves and workloads that become ready late.
func (n *Node) watch() {
	t := time.NewTicker(n.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-n.quit:
			return
		case <-t.C:
			n.checkAll()
		}
	}
}

func (n *Node) checkAll() {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.StatusInterval*5)
	defer cancel()
	list, err := n.Store.List()
	if err != nil {
		n.log.Warn("watch: read workloads", "err", err)
		return
	}
	for _, w := range list {
		if w.Node != n.cfg.Name || w.Desired != store.DesiredRunning || w.State != store.StateRunning {
			continue
		}
		n.check(ctx, w)
	}
}

func (n *Node) check(ctx context.Context, w store.Workload) {
	unlock := n.locks.Lock(w.ID)
	defer unlock()
	drv := n.Drivers[w.Spec.Isolation]
	if drv == nil {
		return
	}
	st, err := drv.Status(ctx, w.ID)
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return
	}
	if st.State == driver.StateRunning {
		if !w.Ready && n.probe(w) {
			n.markReady(w.ID)
		}
		return
	}
	// Re-read under the lock: a Stop may have just finished.
	cur, err := n.Store.Get(w.ID)
	if err != nil || cur.Desired != store.DesiredRunning || cur.State != store.StateRunning {
		return
	}
	w, err = n.Store.Update(w.ID, func(r *store.Workload) error {
		r.State, r.Pid, r.ExitCode, r.Ready = store.StateExited, 0, st.ExitCode, false
		return nil
	})
	if err == nil {
		// The route stays, so its URL answers 502 rather than 404: the
		// workload exists, it is just not running.
		n.log.Warn("workload exited by itself", "id", w.ID, "exit_code", st.ExitCode)
	}
}
