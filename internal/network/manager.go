// Package network gives each workload its own network namespace on a node
// bridge, with an address leased durably so it survives daemon restarts, and
// NATs the workloads' traffic out of the node. Workloads can reach the
// public internet but neither the node itself (any of its addresses), nor
// each other, nor (unless an exception opens them) link-local, private
// ranges, the host's networks or the cluster's nodes; the node still
// connects to them. All of it works on the
// network namespace of the calling process, which is the host's in the
// daemon and a throwaway one in tests.
package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vishvananda/netns"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/keylock"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// DefaultBridge is the bridge name used when Config.Bridge is empty.
const DefaultBridge = "hc0"

// DefaultSubnet is where workload addresses come from when Config.Subnet
// is zero; nodes pick theirs with ChooseSubnet.
var DefaultSubnet = netip.MustParsePrefix("10.77.0.0/16")

// Config says where the node's workload network lives.
type Config struct {
	// Bridge is the host bridge all workloads plug into; "hc0" if empty.
	Bridge string
	// Subnet is the IPv4 workload network, DefaultSubnet if zero. The
	// bridge takes its first address as the workloads' gateway.
	Subnet netip.Prefix
	// StateDir holds leases.db and the netns bind mounts, so it must be on
	// persistent storage for leases to survive a reboot of the daemon.
	StateDir string
	// Table names the node's nftables tables; TableName if empty. Two
	// nodes sharing a network namespace need different names.
	Table string
	// EgressAllow are destinations every workload may reach although the
	// egress policy blocks them (--egress-allow).
	EgressAllow []netip.Prefix
	// Nameservers are addresses workloads may query on port 53 although
	// the egress policy blocks them: the resolvers in their resolv.conf.
	Nameservers []netip.Addr
}

// Manager owns the node bridge, its firewall rules, and every workload's netns,
// veth and address lease. It is safe for concurrent use.
type Manager struct {
	cfg    Config
	leases *leases
	locks  keylock.Map // one Attach or Release per id at a time

	nsDirMu    sync.Mutex
	nsDirReady bool

	// policyMu guards policy and orders every rewrite of the nftables
	// tables, so the last write always carries the latest policy.
	policyMu sync.Mutex
	policy   egressPolicy
}

// New checks cfg and opens the lease database. It changes nothing on the
// host's network; Setup does that.
func New(cfg Config) (*Manager, error) {
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if cfg.Table == "" {
		cfg.Table = TableName
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	if len(cfg.Bridge) > 15 {
		return nil, fmt.Errorf("bridge name %q is longer than the kernel's 15 characters; choose a shorter one", cfg.Bridge)
	}
	if !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() > 30 || cfg.Subnet.Bits() < 8 {
		return nil, fmt.Errorf("workload subnet %s must be IPv4 and between /8 and /30 (room for a gateway and a workload)", cfg.Subnet)
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if cfg.StateDir == "" {
		return nil, errors.New("network state dir is not set; pass the data dir's network subdirectory")
	}
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("resolve network state dir %s: %w", cfg.StateDir, err)
	}
	cfg.StateDir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create network state dir %s: %w", dir, err)
	}
	l, err := openLeases(filepath.Join(dir, "leases.db"), cfg.Subnet)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, leases: l}
	m.policy = egressPolicy{allowed: cfg.EgressAllow, dns: cfg.Nameservers, perWorkload: map[netip.Addr][]netip.Prefix{}}
	return m, nil
}

// Close releases the lease database. Workload networks stay as they are, so
// a restarted daemon finds its workloads still reachable.
func (m *Manager) Close() error {
	if err := m.leases.close(); err != nil {
		return fmt.Errorf("close lease database: %w", err)
	}
	return nil
}

// Setup makes the node side of the network: the hypercore nftables tables
// (NAT, and the isolation of workloads from the node and from each other;
// see applyRules), the bridge up with the gateway address and every port
// isolated, and IPv4 forwarding on. It repairs whatever has drifted, so the
// daemon calls it at every start. The rules go in first, so that the bridge
// is never up, nor forwarding on, without them.
func (m *Manager) Setup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	hostNets, err := hostNetworks(m.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("set up workload network: %w", err)
	}
	m.policyMu.Lock()
	m.policy.hostNets, m.policy.hostNetsRead = hostNets, true
	err = m.applyRulesLocked()
	m.policyMu.Unlock()
	if err != nil {
		return fmt.Errorf("set up workload network: %w", err)
	}
	if _, err := ensureBridge(m.cfg.Bridge, m.cfg.Subnet); err != nil {
		return fmt.Errorf("set up workload network: %w", err)
	}
	if err := enableForwarding(); err != nil {
		return fmt.Errorf("set up workload network: %w", err)
	}
	return nil
}

// Attachment is a workload's place on the network.
type Attachment struct {
	// ID is the workload the attachment belongs to.
	ID spec.ID
	// IP is the workload's address, on eth0 inside its netns.
	IP netip.Addr
	// Gateway is the bridge's address, the workload's default route.
	Gateway netip.Addr
	// Prefix is the workload subnet, so IP together with Prefix.Bits() is
	// the address as configured on eth0.
	Prefix netip.Prefix
	// NetNSPath is the bind-mounted netns a runtime should join.
	NetNSPath string
	// HostVeth is the host end of the workload's veth pair.
	HostVeth string
}

// DriverNetwork is the attachment as a driver takes it in driver.Config.
func (a Attachment) DriverNetwork() driver.Network {
	return driver.Network{NetNSPath: a.NetNSPath, IP: a.IP.String()}
}

// Attach gives id a network namespace plugged into the bridge, leasing an
// address first so that a crash at any later point is repaired by calling
// Attach again with the same id, which keeps its address. On error nothing
// is undone, for the same reason; Release cleans up if the caller gives up.
// egress are destinations this workload may reach although the node's
// egress policy blocks them; the rules that open them are keyed by its
// address and go away with Release.
func (m *Manager) Attach(ctx context.Context, id spec.ID, egress ...netip.Prefix) (Attachment, error) {
	return m.attach(ctx, id, "", egress)
}

// Adopt is Attach for a workload already running in the network namespace
// at nsPath (such as /proc/<pid>/ns/net). A daemon restarted in another
// mount namespace (as `ip netns exec` makes) no longer sees its netns bind
// mounts; Adopt binds the live namespace there again instead of making an
// empty new one, then repairs the veth as Attach does.
func (m *Manager) Adopt(ctx context.Context, id spec.ID, nsPath string, egress ...netip.Prefix) (Attachment, error) {
	if nsPath == "" {
		return Attachment{}, errors.New("adopt: no network namespace path given")
	}
	return m.attach(ctx, id, nsPath, egress)
}

func (m *Manager) attach(ctx context.Context, id spec.ID, from string, egress []netip.Prefix) (Attachment, error) {
	unlock := m.locks.Lock(id.String())
	defer unlock()

	ip, err := m.leases.acquire(id)
	if err != nil {
		return Attachment{}, err
	}
	if err := ctx.Err(); err != nil {
		return Attachment{}, err
	}
	if err := m.prepareNetNSDir(); err != nil {
		return Attachment{}, err
	}
	a := m.attachment(id, ip)
	if err := ensureNetNS(a.NetNSPath, from); err != nil {
		return Attachment{}, fmt.Errorf("attach %s: %w", id, err)
	}
	ns, err := netns.GetFromPath(a.NetNSPath)
	if err != nil {
		return Attachment{}, fmt.Errorf("attach %s: open netns %s: %w", id, a.NetNSPath, err)
	}
	defer ns.Close()

	br, err := lookupBridge(m.cfg.Bridge)
	if err != nil {
		return Attachment{}, fmt.Errorf("attach %s: %w", id, err)
	}
	// The exceptions go in before the workload has a way out, so it
	// never runs without them; the policy itself is in place since Setup.
	if err := m.setWorkloadEgress(ip, egress); err != nil {
		return Attachment{}, fmt.Errorf("attach %s: %w", id, err)
	}
	if err := plumb(br, id, ns, ip, m.cfg.Subnet.Bits()); err != nil {
		return Attachment{}, fmt.Errorf("attach %s: %w", id, err)
	}
	return a, nil
}

// setWorkloadEgress records the exceptions of the workload at ip (none
// removes them) and rewrites the rules if that changed anything.
func (m *Manager) setWorkloadEgress(ip netip.Addr, egress []netip.Prefix) error {
	m.policyMu.Lock()
	defer m.policyMu.Unlock()
	old, had := m.policy.perWorkload[ip]
	if len(egress) == 0 && !had || slices.Equal(old, egress) {
		return nil
	}
	if len(egress) == 0 {
		delete(m.policy.perWorkload, ip)
	} else {
		m.policy.perWorkload[ip] = slices.Clone(egress)
	}
	if err := m.applyRulesLocked(); err != nil {
		return fmt.Errorf("egress exceptions of %s: %w", ip, err)
	}
	return nil
}

// SetNodeAddrs replaces the cluster's node addresses, which workloads may
// not reach, and rewrites the rules if they changed.
func (m *Manager) SetNodeAddrs(addrs []netip.Addr) error {
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	addrs = slices.Compact(addrs)
	m.policyMu.Lock()
	defer m.policyMu.Unlock()
	if slices.Equal(addrs, m.policy.nodes) {
		return nil
	}
	m.policy.nodes = addrs
	if err := m.applyRulesLocked(); err != nil {
		return fmt.Errorf("block the cluster's node addresses: %w", err)
	}
	return nil
}

// applyRulesLocked writes the whole rule set from m.policy; policyMu is
// held. Before Setup has read the host's networks it writes nothing, as
// rules without them would open the host's networks to workloads.
func (m *Manager) applyRulesLocked() error {
	if !m.policy.hostNetsRead {
		return nil
	}
	return applyRules(m.cfg.Table, m.cfg.Bridge, m.cfg.Subnet, m.policy)
}

// Release removes id's veth and netns and then frees its lease, in that
// order so that an interrupted Release leaves a lease behind for Reconcile
// to find. Anything already gone counts as done.
func (m *Manager) Release(ctx context.Context, id spec.ID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return m.release(id)
}

func (m *Manager) release(id spec.ID) error {
	unlock := m.locks.Lock(id.String())
	defer unlock()
	if err := deleteHostVeth(id); err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	}
	if err := removeNetNS(m.netnsPath(id)); err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	}
	if ip, ok, err := m.leases.get(id); err == nil && ok {
		if err := m.setWorkloadEgress(ip, nil); err != nil {
			return fmt.Errorf("release %s: %w", id, err)
		}
	}
	return m.leases.release(id.String())
}

// Lookup returns id's attachment as recorded, without checking or touching
// the kernel objects; ok is false when id holds no lease.
func (m *Manager) Lookup(id spec.ID) (Attachment, bool) {
	ip, ok, err := m.leases.get(id)
	if err != nil || !ok {
		return Attachment{}, false
	}
	return m.attachment(id, ip), true
}

// Leases lists every leased address by workload id. A lease whose key in
// the database is no workload id (damage) is left out; Reconcile frees it.
func (m *Manager) Leases() (map[spec.ID]netip.Addr, error) {
	all, err := m.leases.all()
	if err != nil {
		return nil, err
	}
	out := make(map[spec.ID]netip.Addr, len(all))
	for key, addr := range all {
		if id, err := spec.ParseID(key); err == nil {
			out[id] = addr
		}
	}
	return out, nil
}

// Reconcile releases every lease, netns and host veth of ours that belongs
// to no id in keep: what a crash or a lost workload leaves behind. It goes
// on past failures and reports them all.
//
// The names it finds (lease keys, netns files, veth labels) come back from
// disk and the kernel, so they are parsed as ids here. One that is no id
// belongs to no workload: its lease is freed and its netns file removed by
// that name alone, as nothing else can be derived from it.
func (m *Manager) Reconcile(ctx context.Context, keep map[spec.ID]bool) error {
	stray := map[spec.ID]bool{}
	var badLeases, badNetNS []string
	all, err := m.leases.all()
	if err != nil {
		return err
	}
	for key := range all {
		id, err := spec.ParseID(key)
		switch {
		case err != nil:
			badLeases = append(badLeases, key)
		case !keep[id]:
			stray[id] = true
		}
	}
	entries, err := os.ReadDir(m.netnsDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list netns dir %s: %w", m.netnsDir(), err)
	}
	for _, e := range entries {
		id, err := spec.ParseID(e.Name())
		switch {
		case err != nil:
			badNetNS = append(badNetNS, e.Name())
		case !keep[id]:
			stray[id] = true
		}
	}

	var errs []error
	for id := range stray {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.release(id); err != nil {
			errs = append(errs, err)
		}
	}
	for _, key := range badLeases {
		if err := m.leases.release(key); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range badNetNS {
		// A name from ReadDir is one path element: it stays in the dir.
		if err := removeNetNS(filepath.Join(m.netnsDir(), name)); err != nil {
			errs = append(errs, fmt.Errorf("remove %s from the netns dir: %w", name, err))
		}
	}
	// Veths whose lease and netns were already gone, found by label or
	// by being plugged into our bridge.
	links, err := strayVeths(m.cfg.Bridge, keep)
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range links {
		if err := deleteLink(l); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reconcile workload network: %w", err)
	}
	return nil
}

func (m *Manager) attachment(id spec.ID, ip netip.Addr) Attachment {
	return Attachment{
		ID:        id,
		IP:        ip,
		Gateway:   gatewayOf(m.cfg.Subnet),
		Prefix:    m.cfg.Subnet,
		NetNSPath: m.netnsPath(id),
		HostVeth:  hostVethName(id),
	}
}

func (m *Manager) netnsDir() string { return filepath.Join(m.cfg.StateDir, "netns") }

func (m *Manager) netnsPath(id spec.ID) string { return filepath.Join(m.netnsDir(), id.String()) }

// prepareNetNSDir runs once per Manager that succeeds at it; a failure is
// retried by the next Attach.
func (m *Manager) prepareNetNSDir() error {
	m.nsDirMu.Lock()
	defer m.nsDirMu.Unlock()
	if m.nsDirReady {
		return nil
	}
	if err := prepareNetNSDir(m.netnsDir()); err != nil {
		return err
	}
	m.nsDirReady = true
	return nil
}
