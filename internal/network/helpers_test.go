package network

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// childEnv names the test a re-executed test binary is to run for real.
const childEnv = "HYPERCORE_NETWORK_TEST_CHILD"

// isolated re-runs the calling test in a child process that unshare(1) has
// put in fresh network and mount namespaces. Every thread of the child,
// including goroutines the test starts, is then cut off from the host's
// network, and mounts vanish with the child. It reports true in the parent,
// which must return at once; the child gets false and runs the test body.
func isolated(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return false
	}
	if os.Getenv(childEnv) != "" {
		t.Fatalf("child for %s was asked to run %s", os.Getenv(childEnv), t.Name())
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare(1) from util-linux is not installed")
	}
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "--net", "--mount", "--propagation", "private", "--",
		exe, "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	switch {
	case err != nil:
		t.Fatalf("test failed in its network namespace: %v\n%s", err, out)
	case strings.Contains(string(out), "--- SKIP: "+t.Name()):
		t.Skipf("skipped in its network namespace:\n%s", out)
	case !strings.Contains(string(out), "--- PASS: "+t.Name()):
		t.Fatalf("test did not run in its network namespace:\n%s", out)
	case testing.Verbose():
		t.Logf("output in its network namespace:\n%s", out)
	}
	return true
}

// newManager makes a Manager on a fresh state dir, already Setup, and
// arranges for its mounts to be gone before the state dir is removed.
func newManager(t *testing.T, subnet string) *Manager {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { testutil.UnmountUnder(t, dir) })
	m, err := New(Config{StateDir: dir, Subnet: netip.MustParsePrefix(subnet)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

// parseID is spec.ParseID for ids a test spells out.
func parseID(t *testing.T, s string) spec.ID {
	t.Helper()
	id, err := spec.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// inNS runs fn on a thread switched into the netns at path. Sockets made in
// fn stay in that netns after the thread switches back.
func inNS(t *testing.T, path string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(path)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// Stay locked: the runtime discards the thread.
			t.Errorf("restore netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// listen opens a TCP listener on addr inside the netns at path, or in the
// test's own netns when path is empty.
func listen(t *testing.T, path, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	var err error
	open := func() { l, err = net.Listen("tcp4", addr) }
	if path == "" {
		open()
	} else {
		inNS(t, path, open)
	}
	if err != nil {
		t.Fatalf("listen on %s in %q: %v", addr, path, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dial connects to addr from inside the netns at path (the test's own when
// empty). The timeout only bounds a broken test; nothing asserts on time.
func dial(t *testing.T, path, addr string) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	connect := func() { c, err = net.DialTimeout("tcp4", addr, 20*time.Second) }
	if path == "" {
		connect()
	} else {
		inNS(t, path, connect)
	}
	return c, err
}

// serveOne accepts one connection on l, greets it and reports the peer's
// address as the server saw it.
func serveOne(l net.Listener) <-chan netip.Addr {
	seen := make(chan netip.Addr, 1)
	go func() {
		defer close(seen)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "hello\n")
		seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	}()
	return seen
}

// roundTrip connects from the netns at from to l and returns the source
// address l saw, failing the test if no greeting comes back.
func roundTrip(t *testing.T, from string, l net.Listener) netip.Addr {
	t.Helper()
	seen := serveOne(l)
	c, err := dial(t, from, l.Addr().String())
	if err != nil {
		t.Fatalf("connect from %s to %s: %v", filepath.Base(from), l.Addr(), err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a broken test fails, not hangs
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Fatalf("read greeting from %s: %q, %v", l.Addr(), line, err)
	}
	return <-seen
}

// Addresses of the "outside" that newOutside makes: the node's uplink, the
// host beyond it on the uplink's network, and an address that host serves
// which the node reaches through it, standing in for the internet.
var (
	uplinkAddr  = netip.MustParseAddr("192.0.2.2")
	outsideAddr = netip.MustParseAddr("192.0.2.1")
	publicAddr  = netip.MustParseAddr("203.0.113.7")
)

// newOutside puts an "outside" netns behind a veth, as if it were the
// internet: the node's end is "uplink" with uplinkAddr/24, the far end eth0
// with outsideAddr/24, and publicAddr on its loopback, which the node
// routes to through outsideAddr. The outside gets a route to the workloads
// through the uplink, so that only the firewall can stop it connecting in.
// It returns the path of the outside netns.
func newOutside(t *testing.T) string {
	t.Helper()
	outside := filepath.Join(t.TempDir(), "outside")
	t.Cleanup(func() { removeNetNS(outside) })
	if err := ensureNetNS(outside, ""); err != nil {
		t.Fatal(err)
	}
	ns, err := netns.GetFromPath(outside)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netlink.LinkAdd(&netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns)),
	}); err != nil {
		t.Fatal(err)
	}
	up, err := netlink.LinkByName("uplink")
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, netlink.AddrAdd(up, &netlink.Addr{IPNet: ipNet(uplinkAddr, 24)}))
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
	mustOK(t, nsh.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(outsideAddr, 24)}))
	mustOK(t, nsh.LinkSetUp(eth))
	_, workloads, _ := net.ParseCIDR("10.77.0.0/16")
	mustOK(t, nsh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: workloads, Gw: uplinkAddr.AsSlice()}))
	serveOnLoopback(t, nsh, publicAddr)
	mustOK(t, netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: ipNet(netip.PrefixFrom(publicAddr, 24).Masked().Addr(), 24), Gw: outsideAddr.AsSlice()}))
	return outside
}

// serveOnLoopback brings up the loopback of the netns behind h and gives
// it addrs, so that the netns answers on them as a host beyond a router.
func serveOnLoopback(t *testing.T, h *netlink.Handle, addrs ...netip.Addr) {
	t.Helper()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, h.LinkSetUp(lo))
	for _, a := range addrs {
		mustOK(t, h.AddrAdd(lo, &netlink.Addr{IPNet: ipNet(a, 32)}))
	}
}

// nodeReaches reports whether the node (the test's own netns) can open a
// connection to a listener inside w and read its greeting, as the proxy
// and the readiness probe do. The workload sees it come from the gateway.
func nodeReaches(t *testing.T, w Attachment) bool {
	t.Helper()
	l := listen(t, w.NetNSPath, w.IP.String()+":0")
	seen := serveOne(l)
	c, err := dial(t, "", l.Addr().String())
	if err != nil {
		t.Logf("node connecting to workload %s: %v", w.IP, err)
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a broken test fails, not hangs
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "hello\n" {
		t.Logf("reading the greeting of workload %s: %q, %v", w.IP, line, err)
		return false
	}
	if src := <-seen; src != w.Gateway {
		t.Errorf("workload %s saw the node as %s, want the gateway %s", w.IP, src, w.Gateway)
	}
	return true
}

// portIsolated reads back whether the bridge port name is isolated.
func portIsolated(t *testing.T, name string) bool {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	pi, err := netlink.LinkGetProtinfo(l)
	if err != nil {
		t.Fatalf("read bridge port flags of %s: %v", name, err)
	}
	return pi.Isolated
}

// setBridgeNF sets br_netfilter's bridge-nf-call-iptables and -ip6tables,
// which are per netns, to v. "1" needs br_netfilter and skips without it.
func setBridgeNF(t *testing.T, v string) {
	t.Helper()
	for _, name := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
		p := "/proc/sys/net/bridge/" + name
		if _, err := os.Stat(p); err != nil {
			if v == "1" {
				t.Skip("br_netfilter is not loaded; bridged traffic skips the IP hooks anyway")
			}
			continue
		}
		mustOK(t, os.WriteFile(p, []byte(v), 0o644))
	}
}
