package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

var ctx = context.Background()

func TestNewRejectsBadConfig(t *testing.T) {
	if isolated(t) {
		return
	}
	dir := t.TempDir()
	for name, cfg := range map[string]Config{
		"ipv6 subnet":      {StateDir: dir, Subnet: netip.MustParsePrefix("fd00::/64")},
		"no room":          {StateDir: dir, Subnet: netip.MustParsePrefix("10.1.0.0/31")},
		"long bridge":      {StateDir: dir, Bridge: "a-very-long-bridge"},
		"missing statedir": {},
	} {
		if m, err := New(cfg); err == nil {
			m.Close()
			t.Errorf("%s: New(%+v) succeeded", name, cfg)
		}
	}
}

func TestHostVethName(t *testing.T) {
	if isolated(t) {
		return
	}
	a, b := parseID(t, "497b6ad8-11a3-4701-8b6a-11396e11ca7d"), parseID(t, "497b6ad8-11a3-4701-8b6a-11396e11ca7e")
	if hostVethName(a) == hostVethName(b) {
		t.Errorf("ids that differ only at the end share veth name %s", hostVethName(a))
	}
	if hostVethName(a) != hostVethName(a) {
		t.Error("veth name is not stable")
	}
	if n := hostVethName(a); len(n) > 15 || !strings.HasPrefix(n, "hc") {
		t.Errorf("veth name %q is not an hc-prefixed interface name of at most 15 characters", n)
	}
}

func TestSetupIsIdempotentAndLeavesOtherTablesAlone(t *testing.T) {
	if isolated(t) {
		return
	}
	nft, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	// A table of someone else's in every family we use.
	var others []*nftables.Table
	var otherChains []*nftables.Chain
	for _, f := range ourFamilies {
		other := nft.AddTable(&nftables.Table{Name: "other", Family: f})
		oc := nft.AddChain(&nftables.Chain{Name: "keep", Table: other})
		nft.AddRule(&nftables.Rule{Table: other, Chain: oc, Exprs: []expr.Any{&expr.Counter{}}})
		others, otherChains = append(others, other), append(otherChains, oc)
	}
	if err := nft.Flush(); err != nil {
		t.Fatal(err)
	}

	m := newManager(t, "10.77.0.0/16") // first Setup
	// ip forward: isolation 6, the egress policy 7 (see egressRules).
	want := map[string]int{"ip postrouting": 1, "ip forward": 13, "inet input": 4, "inet forward": 1, "bridge forward": 1}
	if got := ruleCounts(t, nft); !mapsEqual(got, want) {
		t.Fatalf("after one Setup, rules per chain = %v, want %v", got, want)
	}

	// Drift that a second Setup must undo: a foreign rule in each of our
	// tables, a foreign chain, and a stale address on the bridge.
	for _, c := range []struct {
		family nftables.TableFamily
		chain  string
	}{{nftables.TableFamilyIPv4, "forward"}, {nftables.TableFamilyINet, "input"}, {nftables.TableFamilyBridge, "forward"}} {
		ch := &nftables.Chain{Name: c.chain, Table: &nftables.Table{Name: TableName, Family: c.family}}
		nft.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}})
	}
	nft.AddChain(&nftables.Chain{Name: "stray", Table: &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}})
	if err := nft.Flush(); err != nil {
		t.Fatal(err)
	}
	br, err := netlink.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	stale := &netlink.Addr{IPNet: ipNet(netip.MustParseAddr("10.66.0.1"), 16)}
	if err := netlink.AddrAdd(br, stale); err != nil {
		t.Fatal(err)
	}

	for range 2 {
		if err := m.Setup(ctx); err != nil {
			t.Fatalf("Setup again: %v", err)
		}
	}
	if got := ruleCounts(t, nft); !mapsEqual(got, want) {
		t.Errorf("after three Setups, rules per chain = %v, want %v", got, want)
	}
	tables, err := nft.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	ours := map[nftables.TableFamily]int{}
	for _, tb := range tables {
		if tb.Name == TableName {
			ours[tb.Family]++
		}
	}
	for _, f := range ourFamilies {
		if ours[f] != 1 {
			t.Errorf("found %d tables %s %s, want 1", ours[f], familyName(f), TableName)
		}
	}
	if len(ours) != len(ourFamilies) {
		t.Errorf("tables named %s per family: %v, want one in each of %v", TableName, ours, ourFamilies)
	}
	for i, other := range others {
		if rules, err := nft.GetRules(other, otherChains[i]); err != nil || len(rules) != 1 {
			t.Errorf("table %s other has %d rules (err %v) after Setup, want its 1 rule untouched", familyName(other.Family), len(rules), err)
		}
	}

	br, err = netlink.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		t.Error("bridge is not up")
	}
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.77.0.1/16" {
		t.Errorf("bridge addresses = %v, want only 10.77.0.1/16", addrs)
	}
	if fwd, err := os.ReadFile(ipForwardPath); err != nil || strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward = %q (err %v), want 1", fwd, err)
	}
}

// ruleCounts reads back the rules in our tables, keyed "family chain".
func ruleCounts(t *testing.T, nft *nftables.Conn) map[string]int {
	t.Helper()
	chains, err := nft.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, c := range chains {
		if c.Table.Name != TableName {
			continue
		}
		rules, err := nft.GetRules(c.Table, c)
		if err != nil {
			t.Fatal(err)
		}
		out[familyName(c.Table.Family)+" "+c.Name] = len(rules)
	}
	return out
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return fmt.Sprintf("family%d", f)
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestAttachConnectsWorkloads(t *testing.T) {
	if isolated(t) {
		return
	}
	// Exercise the harder case where bridged traffic passes the IP hooks.
	setBridgeNF(t, "1")
	m := newManager(t, "10.77.0.0/16")
	a := attach(t, m, spec.NewID())
	b := attach(t, m, spec.NewID())

	if a.IP != netip.MustParseAddr("10.77.0.2") || b.IP != netip.MustParseAddr("10.77.0.3") {
		t.Errorf("first two workloads got %s and %s, want 10.77.0.2 and 10.77.0.3", a.IP, b.IP)
	}
	if a.Gateway != netip.MustParseAddr("10.77.0.1") || a.Prefix != netip.MustParsePrefix("10.77.0.0/16") {
		t.Errorf("gateway %s prefix %s, want 10.77.0.1 and 10.77.0.0/16", a.Gateway, a.Prefix)
	}
	if dn := a.DriverNetwork(); dn.NetNSPath != a.NetNSPath || dn.IP != "10.77.0.2" {
		t.Errorf("DriverNetwork() = %+v", dn)
	}
	if ok, err := netnsMounted(a.NetNSPath); !ok || err != nil {
		t.Errorf("%s is not a mounted netns (err %v)", a.NetNSPath, err)
	}
	host, err := netlink.LinkByName(a.HostVeth)
	if err != nil {
		t.Fatal(err)
	}
	br, _ := netlink.LinkByName(DefaultBridge)
	if host.Attrs().MasterIndex != br.Attrs().Index || host.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host veth %s is not up on the bridge", a.HostVeth)
	}

	if !portIsolated(t, a.HostVeth) || !portIsolated(t, b.HostVeth) {
		t.Error("host veths are not isolated bridge ports")
	}

	// The node reaches each workload from the gateway address, and the
	// workload's replies come back.
	for _, w := range []Attachment{a, b} {
		l := listen(t, w.NetNSPath, w.IP.String()+":0")
		if src := roundTrip(t, "", l); src != w.Gateway {
			t.Errorf("workload %s saw the node as %s, want the gateway %s", w.IP, src, w.Gateway)
		}
	}
}

func attach(t *testing.T, m *Manager, id spec.ID, egress ...netip.Prefix) Attachment {
	t.Helper()
	a, err := m.Attach(ctx, id, egress...)
	if err != nil {
		t.Fatalf("Attach(%s): %v", id, err)
	}
	return a
}

func TestAttachIsIdempotentAndRepairs(t *testing.T) {
	if isolated(t) {
		return
	}
	m := newManager(t, "10.77.0.0/16")
	id := spec.NewID()
	first := attach(t, m, id)
	if again := attach(t, m, id); again != first {
		t.Fatalf("second Attach = %+v, want %+v", again, first)
	}
	if got, ok := m.Lookup(id); !ok || got != first {
		t.Errorf("Lookup = %+v, %v; want %+v", got, ok, first)
	}
	if _, ok := m.Lookup(spec.NewID()); ok {
		t.Error("Lookup of an unknown id reported a lease")
	}

	damage := map[string]func(){
		"host veth deleted": func() {
			l, err := netlink.LinkByName(first.HostVeth)
			if err != nil {
				t.Fatal(err)
			}
			if err := netlink.LinkDel(l); err != nil {
				t.Fatal(err)
			}
		},
		// A crash between creating the file and mounting onto it.
		"netns unmounted": func() {
			if err := unix.Unmount(first.NetNSPath, unix.MNT_DETACH); err != nil {
				t.Fatal(err)
			}
		},
		"netns gone": func() {
			if err := removeNetNS(first.NetNSPath); err != nil {
				t.Fatal(err)
			}
		},
		// Both names taken by interfaces that are not one pair; the
		// workload's eth0 even has the index of the host end's peer,
		// which lives in the host's namespace.
		"ends replaced by strangers": func() {
			inNS(t, first.NetNSPath, func() {
				l, err := netlink.LinkByName(workloadIf)
				if err != nil {
					t.Fatal(err)
				}
				mustOK(t, netlink.LinkDel(l))
			})
			mustOK(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: first.HostVeth}, PeerName: "stranger"}))
			stranger, err := netlink.LinkByName("stranger")
			if err != nil {
				t.Fatal(err)
			}
			idx := fmt.Sprint(stranger.Attrs().Index)
			if out, err := exec.Command("nsenter", "--net="+first.NetNSPath, "ip", "link", "add", workloadIf, "index", idx, "type", "veth", "peer", "name", "stranger").CombinedOutput(); err != nil {
				t.Fatalf("make a stranger %s with index %s: %v: %s", workloadIf, idx, err, out)
			}
		},
		"workload eth0 down, address gone": func() {
			inNS(t, first.NetNSPath, func() {
				l, err := netlink.LinkByName(workloadIf)
				if err != nil {
					t.Fatal(err)
				}
				netlink.AddrDel(l, &netlink.Addr{IPNet: ipNet(first.IP, 16)})
				netlink.LinkSetDown(l)
			})
		},
		"port isolation turned off": func() {
			l, err := netlink.LinkByName(first.HostVeth)
			if err != nil {
				t.Fatal(err)
			}
			mustOK(t, netlink.LinkSetIsolated(l, false))
			if portIsolated(t, first.HostVeth) {
				t.Fatal("could not turn port isolation off")
			}
		},
	}
	for name, breakIt := range damage {
		breakIt()
		got := attach(t, m, id)
		if got != first {
			t.Errorf("%s: Attach = %+v, want %+v", name, got, first)
		}
		if !nodeReaches(t, got) {
			t.Errorf("%s: node cannot reach the workload after repair", name)
		}
		if !portIsolated(t, got.HostVeth) {
			t.Errorf("%s: host veth is not an isolated port after repair", name)
		}
	}

	// A crash right after the lease was written: nothing else exists.
	id2 := spec.NewID()
	leased, err := m.leases.acquire(id2)
	if err != nil {
		t.Fatal(err)
	}
	if got := attach(t, m, id2); got.IP != leased {
		t.Errorf("Attach after a lease-only crash got %s, want the leased %s", got.IP, leased)
	}
}

func TestReleaseFreesAndReusesLowest(t *testing.T) {
	if isolated(t) {
		return
	}
	m := newManager(t, "10.77.0.0/16")
	a := attach(t, m, spec.NewID())
	b := attach(t, m, spec.NewID())
	c := attach(t, m, spec.NewID())

	for range 2 {
		if err := m.Release(ctx, b.ID); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
	if err := m.Release(ctx, spec.NewID()); err != nil {
		t.Errorf("Release of an id never attached: %v", err)
	}
	if _, ok := m.Lookup(b.ID); ok {
		t.Error("released id still has a lease")
	}
	if _, err := netlink.LinkByName(b.HostVeth); !isNotFound(err) {
		t.Errorf("host veth %s still there after Release (err %v)", b.HostVeth, err)
	}
	if _, err := os.Stat(b.NetNSPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns file %s still there after Release (err %v)", b.NetNSPath, err)
	}
	if _, err := netlink.LinkByName(a.HostVeth); err != nil {
		t.Errorf("Release of b took a's veth: %v", err)
	}

	d := attach(t, m, spec.NewID())
	if d.IP != b.IP {
		t.Errorf("new workload got %s, want the lowest free address %s", d.IP, b.IP)
	}
	if e := attach(t, m, spec.NewID()); e.IP.Compare(c.IP) <= 0 {
		t.Errorf("next workload got %s, want an address above %s", e.IP, c.IP)
	}
}

func TestLeasesSurviveReopen(t *testing.T) {
	if isolated(t) {
		return
	}
	dir := t.TempDir()
	t.Cleanup(func() { testutil.UnmountUnder(t, dir) })
	cfg := Config{StateDir: dir}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	a := attach(t, m, spec.NewID())
	b := attach(t, m, spec.NewID())
	before, err := m.Leases()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	after, err := m.Leases()
	if err != nil {
		t.Fatal(err)
	}
	want := map[spec.ID]netip.Addr{a.ID: a.IP, b.ID: b.IP}
	if fmt.Sprint(before) != fmt.Sprint(want) || fmt.Sprint(after) != fmt.Sprint(want) {
		t.Errorf("leases before close %v, after reopen %v, want %v", before, after, want)
	}
	if got := attach(t, m, b.ID); got != b {
		t.Errorf("Attach after reopen = %+v, want %+v", got, b)
	}
	if c := attach(t, m, spec.NewID()); c.IP == a.IP || c.IP == b.IP {
		t.Errorf("new workload after reopen got %s, already leased", c.IP)
	}
}

func TestSubnetChangeMovesLeases(t *testing.T) {
	if isolated(t) {
		return
	}
	dir := t.TempDir()
	t.Cleanup(func() { testutil.UnmountUnder(t, dir) })
	m, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, m.Setup(ctx))
	old := attach(t, m, spec.NewID())
	mustOK(t, m.Close())

	m, err = New(Config{StateDir: dir, Subnet: netip.MustParsePrefix("10.79.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mustOK(t, m.Setup(ctx))
	moved := attach(t, m, old.ID)
	if moved.IP != netip.MustParseAddr("10.79.0.2") || moved.Gateway != netip.MustParseAddr("10.79.0.1") {
		t.Errorf("after the subnet changed, Attach gave %s via %s, want 10.79.0.2 via 10.79.0.1", moved.IP, moved.Gateway)
	}
	if !nodeReaches(t, moved) {
		t.Error("node cannot reach the moved workload")
	}
}

func TestConcurrentAttachNeverSharesAnAddress(t *testing.T) {
	if isolated(t) {
		return
	}
	m := newManager(t, "10.77.0.0/16")
	const n = 16
	ids := make([]spec.ID, n)
	for i := range ids {
		ids[i] = spec.NewID()
	}
	var mu sync.Mutex
	got := map[spec.ID][]netip.Addr{}
	var wg sync.WaitGroup
	for _, id := range ids {
		for range 2 { // the same id twice at once must agree with itself
			wg.Go(func() {
				a, err := m.Attach(ctx, id)
				if err != nil {
					t.Errorf("Attach(%s): %v", id, err)
					return
				}
				mu.Lock()
				got[id] = append(got[id], a.IP)
				mu.Unlock()
			})
		}
	}
	wg.Wait()

	holder := map[netip.Addr]spec.ID{}
	for id, ips := range got {
		if len(ips) != 2 || ips[0] != ips[1] {
			t.Errorf("%s got %v from two Attach calls, want one address twice", id, ips)
		}
		if other, dup := holder[ips[0]]; dup {
			t.Errorf("%s and %s share %s", id, other, ips[0])
		}
		holder[ips[0]] = id
	}
	for i := range n { // lowest free means exactly .2 up to .n+1
		if ip := u32Addr(addrU32(netip.MustParseAddr("10.77.0.2")) + uint32(i)); holder[ip] == "" {
			t.Errorf("%s was skipped", ip)
		}
	}
	// Racing Attach calls for one id must not both make a netns.
	for _, id := range ids {
		if c := mountCount(t, "/proc/self/mountinfo", m.netnsPath(id)); c != 1 {
			t.Errorf("netns of %s is mounted %d times, want once", id, c)
		}
	}
	if leases, err := m.Leases(); err != nil || len(leases) != n {
		t.Errorf("Leases() has %d entries (err %v), want %d", len(leases), err, n)
	}
}

func TestSubnetExhaustion(t *testing.T) {
	if isolated(t) {
		return
	}
	m := newManager(t, "10.78.0.0/29") // .2 to .6: five workloads
	var first Attachment
	for i := range 5 {
		a := attach(t, m, spec.NewID())
		if i == 0 {
			first = a
		}
	}
	id := spec.NewID()
	_, err := m.Attach(ctx, id)
	if !errors.Is(err, ErrSubnetFull) {
		t.Fatalf("sixth Attach in a /29: err = %v, want ErrSubnetFull", err)
	}
	if _, ok := m.Lookup(id); ok {
		t.Error("failed Attach left a lease")
	}
	if _, err := os.Stat(m.netnsPath(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Attach made a netns (stat err %v)", err)
	}
	if err := m.Release(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if a := attach(t, m, id); a.IP != first.IP {
		t.Errorf("after a release got %s, want the freed %s", a.IP, first.IP)
	}
}

func TestReconcileRemovesStrays(t *testing.T) {
	if isolated(t) {
		return
	}
	m := newManager(t, "10.77.0.0/16")
	kept := attach(t, m, spec.NewID())
	gone1 := attach(t, m, spec.NewID())
	gone2 := attach(t, m, spec.NewID())
	// Lease lost, kernel objects left: as if the database were replaced.
	orphan := attach(t, m, spec.NewID())
	if err := m.leases.release(orphan.ID.String()); err != nil {
		t.Fatal(err)
	}
	// A netns file with no lease and no veth.
	loose := m.netnsPath(spec.NewID())
	if err := ensureNetNS(loose, ""); err != nil {
		t.Fatal(err)
	}
	// Damage: a lease and a netns file under names that are no ids.
	junk := netip.MustParseAddr("10.77.9.9")
	if err := m.leases.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketByID).Put([]byte("../not-an-id"), junk.AsSlice()); err != nil {
			return err
		}
		return tx.Bucket(bucketByIP).Put(junk.AsSlice(), []byte("../not-an-id"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := ensureNetNS(filepath.Join(m.netnsDir(), "not-an-id"), ""); err != nil {
		t.Fatal(err)
	}
	if leases, err := m.Leases(); err != nil || len(leases) != 3 {
		t.Errorf("Leases() before Reconcile = %v (err %v), want the three workloads' with a lease and not the damaged one", leases, err)
	}

	if err := m.Reconcile(ctx, map[spec.ID]bool{kept.ID: true}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}

	leases, err := m.Leases()
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[kept.ID] != kept.IP {
		t.Errorf("leases after Reconcile = %v, want only %s", leases, kept.ID)
	}
	if raw, err := m.leases.all(); err != nil || len(raw) != 1 {
		t.Errorf("lease database after Reconcile = %v (err %v), want only %s's", raw, err, kept.ID)
	}
	for _, a := range []Attachment{gone1, gone2, orphan} {
		if _, err := netlink.LinkByName(a.HostVeth); !isNotFound(err) {
			t.Errorf("stray veth %s survived (err %v)", a.HostVeth, err)
		}
	}
	entries, err := os.ReadDir(m.netnsDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != kept.ID.String() {
		t.Errorf("netns dir holds %v, want only %s", entries, kept.ID)
	}
	if !nodeReaches(t, kept) {
		t.Error("node cannot reach the kept workload")
	}
}

// TestEgressIsMasqueraded puts an "outside" netns behind a veth, as if it
// were the internet, and checks what it sees of workloads.
func TestEgressIsMasqueraded(t *testing.T) {
	if isolated(t) {
		return
	}
	m := newManager(t, "10.77.0.0/16")
	w := attach(t, m, spec.NewID())

	outside := newOutside(t)

	server := listen(t, outside, publicAddr.String()+":0")
	if src := roundTrip(t, w.NetNSPath, server); src != netip.MustParseAddr("192.0.2.2") {
		t.Errorf("outside saw the workload as %s, want the node's uplink address 192.0.2.2", src)
	}

	inside := listen(t, w.NetNSPath, w.IP.String()+":0")
	if c, err := dial(t, outside, inside.Addr().String()); err == nil {
		c.Close()
		t.Error("outside opened a connection straight to a workload")
	} else if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("outside connecting in: %v, want host unreachable (rejected)", err)
	}
	inside = listen(t, w.NetNSPath, w.IP.String()+":0") // nothing queued from above
	if src := roundTrip(t, "", inside); src != netip.MustParseAddr("10.77.0.1") {
		t.Errorf("node reached the workload as %s, want from the gateway 10.77.0.1", src)
	}
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestNetNSMountsPropagate checks why the netns dir is a shared mount of
// its own. The state dir's parent is made shared first, as systemd makes /.
func TestNetNSMountsPropagate(t *testing.T) {
	if isolated(t) {
		return
	}
	root := t.TempDir()
	t.Cleanup(func() { testutil.UnmountUnder(t, root) })
	mustOK(t, unix.Mount(root, root, "", unix.MS_BIND, ""))
	mustOK(t, unix.Mount("", root, "", unix.MS_SHARED, ""))
	m, err := New(Config{StateDir: filepath.Join(root, "network")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mustOK(t, m.Setup(ctx))
	a := attach(t, m, spec.NewID())
	// Left in its parent's peer group, the dir would also get a copy of
	// every netns mount on the parent, hidden beneath the dir's own.
	if n := mountCount(t, "/proc/self/mountinfo", a.NetNSPath); n != 1 {
		t.Errorf("%s is mounted %d times, want once", a.NetNSPath, n)
	}

	// Another mount namespace, made now, as a container runtime makes one.
	cmd := exec.Command("unshare", "--mount", "--propagation", "unchanged", "sh", "-c", "echo ready; exec sleep 600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("mount namespace helper: %q, %v", line, err)
	}
	other := fmt.Sprintf("/proc/%d/mountinfo", cmd.Process.Pid)

	b := attach(t, m, spec.NewID())
	if n := mountCount(t, other, b.NetNSPath); n != 1 {
		t.Errorf("a mount namespace made before Attach sees %s %d times, want once, or what runs there cannot join it", b.NetNSPath, n)
	}
	if err := m.Release(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if n := mountCount(t, other, a.NetNSPath); n != 0 {
		t.Errorf("another mount namespace still holds %s after Release, keeping the netns alive", a.NetNSPath)
	}
}

func mountCount(t *testing.T, mountinfo, path string) int {
	t.Helper()
	data, err := os.ReadFile(mountinfo)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			n++
		}
	}
	return n
}

// TestAdoptRebindsLiveNamespace is the restart of a daemon in a new mount
// namespace: the netns bind mount is gone from its view while the workload
// still runs in that namespace. Adopt must bind the live namespace again,
// not make an empty one.
func TestAdoptRebindsLiveNamespace(t *testing.T) {
	if isolated(t) {
		return
	}
	m := newManager(t, "10.77.0.0/16")
	id := spec.NewID()
	first := attach(t, m, id)

	// A process that lives in the workload's namespace, as a container does.
	holder := exec.Command("nsenter", "--net="+first.NetNSPath, "sleep", "600")
	mustOK(t, holder.Start())
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	live := fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
	// Wait until nsenter has switched: compare with the bind mount itself,
	// not /proc/self, which names the main thread's namespace.
	var want, ws unix.Stat_t
	mustOK(t, unix.Stat(first.NetNSPath, &ws))
	waitUntil(t, func() bool {
		return unix.Stat(live, &want) == nil && want.Ino == ws.Ino && want.Dev == ws.Dev
	})

	mustOK(t, unix.Unmount(first.NetNSPath, unix.MNT_DETACH))
	got, err := m.Adopt(ctx, id, live)
	if err != nil {
		t.Fatal(err)
	}
	if got != first {
		t.Fatalf("Adopt = %+v, want %+v", got, first)
	}
	var st unix.Stat_t
	mustOK(t, unix.Stat(first.NetNSPath, &st))
	if st.Ino != want.Ino || st.Dev != want.Dev {
		t.Fatal("netns path names a new namespace, not the workload's live one")
	}
	if !nodeReaches(t, first) {
		t.Error("node cannot reach the adopted workload")
	}
	// Adopting again changes nothing.
	if again, err := m.Adopt(ctx, id, live); err != nil || again != first {
		t.Fatalf("second Adopt = %+v, %v", again, err)
	}
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if ok() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition never held")
}
