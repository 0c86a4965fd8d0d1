package testutil

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Hanging is a TCP listener on loopback that accepts every connection and
// never answers, as a registry that hangs does. Its connections are held
// open until the test ends.
type Hanging struct {
	net.Listener
	accepted atomic.Int64
}

// Accepted is how many connections it has taken so far.
func (h *Hanging) Accepted() int64 { return h.accepted.Load() }

// HangingListener starts a Hanging on 127.0.0.1 and closes it, and every
// connection it took, when the test ends.
func HangingListener(t testing.TB) *Hanging {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &Hanging{Listener: l}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return h
}
