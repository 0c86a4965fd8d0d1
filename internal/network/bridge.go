package network

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// ensureBridge brings the bridge to the wanted state whatever state it is
// in: missing, down, or carrying an address from an older subnet.
func ensureBridge(name string, subnet netip.Prefix) (netlink.Link, error) {
	br, err := netlink.LinkByName(name)
	if isNotFound(err) {
		err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: bridgeMAC(name)}})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		br, err = netlink.LinkByName(name)
	}
	if err != nil {
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("interface %s exists but is a %s, not a bridge; delete it or configure another bridge name", name, br.Type())
	}

	// A bridge without a MAC of its own takes the lowest of its ports,
	// which changes as workloads come and go and leaves every workload's
	// ARP entry for the gateway stale.
	if mac := bridgeMAC(name); !bytes.Equal(br.Attrs().HardwareAddr, mac) {
		if err := netlink.LinkSetHardwareAddr(br, mac); err != nil {
			return nil, fmt.Errorf("set MAC %s on bridge %s: %w", mac, name, err)
		}
	}

	want := gatewayOf(subnet)
	addr := &netlink.Addr{IPNet: ipNet(want, subnet.Bits())}
	if err := netlink.AddrReplace(br, addr); err != nil {
		return nil, fmt.Errorf("set address %s/%d on bridge %s: %w", want, subnet.Bits(), name, err)
	}
	if err := dropOtherAddrs(netlink.AddrList, netlink.AddrDel, br, want); err != nil {
		return nil, fmt.Errorf("on bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bring bridge %s up: %w", name, err)
	}
	if err := isolatePorts(br); err != nil {
		return nil, err
	}
	return br, nil
}

// isolatePorts turns bridge port isolation on for every port of br, so that
// workloads plugged in by an older daemon, or whose flag was cleared, are
// cut off from each other before Adopt gets to them. Only hypercore plugs
// into its bridge, so every port is a workload's.
func isolatePorts(br netlink.Link) error {
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		if l.Attrs().MasterIndex != br.Attrs().Index {
			continue
		}
		// A port that goes away meanwhile (a concurrent Release) is fine.
		if err := netlink.LinkSetIsolated(l, true); err != nil && !isNotFound(err) {
			return fmt.Errorf("isolate port %s of bridge %s: %w", l.Attrs().Name, br.Attrs().Name, err)
		}
	}
	return nil
}

// dropOtherAddrs removes IPv4 addresses other than keep, left over from a
// subnet that is no longer configured. It takes the list and delete calls
// so it works both on the host and through a handle inside a netns.
func dropOtherAddrs(list func(netlink.Link, int) ([]netlink.Addr, error), del func(netlink.Link, *netlink.Addr) error, link netlink.Link, keep netip.Addr) error {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return list(link, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	for i := range addrs {
		if a, ok := netip.AddrFromSlice(addrs[i].IP.To4()); ok && a == keep {
			continue
		}
		if err := del(link, &addrs[i]); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale address %s from %s: %w", addrs[i].IPNet, link.Attrs().Name, err)
		}
	}
	return nil
}

// enableForwarding turns on IPv4 forwarding, without which nothing from a
// workload ever leaves the node. The write is skipped when already on, as
// writing the sysctl resets per-interface forwarding settings.
func enableForwarding() error {
	cur, err := os.ReadFile(ipForwardPath)
	if err == nil && bytes.Equal(bytes.TrimSpace(cur), []byte("1")) {
		return nil
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding (%s): %w", ipForwardPath, err)
	}
	return nil
}

// bridgeMAC is a fixed, locally administered MAC for the bridge, derived
// from its name so it is the same at every start.
func bridgeMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("hypercore bridge " + name))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed under it, which concurrent Attach calls make likely.
func retryDump[T any](dump func() (T, error)) (T, error) {
	for range 4 {
		v, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return dump()
}

// lookupBridge finds the bridge Attach plugs into, which Setup makes.
func lookupBridge(name string) (netlink.Link, error) {
	br, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil, fmt.Errorf("bridge %s does not exist; call Setup before Attach", name)
	}
	if err != nil {
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("interface %s is a %s, not a bridge; call Setup to see why", name, br.Type())
	}
	return br, nil
}
