package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/hypercore-dev/hypercore/internal/atomicfile"
)

// SubnetCandidates are the /16s a node picks its workload subnet from when
// none is configured, in order: the first that overlaps nothing on the
// host wins. They lie in 10.0.0.0/8, away from the 10.0.x and 10.1.x that
// home routers and clouds favour.
var SubnetCandidates = func() []netip.Prefix {
	var out []netip.Prefix
	for _, second := range []byte{77, 78, 79, 87, 97, 107, 117, 127, 137, 147, 157, 167, 177, 187, 197, 207} {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, second, 0, 0}), 16))
	}
	return out
}()

// SubnetFlag is the flag that sets the workload subnet, named in errors.
const SubnetFlag = "--subnet"

// subnetFile records, in the network state dir, the subnet a node picked,
// so it keeps it across restarts even when the host's networks change.
const subnetFile = "subnet"

// hostUse is one address or route of the host, what a workload subnet must
// not overlap.
type hostUse struct {
	prefix netip.Prefix
	what   string // "address 10.77.0.5/24 on eth0"
}

// hostUses lists the host's IPv4 addresses and route destinations, leaving
// out those on bridge (the workload bridge from an earlier start) and the
// default route.
func hostUses(bridge string) ([]hostUse, error) {
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []hostUse
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range addrs {
		if names[a.LinkIndex] == bridge {
			continue
		}
		if p, ok := prefixOf(a.IPNet.IP, a.IPNet.Mask); ok {
			out = append(out, hostUse{p, fmt.Sprintf("address %s on %s", p, names[a.LinkIndex])})
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || names[r.LinkIndex] == bridge {
			continue
		}
		if p, ok := prefixOf(r.Dst.IP, r.Dst.Mask); ok && p.Bits() > 0 {
			out = append(out, hostUse{p.Masked(), fmt.Sprintf("route to %s via %s", p.Masked(), names[r.LinkIndex])})
		}
	}
	return out, nil
}

// overlap returns the first host address or route that shares addresses
// with subnet.
func overlap(subnet netip.Prefix, uses []hostUse) (hostUse, bool) {
	for _, u := range uses {
		if u.prefix.Overlaps(subnet) {
			return u, true
		}
	}
	return hostUse{}, false
}

// CheckSubnet refuses a workload subnet that overlaps an address or route
// of the host (other than the workload bridge's own): workloads would
// shadow the host's network, and the node would lose its way to it.
func CheckSubnet(subnet netip.Prefix, bridge string) error {
	uses, err := hostUses(bridge)
	if err != nil {
		return err
	}
	if u, ok := overlap(subnet, uses); ok {
		return fmt.Errorf("workload subnet %s overlaps the host's %s; choose a free range with %s (or leave it unset to pick one)", subnet, u.what, SubnetFlag)
	}
	return nil
}

// ChooseSubnet is the workload subnet of the node whose network state is
// in stateDir. A configured subnet is checked against the host and used.
// Without one, the subnet recorded at an earlier start is used again (or,
// for a node from before subnets were recorded, DefaultSubnet, which it
// had);
// failing that, the first of SubnetCandidates that overlaps nothing on the
// host is picked and recorded. A recorded subnet the host has since come
// to overlap is an error, not a silent change, as the workloads' leases
// are in it.
func ChooseSubnet(configured netip.Prefix, stateDir, bridge string) (netip.Prefix, error) {
	if configured.IsValid() {
		return configured.Masked(), CheckSubnet(configured.Masked(), bridge)
	}
	path := filepath.Join(stateDir, subnetFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		p, err := netip.ParsePrefix(strings.TrimSpace(string(data)))
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("recorded workload subnet in %s does not parse (%v); delete the file to pick again, or set %s", path, err, SubnetFlag)
		}
		return p, CheckSubnet(p, bridge)
	case !errors.Is(err, os.ErrNotExist):
		return netip.Prefix{}, fmt.Errorf("read recorded workload subnet: %w", err)
	}
	// A node from before subnets were picked had the old default.
	if _, err := os.Stat(filepath.Join(stateDir, "leases.db")); err == nil {
		if err := writeFileAtomic(path, []byte(DefaultSubnet.String()+"\n")); err != nil {
			return netip.Prefix{}, fmt.Errorf("record workload subnet: %w", err)
		}
		return DefaultSubnet, CheckSubnet(DefaultSubnet, bridge)
	}
	uses, err := hostUses(bridge)
	if err != nil {
		return netip.Prefix{}, err
	}
	// Another node's bridge on this host counts as a host address and
	// route, so two nodes never pick the same subnet.
	for _, c := range SubnetCandidates {
		if _, taken := overlap(c, uses); taken {
			continue
		}
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return netip.Prefix{}, fmt.Errorf("create network state dir %s: %w", stateDir, err)
		}
		if err := writeFileAtomic(path, []byte(c.String()+"\n")); err != nil {
			return netip.Prefix{}, fmt.Errorf("record workload subnet: %w", err)
		}
		return c, nil
	}
	return netip.Prefix{}, fmt.Errorf("every candidate workload subnet (%s to %s) overlaps an address or route of the host; set a free one with %s",
		SubnetCandidates[0], SubnetCandidates[len(SubnetCandidates)-1], SubnetFlag)
}

func writeFileAtomic(path string, data []byte) error {
	return atomicfile.WriteFile(path, data, 0o600)
}

// prefixOf converts an IPv4 address and mask from netlink.
func prefixOf(ip net.IP, mask net.IPMask) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := mask.Size()
	if bits != 32 && bits != 128 {
		return netip.Prefix{}, false
	}
	if bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), ones >= 0
}
