package spec

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestEgress(t *testing.T) {
	s, err := Build(Input{Image: "busybox:1", Egress: []string{"192.168.1.7/24", " 169.254.169.254", "10.0.0.0/8", "192.168.1.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("192.168.1.0/24")}
	if !slices.Equal(s.Egress, want) {
		t.Errorf("egress = %v, want %v (masked, sorted, no repeats)", s.Egress, want)
	}
	if err := s.Check(); err != nil {
		t.Errorf("a spec with egress Build made fails Check: %v", err)
	}
	bad := s
	bad.Egress = []netip.Prefix{netip.MustParsePrefix("192.168.1.7/24")}
	if err := bad.Check(); err == nil || field(t, err) != "egress" {
		t.Errorf("Check of an unmasked egress prefix: %v, want an error about egress", err)
	}

	many := make([]string, MaxEgress+1)
	for i := range many {
		many[i] = fmt.Sprintf("10.0.%d.0/24", i)
	}
	if _, err := Build(Input{Image: "busybox:1", Egress: many[:MaxEgress]}); err != nil {
		t.Errorf("%d egress entries refused: %v", MaxEgress, err)
	}
	for _, in := range [][]string{many, {"fe80::/10"}, {"example.com"}, {"10.0.0.0/33"}, {strings.Repeat("1", 100)}} {
		if _, err := Build(Input{Image: "busybox:1", Egress: in}); err == nil || field(t, err) != "egress" {
			t.Errorf("egress %.40v: %v, want an error about egress", in, err)
		}
	}

	req, err := DecodeSpawnJSON(strings.NewReader(`{"image_ref":"busybox:1","egress":["169.254.169.254/32"]}`))
	if err != nil || len(req.Spec.Egress) != 1 {
		t.Errorf("JSON egress: %+v, %v", req.Spec.Egress, err)
	}
	h, err := ParseHAC([]byte("[hardware]\nref = \"busybox:1\"\negress = [\"192.168.0.0/16\"]\n"))
	if err != nil || len(h.Egress) != 1 || h.Egress[0] != netip.MustParsePrefix("192.168.0.0/16") {
		t.Errorf("hac.toml egress: %+v, %v", h.Egress, err)
	}
}
