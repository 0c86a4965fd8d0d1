package network

import (
	"context"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// EnsureTap wires a TAP to the workload's eth0 in both directions, hands
// over eth0's MAC, address and gateway, and can be run again over its own
// work.
func TestEnsureTap(t *testing.T) {
	if isolated(t) {
		return
	}
	m := newManager(t, "10.91.0.0/24")
	a, err := m.Attach(context.Background(), spec.NewID())
	if err != nil {
		t.Fatal(err)
	}
	var info TapInfo
	for i := 0; i < 2; i++ {
		if info, err = EnsureTap(a.NetNSPath); err != nil {
			t.Fatalf("EnsureTap, time %d: %v", i+1, err)
		}
	}
	if info.Address != a.IP.String()+"/24" || info.Gateway != a.Gateway.String() {
		t.Errorf("tap info = %+v, want address %s/24 and gateway %s", info, a.IP, a.Gateway)
	}
	ns, err := netns.GetFromPath(a.NetNSPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth, err := h.LinkByName(workloadIf)
	if err != nil {
		t.Fatal(err)
	}
	tap, err := h.LinkByName(TapName)
	if err != nil {
		t.Fatalf("no %s in the workload netns: %v", TapName, err)
	}
	if info.MAC.String() != eth.Attrs().HardwareAddr.String() {
		t.Errorf("MAC = %s, want eth0's %s", info.MAC, eth.Attrs().HardwareAddr)
	}
	for _, pair := range [][2]netlink.Link{{eth, tap}, {tap, eth}} {
		filters, err := h.FilterList(pair[0], netlink.MakeHandle(0xffff, 0))
		if err != nil {
			t.Fatal(err)
		}
		if len(filters) != 1 {
			t.Fatalf("%s has %d ingress filters after two runs, want 1", pair[0].Attrs().Name, len(filters))
		}
		u, ok := filters[0].(*netlink.U32)
		if !ok || len(u.Actions) != 1 {
			t.Fatalf("%s ingress filter = %#v, want one u32 with one action", pair[0].Attrs().Name, filters[0])
		}
		if m, ok := u.Actions[0].(*netlink.MirredAction); !ok || m.Ifindex != pair[1].Attrs().Index {
			t.Errorf("%s ingress does not redirect to %s: %#v", pair[0].Attrs().Name, pair[1].Attrs().Name, u.Actions[0])
		}
	}
}
