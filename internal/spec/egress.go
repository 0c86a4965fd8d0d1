package spec

import (
	"net/netip"
	"slices"
	"strings"
)

// MaxEgress bounds how many destinations one workload may open.
const MaxEgress = 64

// buildEgress checks the destinations a workload may reach although the
// node's egress policy blocks them: IPv4 CIDRs (or single addresses),
// at most MaxEgress, returned masked, sorted and without repeats.
func buildEgress(in []string) ([]netip.Prefix, error) {
	if len(in) > MaxEgress {
		return nil, fieldErr("egress", "has %d entries; at most %d are allowed", len(in), MaxEgress)
	}
	var out []netip.Prefix
	for _, s := range in {
		s = strings.TrimSpace(s)
		if len(s) > 64 {
			return nil, fieldErr("egress", "entry %.64q... is not a CIDR", s)
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fieldErr("egress", "%q is not a CIDR such as 169.254.169.254/32 or 192.168.1.0/24", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			return nil, fieldErr("egress", "%q is not IPv4; workloads have IPv4 only", s)
		}
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out), nil
}

// EgressStrings writes egress destinations as the API takes them.
func EgressStrings(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// ParseEgress reads egress destinations as EgressStrings wrote them, for a
// Spec that Check then verifies; the count is bounded before any parsing.
func ParseEgress(in []string) ([]netip.Prefix, error) {
	if len(in) > MaxEgress {
		return nil, fieldErr("egress", "has %d entries; at most %d are allowed", len(in), MaxEgress)
	}
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fieldErr("egress", "%.64q is not a CIDR", s)
		}
		out = append(out, p)
	}
	return out, nil
}
