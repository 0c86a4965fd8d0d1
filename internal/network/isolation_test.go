package network

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Workloads must reach neither the node nor each other, whether or not
// br_netfilter hands bridged traffic to the IP hooks, so the test runs
// both ways.

func TestIsolationBridgeNFOn(t *testing.T) {
	if isolated(t) {
		return
	}
	testIsolation(t, "1")
}

func TestIsolationBridgeNFOff(t *testing.T) {
	if isolated(t) {
		return
	}
	testIsolation(t, "0")
}

// isolationScene is two workloads, an outside, and listeners on every kind
// of address a workload might try to reach.
type isolationScene struct {
	m    *Manager
	a, b Attachment
	// outside is the netns of a stand-in for the internet (newOutside).
	outside string
	// host lists connections a workload must not open to the node.
	host []target
	// peer is a listener in b, which a must not reach, directly or by
	// routing through the gateway (the hairpin).
	peer target
}

// target is an address to dial, with a listener behind it.
type target struct {
	what, network, addr string
	// refused is how the node's firewall answers a connect, if it does.
	refused error
}

func testIsolation(t *testing.T, bridgeNF string) {
	setBridgeNF(t, bridgeNF)
	s := newIsolationScene(t)
	a := s.a

	// 1. Everything in place.
	s.checkIsolated(t, "with the rules and port isolation")
	if !nodeReaches(t, a) {
		t.Error("node cannot open a connection to a workload")
	}
	server := listen(t, s.outside, publicAddr.String()+":0")
	if src := roundTrip(t, a.NetNSPath, server); src != uplinkAddr {
		t.Errorf("outside saw the workload as %s, want the node's uplink address %s", src, uplinkAddr)
	}

	// 2. Port isolation off: the bridge table alone keeps workloads apart.
	s.setIsolated(t, false)
	s.checkPeerBlocked(t, "with port isolation off")

	// 3. Our tables gone: port isolation alone keeps workloads apart.
	// Attach, the repair path, turns isolation back on.
	deleteOurTables(t)
	for _, w := range []Attachment{s.a, s.b} {
		attach(t, s.m, w.ID)
		if !portIsolated(t, w.HostVeth) {
			t.Errorf("Attach did not isolate the port %s again", w.HostVeth)
		}
	}
	s.checkPeerBlocked(t, "with port isolation but no nftables rules")

	// 4. Control: with neither, every one of those connections works, so
	// it is the rules and the isolation that refused them above, not a
	// missing route or listener.
	s.setIsolated(t, false)
	for _, tg := range append(s.host, s.peer) {
		if err := try(t, a.NetNSPath, tg); err != nil {
			t.Errorf("control, no rules and no isolation: %s: %v; the test proves nothing", tg.what, err)
		}
	}
	s.hairpin(t, func() {
		if err := try(t, a.NetNSPath, s.peer); err != nil {
			t.Errorf("control, no rules and no isolation: %s through the gateway: %v", s.peer.what, err)
		}
	})

	// 5. Setup alone puts back the rules and the isolation of every port.
	mustOK(t, s.m.Setup(ctx))
	for _, w := range []Attachment{s.a, s.b} {
		if !portIsolated(t, w.HostVeth) {
			t.Errorf("Setup did not isolate the port %s again", w.HostVeth)
		}
	}
	// Forget what step 4 taught a about its neighbours, or a's packets
	// would go straight to b's MAC and only time out.
	flushNeighbours(t, a.NetNSPath)
	s.checkIsolated(t, "after Setup repaired them")
	if !nodeReaches(t, a) {
		t.Error("node cannot open a connection to a workload after Setup")
	}
}

func newIsolationScene(t *testing.T) *isolationScene {
	t.Helper()
	m := newManager(t, "10.77.0.0/16")
	s := &isolationScene{m: m, a: attach(t, m, spec.NewID()), b: attach(t, m, spec.NewID())}
	gw := s.a.Gateway.String()

	// The node's other interface, "uplink", with the address it is known
	// by outside.
	s.outside = newOutside(t)
	uplink := uplinkAddr.String()

	// IPv6 link-local addresses, without duplicate address detection so
	// they work at once: the bridge's and workload a's.
	br, err := netlink.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, netlink.AddrAdd(br, v6Addr("fe80::1")))
	ns, err := netns.GetFromPath(s.a.NetNSPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nsh, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	eth, err := nsh.LinkByName(workloadIf)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, nsh.AddrAdd(eth, v6Addr("fe80::2")))

	onGW := greet(t, "", "tcp4", gw+":0")
	onUplink := greet(t, "", "tcp4", uplink+":0")
	onAny := greet(t, "", "tcp4", "0.0.0.0:0")
	onAny6 := greet(t, "", "tcp6", "[::]:0")
	// The node refuses TCP over IPv4 with a reset, anything over IPv6
	// with an ICMPv6 admin-prohibited, which connect reports as EACCES.
	s.host = []target{
		{"node listener on the gateway address", "tcp4", onGW.String(), unix.ECONNREFUSED},
		{"node listener on its uplink address", "tcp4", onUplink.String(), unix.ECONNREFUSED},
		{"node listener on 0.0.0.0, via the gateway", "tcp4", net.JoinHostPort(gw, port(onAny)), unix.ECONNREFUSED},
		{"node listener on 0.0.0.0, via the uplink address", "tcp4", net.JoinHostPort(uplink, port(onAny)), unix.ECONNREFUSED},
		{"node listener on [::], via the bridge's link-local address", "tcp6", net.JoinHostPort("fe80::1%"+workloadIf, port(onAny6)), unix.EACCES},
	}
	// Frames to b are dropped (so a's ARP for b goes unanswered);
	// through the gateway, the node refuses with a reset.
	s.peer = target{"listener in another workload", "tcp4", greet(t, s.b.NetNSPath, "tcp4", s.b.IP.String()+":0").String(), nil}
	return s
}

func v6Addr(a string) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(a), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
}

func port(a net.Addr) string { return strconv.Itoa(a.(*net.TCPAddr).Port) }

// checkIsolated checks that a can open no connection to the node, on any
// of its addresses, nor to b, directly or through the gateway.
func (s *isolationScene) checkIsolated(t *testing.T, when string) {
	t.Helper()
	for _, tg := range s.host {
		switch err := try(t, s.a.NetNSPath, tg); {
		case err == nil:
			t.Errorf("%s: a workload connected to the %s (%s)", when, tg.what, tg.addr)
		case !errors.Is(err, tg.refused):
			t.Errorf("%s: a workload connecting to the %s (%s): %v, want it refused with %v", when, tg.what, tg.addr, err, tg.refused)
		}
	}
	s.checkPeerBlocked(t, when)
	s.hairpin(t, func() {
		if err := try(t, s.a.NetNSPath, s.peer); err == nil {
			t.Errorf("%s: a workload connected to a %s by routing through the gateway", when, s.peer.what)
		}
	})
}

func (s *isolationScene) checkPeerBlocked(t *testing.T, when string) {
	t.Helper()
	if err := try(t, s.a.NetNSPath, s.peer); err == nil {
		t.Errorf("%s: a workload connected to a %s", when, s.peer.what)
	}
}

// hairpin runs fn while a and b send their packets for each other to the
// gateway, as two workloads in league could by writing frames to the
// gateway's MAC: then the node routes them back onto the bridge, where
// port isolation does not apply to what the node itself sends.
func (s *isolationScene) hairpin(t *testing.T, fn func()) {
	t.Helper()
	for _, p := range [][2]Attachment{{s.a, s.b}, {s.b, s.a}} {
		from, to := p[0], p[1]
		// A redirect from the node would send a straight to b after
		// the first packet, past the path under test.
		sysctl(t, from.NetNSPath, "net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf."+workloadIf+".accept_redirects=0")
		route := &netlink.Route{Dst: ipNet(to.IP, 32), Gw: from.Gateway.AsSlice()}
		inNS(t, from.NetNSPath, func() {
			eth, err := netlink.LinkByName(workloadIf)
			if err != nil {
				t.Fatal(err)
			}
			route.LinkIndex = eth.Attrs().Index
			mustOK(t, netlink.RouteAdd(route))
		})
		defer inNS(t, from.NetNSPath, func() { mustOK(t, netlink.RouteDel(route)) })
	}
	fn()
}

func sysctl(t *testing.T, path string, settings ...string) {
	t.Helper()
	args := append([]string{"--net=" + path, "sysctl", "-q", "-w"}, settings...)
	if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
		t.Fatalf("sysctl %v in %s: %v: %s", settings, path, err, out)
	}
}

func (s *isolationScene) setIsolated(t *testing.T, on bool) {
	t.Helper()
	for _, w := range []Attachment{s.a, s.b} {
		l, err := netlink.LinkByName(w.HostVeth)
		if err != nil {
			t.Fatal(err)
		}
		mustOK(t, netlink.LinkSetIsolated(l, on))
		if portIsolated(t, w.HostVeth) != on {
			t.Fatalf("port isolation of %s did not change to %v", w.HostVeth, on)
		}
	}
}

// deleteOurTables removes the hypercore tables of every family, as if no
// Setup had ever run.
func deleteOurTables(t *testing.T) {
	t.Helper()
	nft, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range ourFamilies {
		nft.DelTable(&nftables.Table{Name: TableName, Family: f})
	}
	mustOK(t, nft.Flush())
}

func flushNeighbours(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("nsenter", "--net="+path, "ip", "neigh", "flush", "all").CombinedOutput(); err != nil {
		t.Fatalf("flush neighbours in %s: %v: %s", path, err, out)
	}
}

// greet listens on addr in the netns at path (the test's own if empty) and
// greets every connection with "hello\n" until the test ends.
func greet(t *testing.T, path, network, addr string) net.Addr {
	t.Helper()
	var l net.Listener
	var err error
	open := func() { l, err = net.Listen(network, addr) }
	if path == "" {
		open()
	} else {
		inNS(t, path, open)
	}
	if err != nil {
		t.Fatalf("listen on %s %s in %q: %v", network, addr, path, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello\n")
			c.Close()
		}
	}()
	return l.Addr()
}

// try connects from the netns at from to tg and reads the greeting; nil
// means the connection was open both ways. The timeouts only bound a
// broken test.
func try(t *testing.T, from string, tg target) error {
	t.Helper()
	var c net.Conn
	var err error
	inNS(t, from, func() { c, err = net.DialTimeout(tg.network, tg.addr, 20*time.Second) })
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err == nil && line != "hello\n" {
		err = io.ErrUnexpectedEOF
	}
	return err
}
