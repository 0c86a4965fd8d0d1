package network

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestSubnetOverlappingTheHostIsRefusedOrAvoided gives the host an
// interface inside the first candidate subnet, as on a LAN that happens to
// use it: a configured subnet there is refused, naming both and the flag;
// with none configured another is picked, recorded and kept.
func TestSubnetOverlappingTheHostIsRefusedOrAvoided(t *testing.T) {
	if isolated(t) {
		return
	}
	// A veth, as the dummy module may be missing; its peer stays here.
	mustOK(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}, PeerName: "lan0peer"}))
	dummy, err := netlink.LinkByName("lan0")
	mustOK(t, err)
	mustOK(t, netlink.AddrAdd(dummy, &netlink.Addr{IPNet: ipNet(netip.MustParseAddr("10.77.3.4"), 24)}))
	mustOK(t, netlink.LinkSetUp(dummy))
	// A route elsewhere, via that LAN, to the third candidate.
	mustOK(t, netlink.RouteAdd(&netlink.Route{LinkIndex: dummy.Attrs().Index, Dst: ipNet(netip.MustParseAddr("10.79.128.0"), 20), Gw: netip.MustParseAddr("10.77.3.1").AsSlice()}))

	if peer, err := netlink.LinkByName("lan0peer"); err == nil {
		mustOK(t, netlink.LinkSetUp(peer))
	}

	dir := t.TempDir()
	_, err = ChooseSubnet(netip.MustParsePrefix("10.77.0.0/16"), dir, DefaultBridge)
	if err == nil {
		t.Fatal("a subnet holding a host address was accepted")
	}
	for _, want := range []string{"10.77.0.0/16", "10.77.3.4/24 on lan0", "--subnet"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %q", err, want)
		}
	}
	if _, err := ChooseSubnet(netip.MustParsePrefix("10.79.0.0/16"), dir, DefaultBridge); err == nil || !strings.Contains(err.Error(), "route to 10.79.128.0/20") {
		t.Errorf("a subnet holding a host route: %v, want it refused naming the route", err)
	}
	if p, err := ChooseSubnet(netip.MustParsePrefix("10.99.0.0/16"), dir, DefaultBridge); err != nil || p != netip.MustParsePrefix("10.99.0.0/16") {
		t.Errorf("a free configured subnet: %v, %v", p, err)
	}

	got, err := ChooseSubnet(netip.Prefix{}, dir, DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("10.78.0.0/16"); got != want {
		t.Errorf("picked %s, want %s, the first candidate clear of the host", got, want)
	}
	if data, err := os.ReadFile(filepath.Join(dir, subnetFile)); err != nil || strings.TrimSpace(string(data)) != got.String() {
		t.Errorf("recorded subnet %q, %v; want %s", data, err, got)
	}

	// The node's own bridge in that subnet does not count against it at
	// the next start, and the choice stays although 10.78 is now taken.
	newManagerWith(t, Config{Subnet: got})
	again, err := ChooseSubnet(netip.Prefix{}, dir, DefaultBridge)
	if err != nil || again != got {
		t.Errorf("at the next start: %v, %v; want the recorded %s", again, err, got)
	}
	// A second node beside it picks another.
	other, err := ChooseSubnet(netip.Prefix{}, t.TempDir(), "hcb2")
	if err != nil || other == got || other.Overlaps(netip.MustParsePrefix("10.77.0.0/16")) || other.Overlaps(netip.MustParsePrefix("10.79.0.0/16")) {
		t.Errorf("a second node picked %v, %v; want a subnet clear of the first node and the host", other, err)
	}
}
