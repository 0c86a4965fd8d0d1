package harness

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"testing"
)

// LAN is a bridge in a namespace of its own that node namespaces are wired
// to, standing in for the network between machines.
type LAN struct {
	NS     *NetNS
	bridge string
}

// NewLAN makes the LAN's namespace and bridge, removed when the test ends.
func NewLAN(t testing.TB) *LAN {
	t.Helper()
	ns := NewNetNS(t)
	run(t, "ip", "-n", ns.Name, "link", "add", "lan0", "type", "bridge")
	run(t, "ip", "-n", ns.Name, "link", "set", "lan0", "up")
	return &LAN{NS: ns, bridge: "lan0"}
}

// Attach wires ns to the LAN with a veth whose end in ns is eth0 with
// address cidr (such as 10.98.0.1/24).
func (l *LAN) Attach(t testing.TB, ns *NetNS, cidr string) {
	t.Helper()
	var b [3]byte
	rand.Read(b[:])
	host, peer := "hl"+hex.EncodeToString(b[:]), "hp"+hex.EncodeToString(b[:])
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	run(t, "ip", "link", "set", host, "netns", l.NS.Name)
	run(t, "ip", "link", "set", peer, "netns", ns.Name)
	run(t, "ip", "-n", l.NS.Name, "link", "set", host, "master", l.bridge, "up")
	run(t, "ip", "-n", ns.Name, "link", "set", peer, "name", "eth0")
	run(t, "ip", "-n", ns.Name, "addr", "add", cidr, "dev", "eth0")
	run(t, "ip", "-n", ns.Name, "link", "set", "eth0", "up")
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}
