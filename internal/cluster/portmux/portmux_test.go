package portmux

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// TestSortsByFirstByte: on one port, a TLS client reaches the TLS side and
// anything else the gossip side, each with every byte it sent, and UDP is
// bound on the same port.
func TestSortsByFirstByte(t *testing.T) {
	m, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := m.Addr().String()
	gossip, udp := m.Gossip()
	if udp.LocalAddr().(*net.UDPAddr).Port != m.Addr().Port {
		t.Errorf("UDP on %v, TCP on %v: want one port", udp.LocalAddr(), m.Addr())
	}

	// Gossip: a memberlist stream opens with its message type.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{6, 'p', 'u', 's', 'h'})
	got := accept(t, gossip, 5)
	if string(got) != "\x06push" {
		t.Errorf("gossip side read %q, want the stream as sent", got)
	}

	// TLS: the side that gets it sees a ClientHello, first byte 0x16.
	go func() {
		tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			tc.Close()
		}
	}()
	if got := accept(t, m.TLS(), 1); got[0] != tlsHandshake {
		t.Errorf("TLS side read %#x first, want a handshake record", got[0])
	}

	// Closing the port closes both sides.
	m.Close()
	if _, err := m.TLS().Accept(); err == nil {
		t.Error("TLS side accepted after Close")
	}
}

func accept(t *testing.T, l net.Listener, n int) []byte {
	t.Helper()
	done := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			done <- c
		}
	}()
	select {
	case c := <-done:
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, n)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("read from the sorted connection: %v", err)
		}
		return buf
	case <-time.After(5 * time.Second):
		t.Fatal("no connection sorted to this side")
		return nil
	}
}
