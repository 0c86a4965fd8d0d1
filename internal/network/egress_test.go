package network

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// Stand-ins served from the "lan" netns that newLAN makes: the host beyond
// the node's LAN interface, instance metadata, an address of another node
// of the cluster, and the public internet. The node reaches all but the
// first through a route via the LAN host, as a cloud host reaches them via
// its gateway.
var (
	lanNodeAddr  = netip.MustParseAddr("192.168.77.2")
	lanHostAddr  = netip.MustParseAddr("192.168.77.1")
	metadataAddr = netip.MustParseAddr("169.254.169.254")
	peerNodeAddr = netip.MustParseAddr("198.51.100.9")
	internetAddr = netip.MustParseAddr("198.51.100.80")
)

// newLAN puts a "lan" netns behind the node's interface lan0
// (192.168.77.2/24), serving every stand-in address above, and routes the
// node to the others through it. It returns the path of the lan netns.
func newLAN(t *testing.T) string {
	t.Helper()
	lan := filepath.Join(t.TempDir(), "lan")
	t.Cleanup(func() { removeNetNS(lan) })
	mustOK(t, ensureNetNS(lan, ""))
	ns, err := netns.GetFromPath(lan)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	mustOK(t, netlink.LinkAdd(&netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: "lan0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns)),
	}))
	up, err := netlink.LinkByName("lan0")
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, netlink.AddrAdd(up, &netlink.Addr{IPNet: ipNet(lanNodeAddr, 24)}))
	mustOK(t, netlink.LinkSetUp(up))
	nsh, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	eth, err := nsh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, nsh.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(lanHostAddr, 24)}))
	mustOK(t, nsh.LinkSetUp(eth))
	serveOnLoopback(t, nsh, metadataAddr, peerNodeAddr, internetAddr)
	// Back to the workloads, for the control run without NAT.
	mustOK(t, nsh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: ipNet(netip.MustParseAddr("10.77.0.0"), 16), Gw: lanNodeAddr.AsSlice()}))
	for _, dst := range []*net.IPNet{ipNet(metadataAddr, 32), ipNet(netip.MustParseAddr("198.51.100.0"), 24)} {
		mustOK(t, netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: dst, Gw: lanHostAddr.AsSlice()}))
	}
	return lan
}

// TestEgressPolicy checks what workloads may open beyond the node: the
// public internet but not metadata, the LAN, the host's other networks or
// the cluster's nodes, unless the node or the workload opens an exception.
// A second node in the same netns, with its own tables, bridge and subnet,
// shows the node-wide exception and that the nodes' rules stay apart.
func TestEgressPolicy(t *testing.T) {
	if isolated(t) {
		return
	}
	lan := newLAN(t)
	outside := newOutside(t) // the uplink's network 192.0.2.0/24 is the host's own too
	// An ordinary lo, as every host has.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, netlink.LinkSetUp(lo))

	m := newManagerWith(t, Config{Subnet: netip.MustParsePrefix("10.77.0.0/16"), Nameservers: []netip.Addr{lanHostAddr}})
	a := attach(t, m, spec.NewID())

	tcp := func(what string, a netip.Addr, path string, port string) target {
		if port == "" {
			port = "0"
		}
		l := greet(t, path, "tcp4", net.JoinHostPort(a.String(), port))
		return target{what, "tcp4", l.String(), unix.ECONNREFUSED}
	}
	metadata := tcp("instance metadata stand-in", metadataAddr, lan, "80")
	lanHost := tcp("LAN host", lanHostAddr, lan, "")
	hostNet := tcp("host on the node's uplink network", outsideAddr, outside, "")
	peerNode := tcp("another node of the cluster", peerNodeAddr, lan, "")
	internet := tcp("public internet", internetAddr, lan, "")
	dns := tcp("LAN nameserver, port 53", lanHostAddr, lan, "53")
	public := tcp("public internet beyond the uplink", publicAddr, outside, "")

	blocked := []target{metadata, lanHost, hostNet}
	reachable := []target{internet, public, dns, peerNode}
	expect(t, "default policy", a, blocked, reachable)

	// The cluster's node addresses, told later, are blocked at once.
	mustOK(t, m.SetNodeAddrs([]netip.Addr{peerNodeAddr}))
	expect(t, "after SetNodeAddrs", a, []target{peerNode}, []target{internet})

	// A workload's own exception opens its destination to it alone, and
	// goes away with it: the next workload on its address has none.
	b := attach(t, m, spec.NewID(), netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("192.168.77.0/24"))
	expect(t, "workload with exceptions", b, []target{hostNet, peerNode}, []target{metadata, lanHost, internet})
	expect(t, "workload beside one with exceptions", a, []target{metadata, lanHost}, nil)
	mustOK(t, m.Release(context.Background(), b.ID))
	c := attach(t, m, spec.NewID())
	if c.IP != b.IP {
		t.Fatalf("the next workload got %s, not the released %s; the test cannot show the exception went", c.IP, b.IP)
	}
	expect(t, "workload on a released address", c, []target{metadata, lanHost}, []target{internet})

	// Setup, as at a restart, keeps the exceptions of live workloads.
	d := attach(t, m, spec.NewID(), netip.MustParsePrefix("169.254.169.254/32"))
	mustOK(t, m.Setup(context.Background()))
	expect(t, "after Setup again", d, []target{lanHost}, []target{metadata})

	// A second node here, with its own names and a node-wide exception.
	m2 := newManagerWith(t, Config{Subnet: netip.MustParsePrefix("10.78.0.0/16"), Bridge: "hcb", Table: "hypercore-b",
		EgressAllow: []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24")}})
	e := attach(t, m2, spec.NewID())
	expect(t, "second node, node-wide exception", e, []target{metadata, hostNet}, []target{lanHost, internet})
	expect(t, "first node beside the second", a, []target{lanHost, metadata}, []target{internet})
	if !nodeReaches(t, a) || !nodeReaches(t, e) {
		t.Error("a node cannot reach its own workloads with two nodes side by side")
	}
	// Each node's clean-up leaves the other's workloads alone.
	mustOK(t, m2.Reconcile(context.Background(), map[spec.ID]bool{e.ID: true}))
	if _, err := netlink.LinkByName(a.HostVeth); err != nil {
		t.Errorf("the second node's Reconcile took the first node's veth %s: %v", a.HostVeth, err)
	}

	// Control: without any of our tables every blocked address answers,
	// so it was the policy that refused them above.
	deleteTables(t, TableName, "hypercore-b")
	for _, tg := range blocked {
		if err := try(t, a.NetNSPath, tg); err != nil {
			t.Errorf("control, no rules: %s: %v; the test proves nothing", tg.what, err)
		}
	}
}

// expect checks that w can connect to none of blocked (each refused at
// once) and to all of reachable.
func expect(t *testing.T, when string, w Attachment, blocked, reachable []target) {
	t.Helper()
	for _, tg := range blocked {
		switch err := try(t, w.NetNSPath, tg); {
		case err == nil:
			t.Errorf("%s: workload %s connected to the %s (%s)", when, w.IP, tg.what, tg.addr)
		case !strings.Contains(err.Error(), "refused"):
			t.Errorf("%s: workload %s connecting to the %s (%s): %v, want it refused", when, w.IP, tg.what, tg.addr, err)
		}
	}
	for _, tg := range reachable {
		if err := try(t, w.NetNSPath, tg); err != nil {
			t.Errorf("%s: workload %s cannot reach the %s (%s): %v", when, w.IP, tg.what, tg.addr, err)
		}
	}
}

func deleteTables(t *testing.T, names ...string) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		for _, f := range ourFamilies {
			c.DelTable(&nftables.Table{Name: n, Family: f})
		}
	}
	mustOK(t, c.Flush())
}

// newManagerWith is newManager with more of the config.
func newManagerWith(t *testing.T, cfg Config) *Manager {
	t.Helper()
	cfg.StateDir = t.TempDir()
	t.Cleanup(func() { testutil.UnmountUnder(t, cfg.StateDir) })
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	mustOK(t, m.Setup(context.Background()))
	return m
}
