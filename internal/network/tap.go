package network

import (
	"fmt"
	"net"
	"runtime"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TapName is the TAP device EnsureTap makes inside a workload's netns,
// where a VMM started in that netns opens it by name.
const TapName = "tap0"

// EnsureTap gives the workload netns at nsPath a TAP device wired to its
// eth0, for a microVM to use in place of the netns's own stack, and
// returns what the VM's NIC should take over from eth0: its MAC, address
// and default gateway.
//
// Every frame arriving on eth0 is redirected out of the TAP and every
// frame from the TAP out of eth0 (tc ingress filters with mirred, as
// Kata Containers does), so the VM is a plain endpoint of the workload's
// veth: its address lease, the bridge port isolation and the nftables
// rules all apply exactly as to a container. eth0 keeps its address; the
// netns's stack never sees a frame, so it never answers for the VM.
// Giving the VM eth0's MAC keeps the bridge's and the node's view of the
// workload the same as for a container.
//
// It is idempotent, so it also repairs a half-made setup.
func EnsureTap(nsPath string) (TapInfo, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return TapInfo{}, fmt.Errorf("open workload netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	type result struct {
		info TapInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// A TAP is made with an ioctl on /dev/net/tun, which acts in the
		// calling thread's netns, whatever netlink handle is used: so
		// this thread moves into the workload's netns. It is never
		// unlocked if it cannot move back, so Go then discards it.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- result{TapInfo{}, fmt.Errorf("open own netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			done <- result{TapInfo{}, fmt.Errorf("enter workload netns %s: %w", nsPath, err)}
			return
		}
		info, err := ensureTap(nsPath)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{info, err}
	}()
	r := <-done
	return r.info, r.err
}

// TapInfo is what a VM behind EnsureTap's TAP takes over from eth0.
type TapInfo struct {
	MAC net.HardwareAddr
	// Address is eth0's IPv4 address with its prefix, "10.77.0.5/16".
	Address string
	// Gateway is eth0's default gateway, "" if it has none.
	Gateway string
}

// ensureTap is EnsureTap on a thread already in the workload's netns.
func ensureTap(nsPath string) (TapInfo, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return TapInfo{}, fmt.Errorf("open netlink inside netns %s: %w", nsPath, err)
	}
	defer h.Close()
	eth, err := h.LinkByName(workloadIf)
	if err != nil {
		return TapInfo{}, fmt.Errorf("look up %s in netns %s (attach the workload to the network first): %w", workloadIf, nsPath, err)
	}
	tap, err := h.LinkByName(TapName)
	if err != nil && !isNotFound(err) {
		return TapInfo{}, fmt.Errorf("look up %s in netns %s: %w", TapName, nsPath, err)
	}
	if tap == nil {
		t := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: TapName, MTU: eth.Attrs().MTU},
			Mode:      netlink.TUNTAP_MODE_TAP,
			// Persistent and not multi-queue: QEMU opens it by name later,
			// from a process of its own.
			Flags:      netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE,
			NonPersist: false,
		}
		if err := h.LinkAdd(t); err != nil {
			return TapInfo{}, fmt.Errorf("create %s in netns %s: %w", TapName, nsPath, err)
		}
		if tap, err = h.LinkByName(TapName); err != nil {
			return TapInfo{}, fmt.Errorf("look up new %s in netns %s: %w", TapName, nsPath, err)
		}
	}
	if err := h.LinkSetUp(tap); err != nil {
		return TapInfo{}, fmt.Errorf("bring %s up in netns %s: %w", TapName, nsPath, err)
	}
	if err := redirect(h, eth, tap); err != nil {
		return TapInfo{}, err
	}
	if err := redirect(h, tap, eth); err != nil {
		return TapInfo{}, err
	}
	info := TapInfo{MAC: eth.Attrs().HardwareAddr}
	addrs, err := h.AddrList(eth, netlink.FAMILY_V4)
	if err != nil {
		return TapInfo{}, fmt.Errorf("read %s addresses in netns %s: %w", workloadIf, nsPath, err)
	}
	if len(addrs) > 0 {
		info.Address = addrs[0].IPNet.String()
	}
	routes, err := h.RouteList(eth, netlink.FAMILY_V4)
	if err != nil {
		return TapInfo{}, fmt.Errorf("read routes in netns %s: %w", nsPath, err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
			info.Gateway = r.Gw.String()
		}
	}
	return info, nil
}

// redirect sends every frame that arrives on from out of to, replacing
// whatever ingress filters from had.
func redirect(h *netlink.Handle, from, to netlink.Link) error {
	ingress := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: from.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS,
	}}
	qdiscs, err := h.QdiscList(from)
	if err != nil {
		return fmt.Errorf("list qdiscs of %s: %w", from.Attrs().Name, err)
	}
	// Replacing an ingress qdisc fails (EINVAL), so add it only if absent.
	if !slices.ContainsFunc(qdiscs, func(q netlink.Qdisc) bool { return q.Type() == "ingress" }) {
		if err := h.QdiscAdd(ingress); err != nil {
			return fmt.Errorf("add ingress qdisc on %s: %w", from.Attrs().Name, err)
		}
	}
	parent := netlink.MakeHandle(0xffff, 0)
	filters, err := h.FilterList(from, parent)
	if err != nil {
		return fmt.Errorf("list ingress filters of %s: %w", from.Attrs().Name, err)
	}
	for _, f := range filters {
		if u, ok := f.(*netlink.U32); ok && len(u.Actions) == 1 {
			if m, ok := u.Actions[0].(*netlink.MirredAction); ok && m.Ifindex == to.Attrs().Index && m.MirredAction == netlink.TCA_EGRESS_REDIR {
				return nil
			}
		}
		if err := h.FilterDel(f); err != nil {
			return fmt.Errorf("remove stale ingress filter of %s: %w", from.Attrs().Name, err)
		}
	}
	mirred := netlink.NewMirredAction(to.Attrs().Index)
	mirred.MirredAction = netlink.TCA_EGRESS_REDIR
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index, Parent: parent, Priority: 1, Protocol: unix.ETH_P_ALL,
		},
		// No selector: match every frame.
		Sel:     &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{{Mask: 0, Val: 0, Off: 0}}},
		Actions: []netlink.Action{mirred},
	}
	if err := h.FilterAdd(filter); err != nil {
		return fmt.Errorf("redirect %s to %s: %w", from.Attrs().Name, to.Attrs().Name, err)
	}
	return nil
}
