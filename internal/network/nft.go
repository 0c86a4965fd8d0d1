package network

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family ip) that hypercore owns. Setup
// replaces its contents wholesale, so nothing else should put rules in it.
const TableName = "hypercore"

// icmpAdminProhibited is ICMP "communication administratively prohibited",
// which makes a refused connect fail at once rather than time out.
const icmpAdminProhibited = 13

// ctStatusDNAT is IPS_DST_NAT from linux/netfilter/nf_conntrack_common.h,
// what `ct status dnat` tests.
const ctStatusDNAT = 1 << 5

// applyRules replaces the whole hypercore table in one nftables transaction:
// the kernel sees either the old rules or the new ones, never a mix or an
// empty table, and other tables are not touched.
//
// With br_netfilter loaded, packets between two workloads on the bridge
// also pass these hooks, with the bridge as both input and output device;
// the rules are written so that such traffic is accepted and not NATed.
// That is why the bridge-nf sysctls, which other software on the host may
// rely on, are left as they are.
func applyRules(bridge string, subnet netip.Prefix) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables netlink socket: %w", err)
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	// Add-then-delete makes the delete valid when the table is absent.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

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
	// Replies to anything already allowed.
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		matchCt(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept),
	)})
	// Workloads may go anywhere, including to each other.
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

	if err := c.Flush(); err != nil {
		return fmt.Errorf("replace nftables table ip %s (is the nf_tables module available?): %w", TableName, err)
	}
	return nil
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
