package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hypercore-dev/hypercore/internal/store"
)

// ErrExists is returned by Create for an id the cluster already holds.
var ErrExists = errors.New("workload already exists")

// ErrConflict means a compare-and-set update found the record changed since
// it was read. It is retryable: read again, recompute, apply again. Update
// does that itself a few times before handing it back.
var ErrConflict = errors.New("workload changed concurrently")

// ErrBadCommand is the result of applying a log entry this FSM cannot
// understand: an unknown format version or op, or a malformed body. It is
// a result rather than a panic so a node running older code stays up and
// reports the problem instead of crashing on every replay.
var ErrBadCommand = errors.New("bad raft command")

// commandVersion is the first byte of every log entry. Bump it when the
// meaning of an existing field changes; adding ops or optional fields does
// not need a bump, because unknown ops are already rejected cleanly.
const commandVersion byte = 1

// snapshotVersion is recorded in every snapshot for the same reason.
const snapshotVersion = 1

// The ops a command may carry. Port use needs no op of its own: it is
// derived from the placed workloads' specs, which the log already orders.
const (
	opCreate  = "create"
	opUpdate  = "update"
	opDelete  = "delete"
	opSetNode = "set-node"
)

// Node is what the cluster state records about a member, beyond what gossip
// says now: when it went down, so a new leader picks up a failover where
// the old one left it instead of starting the grace period again.
type Node struct {
	Name string `json:"name"`
	// State is the gossip state the leader last recorded.
	State string `json:"state"`
	// DownSince is when the leader first saw it failed or gone; zero
	// while it is alive.
	DownSince time.Time `json:"down_since,omitzero"`
}

// command is one replicated write. It is JSON after a version byte so the
// log stays readable with standard tools and new fields can be added
// without breaking old entries.
type command struct {
	Op       string          `json:"op"`
	ID       string          `json:"id,omitempty"`
	Workload *store.Workload `json:"workload,omitempty"`
	// Version is, for an update, the version the record must still have
	// for the update to apply: the compare half of compare-and-set.
	Version uint64 `json:"version,omitempty"`
	Node    *Node  `json:"node,omitempty"`
}

func encodeCommand(c command) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("raftstore: encode %s command: %w", c.Op, err)
	}
	return append([]byte{commandVersion}, body...), nil
}

func decodeCommand(data []byte) (command, error) {
	var c command
	if len(data) == 0 {
		return c, fmt.Errorf("%w: empty entry", ErrBadCommand)
	}
	if data[0] != commandVersion {
		return c, fmt.Errorf("%w: format version %d, want %d", ErrBadCommand, data[0], commandVersion)
	}
	if err := json.Unmarshal(data[1:], &c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	return c, nil
}

// record is a workload as the FSM holds it.
type record struct {
	Workload store.Workload `json:"workload"`
	// Version is the raft index of the entry that last wrote the record.
	// Indexes only grow, so a changed version means a changed record.
	Version uint64 `json:"version"`
}

// snapshotData is the whole state, as written to a snapshot.
type snapshotData struct {
	Version   int               `json:"version"`
	Workloads map[string]record `json:"workloads"`
	Nodes     map[string]Node   `json:"nodes,omitempty"`
}

// fsm is the replicated state machine. Apply is called by raft from one
// goroutine; reads come from any goroutine, hence the lock.
type fsm struct {
	mu        sync.RWMutex
	workloads map[string]record
	nodes     map[string]Node
	changed   chan struct{} // see Store.Changes
}

var _ raft.FSM = (*fsm)(nil)

func newFSM() *fsm {
	return &fsm{workloads: map[string]record{}, nodes: map[string]Node{}, changed: make(chan struct{}, 1)}
}

// Apply implements raft.FSM. It returns nil on success or an error value;
// the error is the result of the write, the same on every node, since it
// depends only on the log.
func (f *fsm) Apply(l *raft.Log) any {
	defer f.notify()
	c, err := decodeCommand(l.Data)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch c.Op {
	case opCreate:
		if c.Workload == nil || c.Workload.ID == "" {
			return fmt.Errorf("%w: create without a workload id", ErrBadCommand)
		}
		id := c.Workload.ID
		if _, ok := f.workloads[id]; ok {
			return fmt.Errorf("raftstore: %w: %s", ErrExists, id)
		}
		f.workloads[id] = record{Workload: *c.Workload, Version: l.Index}
		return nil
	case opUpdate:
		if c.Workload == nil || c.ID == "" || c.Workload.ID != c.ID {
			return fmt.Errorf("%w: update without a matching workload id", ErrBadCommand)
		}
		cur, ok := f.workloads[c.ID]
		if !ok {
			return fmt.Errorf("raftstore: %w: %s", store.ErrNotFound, c.ID)
		}
		if cur.Version != c.Version {
			return fmt.Errorf("raftstore: %w: %s is at version %d, update expected %d",
				ErrConflict, c.ID, cur.Version, c.Version)
		}
		f.workloads[c.ID] = record{Workload: *c.Workload, Version: l.Index}
		return nil
	case opDelete:
		if c.ID == "" {
			return fmt.Errorf("%w: delete without an id", ErrBadCommand)
		}
		delete(f.workloads, c.ID)
		return nil
	case opSetNode:
		if c.Node == nil || c.Node.Name == "" {
			return fmt.Errorf("%w: set-node without a name", ErrBadCommand)
		}
		f.nodes[c.Node.Name] = *c.Node
		return nil
	default:
		return fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
	}
}

// notify wakes a watcher without ever blocking the raft goroutine.
func (f *fsm) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// get returns a copy of the record of id.
func (f *fsm) get(id string) (record, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r, ok := f.workloads[id]
	r.Workload = clone(r.Workload)
	return r, ok
}

// list returns copies of every workload in the order store.Bolt uses:
// oldest first, ties broken by id.
func (f *fsm) list() []store.Workload {
	f.mu.RLock()
	out := make([]store.Workload, 0, len(f.workloads))
	for _, r := range f.workloads {
		out = append(out, clone(r.Workload))
	}
	f.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// node returns the record of a member.
func (f *fsm) node(name string) (Node, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.nodes[name]
	return n, ok
}

// clone copies the slices of w so callers can change what they are handed
// without reaching into the FSM. Extend it when spec.Spec gains a field
// of reference type.
func clone(w store.Workload) store.Workload {
	w.Spec.Ports = slices.Clone(w.Spec.Ports)
	w.Spec.Env = slices.Clone(w.Spec.Env)
	w.Spec.Args = slices.Clone(w.Spec.Args)
	return w
}

// Snapshot implements raft.FSM. Records are never changed in place, only
// replaced, so a shallow copy of the map is a consistent point in time.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	data := snapshotData{Version: snapshotVersion, Workloads: make(map[string]record, len(f.workloads)), Nodes: maps.Clone(f.nodes)}
	for id, r := range f.workloads {
		data.Workloads[id] = r
	}
	return &fsmSnapshot{data: data}, nil
}

// Restore implements raft.FSM. It replaces the whole state.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var data snapshotData
	if err := json.NewDecoder(rc).Decode(&data); err != nil {
		return fmt.Errorf("raftstore: decode snapshot: %w", err)
	}
	if data.Version != snapshotVersion {
		return fmt.Errorf("raftstore: snapshot version %d, want %d", data.Version, snapshotVersion)
	}
	if data.Workloads == nil {
		data.Workloads = map[string]record{}
	}
	if data.Nodes == nil {
		data.Nodes = map[string]Node{}
	}
	f.mu.Lock()
	f.workloads = data.Workloads
	f.nodes = data.Nodes
	f.mu.Unlock()
	f.notify()
	return nil
}

type fsmSnapshot struct {
	data snapshotData
}

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.data); err != nil {
		sink.Cancel()
		return fmt.Errorf("raftstore: write snapshot: %w", err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() {}
