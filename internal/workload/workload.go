// Package workload is the record of a workload, split by who owns each half:
//
//   - the Allocation says what should run, where, and in which version. Only
//     the cluster writes it (the API's calls and the leader's failover), and
//     the scheduler is the only thing that chooses its Node;
//   - the Observation says what is running. Only the node that hosts the
//     workload writes it, through one report path into the cluster state.
//
// A Workload is the two joined, as the API and the proxy read them. Nothing
// stores a Workload: it is derived on every read, so the two halves cannot
// drift apart. See docs/adr/0006-allocation-and-observation.md.
package workload

import (
	"errors"
	"time"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// ErrNotFound is returned for an id the cluster has no allocation for.
var ErrNotFound = errors.New("workload not found")

// ErrNoCapacity means a workload cannot be placed for want of room: the
// scheduler found no node that fits it, the cluster state refused a second
// holder of a raw TCP public port on one node (raftstore.ErrPortTaken), or
// the chosen node found one of its raw TCP public ports held on its host.
// The API answers it with 409, whichever layer found it, so every such
// layer wraps (or, for ErrPortTaken, is) this one value.
var ErrNoCapacity = errors.New("no node has room for this workload")

// ErrUnsupported means no node (or not the chosen one) offers what the
// workload needs: its isolation, or a terminal for its isolation.
var ErrUnsupported = errors.New("isolation not available")

// ErrUnreachable means a node the call needs cannot be reached now: the
// node that hosts the workload (gossip sees it down, or a call to it did
// not get through), or the raft leader a write must go to. It is
// temporary: the API answers it 503, and a workload whose node stays down
// moves once the failover grace has passed.
var ErrUnreachable = errors.New("peer node is not reachable")

// Desired is what the user wants a workload to be doing.
type Desired string

// The desired states.
const (
	DesiredRunning Desired = "running"
	DesiredStopped Desired = "stopped"
)

// State is what the hosting node last observed a workload doing.
type State string

// The observed states. A workload whose allocation names a node that has
// not reported on it yet is StatePending.
const (
	// StatePending: allocated to a node that has not reported on it yet
	// (just placed, or moved by a failover).
	StatePending State = "pending"
	// StateCreating: its node is pulling, networking and starting it. A
	// node that crashes here starts it again from scratch.
	StateCreating State = "creating"
	StateRunning  State = "running"
	// StateExited: its process ended by itself while it was meant to run.
	StateExited  State = "exited"
	StateStopped State = "stopped"
)

// Allocation is the cluster's decision about one workload.
//
// Invariants:
//   - ID and CreatedAt never change;
//   - Node is set by the scheduler's ranking (a spawn, or a failover), or
//     by adopting what a node already ran before it was clustered;
//   - Generation starts at 1 and grows by one with every change of Node,
//     Spec or Desired, so an Observation tells which decision it answers;
//   - the JSON names are those of the records written before the split, so
//     older raft logs, snapshots and node stores decode into it unchanged.
type Allocation struct {
	ID         spec.ID   `json:"id"`
	Spec       spec.Spec `json:"spec"`
	Node       string    `json:"node"`
	Desired    Desired   `json:"desired"`
	Generation uint64    `json:"generation,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Observation is what the hosting node saw of one workload.
//
// Invariants:
//   - only the node named in Node writes it, and the cluster state keeps it
//     only while the allocation names that same node: a report about a
//     workload that has moved away is dropped;
//   - Generation is the allocation's generation the node was acting on;
//   - Pid and Ready are meaningful only in StateRunning; IP stays while
//     the workload holds its address (running, or exited by itself);
//   - its JSON names are those of the records written before the split.
type Observation struct {
	Node        string `json:"node"`
	Generation  uint64 `json:"generation,omitempty"`
	State       State  `json:"state"`
	IP          string `json:"ip,omitempty"`
	Pid         int    `json:"pid,omitempty"`
	Ready       bool   `json:"ready,omitempty"`
	ImageDigest string `json:"image_digest,omitempty"`
	ExitCode    int    `json:"exit_code,omitempty"`
	// Restarts counts the times its node started it again by its restart
	// policy since it was spawned or last started.
	Restarts int `json:"restarts,omitempty"`
	// ExposedPort is the image's exposed TCP port a workload spawned
	// without ports is served on, behind public ports 80 and 443 (see
	// Workload.Ports); 0 when its spec has ports or its image exposes none.
	ExposedPort uint16    `json:"exposed_port,omitempty"`
	Error       string    `json:"error,omitempty"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
}

// Workload is an allocation joined with its observation: what the API shows
// and what the proxy's routes are derived from.
type Workload struct {
	Allocation
	// Observed is what the allocated node last reported; its State is
	// StatePending when that node has not reported on this allocation.
	Observed Observation
}

// Join returns the workload view of a and o. An observation from another
// node than the allocation's (a report from before a failover) does not
// count: the workload is pending on its new node.
func Join(a Allocation, o *Observation) Workload {
	w := Workload{Allocation: a, Observed: Observation{Node: a.Node, State: StatePending}}
	if o != nil && o.Node == a.Node {
		w.Observed = *o
	}
	return w
}

// Ports are the ports the workload is served on: its spec's, or, for a
// spec without ports, the image's exposed port behind public ports 80 and
// 443 (HTTP by Host, as the spec's "443": 3000 is), once its node
// reported it.
func (w Workload) Ports() []spec.Port {
	if len(w.Spec.Ports) > 0 || w.Observed.ExposedPort == 0 {
		return w.Spec.Ports
	}
	return []spec.Port{
		{Public: 80, Target: w.Observed.ExposedPort, Proto: spec.ProtoHTTP},
		{Public: 443, Target: w.Observed.ExposedPort, Proto: spec.ProtoHTTP},
	}
}

// Running reports whether the workload is meant to run and its node says it
// does.
func (w Workload) Running() bool {
	return w.Desired == DesiredRunning && w.Observed.State == StateRunning
}

// Equal reports whether o and p say the same, comparing times as instants
// (a report read back from the cluster state has lost its monotonic clock
// reading and its location).
func (o Observation) Equal(p Observation) bool {
	return o.Node == p.Node && o.Generation == p.Generation && o.State == p.State &&
		o.IP == p.IP && o.Pid == p.Pid && o.Ready == p.Ready && o.ImageDigest == p.ImageDigest &&
		o.ExitCode == p.ExitCode && o.Restarts == p.Restarts && o.ExposedPort == p.ExposedPort && o.Error == p.Error &&
		o.StartedAt.Equal(p.StartedAt) && o.FinishedAt.Equal(p.FinishedAt)
}
