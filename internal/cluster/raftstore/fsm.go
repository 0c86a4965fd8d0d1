package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hypercore-dev/hypercore/internal/apitoken"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// ErrExists is returned by Create for an id the cluster already holds.
var ErrExists = errors.New("workload already exists")

// ErrConflict means a compare-and-set update found the allocation changed
// since it was read. It is retryable: read again, recompute, apply again.
// Update does that itself a few times before handing it back.
var ErrConflict = errors.New("workload changed concurrently")

// ErrBadCommand is the result of applying a log entry this FSM cannot
// understand: an unknown format version or op, or a malformed body. It is
// a result rather than a panic so a node running older code stays up and
// reports the problem instead of crashing on every replay.
var ErrBadCommand = errors.New("bad raft command")

// ErrPortTaken is the result of a Create or Update that would leave two
// allocations meant to run on one node with the same raw TCP public port.
// A raw TCP port has no host name to route by, so one node's proxy can
// hand it to one workload only. The error's message names the port, the
// node and the workload that holds it. The check runs in the state
// machine, so every server reaches the same verdict from the same log, and
// two spawns racing for one port cannot both win.
//
// It is also a workload.ErrNoCapacity (errors.Is), like every other "no
// room for this workload", so the API answers it 409 on whatever path it
// comes back: a spawn's first allocation, the spawn's move to the next
// ranked node, or a write forwarded to the leader.
var ErrPortTaken error = portTaken{}

// portTaken is ErrPortTaken's type: its own sentinel that is also a
// workload.ErrNoCapacity, keeping its message.
type portTaken struct{}

func (portTaken) Error() string { return "public port taken" }

// Is makes ErrPortTaken a workload.ErrNoCapacity.
func (portTaken) Is(target error) bool { return target == workload.ErrNoCapacity }

// commandVersion is the first byte of every log entry. Bump it when the
// meaning of an existing field changes; adding ops or optional fields does
// not need a bump, because unknown ops are already rejected cleanly. The
// split of the workload record into allocation and observation added ops
// and kept the old ones readable (see legacy.go), so it kept version 1.
const commandVersion byte = 1

// snapshotVersion is recorded in every snapshot this code writes. Version
// 1 (legacySnapshotVersion) held whole workload records; version 2 holds
// allocations and observations apart. Restore reads both.
const snapshotVersion = 2

// The ops a command may carry. Port use needs no op of its own: it is
// derived from the allocations' specs, which the log already orders.
const (
	// opCreateAllocation adds an allocation; ErrExists if the id is held.
	opCreateAllocation = "create-allocation"
	// opUpdateAllocation replaces an allocation if it is still at
	// command.Version (compare-and-set).
	opUpdateAllocation = "update-allocation"
	// opObserve stores a batch of node reports.
	opObserve = "observe"
	// opDelete removes both halves of a workload.
	opDelete = "delete"
	// opSetNode records a member's state.
	opSetNode = "set-node"
	// opLegacyCreate and opLegacyUpdate carry a whole workload record, as
	// written before the split. Only logs from before the upgrade hold
	// them; they are applied by splitting the record (legacy.go).
	opLegacyCreate = "create"
	opLegacyUpdate = "update"
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

// Report is one observation the node named in Observation.Node makes of a
// workload it hosts, as Observe carries it into the cluster state.
//
// Invariant: the state keeps a report only while the workload's allocation
// names that same node; a report about a workload that has no allocation,
// or that has since moved to another node, is dropped as stale.
type Report struct {
	ID          spec.ID              `json:"id"`
	Observation workload.Observation `json:"observation"`
}

// MaxReports is the most reports one Observe takes, so one log entry (and
// the message that forwards it to the leader) stays bounded: a report is a
// few hundred bytes, so a full batch is far below what a peer message may
// carry. A node with more changes writes several entries.
const MaxReports = 512

// command is one replicated write. It is JSON after a version byte so the
// log stays readable with standard tools and new fields can be added
// without breaking old entries.
type command struct {
	Op string  `json:"op"`
	ID spec.ID `json:"id,omitempty"`
	// Allocation is the new allocation for create-allocation and
	// update-allocation.
	Allocation *workload.Allocation `json:"allocation,omitempty"`
	// Reports is the batch of an observe.
	Reports []Report `json:"reports,omitempty"`
	// Workload is the whole record the legacy create and update carried;
	// it decodes into both halves (see legacy.go).
	Workload json.RawMessage `json:"workload,omitempty"`
	// Version is, for an update, the version the allocation must still
	// have for the update to apply: the compare half of compare-and-set.
	Version uint64 `json:"version,omitempty"`
	Node    *Node  `json:"node,omitempty"`
	// RequestKey is the idempotency key a create-allocation claims (see
	// idempotency.go).
	RequestKey string `json:"request_key,omitempty"`
	// Secret is the sealed secret of set-secret, or the name of
	// remove-secret (see secrets.go).
	Secret *Secret `json:"secret,omitempty"`
	// Authority is the sealed authority of set-authority (authority.go).
	Authority []byte `json:"authority,omitempty"`
	// Volume is the volume of create-volume and delete-volume (volumes.go).
	Volume *Volume `json:"volume,omitempty"`
	// Token is the record of put-token, or the id of revoke-token.
	Token *apitoken.Token `json:"token,omitempty"`
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

// check refuses a command whose shape the state machine cannot apply. It
// is what Apply checks on every server, so it depends on nothing but c.
func (c *command) check() error {
	switch c.Op {
	case opCreateAllocation:
		if c.Allocation == nil || c.Allocation.ID == "" || (c.ID != "" && c.ID != c.Allocation.ID) {
			return fmt.Errorf("%w: %s without a matching allocation id", ErrBadCommand, c.Op)
		}
		if c.Allocation.Node == "" {
			return fmt.Errorf("%w: %s of %s names no node", ErrBadCommand, c.Op, c.Allocation.ID)
		}
	case opUpdateAllocation:
		if c.Allocation == nil || c.ID == "" || c.Allocation.ID != c.ID {
			return fmt.Errorf("%w: %s without a matching allocation id", ErrBadCommand, c.Op)
		}
		if c.Allocation.Node == "" {
			return fmt.Errorf("%w: %s of %s names no node", ErrBadCommand, c.Op, c.ID)
		}
	case opObserve:
		if len(c.Reports) == 0 {
			return fmt.Errorf("%w: %s without reports", ErrBadCommand, c.Op)
		}
		for _, r := range c.Reports {
			if r.ID == "" || r.Observation.Node == "" {
				return fmt.Errorf("%w: %s: a report without an id or a node", ErrBadCommand, c.Op)
			}
		}
	case opDelete:
		if c.ID == "" {
			return fmt.Errorf("%w: delete without an id", ErrBadCommand)
		}
	case opSetNode:
		if c.Node == nil || c.Node.Name == "" {
			return fmt.Errorf("%w: set-node without a name", ErrBadCommand)
		}
	case opSetSecret, opRemoveSecret:
		return checkSecret(c)
	case opSetAuthority:
		return checkAuthority(c)
	case opPutToken, opRevokeToken:
		return c.checkToken()
	case opLegacyCreate, opLegacyUpdate:
		if len(c.Workload) == 0 {
			return fmt.Errorf("%w: %s without a workload", ErrBadCommand, c.Op)
		}
	case opCreateVolume, opDeleteVolume:
		return checkVolumeCommand(c)
	default:
		return fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
	}
	return nil
}

// checkForwarded checks a command that came from another node (see
// Store.ApplyEncoded) as the API edge checks its input: besides check, ids
// must be workload ids, specs must pass spec.Spec.Check, and desired and
// observed states must be known ones. The old whole-record ops are refused:
// this code never writes them, they are only replayed from logs written
// before the upgrade, and a node still sending them runs older code.
func checkForwarded(c *command) error {
	if err := c.check(); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: forwarded %s: %s", ErrBadCommand, c.Op, fmt.Sprintf(format, args...))
	}
	checkID := func(id spec.ID) error {
		if _, err := spec.ParseID(string(id)); err != nil {
			return bad("%v", err)
		}
		return nil
	}
	switch c.Op {
	case opCreateAllocation, opUpdateAllocation:
		a := c.Allocation
		if err := checkID(a.ID); err != nil {
			return err
		}
		if _, err := spec.ParseRequestID(c.RequestKey); err != nil {
			return bad("workload %s: %v", a.ID, err)
		}
		if err := a.Spec.Check(); err != nil {
			return bad("workload %s: %v", a.ID, err)
		}
		if a.Desired != workload.DesiredRunning && a.Desired != workload.DesiredStopped {
			return bad("workload %s: unknown desired state %q", a.ID, a.Desired)
		}
	case opObserve:
		// Not in check: the log may hold what an older limit let through,
		// and replay must apply it alike.
		if len(c.Reports) > MaxReports {
			return bad("%d reports in one entry; at most %d", len(c.Reports), MaxReports)
		}
		for _, r := range c.Reports {
			if err := checkID(r.ID); err != nil {
				return err
			}
			switch r.Observation.State {
			case workload.StatePending, workload.StateCreating, workload.StateRunning, workload.StateExited, workload.StateStopped:
			default:
				return bad("workload %s: unknown state %q", r.ID, r.Observation.State)
			}
		}
	case opDelete:
		return checkID(c.ID)
	case opLegacyCreate, opLegacyUpdate:
		return bad("the whole-record ops are only replayed from old logs; upgrade the node that sent it")
	}
	return nil
}

// subject names what c is about, for error messages.
func (c *command) subject() string {
	switch {
	case c.ID != "":
		return string(c.ID)
	case c.Allocation != nil:
		return string(c.Allocation.ID)
	case c.Node != nil:
		return c.Node.Name
	case c.Token != nil:
		return "token " + c.Token.ID
	case len(c.Reports) > 0:
		return fmt.Sprintf("(%d reports)", len(c.Reports))
	}
	return ""
}

// allocRecord is an allocation as the FSM holds it.
type allocRecord struct {
	Allocation workload.Allocation `json:"allocation"`
	// Version is the raft index of the entry that last wrote the
	// allocation. Indexes only grow, so a changed version means a changed
	// allocation. Reports do not touch it: a node reporting does not make
	// a concurrent Update of the allocation fail.
	Version uint64 `json:"version"`
}

// snapshotData is the whole state, as written to a snapshot (version 2).
type snapshotData struct {
	Version int `json:"version"`
	// Applied is the index of the last entry the state holds.
	Applied      uint64                           `json:"applied,omitempty"`
	Allocations  map[spec.ID]allocRecord          `json:"allocations"`
	Observations map[spec.ID]workload.Observation `json:"observations,omitempty"`
	Nodes        map[string]Node                  `json:"nodes,omitempty"`
	RequestKeys  map[string]requestKey            `json:"request_keys,omitempty"`
	Secrets      map[string]Secret                `json:"secrets,omitempty"`
	Authority    []byte                           `json:"authority,omitempty"`
	Volumes      map[string]Volume                `json:"volumes,omitempty"`
	// Tokens are the API's scoped tokens by id; a snapshot from before
	// them has none.
	Tokens map[string]apitoken.Token `json:"tokens,omitempty"`
}

// fsm is the replicated state machine. Apply is called by raft from one
// goroutine; reads come from any goroutine, hence the lock.
//
// Invariants, kept by Apply alone so every server holds the same state:
//   - an observation exists only for an id that has an allocation, and
//     only while its Node equals the allocation's Node;
//   - no two allocations meant to run on one node hold the same raw TCP
//     public port, unless the old ops of a log from before the check put
//     them there (see create);
//   - every allocation's Generation is at least 1.
type fsm struct {
	// applied is the index of the last entry Apply took in, or the one a
	// snapshot covers: raft's own AppliedIndex runs ahead of the state,
	// as it counts entries handed to the FSM, not applied (Store.applied).
	applied atomic.Uint64

	mu       sync.RWMutex
	allocs   map[spec.ID]allocRecord
	observed map[spec.ID]workload.Observation
	nodes    map[string]Node
	keys     map[string]requestKey     // idempotency keys, see idempotency.go
	secrets  map[string]Secret         // sealed secrets, see secrets.go
	volumes  map[string]Volume         // volumes.go
	tokens   map[string]apitoken.Token // the API's scoped tokens, tokens.go
	// authority is the sealed CA key and join secret (authority.go).
	authority []byte
	changed   chan struct{} // see Store.Changes
}

var _ raft.FSM = (*fsm)(nil)

func newFSM() *fsm {
	return &fsm{
		allocs:   map[spec.ID]allocRecord{},
		observed: map[spec.ID]workload.Observation{},
		nodes:    map[string]Node{},
		keys:     map[string]requestKey{},
		secrets:  map[string]Secret{},
		volumes:  map[string]Volume{},
		tokens:   map[string]apitoken.Token{},
		changed:  make(chan struct{}, 1),
	}
}

// Apply implements raft.FSM. It returns nil on success or an error value;
// the error is the result of the write, the same on every node, since it
// depends only on the log.
func (f *fsm) Apply(l *raft.Log) any {
	defer f.notify()
	defer f.applied.Store(l.Index)
	c, err := decodeCommand(l.Data)
	if err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch c.Op {
	case opCreateAllocation:
		if c.RequestKey != "" {
			return f.createKeyed(*c.Allocation, c.RequestKey, l.Index)
		}
		return f.create(*c.Allocation, nil, l.Index, true)
	case opUpdateAllocation:
		_, err := f.update(c.ID, *c.Allocation, c.Version, l.Index, true)
		return err
	case opObserve:
		for _, r := range c.Reports {
			f.observe(r)
		}
		return nil
	case opDelete:
		delete(f.allocs, c.ID)
		delete(f.observed, c.ID)
		return nil
	case opSetNode:
		f.nodes[c.Node.Name] = *c.Node
		return nil
	case opSetSecret, opRemoveSecret:
		return f.applySecret(&c)
	case opSetAuthority:
		f.authority = c.Authority
		return nil
	case opCreateVolume, opDeleteVolume:
		return f.applyVolume(c)
	case opPutToken, opRevokeToken:
		return f.applyToken(c)
	case opLegacyCreate:
		a, o, err := splitLegacy(c.Workload)
		if err != nil {
			return err
		}
		return f.create(a, o, l.Index, false)
	case opLegacyUpdate:
		return f.legacyUpdate(c, l.Index)
	}
	return fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op) // check lets none through
}

// create adds allocation a, and o as its first observation when o is not
// nil (only a legacy record carries one). checkPorts is false only for
// legacy ops: they replay what already happened, and refusing history
// would drop a workload that runs. The caller holds f.mu.
func (f *fsm) create(a workload.Allocation, o *workload.Observation, index uint64, checkPorts bool) error {
	if _, ok := f.allocs[a.ID]; ok {
		return fmt.Errorf("raftstore: %w: %s", ErrExists, a.ID)
	}
	if a.Generation == 0 {
		a.Generation = 1
	}
	if checkPorts {
		if err := f.checkPorts(a); err != nil {
			return err
		}
		if err := f.checkVolumes(a); err != nil {
			return err
		}
	}
	f.allocs[a.ID] = allocRecord{Allocation: a, Version: index}
	// No report can be kept without an allocation, so there is none to
	// keep; clearing makes that hold even for an id reused after delete.
	delete(f.observed, a.ID)
	if o != nil && o.Node == a.Node {
		f.observed[a.ID] = *o
	}
	return nil
}

// update replaces the allocation of id by proposed, if it is still at
// version, and returns the allocation it stored. checkPorts is as for
// create. The caller holds f.mu.
func (f *fsm) update(id spec.ID, proposed workload.Allocation, version, index uint64, checkPorts bool) (workload.Allocation, error) {
	cur, ok := f.allocs[id]
	if !ok {
		return workload.Allocation{}, fmt.Errorf("raftstore: %w: %s", workload.ErrNotFound, id)
	}
	if cur.Version != version {
		return workload.Allocation{}, fmt.Errorf("raftstore: %w: %s is at version %d, update expected %d",
			ErrConflict, id, cur.Version, version)
	}
	next, changed := nextAllocation(cur.Allocation, proposed)
	if changed && checkPorts {
		// An update that changes neither node, spec nor desired state
		// claims no port it did not hold already.
		if err := f.checkPorts(next); err != nil {
			return workload.Allocation{}, err
		}
		if err := f.checkVolumes(next); err != nil {
			return workload.Allocation{}, err
		}
	}
	f.allocs[id] = allocRecord{Allocation: next, Version: index}
	if o, ok := f.observed[id]; ok && o.Node != next.Node {
		// Moved: what the old node saw says nothing about the new one.
		delete(f.observed, id)
	}
	return next, nil
}

// observe keeps r if the allocation of r.ID still names the reporting
// node, and drops it as stale otherwise. The caller holds f.mu.
func (f *fsm) observe(r Report) {
	cur, ok := f.allocs[r.ID]
	if !ok || cur.Allocation.Node != r.Observation.Node {
		return
	}
	f.observed[r.ID] = r.Observation
}

// nextAllocation is proposed as an update of cur may store it: ID and
// CreatedAt stay those of cur, and Generation is cur's plus one when Node,
// Spec or Desired changed (changed then reports true), whatever proposed
// says. Store.Update and the FSM both call it, so the allocation Update
// returns is the one the FSM stores.
func nextAllocation(cur, proposed workload.Allocation) (next workload.Allocation, changed bool) {
	next = proposed
	next.ID = cur.ID
	next.CreatedAt = cur.CreatedAt
	next.Generation = cur.Generation
	if next.Generation == 0 {
		next.Generation = 1
	}
	changed = proposed.Node != cur.Node || proposed.Desired != cur.Desired || !sameSpec(proposed.Spec, cur.Spec)
	if changed {
		next.Generation++
	}
	return next, changed
}

// sameSpec compares a and b as the log carries them, in JSON: the leader
// compares its in-memory copy and every server the decoded one, and the
// encoding makes a nil and an empty slice equal on both sides. It also
// needs no update when spec.Spec gains a field.
func sameSpec(a, b spec.Spec) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// checkPorts refuses a, with ErrPortTaken, if it is meant to run and one
// of its raw TCP public ports is held by another allocation meant to run
// on the same node. The holder named is the least id among those holding
// the first such port, so every server words the error alike. The caller
// holds f.mu.
func (f *fsm) checkPorts(a workload.Allocation) error {
	if a.Desired != workload.DesiredRunning {
		return nil
	}
	for _, p := range a.Spec.Ports {
		if p.Proto != spec.ProtoTCP {
			continue
		}
		var holder spec.ID
		for id, r := range f.allocs {
			o := r.Allocation
			if id == a.ID || o.Node != a.Node || o.Desired != workload.DesiredRunning || !o.Spec.PublishesTCP(p.Public) {
				continue
			}
			if holder == "" || id < holder {
				holder = id
			}
		}
		if holder != "" {
			return fmt.Errorf("raftstore: %w: tcp port %d on node %s is held by workload %s; choose another public port, or stop or remove %s first",
				ErrPortTaken, p.Public, a.Node, holder, holder)
		}
	}
	return nil
}

// notify wakes a watcher without ever blocking the raft goroutine.
func (f *fsm) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// allocation returns a copy of the allocation of id and its version.
func (f *fsm) allocation(id spec.ID) (workload.Allocation, uint64, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r, ok := f.allocs[id]
	return cloneAllocation(r.Allocation), r.Version, ok
}

// get returns the joined view of id.
func (f *fsm) get(id spec.ID) (workload.Workload, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r, ok := f.allocs[id]
	if !ok {
		return workload.Workload{}, false
	}
	return f.joinLocked(r.Allocation), true
}

// join returns a joined with the observation held for its id now.
func (f *fsm) join(a workload.Allocation) workload.Workload {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.joinLocked(a)
}

func (f *fsm) joinLocked(a workload.Allocation) workload.Workload {
	a = cloneAllocation(a)
	if o, ok := f.observed[a.ID]; ok {
		return workload.Join(a, &o)
	}
	return workload.Join(a, nil)
}

// list returns the joined view of every workload, oldest first, ties
// broken by id.
func (f *fsm) list() []workload.Workload {
	f.mu.RLock()
	out := make([]workload.Workload, 0, len(f.allocs))
	for _, r := range f.allocs {
		out = append(out, f.joinLocked(r.Allocation))
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

// cloneAllocation copies the slices of a so callers can change what they
// are handed without reaching into the FSM. Extend it when spec.Spec
// gains a field of reference type.
func cloneAllocation(a workload.Allocation) workload.Allocation {
	a.Spec.Ports = slices.Clone(a.Spec.Ports)
	a.Spec.Env = slices.Clone(a.Spec.Env)
	a.Spec.Args = slices.Clone(a.Spec.Args)
	a.Spec.Secrets = maps.Clone(a.Spec.Secrets)
	a.Spec.Entrypoint = slices.Clone(a.Spec.Entrypoint)
	a.Spec.Volumes = maps.Clone(a.Spec.Volumes)
	return a
}

// Snapshot implements raft.FSM. Entries are never changed in place, only
// replaced, so shallow copies of the maps are a consistent point in time.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{data: snapshotData{
		Version:      snapshotVersion,
		Applied:      f.applied.Load(),
		Allocations:  maps.Clone(f.allocs),
		Observations: maps.Clone(f.observed),
		Nodes:        maps.Clone(f.nodes),
		RequestKeys:  maps.Clone(f.keys),
		Secrets:      maps.Clone(f.secrets),
		Authority:    f.authority,
		Volumes:      maps.Clone(f.volumes),
		Tokens:       maps.Clone(f.tokens),
	}}, nil
}

// snapshotFile is every snapshot version this code reads.
type snapshotFile struct {
	snapshotData
	// Workloads is what version 1 held: whole records.
	Workloads map[spec.ID]legacyRecord `json:"workloads,omitempty"`
}

// Restore implements raft.FSM. It replaces the whole state, from a
// snapshot of this version or of version 1 (see legacy.go).
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var file snapshotFile
	if err := json.NewDecoder(rc).Decode(&file); err != nil {
		return fmt.Errorf("raftstore: decode snapshot: %w", err)
	}
	data := file.snapshotData
	switch file.Version {
	case snapshotVersion:
	case legacySnapshotVersion:
		var err error
		if data, err = restoreLegacy(file); err != nil {
			return err
		}
	default:
		return fmt.Errorf("raftstore: snapshot version %d, want %d or %d: it was written by newer code; run that",
			file.Version, legacySnapshotVersion, snapshotVersion)
	}
	if data.Allocations == nil {
		data.Allocations = map[spec.ID]allocRecord{}
	}
	if data.Observations == nil {
		data.Observations = map[spec.ID]workload.Observation{}
	}
	if data.Nodes == nil {
		data.Nodes = map[string]Node{}
	}
	if data.RequestKeys == nil {
		data.RequestKeys = map[string]requestKey{}
	}
	if data.Secrets == nil {
		data.Secrets = map[string]Secret{}
	}
	if data.Volumes == nil {
		data.Volumes = map[string]Volume{}
	}
	if data.Tokens == nil {
		data.Tokens = map[string]apitoken.Token{}
	}
	f.mu.Lock()
	f.allocs = data.Allocations
	f.observed = data.Observations
	f.nodes = data.Nodes
	f.keys = data.RequestKeys
	f.secrets = data.Secrets
	f.authority = data.Authority
	f.volumes = data.Volumes
	f.tokens = data.Tokens
	f.mu.Unlock()
	f.applied.Store(data.Applied)
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
