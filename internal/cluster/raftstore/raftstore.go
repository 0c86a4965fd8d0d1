// Package raftstore is the cluster state, a state machine replicated with
// hashicorp/raft. It holds, for every workload, the two halves of its
// record apart (see package workload):
//
//   - the allocation, which the cluster writes (Create, Update, Delete),
//     with a version, the raft index of its last write, for
//     compare-and-set;
//   - the observation, which only the hosting node writes, through
//     Observe, and which is kept only while the allocation names that node.
//
// Reads (Get, List) join the halves; nothing stores the joined view. It
// also records what the leader saw of each member (SetNode, Node).
//
// Checks that must give every server the same answer run in the state
// machine, on the log: ErrExists, ErrConflict and ErrPortTaken.
//
// Data dirs written before the record was split upgrade in place: the old
// log ops and version 1 snapshots are read and split (see legacy.go).
//
// Consistency: writes go through the raft log on the leader and return once
// committed and applied there. Reads are served from the local copy of the
// state machine without a network round trip, so a follower (or a leader
// that has just been deposed) may return stale data. A caller that needs to
// read its own or others' latest writes calls Barrier on the leader first.
//
// A follower hands writes to Config.Forward, which carries the encoded
// command to the leader (ApplyEncoded there); without a Forward it refuses
// them with ErrNotLeader, which names the leader.
package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/hypercore-dev/hypercore/internal/keylock"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// Timeouts, tuned for servers on one LAN where a round trip is well under
// a millisecond. With these a lost leader is noticed after about
// HeartbeatTimeout and replaced within roughly a second, where raft's
// defaults (1 s each, meant for WANs and slow disks) take 2-3 s. They must
// stay well above the worst fsync time of the log disk, or a slow disk
// reads as a dead leader and causes needless elections.
const (
	// HeartbeatTimeout is how long a follower goes without hearing from
	// the leader before it becomes a candidate.
	HeartbeatTimeout = 500 * time.Millisecond
	// ElectionTimeout is how long a candidate waits for votes before
	// starting a new election.
	ElectionTimeout = 500 * time.Millisecond
	// LeaderLeaseTimeout is how long a leader keeps leading without
	// hearing from a quorum; it must not exceed HeartbeatTimeout.
	LeaderLeaseTimeout = 250 * time.Millisecond
	// ApplyTimeout bounds how long a write waits to be enqueued on the
	// leader; commit itself waits for a quorum.
	ApplyTimeout = 5 * time.Second
	// membershipTimeout bounds Join and Remove.
	membershipTimeout = 10 * time.Second
	// transportTimeout bounds one raft RPC on the wire.
	transportTimeout = 5 * time.Second
	// updateAttempts is how many times Update retries a compare-and-set
	// that lost to a concurrent write.
	updateAttempts = 5
	// snapshotRetain is how many snapshots stay on disk; more than one so
	// a snapshot that turns out corrupt is not the only one.
	snapshotRetain = 2
)

// ErrNotLeader is returned by writes on a node that is not the leader. The
// leader's fields are empty while no leader is known (during an election);
// the caller should then retry after a short wait.
type ErrNotLeader struct {
	// LeaderAddr is the leader's raft address, as it advertises it.
	LeaderAddr string
	// LeaderID is the leader's node id.
	LeaderID string
}

// Error names the leader, when one is known.
func (e ErrNotLeader) Error() string {
	if e.LeaderAddr == "" {
		return "raftstore: not the leader, and no leader is known"
	}
	return fmt.Sprintf("raftstore: not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

// Config says how to open a Store.
type Config struct {
	// NodeID names this server in the raft configuration; it must be
	// stable across restarts and unique in the cluster.
	NodeID string
	// BindAddr is the TCP address the raft transport listens on, e.g.
	// "10.0.0.5:7946" or "127.0.0.1:0" for a kernel-picked port.
	BindAddr string
	// AdvertiseAddr is the address other servers reach this one at. If
	// empty, the listener's address is used, which must then not be
	// unspecified (0.0.0.0).
	AdvertiseAddr string
	// DataDir holds the raft log and stable store (raft.db) and the
	// snapshots (snapshots/).
	DataDir string
	// Bootstrap makes this server the first of a new cluster, voting for
	// itself. It is ignored when DataDir already holds raft state, so it
	// is safe to leave set across restarts.
	Bootstrap bool
	// Log receives raft's and this package's messages; nil means
	// slog.Default().
	Log *slog.Logger
	// Stream, when set, carries raft's traffic instead of plain TCP on
	// BindAddr (the cluster passes a mutual-TLS layer). Its Addr is what
	// this server advertises.
	Stream raft.StreamLayer
	// Forward, when set, sends a write this node cannot commit (it is not
	// the leader) to the leader, which applies it with ApplyEncoded. It
	// returns the log index the leader committed it at and the leader's
	// result, with ErrExists, ErrConflict, ErrPortTaken, ErrBadCommand and
	// workload.ErrNotFound kept recognisable (errors.Is).
	Forward func(leaderID, leaderAddr string, command []byte) (uint64, error)
}

// Store is the replicated cluster state of workloads and members. Its
// methods are safe for concurrent use.
//
// Invariants (kept by the state machine, so they hold on every server):
//   - a workload exists exactly while it has an allocation; Delete removes
//     both halves;
//   - an allocation's ID and CreatedAt never change, its Generation starts
//     at 1 and grows by one with each change of Node, Spec or Desired;
//   - an observation is held only while the allocation names the node that
//     reported it;
//   - no two allocations meant to run on one node publish the same raw TCP
//     public port (only the old ops of a log from before this check may
//     have left such a pair, and it is kept as it was; see legacy.go).
type Store struct {
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *fsm
	trans *raft.NetworkTransport
	logs  *raftboltdb.BoltStore
	// locks serializes Updates of one id on this node, so concurrent
	// Updates through one leader queue instead of failing each other's
	// compare-and-set.
	locks   keylock.Map
	forward func(leaderID, leaderAddr string, command []byte) (uint64, error)
	fresh   bool

	closeOnce sync.Once
	closeErr  error
}

// Open starts a raft server on cfg.DataDir. A new server with Bootstrap
// unset waits, as a follower, to be added to a cluster with Join on its
// leader.
func Open(cfg Config) (_ *Store, err error) {
	if cfg.NodeID == "" || cfg.BindAddr == "" || cfg.DataDir == "" {
		return nil, errors.New("raftstore: NodeID, BindAddr and DataDir are required")
	}
	lg := cfg.Log
	if lg == nil {
		lg = slog.Default()
	}
	lg = lg.With("node", cfg.NodeID)
	hl := newHCLog(lg)

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raftstore: create %s: %w", cfg.DataDir, err)
	}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	dbPath := filepath.Join(cfg.DataDir, "raft.db")
	logs, err := raftboltdb.New(raftboltdb.Options{
		Path:        dbPath,
		BoltOptions: &bolt.Options{Timeout: 2 * time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: open %s (is another hypercore using this --data-dir?): %w", dbPath, err)
	}
	closers = append(closers, logs.Close)

	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, snapshotRetain, hl)
	if err != nil {
		return nil, fmt.Errorf("raftstore: open snapshots in %s: %w", cfg.DataDir, err)
	}

	var advertise net.Addr
	if cfg.AdvertiseAddr != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("raftstore: advertise address %q: %w", cfg.AdvertiseAddr, err)
		}
		advertise = a
	}
	var trans *raft.NetworkTransport
	if cfg.Stream != nil {
		trans = raft.NewNetworkTransportWithLogger(cfg.Stream, 3, transportTimeout, hl)
	} else if trans, err = raft.NewTCPTransportWithLogger(cfg.BindAddr, advertise, 3, transportTimeout, hl); err != nil {
		return nil, fmt.Errorf("raftstore: listen on %s: %w", cfg.BindAddr, err)
	}
	closers = append(closers, trans.Close)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hl
	rc.HeartbeatTimeout = HeartbeatTimeout
	rc.ElectionTimeout = ElectionTimeout
	rc.LeaderLeaseTimeout = LeaderLeaseTimeout
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raftstore: %w", err)
	}

	fresh := false
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, logs, snaps)
		if err != nil {
			return nil, fmt.Errorf("raftstore: inspect %s: %w", cfg.DataDir, err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter,
				ID:       rc.LocalID,
				Address:  trans.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(rc, logs, logs, snaps, trans, conf); err != nil {
				return nil, fmt.Errorf("raftstore: bootstrap: %w", err)
			}
			lg.Info("bootstrapped a new raft cluster", "addr", trans.LocalAddr())
			fresh = true
		}
	}

	f := newFSM()
	r, err := raft.NewRaft(rc, f, logs, logs, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("raftstore: start raft: %w", err)
	}
	return &Store{log: lg, raft: r, fsm: f, trans: trans, logs: logs, forward: cfg.Forward, fresh: fresh}, nil
}

// Close stops the raft server and closes its files. It does not leave the
// cluster: the others see this server as down until Remove is called.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		err := s.raft.Shutdown().Error()
		s.closeErr = errors.Join(err, s.trans.Close(), s.logs.Close())
	})
	return s.closeErr
}

// Bootstrapped reports whether Open made a new cluster rather than finding
// raft state in DataDir.
func (s *Store) Bootstrapped() bool { return s.fresh }

// Changes returns a channel that receives a value after state machine
// changes (coalesced: one value may stand for many), so a reconciler can
// react at once instead of polling. It has one reader: a value another
// reader takes is one the reconciler never sees. To wait for an index,
// use WaitApplied.
func (s *Store) Changes() <-chan struct{} { return s.fsm.changed }

// AppliedIndex is the index of the last log entry applied to this node's
// state machine.
func (s *Store) AppliedIndex() uint64 { return s.raft.AppliedIndex() }

// appliedPoll is how often WaitApplied looks at the applied index.
const appliedPoll = 2 * time.Millisecond

// WaitApplied waits until this node's copy of the state has applied the
// log up to index, so a read of it sees everything written up to there. It
// fails with ctx's error, saying where the copy stands. It polls, and
// leaves Changes to its reader.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	if s.applied(index) {
		return nil
	}
	t := time.NewTicker(appliedPoll)
	defer t.Stop()
	for !s.applied(index) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("raftstore: state stuck at index %d, waiting for %d: %w", s.fsm.applied.Load(), index, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// applied says whether this node's state holds the entry at index. Raft's
// AppliedIndex says only that the entry was handed to the state machine,
// which applies it a moment later, so a read right after could miss it:
// for a command, the state machine's own count decides. Other entries
// (barriers, configurations) never reach it, and one no longer in the log
// was taken into a snapshot; for those raft's count is all there is.
func (s *Store) applied(index uint64) bool {
	if s.raft.AppliedIndex() < index {
		return false
	}
	if s.fsm.applied.Load() >= index {
		return true
	}
	var l raft.Log
	if err := s.logs.GetLog(index, &l); err != nil || l.Type != raft.LogCommand {
		return true
	}
	return false
}

// LeaderBarrier, on the leader, waits until every committed entry is
// applied and returns the applied index: a follower whose AppliedIndex
// reaches it has seen every write committed before the call.
func (s *Store) LeaderBarrier(timeout time.Duration) (uint64, error) {
	if err := s.Barrier(timeout); err != nil {
		return 0, err
	}
	return s.raft.AppliedIndex(), nil
}

// Addr returns the raft address this server advertises.
func (s *Store) Addr() string { return string(s.trans.LocalAddr()) }

// Leader returns the address and id of the current leader, or empty
// strings while there is none.
func (s *Store) Leader() (addr, id string) {
	a, i := s.raft.LeaderWithID()
	return string(a), string(i)
}

// IsLeader reports whether this server believes it is the leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Servers returns the current raft configuration.
func (s *Store) Servers() ([]raft.Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raftstore: get configuration: %w", err)
	}
	return f.Configuration().Servers, nil
}

// Join adds the server id at addr as a voter. It must be called on the
// leader. Joining again with the same id and address is a no-op, so a
// server that restarts may simply ask again; a known id at a new address,
// or a known address under a new id, replaces the old entry.
func (s *Store) Join(id, addr string) error { return s.join(id, addr, true) }

// JoinNonvoter adds id at addr as a non-voter: it receives the log and
// keeps a full copy of the state to read, but does not vote, so workers
// can read state locally without weakening the servers' quorum.
func (s *Store) JoinNonvoter(id, addr string) error { return s.join(id, addr, false) }

func (s *Store) join(id, addr string, voter bool) error {
	if !s.IsLeader() {
		return s.notLeader()
	}
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	for _, srv := range servers {
		sameID, sameAddr := srv.ID == raft.ServerID(id), srv.Address == raft.ServerAddress(addr)
		switch {
		case sameID && sameAddr && (srv.Suffrage == raft.Voter) == voter:
			return nil
		case sameID || sameAddr:
			if err := s.raft.RemoveServer(srv.ID, 0, membershipTimeout).Error(); err != nil {
				return fmt.Errorf("raftstore: remove stale server %s at %s: %w", srv.ID, srv.Address, s.mapErr(err))
			}
		}
	}
	add := s.raft.AddVoter
	if !voter {
		add = s.raft.AddNonvoter
	}
	if err := add(raft.ServerID(id), raft.ServerAddress(addr), 0, membershipTimeout).Error(); err != nil {
		return fmt.Errorf("raftstore: add %s at %s (voter: %v): %w", id, addr, voter, s.mapErr(err))
	}
	s.log.Info("server joined", "id", id, "addr", addr, "voter", voter)
	return nil
}

// Remove takes the server id out of the cluster. It must be called on the
// leader; removing an unknown id is not an error.
func (s *Store) Remove(id string) error {
	if !s.IsLeader() {
		return s.notLeader()
	}
	if err := s.raft.RemoveServer(raft.ServerID(id), 0, membershipTimeout).Error(); err != nil {
		return fmt.Errorf("raftstore: remove server %s: %w", id, s.mapErr(err))
	}
	s.log.Info("server removed", "id", id)
	return nil
}

// Barrier waits, on the leader, until every write committed before the call
// is applied to the local state machine, so reads after it see them. On a
// follower it returns ErrNotLeader.
func (s *Store) Barrier(timeout time.Duration) error {
	if !s.IsLeader() {
		return s.notLeader()
	}
	if err := s.raft.Barrier(timeout).Error(); err != nil {
		return fmt.Errorf("raftstore: barrier: %w", s.mapErr(err))
	}
	return nil
}

// Snapshot writes a snapshot of the state machine now and lets raft trim
// its log. Raft also snapshots by itself as the log grows; this is for
// tests and operators.
func (s *Store) Snapshot() error {
	if err := s.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("raftstore: snapshot: %w", err)
	}
	return nil
}

// Get returns the workload id, its allocation joined with its observation,
// from the local state (see the package comment on staleness), or
// workload.ErrNotFound when the cluster holds no allocation for id.
func (s *Store) Get(id spec.ID) (workload.Workload, error) {
	w, ok := s.fsm.get(id)
	if !ok {
		return workload.Workload{}, fmt.Errorf("%w: %s", workload.ErrNotFound, id)
	}
	return w, nil
}

// List returns every workload, joined, from the local state: oldest
// (CreatedAt) first, ties broken by id, so the order is the same on every
// server.
func (s *Store) List() ([]workload.Workload, error) {
	return s.fsm.list(), nil
}

// Create records a new allocation. A zero Generation is stored as 1. It
// fails with ErrExists if the id is taken, with ErrPortTaken if a is meant
// to run and one of its raw TCP public ports is held on a.Node, and with
// ErrNotLeader off the leader when there is no Forward. The workload has
// no observation until its node reports: it reads as pending.
func (s *Store) Create(a workload.Allocation) error {
	if a.ID == "" || a.Node == "" {
		return errors.New("raftstore: create: an allocation needs an id and a node")
	}
	_, err := s.apply(command{Op: opCreateAllocation, ID: a.ID, Allocation: &a})
	return err
}

// Update changes the allocation of id as a compare-and-set: fn runs on a
// copy of the current allocation, and the result is committed only if the
// allocation is still at the version that was read. A lost race is
// retried a few times, so fn may run more than once, each time on a fresh
// copy; it must not have effects outside the allocation it is handed.
//
// fn cannot change ID, CreatedAt or Generation: the first two are put
// back, and Generation becomes the old one plus one if Node, Spec or
// Desired changed. A change of Node drops the observation, which was the
// old node's. Reports do not count as changes here: Observe never makes
// Update conflict. Update returns the stored allocation joined with the
// observation held after the write. It fails with workload.ErrNotFound,
// ErrPortTaken, fn's own error, or ErrConflict after the retries.
func (s *Store) Update(id spec.ID, fn func(*workload.Allocation) error) (workload.Workload, error) {
	unlock := s.locks.Lock(string(id))
	defer unlock()
	var lastErr error
	for attempt := range updateAttempts {
		if attempt > 0 {
			// A miss or a conflict may only mean this server's state
			// machine trails its log, as it does just after an election
			// or on a follower; the barrier catches a leader up, and a
			// follower waits for the log to reach it.
			if s.IsLeader() {
				if err := s.Barrier(ApplyTimeout); err != nil {
					return workload.Workload{}, err
				}
			} else {
				time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
			}
		}
		if !s.IsLeader() && s.forward == nil {
			return workload.Workload{}, s.notLeader()
		}
		cur, version, ok := s.fsm.allocation(id)
		if !ok {
			lastErr = fmt.Errorf("%w: %s", workload.ErrNotFound, id)
			if attempt == 0 {
				continue
			}
			return workload.Workload{}, lastErr
		}
		a := cloneAllocation(cur)
		if err := fn(&a); err != nil {
			return workload.Workload{}, err
		}
		next, _ := nextAllocation(cur, a)
		_, err := s.apply(command{Op: opUpdateAllocation, ID: id, Allocation: &next, Version: version})
		if errors.Is(err, ErrConflict) {
			lastErr = err
			continue
		}
		if err != nil {
			return workload.Workload{}, err
		}
		return s.fsm.join(next), nil
	}
	if errors.Is(lastErr, workload.ErrNotFound) {
		return workload.Workload{}, lastErr
	}
	return workload.Workload{}, fmt.Errorf("raftstore: update %s: gave up after %d attempts: %w", id, updateAttempts, lastErr)
}

// Delete removes the workload id, both its allocation and its
// observation; a missing id is not an error.
func (s *Store) Delete(id spec.ID) error {
	_, err := s.apply(command{Op: opDelete, ID: id})
	return err
}

// Observe records a batch of reports in one log entry and returns that
// entry's index, so a caller can wait (AppliedIndex) until a copy of the
// state has the reports. Each report is kept only if the cluster holds an
// allocation for its id that names the reporting node
// (Observation.Node); the others are dropped as stale, which is not an
// error: the workload was deleted or has moved. A report needs an id and a
// node, and a batch holds at most MaxReports. An empty batch writes
// nothing and returns index 0.
func (s *Store) Observe(reports []Report) (index uint64, err error) {
	if len(reports) == 0 {
		return 0, nil
	}
	if len(reports) > MaxReports {
		return 0, fmt.Errorf("raftstore: observe: %d reports in one batch; write at most %d at a time", len(reports), MaxReports)
	}
	for _, r := range reports {
		if r.ID == "" || r.Observation.Node == "" {
			return 0, fmt.Errorf("raftstore: observe: a report needs an id and a node, got id %q node %q", r.ID, r.Observation.Node)
		}
	}
	return s.apply(command{Op: opObserve, Reports: reports})
}

// SetNode records what the cluster knows about member n.Name.
func (s *Store) SetNode(n Node) error {
	_, err := s.apply(command{Op: opSetNode, Node: &n})
	return err
}

// Node returns the recorded state of member name, from the local copy.
func (s *Store) Node(name string) (Node, bool) { return s.fsm.node(name) }

// apply commits c through the log and returns the index it was committed
// at and the state machine's result. Off the leader it forwards c, when a
// Forward is set, and waits until this node has applied it.
func (s *Store) apply(c command) (uint64, error) {
	data, err := encodeCommand(c)
	if err != nil {
		return 0, err
	}
	if !s.IsLeader() {
		if s.forward == nil {
			return 0, s.notLeader()
		}
		addr, id := s.Leader()
		if addr == "" {
			return 0, s.notLeader()
		}
		index, err := s.forward(id, addr, data)
		if index > 0 {
			// Read your writes: the caller's next read of this node's
			// copy must see what it just wrote.
			s.waitApplied(index, ApplyTimeout)
		}
		return index, err
	}
	return s.commit(c, data)
}

// waitApplied waits, up to timeout, until this node has applied index.
func (s *Store) waitApplied(index uint64, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = s.WaitApplied(ctx, index) // the caller reads what there is either way
}

// ApplyEncoded commits a command another node forwarded (see
// Config.Forward) and returns the log index it was committed at. The
// sender is a cluster member but the bytes came over the network, so the
// command is checked as the state machine will check it, and its ids and
// specs as the API edge checks them (checkForwarded); a bad one is refused
// here with ErrBadCommand rather than written to the log.
func (s *Store) ApplyEncoded(data []byte) (uint64, error) {
	c, err := decodeCommand(data)
	if err != nil {
		return 0, err
	}
	if err := checkForwarded(&c); err != nil {
		return 0, err
	}
	if !s.IsLeader() {
		return 0, s.notLeader()
	}
	return s.commit(c, data)
}

// commit applies data on the leader. A command the state machine refuses
// still has an index: it is in the log, and a follower waits for it too.
func (s *Store) commit(c command, data []byte) (uint64, error) {
	f := s.raft.Apply(data, ApplyTimeout)
	if err := f.Error(); err != nil {
		// ErrLeadershipLost leaves the outcome unknown: the entry may
		// still commit under the next leader. Callers see it wrapped and
		// may retry; Create then reports ErrExists if it did commit.
		return 0, fmt.Errorf("raftstore: %s %s: %w", c.Op, c.subject(), s.mapErr(err))
	}
	if err, ok := f.Response().(error); ok {
		return f.Index(), err
	}
	return f.Index(), nil
}

// mapErr turns raft's not-leader error into ErrNotLeader, which says where
// the leader is.
func (s *Store) mapErr(err error) error {
	if errors.Is(err, raft.ErrNotLeader) {
		return s.notLeader()
	}
	return err
}

func (s *Store) notLeader() error {
	addr, id := s.Leader()
	return ErrNotLeader{LeaderAddr: addr, LeaderID: id}
}
