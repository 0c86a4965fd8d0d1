package network

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the default name of the nftables tables a node owns, one
// per family: ip (NAT, forwarding and the egress policy), inet (what
// workloads may send to the host itself, and IPv6 forwarding) and bridge
// (frames between workloads). Setup replaces their contents wholesale, so
// nothing else should put rules in them. Config.Table names them per node.
const TableName = "hypercore"

// ourFamilies are the families of the tables named TableName that Setup
// owns, in the order it builds them.
var ourFamilies = []nftables.TableFamily{
	nftables.TableFamilyIPv4, nftables.TableFamilyINet, nftables.TableFamilyBridge,
}

// icmpAdminProhibited is ICMP "communication administratively prohibited",
// which makes a refused connect fail at once rather than time out.
const icmpAdminProhibited = 13

// icmpxAdminProhibited is NFT_REJECT_ICMPX_ADMIN_PROHIBITED: the same
// answer in the inet family, ICMP for IPv4 and ICMPv6 for IPv6.
const icmpxAdminProhibited = 3

// ICMPv6 neighbour solicitation and advertisement (RFC 4861), adjacent.
const (
	ndNeighborSolicit = 135
	ndNeighborAdvert  = 136
)

// ctStatusDNAT is IPS_DST_NAT from linux/netfilter/nf_conntrack_common.h,
// what `ct status dnat` tests.
const ctStatusDNAT = 1 << 5

// bridgeFilterPriority is what nft calls "priority filter" in the bridge
// family (NF_BR_PRI_FILTER_BRIDGED).
var bridgeFilterPriority = nftables.ChainPriorityRef(-200)

// applyRules replaces the hypercore tables in one nftables transaction: the
// kernel sees either the old rules or the new ones, never a mix or an empty
// table, and other tables are not touched. The rules are global: nothing in
// them names a workload, so Attach and Release never change them.
//
// What they enforce, with the bridge named hc0:
//
//   - ip hypercore: workloads leaving the node are masqueraded; nobody
//     outside opens connections to a workload; workloads never reach each
//     other by routing through the node (refused: TCP reset, else ICMP
//     admin-prohibited, which the kernel may rate-limit away); workloads
//     reach the public internet but not link-local, private or reserved
//     ranges, the host's own networks or the cluster's nodes, unless an
//     exception of the node or of the workload opens them (egressRules).
//   - inet hypercore: no IPv6 packet from a workload is forwarded; nothing
//     a workload sends to the node itself gets in
//     (any address of the node, IPv4 or IPv6, any protocol, ICMP echo
//     included), except replies in connections the node opened, such as
//     the proxy's and the readiness probe's, and IPv6 neighbour discovery.
//     TCP over IPv4 is refused with a reset, so a connect fails at once as
//     if nothing listened; anything else gets an ICMP(v6) admin-prohibited.
//   - bridge hypercore: no frame is forwarded from a workload's port to
//     another (both named hc*, as every host veth is).
//     Port isolation, which Attach sets on every host veth, already stops
//     that; this rule holds even if isolation is turned off.
//
// With br_netfilter loaded, bridged IPv4 may also pass the ip hooks, with
// the bridge as both input and output device; isolation and the bridge
// table stop it before, and the ip forward rule drops it after, so the
// outcome does not depend on the bridge-nf sysctls, which other software
// on the host may rely on and which are left as they are.
func applyRules(table, bridge string, subnet netip.Prefix, egress egressPolicy) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables netlink socket: %w", err)
	}
	if err := natRules(c, replaceTable(c, table, nftables.TableFamilyIPv4), bridge, subnet, egress); err != nil {
		return err
	}
	inet := replaceTable(c, table, nftables.TableFamilyINet)
	hostInputRules(c, inet, bridge)
	ipv6EgressRules(c, inet, bridge)
	bridgeRules(c, replaceTable(c, table, nftables.TableFamilyBridge))
	if err := c.Flush(); err != nil {
		return fmt.Errorf("replace nftables tables ip, inet and bridge %s (are nf_tables and its inet and bridge families available?): %w", table, err)
	}
	return nil
}

// replaceTable queues the deletion of our table of family, whatever is in
// it, and its creation anew, empty.
func replaceTable(c *nftables.Conn, name string, family nftables.TableFamily) *nftables.Table {
	t := &nftables.Table{Name: name, Family: family}
	// Add-then-delete makes the delete valid when the table is absent.
	c.AddTable(t)
	c.DelTable(t)
	return c.AddTable(t)
}

func natRules(c *nftables.Conn, t *nftables.Table, bridge string, subnet netip.Prefix, egress egressPolicy) error {
	accept := nftables.ChainPolicyAccept
	post := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
	})
	// Workloads leaving the node take the address of the interface they
	// leave by; traffic staying on the bridge keeps its real source.
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: concat(
		matchSource(subnet), matchIf(expr.MetaKeyOIFNAME, expr.CmpOpNeq, bridge), []expr.Any{&expr.Masq{}},
	)})

	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	// Workloads never reach each other, not even by sending to the
	// gateway's MAC and having the node route the packet back onto the
	// bridge. First, so no conntrack entry from before can let it by.
	hairpin := concat(matchIf(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge), matchIf(expr.MetaKeyOIFNAME, expr.CmpOpEq, bridge))
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(hairpin, matchL4(unix.IPPROTO_TCP), rejectTCP())})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		hairpin, []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpAdminProhibited}},
	)})
	// Replies to anything already allowed.
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		matchCt(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept),
	)})
	// What workloads may not open, and the exceptions.
	if err := egressRules(c, t, fwd, bridge, egress); err != nil {
		return err
	}
	// Workloads may go anywhere else: out of the node.
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		matchIf(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge), verdict(expr.VerdictAccept),
	)})
	// Ports published by destination NAT must get through the next rule.
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		matchIf(expr.MetaKeyOIFNAME, expr.CmpOpEq, bridge), matchCt(expr.CtKeySTATUS, ctStatusDNAT), verdict(expr.VerdictAccept),
	)})
	// Nobody outside may open connections to a workload directly; the
	// host itself still can, as its traffic does not pass this hook.
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		matchIf(expr.MetaKeyOIFNAME, expr.CmpOpEq, bridge),
		[]expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpAdminProhibited}},
	)})
	return nil
}

// hostInputRules keep workloads away from everything the node listens on:
// the input hook sees every packet delivered locally, whichever of the
// node's addresses it is sent to, so one interface match covers them all.
func hostInputRules(c *nftables.Conn, t *nftables.Table, bridge string) {
	accept := nftables.ChainPolicyAccept
	in := c.AddChain(&nftables.Chain{
		Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	// Replies to the node's own connections into workloads (the proxy,
	// the readiness probe) and the ICMP errors that belong to them.
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: concat(
		matchIf(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge),
		matchCt(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept),
	)})
	// IPv6 neighbour discovery, what ARP (which no IP hook sees) is for
	// IPv4, so that the refusals below reach a workload at once instead
	// of its connects hanging on an unanswered neighbour solicitation.
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: concat(
		matchIf(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge), matchL4(unix.IPPROTO_ICMPV6),
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{ndNeighborSolicit}, ToData: []byte{ndNeighborAdvert}},
		},
		verdict(expr.VerdictAccept),
	)})
	// Everything else a workload sends to the node. TCP over IPv4 gets a
	// reset, which no ICMP rate limit holds back, so a connect is refused
	// at once. Not over IPv6: a reset is routed without regard to the
	// interface the segment came in by, so to a workload's link-local
	// address it may leave by the wrong one, while ICMPv6 errors go back
	// where the packet came from. The rest gets an ICMP(v6)
	// admin-prohibited (which fails a connect at once too, as long as
	// the kernel's ICMP rate limit lets it go).
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: concat(
		matchIf(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge), matchNfproto(unix.NFPROTO_IPV4), matchL4(unix.IPPROTO_TCP), rejectTCP(),
	)})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: concat(
		matchIf(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge),
		[]expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: icmpxAdminProhibited}},
	)})
}

// bridgeRules drop every frame the bridge would forward from one workload's
// port to another's. Frames to and from the node itself take the bridge's
// input and output hooks, not this one, so the node still reaches every
// workload. The bridge family cannot reject in its forward hook, so this
// drops; and as kernels without nft_meta_bridge cannot match the bridge's
// name (meta ibrname) there, the rule matches both ports by the name
// prefix all host veths share. Ports of other bridges are only affected if
// both ends are named hc* too.
func bridgeRules(c *nftables.Conn, t *nftables.Table) {
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: bridgeFilterPriority, Policy: &accept,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		matchIfPrefix(expr.MetaKeyIIFNAME, vethPrefix), matchIfPrefix(expr.MetaKeyOIFNAME, vethPrefix), verdict(expr.VerdictDrop),
	)})
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// matchSource matches IPv4 packets whose source is inside subnet.
func matchSource(subnet netip.Prefix) []expr.Any {
	mask := ipNet(subnet.Addr(), subnet.Bits()).Mask
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: subnet.Masked().Addr().AsSlice()},
	}
}

// matchIf compares the input or output interface name with name.
func matchIf(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
	}
}

// matchIfPrefix matches interface names that start with prefix, as nft's
// iifname "prefix*" does: the comparison covers only the prefix's bytes.
func matchIfPrefix(key expr.MetaKey, prefix string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)},
	}
}

// matchNfproto matches the network protocol in an inet table.
func matchNfproto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// matchL4 matches the transport protocol, IPv4 or IPv6.
func matchL4(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// rejectTCP answers a TCP segment with a reset; only valid after a match
// on TCP.
func rejectTCP() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
}

// matchCt matches when any of bits is set in the conntrack key (state or
// status, both host-endian bitmasks).
func matchCt(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: k}}
}

// ifname pads name the way the kernel stores interface names.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
