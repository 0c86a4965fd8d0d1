package raftstore

// Reading what was written before the workload record was split into an
// allocation and an observation. Clusters upgrade in place: a data dir
// keeps its raft log and snapshots, so the new state machine must replay
// the old ops and restore the old snapshots, and then go on as if the
// cluster had always held the two halves apart.
//
// The old record is one JSON object whose names are those of both halves
// (workload.Allocation and workload.Observation were given the same JSON
// names), so the same bytes decode into each half unchanged.

import (
	"encoding/json"
	"fmt"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// legacySnapshotVersion is the snapshot version that held whole records.
const legacySnapshotVersion = 1

// legacyRecord is a workload as a version 1 snapshot holds it.
type legacyRecord struct {
	// Workload is the whole record, both halves in one object.
	Workload json.RawMessage `json:"workload"`
	// Version is the raft index that last wrote the record; it becomes
	// the allocation's version.
	Version uint64 `json:"version"`
}

// splitLegacy decodes an old record into its halves. The allocation gets
// generation 1 (the old record had none). The observation answers that
// generation and is nil when the record says no node has reported yet
// (pending, or no state at all), as a fresh allocation has none.
func splitLegacy(raw json.RawMessage) (workload.Allocation, *workload.Observation, error) {
	var a workload.Allocation
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, nil, fmt.Errorf("%w: old workload record: %v", ErrBadCommand, err)
	}
	if a.ID == "" {
		return a, nil, fmt.Errorf("%w: old workload record without an id", ErrBadCommand)
	}
	var o workload.Observation
	if err := json.Unmarshal(raw, &o); err != nil {
		return a, nil, fmt.Errorf("%w: old workload record: %v", ErrBadCommand, err)
	}
	if a.Generation == 0 {
		a.Generation = 1
	}
	o.Generation = a.Generation
	if o.State == "" || o.State == workload.StatePending {
		return a, nil, nil
	}
	return a, &o, nil
}

// legacyUpdate applies an old "update": a compare-and-set of the whole
// record. The allocation half goes through the same rules as a new update
// (its version is compared, its generation grows if node, spec or desired
// changed), except the port check: it replays what already happened. The
// observation half replaces what is held, as the old record was the whole
// truth about the workload. The caller holds f.mu.
func (f *fsm) legacyUpdate(c command, index uint64) error {
	a, o, err := splitLegacy(c.Workload)
	if err != nil {
		return err
	}
	if c.ID == "" || a.ID != c.ID {
		return fmt.Errorf("%w: update without a matching workload id", ErrBadCommand)
	}
	next, err := f.update(c.ID, a, c.Version, index, false)
	if err != nil {
		return err
	}
	delete(f.observed, c.ID)
	if o != nil && o.Node == next.Node {
		o.Generation = next.Generation
		f.observed[c.ID] = *o
	}
	return nil
}

// restoreLegacy turns a version 1 snapshot into the state a version 2
// snapshot holds. Each record is split as splitLegacy says and keeps its
// version; members are carried over as they are.
func restoreLegacy(file snapshotFile) (snapshotData, error) {
	data := snapshotData{
		Version:      snapshotVersion,
		Allocations:  make(map[spec.ID]allocRecord, len(file.Workloads)),
		Observations: make(map[spec.ID]workload.Observation, len(file.Workloads)),
		Nodes:        file.Nodes,
	}
	for id, r := range file.Workloads {
		a, o, err := splitLegacy(r.Workload)
		if err != nil {
			return snapshotData{}, fmt.Errorf("raftstore: restore version 1 snapshot, workload %s: %w", id, err)
		}
		// The map key is what the old store looked the record up by.
		a.ID = id
		data.Allocations[id] = allocRecord{Allocation: a, Version: r.Version}
		if o != nil {
			data.Observations[id] = *o
		}
	}
	return data, nil
}
