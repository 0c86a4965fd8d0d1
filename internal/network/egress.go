package network

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// blockedRanges are the IPv4 destinations no workload reaches unless an
// exception opens them: everything that is not the public internet.
// Link-local holds cloud instance metadata (169.254.169.254) and its
// credentials; the private and shared ranges hold the LAN and the cloud's
// internal services. The workloads' own subnet lies inside 10.0.0.0/8 or
// another of these, and traffic between workloads never passes this policy
// anyway (see applyRules).
var blockedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("10.0.0.0/8"),     // RFC 1918
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT, RFC 6598
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, instance metadata
	netip.MustParsePrefix("172.16.0.0/12"),  // RFC 1918
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("192.168.0.0/16"), // RFC 1918
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking, often lab networks
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and broadcast
	netip.MustParsePrefix("255.255.255.255/32"),
}

// Names of the sets in the ip table that the egress policy looks up.
const (
	setBlocked = "egress-blocked" // blockedRanges, the host's networks
	setNodes   = "egress-nodes"   // the cluster's node addresses
	setAllowed = "egress-allowed" // node-wide exceptions (--egress-allow)
	setDNS     = "egress-dns"     // the nameservers workloads are given
)

// egressPolicy is everything the forward chain needs to decide where a
// workload may send: it is all the state the rules are built from, so
// rebuilding them from it gives the same rules every time.
type egressPolicy struct {
	// hostNets are the node's own networks: its addresses and the
	// destinations of its connected routes, outside the workload subnet.
	hostNets []netip.Prefix
	// hostNetsRead is false until Setup has read hostNets.
	hostNetsRead bool
	// nodes are the cluster's node addresses.
	nodes []netip.Addr
	// allowed are the node-wide exceptions.
	allowed []netip.Prefix
	// dns are nameservers workloads may query on port 53 even when they
	// sit in a blocked range, as the host's resolver often does.
	dns []netip.Addr
	// perWorkload are the exceptions of single workloads, by address.
	perWorkload map[netip.Addr][]netip.Prefix
}

// egressRules add to the ip table's forward chain fwd, after the hairpin
// and established rules and before the final accept, the checks of what a
// workload (traffic in by bridge) may open: its own exceptions, then the
// node's, then DNS to the given nameservers, then refusal of every blocked
// destination and of the cluster's nodes.
func egressRules(c *nftables.Conn, t *nftables.Table, fwd *nftables.Chain, bridge string, p egressPolicy) error {
	fromBridge := matchIf(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge)
	sets := map[string][]netip.Prefix{
		setBlocked: append(slices.Clone(blockedRanges), p.hostNets...),
		setNodes:   hostPrefixes(p.nodes),
		setAllowed: p.allowed,
		setDNS:     hostPrefixes(p.dns),
	}
	made := map[string]*nftables.Set{}
	for _, name := range []string{setBlocked, setNodes, setAllowed, setDNS} {
		s := &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}
		if err := c.AddSet(s, intervalElements(sets[name])); err != nil {
			return fmt.Errorf("egress set %s: %w", name, err)
		}
		made[name] = s
	}

	// Exceptions of single workloads, keyed by source address.
	addrs := make([]netip.Addr, 0, len(p.perWorkload))
	for a := range p.perWorkload {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	for _, a := range addrs {
		for _, dst := range p.perWorkload[a] {
			c.AddRule(&nftables.Rule{Table: t, Chain: fwd, UserData: []byte(a.String()), Exprs: concat(
				fromBridge, matchAddr(12, netip.PrefixFrom(a, 32)), matchAddr(16, dst), verdict(expr.VerdictAccept),
			)})
		}
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		fromBridge, matchDstSet(made[setAllowed]), verdict(expr.VerdictAccept),
	)})
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
			fromBridge, matchDstSet(made[setDNS]), matchL4(proto),
			[]expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 53}},
			},
			verdict(expr.VerdictAccept),
		)})
	}
	for _, name := range []string{setBlocked, setNodes} {
		refused := concat(fromBridge, matchDstSet(made[name]))
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(refused, matchL4(unix.IPPROTO_TCP), rejectTCP())})
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
			refused, []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpAdminProhibited}},
		)})
	}
	return nil
}

// ipv6EgressRules refuse every IPv6 packet a workload would have the node
// forward. Workloads get no IPv6 addresses beyond link-local, which is
// never forwarded, so this only closes what a workload could open by
// configuring addresses of its own.
func ipv6EgressRules(c *nftables.Conn, t *nftables.Table, bridge string) {
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		matchIf(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge), matchNfproto(unix.NFPROTO_IPV6),
		[]expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: icmpxAdminProhibited}},
	)})
}

// matchAddr matches IPv4 packets whose address at offset (12 source, 16
// destination) is inside p.
func matchAddr(offset uint32, p netip.Prefix) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ipNet(p.Addr(), p.Bits()).Mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// matchDstSet matches IPv4 packets whose destination is in s.
func matchDstSet(s *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

func hostPrefixes(addrs []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		if a.Is4() {
			out = append(out, netip.PrefixFrom(a, 32))
		}
	}
	return out
}

// intervalElements turns prefixes into the elements of an interval set:
// the kernel refuses overlapping intervals, so they are merged first. Each
// range is a start element and an end element one past its last address;
// a range up to 255.255.255.255 stops one short, as there is nothing past
// it to mark its end (that address is never forwarded anyway).
func intervalElements(prefixes []netip.Prefix) []nftables.SetElement {
	type span struct{ first, last uint32 }
	var spans []span
	for _, p := range prefixes {
		if !p.Addr().Is4() {
			continue
		}
		first := addrU32(p.Masked().Addr())
		spans = append(spans, span{first, first | (1<<(32-p.Bits()) - 1)})
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.first, b.first) })
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 && (merged[n-1].last == ^uint32(0) || s.first <= merged[n-1].last+1) {
			merged[n-1].last = max(merged[n-1].last, s.last)
			continue
		}
		merged = append(merged, s)
	}
	var out []nftables.SetElement
	for _, s := range merged {
		last := min(s.last, ^uint32(0)-1)
		out = append(out,
			nftables.SetElement{Key: u32Bytes(s.first)},
			nftables.SetElement{Key: u32Bytes(last + 1), IntervalEnd: true})
	}
	return out
}

// hostNetworks lists the node's own IPv4 networks: every address, the
// network it is on, and the destination (/8 or longer) of every route
// without a gateway (directly connected), except those of the workload
// bridge. They change
// rarely; Setup reads them again at every start.
func hostNetworks(bridge string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	brIndex := -1
	if br, err := netlink.LinkByName(bridge); err == nil {
		brIndex = br.Attrs().Index
	}
	for _, a := range addrs {
		if a.LinkIndex == brIndex {
			continue
		}
		if p, ok := prefixOf(a.IPNet.IP, a.IPNet.Mask); ok {
			out = append(out, netip.PrefixFrom(p.Addr(), 32), p.Masked())
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Gw != nil || len(r.MultiPath) > 0 || r.LinkIndex == brIndex {
			continue
		}
		// Shorter ones are not a network the host is on but a way out,
		// such as a VPN's 0.0.0.0/1 without a gateway.
		if p, ok := prefixOf(r.Dst.IP, r.Dst.Mask); ok && p.Bits() >= 8 {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}
