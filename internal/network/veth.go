package network

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// workloadIf is the interface name a workload sees, as in most runtimes.
const workloadIf = "eth0"

// aliasPrefix marks host veths as ours and says whose they are, so Reconcile
// can find strays even when their lease and netns are long gone.
const aliasPrefix = "hypercore:"

// vethPrefix starts the name of every host veth; the bridge family rule
// that keeps workloads apart matches it.
const vethPrefix = "hc"

// hostVethName derives the host end's name from id. Hashing, rather than
// cutting the id short, keeps ids that share a prefix apart; 48 bits make a
// collision between live workloads negligible, and the alias check in plumb
// turns one into an error rather than a stolen interface. "hc" plus 12 hex
// characters fits the kernel's 15-character limit.
func hostVethName(id spec.ID) string {
	sum := sha256.Sum256([]byte(id))
	return vethPrefix + hex.EncodeToString(sum[:6])
}

func vethAlias(id spec.ID) string { return aliasPrefix + id.String() }

// plumb makes, or repairs, the veth pair joining the netns to the bridge and
// configures the workload side. Each step checks before it acts so it can be
// rerun over whatever a crash left behind.
//
// The host end is an isolated bridge port (IFLA_BRPORT_ISOLATED): the
// bridge forwards nothing between two isolated ports, so workloads cannot
// reach each other, while the node, on the bridge device itself, reaches
// all of them. The flag lives on the veth, so it goes with it at Release.
func plumb(br netlink.Link, id spec.ID, ns netns.NsHandle, ip netip.Addr, bits int) error {
	nsh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("open netlink inside netns of %s: %w", id, err)
	}
	defer nsh.Close()

	name := hostVethName(id)
	host, err := netlink.LinkByName(name)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("look up host veth %s: %w", name, err)
	}
	if host != nil && host.Attrs().Alias != "" && host.Attrs().Alias != vethAlias(id) {
		return fmt.Errorf("host veth name %s for %s is taken by %q; release that workload first", name, id, host.Attrs().Alias)
	}
	peer, err := nsh.LinkByName(workloadIf)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("look up %s inside netns of %s: %w", workloadIf, id, err)
	}

	if !paired(host, peer, ns) {
		// Half a pair is useless: the host end may point into a
		// namespace that was replaced. Start over from nothing.
		if host != nil {
			if err := netlink.LinkDel(host); err != nil && !isNotFound(err) {
				return fmt.Errorf("delete stale host veth %s: %w", name, err)
			}
		}
		if peer != nil {
			if err := nsh.LinkDel(peer); err != nil && !isNotFound(err) {
				return fmt.Errorf("delete stale %s inside netns of %s: %w", workloadIf, id, err)
			}
		}
		// Creating the peer straight inside the netns means there is
		// never a half-moved interface with a temporary name to clean up.
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: name, MTU: br.Attrs().MTU},
			PeerName:      workloadIf,
			PeerNamespace: netlink.NsFd(int(ns)),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s for %s: %w", name, id, err)
		}
		if host, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("look up new host veth %s: %w", name, err)
		}
	}

	if host.Attrs().Alias != vethAlias(id) {
		if err := netlink.LinkSetAlias(host, vethAlias(id)); err != nil {
			return fmt.Errorf("label host veth %s with its workload: %w", name, err)
		}
	}
	if err := netlink.LinkSetMaster(host, br); err != nil {
		return fmt.Errorf("attach host veth %s to bridge %s: %w", name, br.Attrs().Name, err)
	}
	// Before the port comes up, so it never forwards unisolated.
	if err := netlink.LinkSetIsolated(host, true); err != nil {
		return fmt.Errorf("isolate host veth %s on bridge %s from other workloads: %w", name, br.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring host veth %s up: %w", name, err)
	}
	if err := configureInside(nsh, ip, bits); err != nil {
		return fmt.Errorf("configure netns of %s: %w", id, err)
	}
	return forgetNeighbour(br, ip)
}

// forgetNeighbour drops the node's ARP entry for ip on the bridge. After a
// repair, or when a released address goes to a new workload, the entry
// names a MAC that is gone, and the node, which is the one opening
// connections to workloads (they send it nothing unasked), would keep
// sending to it until the entry expires. Without it the node asks afresh.
func forgetNeighbour(br netlink.Link, ip netip.Addr) error {
	n := &netlink.Neigh{LinkIndex: br.Attrs().Index, Family: netlink.FAMILY_V4, IP: ip.AsSlice()}
	if err := netlink.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("drop the node's ARP entry for %s on %s: %w", ip, br.Attrs().Name, err)
	}
	return nil
}

// paired reports whether host and peer, inside ns, are the two ends of one
// veth. Interface indexes are per namespace, so the host end's peer index
// alone could name an interface of the same index in another namespace,
// the host's own among them: the peer's namespace must be ns as well.
func paired(host, peer netlink.Link, ns netns.NsHandle) bool {
	hv, ok := host.(*netlink.Veth)
	if !ok || peer == nil || peer.Type() != "veth" || hv.Attrs().NetNsID < 0 {
		return false
	}
	nsid, err := netlink.GetNetNsIdByFd(int(ns))
	if err != nil || nsid != hv.Attrs().NetNsID {
		return false
	}
	idx, err := netlink.VethPeerIndex(hv)
	return err == nil && idx == peer.Attrs().Index
}

// configureInside gives the workload its address, loopback and a default
// route through the bridge.
func configureInside(nsh *netlink.Handle, ip netip.Addr, bits int) error {
	lo, err := nsh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("look up lo: %w", err)
	}
	if err := nsh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	eth, err := nsh.LinkByName(workloadIf)
	if err != nil {
		return fmt.Errorf("look up %s: %w", workloadIf, err)
	}
	if err := nsh.AddrReplace(eth, &netlink.Addr{IPNet: ipNet(ip, bits)}); err != nil {
		return fmt.Errorf("set address %s/%d on %s: %w", ip, bits, workloadIf, err)
	}
	if err := dropOtherAddrs(nsh.AddrList, nsh.AddrDel, eth, ip); err != nil {
		return err
	}
	if err := nsh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring %s up: %w", workloadIf, err)
	}
	gw := gatewayOf(netip.PrefixFrom(ip, bits))
	route := &netlink.Route{
		LinkIndex: eth.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        gw.AsSlice(),
	}
	if err := nsh.RouteReplace(route); err != nil {
		return fmt.Errorf("set default route via %s: %w", gw, err)
	}
	return nil
}

// deleteHostVeth removes id's host veth, and with it the workload end. A
// link of that name labelled for another workload is left alone.
func deleteHostVeth(id spec.ID) error {
	name := hostVethName(id)
	link, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up host veth %s: %w", name, err)
	}
	if a := link.Attrs().Alias; a != "" && a != vethAlias(id) {
		return nil
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete host veth %s: %w", name, err)
	}
	return nil
}

// strayVeths lists host veths of ours that belong to no id in keep: those
// labelled by us, and any veth on our bridge, which only we plug into. A
// label that names no workload id belongs to none in keep.
func strayVeths(bridge string, keep map[spec.ID]bool) ([]netlink.Link, error) {
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	brIndex := -1
	for _, l := range links {
		if l.Attrs().Name == bridge {
			brIndex = l.Attrs().Index
		}
	}
	keepNames := map[string]bool{}
	for id := range keep {
		keepNames[hostVethName(id)] = true
	}
	var out []netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || keepNames[a.Name] {
			continue
		}
		// A labelled veth plugged into another bridge belongs to another
		// node sharing this network namespace.
		ours := a.MasterIndex == brIndex || a.MasterIndex == 0
		if owner, ok := strings.CutPrefix(a.Alias, aliasPrefix); ok && ours && !kept(keep, owner) || a.MasterIndex == brIndex {
			out = append(out, l)
		}
	}
	return out, nil
}

// kept reports whether name, read from a veth's label, is an id in keep.
func kept(keep map[spec.ID]bool, name string) bool {
	id, err := spec.ParseID(name)
	return err == nil && keep[id]
}

func deleteLink(l netlink.Link) error {
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete stray veth %s: %w", l.Attrs().Name, err)
	}
	return nil
}
