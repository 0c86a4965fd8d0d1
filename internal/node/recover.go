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

// recover brings host state back in line with the records after a restart,
// whether the daemon was stopped cleanly, killed, or the host rebooted, and
// reports every workload as it finds it. Every record is this node's, so
// all are taken, whatever node name the daemon had when it wrote them:
//   - a workload still running is re-adopted: network repaired, reported
//     running with its pid and IP;
//   - one that was running but is gone (reboot) is started again, and
//   - one caught halfway through a start is started from scratch: both
//     are reported creating at once and started in the background
//     (finishInterrupted), so a slow or hung pull never holds up the
//     node's start, the API or the proxy;
//   - one meant to be stopped is stopped;
//   - one that exited, or was stopped, is reported as it is, exit code
//     included;
//   - leases and interfaces of workloads with no record are released.
func (n *Node) recover(ctx context.Context) error {
	list, err := n.Store.List()
	if err != nil {
		return fmt.Errorf("node: read workloads: %w", err)
	}
	keep := map[spec.ID]bool{}
	var later []spec.ID
	for _, r := range list {
		if r.Desired == workload.DesiredStopped {
			n.finishStop(ctx, r)
			continue
		}
		keep[r.ID] = true
		if n.recoverOne(ctx, r) {
			later = append(later, r.ID)
		}
	}
	if err := n.Network.Reconcile(ctx, keep); err != nil {
		n.log.Warn("recover: network reconcile", "err", err)
	}
	for _, id := range later {
		n.bg.Go(func() { n.finishInterrupted(id) })
	}
	return nil
}

// finishInterrupted starts id again from scratch in the background, after
// recover reported it creating. It runs as any spawn's start does, with
// the same pull timeouts, so one hung registry delays only its own
// workloads. It re-reads the record under the lock: a Stop or Remove that
// came first wins. Close cancels it; the record then stays creating and
// the next start tries again.
func (n *Node) finishInterrupted(id spec.ID) {
	unlock := n.locks.Lock(id.String())
	defer unlock()
	r, err := n.Store.Get(id)
	if err != nil || r.Desired != workload.DesiredRunning {
		return
	}
	drv := n.Drivers[r.Spec.Isolation]
	if drv == nil {
		return // recoverOne checked; a record cannot change isolation
	}
	err = n.restart(n.recoverCtx, drv, r)
	if err == nil {
		return
	}
	if n.recoverCtx.Err() != nil {
		n.log.Info("recover: start interrupted by shutdown; the next start finishes it", "id", id)
		return
	}
	n.markExited(r, err)
}

// recoverOne re-adopts r, or marks it exited with the reason it could not.
// It answers true when r must be started again from scratch: it is then
// reported creating, and recover leaves the start to finishInterrupted.
func (n *Node) recoverOne(ctx context.Context, r store.Record) (startLater bool) {
	unlock := n.locks.Lock(r.ID.String())
	defer unlock()
	err := n.readopt(ctx, r)
	if errors.Is(err, errStartLater) {
		// Reported before the API and proxy open, so no route leads to
		// the address the old copy had.
		n.report(r.ID, workload.Observation{Generation: r.Generation, State: workload.StateCreating})
		return true
	}
	if err != nil {
		n.markExited(r, err)
	}
	return false
}

// errStartLater is readopt's answer for a workload that must be started
// again from scratch (see finishInterrupted).
var errStartLater = errors.New("start again in the background")

// markExited records and reports r exited with err, the reason it could
// not be brought back (after a crash, or by its restart policy). The
// caller holds r's lock.
func (n *Node) markExited(r store.Record, err error) {
	n.log.Error("workload could not be brought back; it is marked exited", "id", r.ID, "err", err)
	if _, uerr := n.Store.Update(r.ID, func(r *store.Record) error { r.State = workload.StateExited; return nil }); uerr != nil {
		n.log.Error("recover: record exited", "id", r.ID, "err", uerr)
	}
	n.report(r.ID, workload.Observation{
		Generation: r.Generation, State: workload.StateExited, ImageDigest: r.ImageDigest,
		ExitCode: r.ExitCode, Restarts: r.Restarts, Error: err.Error(), FinishedAt: time.Now().UTC(),
	})
}

// readopt does recoverOne's work; the caller holds r's lock.
func (n *Node) readopt(ctx context.Context, r store.Record) error {
	drv := n.Drivers[r.Spec.Isolation]
	if drv == nil {
		return fmt.Errorf("%w: node %s has no driver for %q workloads any more", ErrUnsupported, n.cfg.Name, r.Spec.Isolation)
	}
	if r.State == workload.StateCreating {
		n.log.Info("recover: finishing a start that a crash interrupted, in the background", "id", r.ID)
		return errStartLater
	}
	img, err := n.Images.Get(r.ImageDigest)
	if err != nil {
		if img, err = n.Images.Ensure(ctx, r.Spec.Image, nil); err != nil {
			return err
		}
	}
	// The recorded attachment names the netns path the driver was given;
	// nothing on the host is touched until we know whether it still runs.
	att, leased := n.Network.Lookup(r.ID)
	cfg := n.driverConfig(r, img, att)
	if cfg.Volumes, err = n.volumeMounts(ctx, r.ID, r.Spec); err != nil {
		return err
	}
	st, err := drv.Recover(ctx, cfg)
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	switch {
	case st.State == driver.StateRunning:
		// Re-bind the workload's own namespace: a daemon restarted in a new
		// mount namespace no longer sees the old bind mount.
		if _, own := drv.(driver.OwnNetwork); !own {
			if att, err = n.Network.Adopt(ctx, r.ID, fmt.Sprintf("/proc/%d/ns/net", st.Pid), r.Spec.Egress...); err != nil {
				return err
			}
		}
		ip, err := workloadIP(ctx, drv, r.ID, att)
		if err != nil {
			return err
		}
		if r.State != workload.StateRunning {
			if r, err = n.Store.Update(r.ID, func(r *store.Record) error { r.State, r.ExitCode = workload.StateRunning, 0; return nil }); err != nil {
				return err
			}
		}
		// One probe now, so a workload that was ready before the restart
		// is reported ready at once; the watcher probes a late one.
		n.knowIsolation(r)
		o := workload.Observation{
			Generation: r.Generation, State: workload.StateRunning, IP: ip, Pid: st.Pid,
			ImageDigest: r.ImageDigest, StartedAt: orNow(st.StartedAt),
			Restarts: r.Restarts, ExposedPort: exposedPort(img.Config, r.Spec),
		}
		o.Ready = probe(readyPort(r.Spec, o), o.IP)
		n.report(r.ID, o)
		n.log.Info("recover: re-adopted running workload", "id", r.ID, "pid", st.Pid)
		return nil
	case r.State == workload.StateRunning:
		// It was running when we last looked and nobody stopped it: the
		// host rebooted or it died while we were away. Start it again.
		n.log.Info("recover: restarting workload that is no longer running, in the background", "id", r.ID)
		return errStartLater
	default:
		// Exited (or stopped) while meant to run: it stays so, as before
		// the restart, until the cluster says otherwise.
		o := workload.Observation{
			Generation: r.Generation, State: r.State, ImageDigest: r.ImageDigest,
			ExitCode: r.ExitCode, Restarts: r.Restarts, FinishedAt: st.FinishedAt,
		}
		if leased && r.State == workload.StateExited {
			o.IP = att.IP.String() // still leased, as check leaves it
		}
		n.report(r.ID, o)
		if r.State == workload.StateExited {
			n.exited(r.ID, r.ExitCode) // its restart policy may still apply
		}
		return nil
	}
}

// restart starts r again from scratch after a crash or reboot: reported
// creating, whatever the driver kept of it deleted, then started as Run
// does. Readiness is left to the watcher, so Start does not wait on it.
func (n *Node) restart(ctx context.Context, drv driver.Driver, r store.Record) error {
	n.report(r.ID, workload.Observation{Generation: r.Generation, State: workload.StateCreating})
	if err := drv.Delete(ctx, r.ID); err != nil && !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	_, err := n.start(ctx, r)
	return err
}

// finishStop completes a stop that a crash may have interrupted, and
// reports the workload stopped.
func (n *Node) finishStop(ctx context.Context, r store.Record) {
	unlock := n.locks.Lock(r.ID.String())
	defer unlock()
	var st driver.Status
	if drv := n.Drivers[r.Spec.Isolation]; drv != nil {
		if err := drv.Stop(ctx, r.ID, n.cfg.StopTimeout); err != nil && !errors.Is(err, driver.ErrNotFound) {
			n.log.Warn("recover: stop", "id", r.ID, "err", err)
		}
		st, _ = drv.Status(ctx, r.ID)
	}
	if r.State != workload.StateStopped {
		if _, err := n.Store.Update(r.ID, func(r *store.Record) error { r.State = workload.StateStopped; return nil }); err != nil {
			n.log.Error("recover: record stopped", "id", r.ID, "err", err)
		}
	}
	n.report(r.ID, stoppedAs(workload.Observation{
		Generation: r.Generation, State: r.State, ImageDigest: r.ImageDigest,
		ExitCode: r.ExitCode, FinishedAt: st.FinishedAt,
	}, st))
}

// watch follows the workloads' status until Close. Drivers that tell of
// exits themselves (driver.ExitNotifier) cost it nothing once their
// workloads are ready: it only probes the workloads that are not ready
// yet, each less often as it stays unready. Workloads of other drivers are
// asked for their status each StatusInterval.
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

// How the watcher probes a running workload that is not ready: first
// after one StatusInterval, then backing off to maxProbeEvery.
const maxProbeEvery = 5 * time.Second

// probeSchedule is when a not-ready workload is probed next.
type probeSchedule struct {
	next  time.Time
	every time.Duration
}

// checkAll checks the workloads that need it this tick, from the
// observations in memory: no store read, nothing at all for a ready
// workload whose driver tells of its exit.
func (n *Node) checkAll() {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.StatusInterval*5)
	defer cancel()
	for _, id := range n.dueChecks(time.Now()) {
		n.check(ctx, id)
	}
}

// dueChecks returns the workloads to check at now, and schedules the next
// probe of those not ready.
func (n *Node) dueChecks(now time.Time) []spec.ID {
	var due []spec.ID
	n.obsMu.Lock()
	for id, o := range n.obs {
		if o.State != workload.StateRunning {
			continue
		}
		if o.Ready {
			if n.tellsExits(id) {
				continue
			}
			due = append(due, id)
			continue
		}
		ps, ok := n.probes[id]
		if !ok {
			ps = probeSchedule{every: n.cfg.StatusInterval}
		} else if now.Before(ps.next) {
			continue
		} else {
			ps.every = min(2*ps.every, max(maxProbeEvery, n.cfg.StatusInterval))
		}
		ps.next = now.Add(ps.every)
		n.probes[id] = ps
		due = append(due, id)
	}
	n.obsMu.Unlock()
	return due
}

// tellsExits says whether id's driver tells of its exits. The caller
// holds obsMu.
func (n *Node) tellsExits(id spec.ID) bool {
	iso, ok := n.isolation[id]
	if !ok {
		return false
	}
	_, tells := n.Drivers[iso].(driver.ExitNotifier)
	return tells
}

// check reports id ready once it answers its probe, and exited once its
// process is gone.
func (n *Node) check(ctx context.Context, id spec.ID) {
	unlock := n.locks.Lock(id.String())
	defer unlock()
	// Read under the lock: a Stop or Remove may have just finished.
	r, err := n.Store.Get(id)
	if err != nil || r.Desired != workload.DesiredRunning || r.State != workload.StateRunning {
		return
	}
	drv := n.Drivers[r.Spec.Isolation]
	if drv == nil {
		return
	}
	st, err := drv.Status(ctx, id)
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return
	}
	o := n.current(r)
	if st.State == driver.StateRunning {
		if !o.Ready && probe(readyPort(r.Spec, o), o.IP) {
			o.Ready, o.Error = true, ""
			n.report(id, o)
			n.obsMu.Lock()
			delete(n.probes, id)
			n.obsMu.Unlock()
		}
		return
	}
	n.exitedLocked(r, driver.Exit{Code: st.ExitCode, At: st.FinishedAt})
}

// workloadExited is where the node learns that a workload's main process
// exited with code e.Code (-1 when it cannot be known, e.Reason saying
// why): drivers that tell of exits call it at once (driver.ExitNotifier),
// and the watcher's status checks of other drivers end here too. What is
// done about an exit belongs here.
func (n *Node) workloadExited(id spec.ID, e driver.Exit) {
	unlock := n.locks.Lock(id.String())
	defer unlock()
	r, err := n.Store.Get(id)
	if err != nil {
		return // removed since
	}
	n.exitedLocked(r, e)
}

// exitedLocked records and reports that r exited, unless it was stopped
// or removed meanwhile, or e is about an earlier process of it. The caller
// holds r's lock.
func (n *Node) exitedLocked(r store.Record, e driver.Exit) {
	if r.Desired != workload.DesiredRunning || r.State != workload.StateRunning {
		return // stopped on purpose, or already handled
	}
	o := n.current(r)
	if e.Pid != 0 && o.Pid != 0 && e.Pid != o.Pid {
		return // a late notice about a process this workload no longer runs
	}
	if _, err := n.Store.Update(r.ID, func(r *store.Record) error {
		r.State, r.ExitCode = workload.StateExited, e.Code
		return nil
	}); err != nil {
		n.log.Error("watch: record exited", "id", r.ID, "err", err)
		return
	}
	n.obsMu.Lock()
	delete(n.probes, r.ID)
	n.obsMu.Unlock()
	// The IP stays: the lease is held until Stop or Remove, so whatever
	// derives routes can still tell the workload exists but does not run.
	o.State, o.Pid, o.Ready, o.ExitCode, o.FinishedAt = workload.StateExited, 0, false, e.Code, orNow(e.At)
	o.Error = e.Reason
	n.report(r.ID, o)
	n.log.Warn("workload exited by itself", "id", r.ID, "exit_code", e.Code, "reason", e.Reason)
	n.exited(r.ID, e.Code) // its restart policy may bring it back
}
