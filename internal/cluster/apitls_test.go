package cluster

import (
	"net"
	"testing"
)

// TestAPIIPs checks the node certificate names what a client dials the API
// at: the advertised address, loopback, and the API's bind address when it
// names one, each once.
func TestAPIIPs(t *testing.T) {
	adv := net.ParseIP("10.0.0.5")
	cases := map[string][]string{
		"127.0.0.1:8000":  {"10.0.0.5", "127.0.0.1", "::1"},
		"0.0.0.0:8000":    {"10.0.0.5", "127.0.0.1", "::1"},
		":8000":           {"10.0.0.5", "127.0.0.1", "::1"},
		"10.0.0.5:8000":   {"10.0.0.5", "127.0.0.1", "::1"},
		"192.0.2.9:8000":  {"10.0.0.5", "192.0.2.9", "127.0.0.1", "::1"},
		"[2001:db8::1]:1": {"10.0.0.5", "2001:db8::1", "127.0.0.1", "::1"},
	}
	for addr, want := range cases {
		got := apiIPs([]net.IP{adv}, addr)
		if len(got) != len(want) {
			t.Errorf("apiIPs(%s) = %v, want %v", addr, got, want)
			continue
		}
		for i := range want {
			if !got[i].Equal(net.ParseIP(want[i])) {
				t.Errorf("apiIPs(%s) = %v, want %v", addr, got, want)
				break
			}
		}
	}
}
