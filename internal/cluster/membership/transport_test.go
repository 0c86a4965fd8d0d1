package membership

import (
	"testing"

	"github.com/hypercore-dev/hypercore/internal/cluster/portmux"
)

// TestGossipOnASharedPort runs gossip on sockets a node shares with its
// TLS services (portmux): two members join over it, packets and streams
// alike, and the members' addresses are the shared ports.
func TestGossipOnASharedPort(t *testing.T) {
	k := key(7)
	var ms []*Membership
	for _, name := range []string{"a", "b"} {
		port, err := portmux.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { port.Close() })
		cfg := testConfig(t, name, k)
		cfg.BindAddr = port.Addr().String()
		cfg.Streams, cfg.Packets = port.Gossip()
		m := start(t, cfg)
		if got := addr(m); got != port.Addr().String() {
			t.Errorf("%s advertises %s, want its shared port %s", name, got, port.Addr())
		}
		ms = append(ms, m)
	}
	// Join is a push-pull over a TCP stream; liveness afterwards is UDP.
	join(t, ms[1], ms[0])
	waitState(t, ms[0], "b", StateAlive)
	waitState(t, ms[1], "a", StateAlive)
}
