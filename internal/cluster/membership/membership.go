// Package membership is how hypercore nodes find each other and notice
// when one goes away. It wraps hashicorp/serf (SWIM gossip over memberlist)
// with the policy hypercore needs:
//
//   - Gossip is always encrypted with AES-256 (a 32-byte key); a node
//     without the cluster's key can neither join nor read or inject gossip.
//     Start refuses to run without a key rather than fall back to plain
//     text.
//   - Each node announces its Tags (role, capacity, addresses, isolations)
//     in a compact encoding that provably fits serf's 512-byte limit.
//   - Failure detection is tuned for failover within seconds (see Config).
//   - A second node using a name that is already alive is refused at join.
//
// Members gives a point-in-time view; Events streams changes for the
// leader's failover logic.
package membership

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// DefaultPort is the gossip port, TCP and UDP.
const DefaultPort = 7946

// DefaultReapAfter is how long failed and left members are remembered
// before they are dropped from the member list. Long enough that a node
// that reboots finds its place again and the leader sees it as failed for
// the whole outage; short enough that the list does not fill with nodes
// that are gone for good.
const DefaultReapAfter = 30 * time.Minute

// EventBuffer is how many events Events holds for a slow reader before the
// oldest are dropped.
const EventBuffer = 256

// ErrNameConflict means another live node already uses this node's name.
var ErrNameConflict = errors.New("membership: node name already in use")

// Config says how to start a Membership.
type Config struct {
	// NodeName must be unique in the cluster: letters, digits, '-' and
	// '.', at most 128 characters.
	NodeName string
	// BindAddr is the gossip listen address, "IP:port", e.g.
	// "0.0.0.0:7946". Port 0 picks a free port (for tests).
	BindAddr string
	// AdvertiseAddr is the address other nodes reach this one at, "IP" or
	// "IP:port"; empty means the bind address, or a private IP of this
	// host when binding to all addresses.
	AdvertiseAddr string
	// GossipKey is the cluster's 32-byte AES-256 key, the same on every
	// node. Required.
	GossipKey []byte
	// KeyringFile is where the keyring is kept across restarts, e.g.
	// <data-dir>/serf/keyring. Optional.
	KeyringFile string
	// SnapshotPath is where serf records known members, so a node
	// restarted after a crash rejoins them without a join list; after a
	// graceful Leave it waits for an explicit Join instead. Optional.
	SnapshotPath string
	// Tags are announced to the cluster; UpdateTags changes them later.
	Tags Tags
	// Log receives membership and serf logs; nil means slog.Default().
	Log *slog.Logger

	// FastFailure halves the probe interval so a dead node is declared
	// failed in about 2 s instead of about 4 s, at the cost of twice the
	// probe traffic and less patience with a node stalled by load. Tests
	// and small clusters on a good LAN can afford it. See timing.
	FastFailure bool
	// ReapAfter is how long failed and left members stay in Members
	// before they are forgotten; zero means DefaultReapAfter.
	ReapAfter time.Duration

	// Packets and Streams, when both are set, are the sockets gossip runs
	// on instead of binding BindAddr itself: a node shares its one port
	// with node RPC and raft (see internal/cluster/portmux). Shutdown
	// closes them. BindAddr must then name the same address.
	Packets *net.UDPConn
	Streams net.Listener
}

// timing holds the failure detection settings of a profile.
//
// memberlist declares a node dead SuspicionMult * max(1, log10(n)) *
// ProbeInterval after first suspecting it. With SuspicionMult 2 it also
// needs no confirmation from other nodes (memberlist asks for
// SuspicionMult-2), so the timeout is fixed rather than shrinking from a
// long maximum as confirmations trickle in; that bounds detection, which is
// what failover needs. A node wrongly suspected hears about it by gossip
// and refutes it well within the timeout, and memberlist's Lifeguard
// extensions slow down an overloaded prober before it accuses others.
//
// Detection takes: until someone probes the dead node (up to about one
// probe interval), the failed probe round including indirect and TCP
// probes (one interval), then the suspicion timeout.
//
// Default (LAN): probe every 1 s, 500 ms probe timeout, dead 2 s after
// suspicion for up to 10 nodes (3 s at 30, 4 s at 100). Measured on
// loopback with 3 and 6 nodes: a killed node is failed 4.0-4.2 s after it
// dies, leaving room for the 8 s failover goal.
//
// Fast: probe every 500 ms, 250 ms timeout, dead 1 s after suspicion;
// measured 2.0-3.1 s.
//
// Both: serf retries failed members every 10 s so a healed partition
// merges again, and forgets failed and left members after ReapAfter.
type timing struct {
	probeInterval  time.Duration
	probeTimeout   time.Duration
	suspicionMult  int
	gossipInterval time.Duration
	leaveDelay     time.Duration
}

var (
	timingLAN = timing{
		probeInterval:  time.Second,
		probeTimeout:   500 * time.Millisecond,
		suspicionMult:  2,
		gossipInterval: 200 * time.Millisecond,
		leaveDelay:     time.Second,
	}
	timingFast = timing{
		probeInterval:  500 * time.Millisecond,
		probeTimeout:   250 * time.Millisecond,
		suspicionMult:  2,
		gossipInterval: 100 * time.Millisecond,
		leaveDelay:     500 * time.Millisecond,
	}
)

// EventType says what happened to a member.
type EventType int

// The event types.
const (
	// EventJoin: a member joined or came back after failing.
	EventJoin EventType = iota + 1
	// EventLeave: a member left gracefully.
	EventLeave
	// EventFailed: a member stopped answering; fail its workloads over.
	EventFailed
	// EventUpdate: a member changed its tags.
	EventUpdate
	// EventReap: a failed or left member was forgotten after ReapAfter.
	EventReap
)

// String names the event type in logs: join, leave, failed, update, reap.
func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventFailed:
		return "failed"
	case EventUpdate:
		return "update"
	case EventReap:
		return "reap"
	}
	return "event(" + strconv.Itoa(int(t)) + ")"
}

// Event is one change to one member.
type Event struct {
	Type   EventType
	Member Member
}

// Membership is this node's seat in the cluster.
type Membership struct {
	serf   *serf.Serf
	log    *slog.Logger
	name   string
	guard  *nameGuard
	events chan Event
	// done is closed when the event goroutine has exited and events is
	// closed.
	done     chan struct{}
	dropped  atomic.Uint64
	stopping atomic.Bool
	// tagsMu serializes UpdateTags: serf's SetTags writes its config
	// without a lock.
	tagsMu sync.Mutex
}

// Start binds the gossip port and starts serf. It does not join anyone;
// call Join with known members, unless SnapshotPath holds members from a
// previous run, in which case serf rejoins them in the background.
func Start(cfg Config) (*Membership, error) {
	logger := cfg.Log
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("node", cfg.NodeName)
	if cfg.NodeName == "" {
		return nil, errors.New("membership: no node name: every node needs a unique one")
	}
	if err := cfg.Tags.Validate(); err != nil {
		return nil, err
	}
	bindIP, bindPort, err := splitAddr(cfg.BindAddr, DefaultPort)
	if err != nil {
		return nil, fmt.Errorf("membership: bind address %q: %w; use IP:port, e.g. 0.0.0.0:%d", cfg.BindAddr, err, DefaultPort)
	}
	keyring, err := loadKeyring(cfg.GossipKey, cfg.KeyringFile)
	if err != nil {
		return nil, err
	}
	if cfg.SnapshotPath != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.SnapshotPath), 0o700); err != nil {
			return nil, fmt.Errorf("membership: snapshot directory: %w", err)
		}
	}
	t := timingLAN
	if cfg.FastFailure {
		t = timingFast
	}
	reapAfter := cfg.ReapAfter
	if reapAfter <= 0 {
		reapAfter = DefaultReapAfter
	}
	stdLog := newStdLogger(logger)

	ml := memberlist.DefaultLANConfig()
	ml.BindAddr = bindIP
	ml.BindPort = bindPort
	ml.AdvertisePort = bindPort
	if cfg.AdvertiseAddr != "" {
		ip, port, err := splitAddr(cfg.AdvertiseAddr, bindPort)
		if err != nil {
			return nil, fmt.Errorf("membership: advertise address %q: %w; use IP or IP:port", cfg.AdvertiseAddr, err)
		}
		ml.AdvertiseAddr, ml.AdvertisePort = ip, port
	}
	if cfg.Packets != nil && cfg.Streams != nil {
		ml.Transport = newSharedTransport(cfg.Packets, cfg.Streams, stdLog)
	}
	ml.Keyring = keyring
	ml.SecretKey = cfg.GossipKey
	// Refuse plain-text packets and never send them: these exist to
	// migrate a cluster to encryption, which hypercore never needs.
	ml.GossipVerifyIncoming = true
	ml.GossipVerifyOutgoing = true
	ml.ProbeInterval = t.probeInterval
	ml.ProbeTimeout = t.probeTimeout
	ml.SuspicionMult = t.suspicionMult
	ml.GossipInterval = t.gossipInterval
	ml.Logger = stdLog

	guard := &nameGuard{name: cfg.NodeName, log: logger}

	// The guard learns our advertised address once serf is up; until
	// then it lets everything through, as it must let through our own
	// first alive message, whose address only memberlist knows. The only
	// merge it can miss is a snapshot rejoin racing Start.
	serfEvents := make(chan serf.Event, EventBuffer)
	sc := serf.DefaultConfig()
	sc.NodeName = cfg.NodeName
	sc.Tags = cfg.Tags.encode()
	sc.EventCh = serfEvents
	sc.MemberlistConfig = ml
	sc.Logger = stdLog
	sc.LogOutput = nil
	sc.SnapshotPath = cfg.SnapshotPath
	sc.KeyringFile = cfg.KeyringFile
	sc.Merge = guard
	sc.ValidateNodeNames = true
	sc.EnableNameConflictResolution = true
	sc.LeavePropagateDelay = t.leaveDelay
	sc.ReconnectTimeout = reapAfter
	sc.TombstoneTimeout = reapAfter
	sc.ReapInterval = min(max(reapAfter/2, 500*time.Millisecond), 15*time.Second)
	sc.ReconnectInterval = 10 * time.Second

	s, err := serf.Create(sc)
	if err != nil {
		return nil, fmt.Errorf("membership: start gossip on %s: %w", cfg.BindAddr, err)
	}
	if !s.EncryptionEnabled() {
		// Cannot happen with a keyring set; checked because running
		// unencrypted would be silent and dangerous.
		_ = s.Shutdown()
		return nil, errors.New("membership: gossip encryption did not turn on; refusing to run unencrypted")
	}
	local := s.Memberlist().LocalNode()
	guard.setSelf(local.Addr, local.Port)

	m := &Membership{
		serf:   s,
		log:    logger,
		name:   cfg.NodeName,
		guard:  guard,
		events: make(chan Event, EventBuffer),
		done:   make(chan struct{}),
	}
	go m.forward(serfEvents)
	logger.Info("gossip started", "addr", net.JoinHostPort(local.Addr.String(), strconv.Itoa(int(local.Port))),
		"role", cfg.Tags.Role, "fast_failure", cfg.FastFailure)
	return m, nil
}

// splitAddr parses "IP:port" or, when a default port is allowed, "IP".
func splitAddr(addr string, defaultPort int) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: accept a bare IP.
		host, portStr = strings.Trim(addr, "[]"), strconv.Itoa(defaultPort)
	}
	if net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("%q is not an IP address", host)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", portStr, err)
	}
	return host, int(port), nil
}

// Join contacts the given members (IP or IP:port; the port defaults to
// this node's gossip port) and merges their view of the cluster. It
// returns how many were reached; the error is nil if at least one was.
// A wrong gossip key on either side makes every contact fail, and a
// cluster in which another node already uses this node's name is refused
// with ErrNameConflict.
func (m *Membership) Join(addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, errors.New("membership: join: no addresses given")
	}
	before := m.guard.conflicts.Load()
	n, err := m.serf.Join(addrs, true)
	if n > 0 {
		m.log.Info("joined cluster", "contacted", n, "of", len(addrs))
		return n, nil
	}
	if m.guard.conflicts.Load() != before {
		return 0, fmt.Errorf("%w: %s; give this node a unique --node-name", ErrNameConflict, m.guard.lastConflict())
	}
	if err == nil {
		err = errors.New("no member answered")
	}
	err = flatten(err)
	hint := "check the addresses are reachable on TCP and UDP and that every node has the same gossip key"
	if strings.Contains(err.Error(), "no installed keys could decrypt") {
		hint = "the cluster uses a different gossip key than this node; give every node the same key"
	}
	return 0, fmt.Errorf("membership: join %s: %w; %s", strings.Join(addrs, ", "), err, hint)
}

// flatten puts memberlist's multi-line list of per-address errors on one
// line, keeping each error for errors.Is and errors.As.
func flatten(err error) error {
	multi, ok := err.(interface{ WrappedErrors() []error })
	if !ok || len(multi.WrappedErrors()) == 0 {
		return err
	}
	errs := multi.WrappedErrors()
	args := make([]any, len(errs))
	for i, e := range errs {
		args[i] = e
	}
	return fmt.Errorf(strings.TrimSuffix(strings.Repeat("%w; ", len(errs)), "; "), args...)
}

// Leave tells the cluster this node is going away on purpose, so it is
// marked left rather than failed. It waits for the news to spread (about a
// second); call Shutdown afterwards.
func (m *Membership) Leave() error {
	m.log.Info("leaving cluster")
	if err := m.serf.Leave(); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossip at once and closes the Events channel. Without a
// Leave first, the other nodes will see this node as failed, which is how
// a crash looks. Safe to call more than once.
func (m *Membership) Shutdown() error {
	m.stopping.Store(true)
	if err := m.serf.Shutdown(); err != nil {
		// serf signals shutdown only once memberlist has stopped, so
		// there is nothing to wait for here.
		return fmt.Errorf("membership: shutdown: %w", err)
	}
	<-m.done
	return nil
}

// Name returns this node's name.
func (m *Membership) Name() string { return m.name }

// LocalMember returns this node as the cluster sees it.
func (m *Membership) LocalMember() Member {
	return memberOf(m.serf.LocalMember())
}

// Members returns every member this node knows of, this node included,
// sorted by name. Failed and left members stay until reaped.
func (m *Membership) Members() []Member {
	sm := m.serf.Members()
	out := make([]Member, len(sm))
	for i, x := range sm {
		out[i] = memberOf(x)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// UpdateTags announces new tags, e.g. when free memory changes. It returns
// once the update has been handed to gossip; the change is applied locally
// even when that times out, and gossip keeps spreading it.
func (m *Membership) UpdateTags(t Tags) error {
	if err := t.Validate(); err != nil {
		return err
	}
	m.tagsMu.Lock()
	defer m.tagsMu.Unlock()
	if err := m.serf.SetTags(t.encode()); err != nil {
		return fmt.Errorf("membership: announce new tags: %w", err)
	}
	return nil
}

// Events streams member changes, one Event per member. It never blocks
// serf: when the buffer (EventBuffer events) is full because nobody reads,
// the oldest event is dropped and counted in Dropped. Treat events as hints
// to look again, and reconcile with Members, which is always complete. The
// channel is closed when the Membership shuts down.
func (m *Membership) Events() <-chan Event { return m.events }

// Dropped returns how many events were dropped because Events was not
// read fast enough.
func (m *Membership) Dropped() uint64 { return m.dropped.Load() }

// forward turns serf events into Events. It always drains serf promptly,
// because serf sends to its event channel while holding its member lock.
func (m *Membership) forward(in <-chan serf.Event) {
	defer close(m.done)
	defer close(m.events)
	for {
		select {
		case e := <-in:
			me, ok := e.(serf.MemberEvent)
			if !ok {
				continue // user events and queries are not used
			}
			typ, ok := eventTypes[me.Type]
			if !ok {
				continue
			}
			for _, x := range me.Members {
				ev := Event{Type: typ, Member: memberOf(x)}
				m.log.Debug("member event", "type", typ, "member", x.Name, "state", ev.Member.State)
				m.emit(ev)
			}
		case <-m.serf.ShutdownCh():
			if !m.stopping.Load() {
				// serf only stops on its own when it lost a name
				// conflict vote.
				m.log.Error("gossip stopped by serf itself, most likely because another node uses this node's name; restart with a unique --node-name")
			}
			return
		}
	}
}

var eventTypes = map[serf.EventType]EventType{
	serf.EventMemberJoin:   EventJoin,
	serf.EventMemberLeave:  EventLeave,
	serf.EventMemberFailed: EventFailed,
	serf.EventMemberUpdate: EventUpdate,
	serf.EventMemberReap:   EventReap,
}

// emit sends ev without blocking, dropping the oldest queued event if the
// buffer is full. forward is the only sender, so after one receive there
// is room unless the reader raced us, in which case there is room anyway.
func (m *Membership) emit(ev Event) {
	for range 2 {
		select {
		case m.events <- ev:
			return
		default:
		}
		select {
		case <-m.events:
			if n := m.dropped.Add(1); n == 1 || n%100 == 0 {
				m.log.Warn("membership events are not being read; dropping the oldest", "dropped", n)
			}
		default:
		}
	}
}

// nameGuard refuses to merge with a cluster in which another live node
// uses our name. serf would otherwise let both in and later vote one of
// them out, which shuts that node's gossip down behind its back; refusing
// at join makes the mistake an error the operator sees at once.
type nameGuard struct {
	name string
	log  *slog.Logger
	self atomic.Pointer[netip.AddrPort]
	// conflicts counts refusals, so Join can tell whether it failed
	// because of one.
	conflicts atomic.Uint64
	last      atomic.Pointer[string]
}

func (g *nameGuard) setSelf(ip net.IP, port uint16) {
	a, _ := netip.AddrFromSlice(ip)
	self := netip.AddrPortFrom(a.Unmap(), port)
	g.self.Store(&self)
}

func (g *nameGuard) lastConflict() string {
	if p := g.last.Load(); p != nil {
		return *p
	}
	return "another node uses this name"
}

// NotifyMerge implements serf.MergeDelegate. serf calls it for a whole
// remote state on join and for every alive message, so a conflicting node
// is refused both when it joins us and when we join it.
func (g *nameGuard) NotifyMerge(members []*serf.Member) error {
	self := g.self.Load()
	if self == nil {
		return nil
	}
	for _, x := range members {
		// A left member with our name is our own past; a dead one at
		// another address is refused until memberlist forgets it
		// (about 30 s), which only delays a node that changed IP.
		if x.Name != g.name || x.Status == serf.StatusLeft {
			continue
		}
		a, _ := netip.AddrFromSlice(x.Addr)
		addr := netip.AddrPortFrom(a.Unmap(), x.Port)
		if addr == *self {
			continue
		}
		msg := fmt.Sprintf("node %s at %s uses the name %q of this node at %s", x.Name, addr, g.name, *self)
		g.last.Store(&msg)
		g.conflicts.Add(1)
		g.log.Warn("refusing to merge with a node that has our name", "other_addr", addr.String(), "our_addr", self.String())
		return fmt.Errorf("%w: %s", ErrNameConflict, msg)
	}
	return nil
}
