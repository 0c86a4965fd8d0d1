package cluster

import (
	"log/slog"
	"sync"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// reportRetry spaces out writes of reports that raft refused (no leader).
const reportRetry = time.Second

// reporter is the one path by which this node's observations reach the
// cluster state. The node calls report on every change, under its lock for
// the workload, so report only notes the newest observation per workload
// and wakes the writer; the writer puts everything noted into one raft
// entry (several past raftstore.MaxReports). A report that cannot be written (no quorum) stays noted and is
// written when raft is back; a newer one for the same workload replaces it.
type reporter struct {
	raft observer
	// current is the node's latest observation of a workload
	// (node.Observation), for resend.
	current func(spec.ID) (workload.Observation, bool)
	log     *slog.Logger
	// changed is told of every report, so the routes follow local
	// observations before raft has them.
	changed func()

	mu      sync.Mutex
	pending map[spec.ID]workload.Observation
	wake    chan struct{}

	writeMu sync.Mutex // one batch in flight; holds last
	last    uint64     // index of the last batch written
}

// observer is where reports are written: the cluster state
// (raftstore.Store.Observe).
type observer interface {
	Observe(reports []raftstore.Report) (uint64, error)
}

func newReporter(raft observer, current func(spec.ID) (workload.Observation, bool), log *slog.Logger, changed func()) *reporter {
	return &reporter{
		raft: raft, current: current, log: log, changed: changed,
		pending: map[spec.ID]workload.Observation{}, wake: make(chan struct{}, 1),
	}
}

// report notes o as the newest observation of id. It never blocks on raft.
func (r *reporter) report(id spec.ID, o workload.Observation) {
	r.mu.Lock()
	r.pending[id] = o
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	if r.changed != nil {
		r.changed()
	}
}

// resend notes again the node's current observation of id, for one the
// cluster state has wrong (a report lost while raft had no leader). It
// reads that observation under the lock report takes, rather than taking
// one the caller read earlier: the node may have reported a newer one
// since, and a stale copy noted after it would overwrite it, in the
// reporter and then in raft. The node records an observation before it
// calls report with it, so what resend reads is never older than what is
// noted. A workload the node no longer has is left alone.
func (r *reporter) resend(id spec.ID) {
	r.mu.Lock()
	o, ok := r.current(id)
	if ok {
		r.pending[id] = o
	}
	r.mu.Unlock()
	if !ok {
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// flush writes every noted observation now and returns the raft index at
// which all reports made before the call are in the log: the caller waits
// for that index to read what it reported.
func (r *reporter) flush() (uint64, error) {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	r.mu.Lock()
	batch := r.pending
	r.pending = map[spec.ID]workload.Observation{}
	r.mu.Unlock()
	if len(batch) == 0 {
		return r.last, nil
	}
	reports := make([]raftstore.Report, 0, len(batch))
	for id, o := range batch {
		reports = append(reports, raftstore.Report{ID: id, Observation: o})
	}
	// An entry takes at most raftstore.MaxReports, so a node with many
	// changes at once (a restart re-adopting all its workloads) writes
	// several, rather than one that a forward to the leader refuses
	// again and again.
	for len(reports) > 0 {
		n := min(len(reports), raftstore.MaxReports)
		index, err := r.raft.Observe(reports[:n])
		if err != nil {
			// Put back what was not written, unless something newer
			// came meanwhile.
			r.mu.Lock()
			for _, rep := range reports {
				if _, newer := r.pending[rep.ID]; !newer {
					r.pending[rep.ID] = rep.Observation
				}
			}
			r.mu.Unlock()
			return 0, err
		}
		r.last = index
		reports = reports[n:]
	}
	return r.last, nil
}

// run writes reports as they come until quit is closed.
func (r *reporter) run(quit <-chan struct{}) {
	retry := time.NewTimer(reportRetry)
	defer retry.Stop()
	for {
		select {
		case <-quit:
			return
		case <-r.wake:
		case <-retry.C:
		}
		if _, err := r.flush(); err != nil {
			r.log.Warn("report workload state; retrying", "err", err, "in", reportRetry)
		}
		retry.Reset(reportRetry)
	}
}
