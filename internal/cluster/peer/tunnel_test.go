package peer

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tunnelHost is alpha, serving tunnels to the targets in allowed.
type tunnelHost struct {
	*testCluster
	mu      sync.Mutex
	allowed map[netip.AddrPort]bool
	checked atomic.Int32
}

func newTunnelHost(t testing.TB, mods ...func(*http.Server)) *tunnelHost {
	h := &tunnelHost{allowed: map[netip.AddrPort]bool{}}
	h.testCluster = newTestCluster(t, &Server{Target: func(ap netip.AddrPort) bool {
		h.checked.Add(1)
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.allowed[ap]
	}}, mods...)
	return h
}

func (h *tunnelHost) allow(target string) {
	h.mu.Lock()
	h.allowed[netip.MustParseAddrPort(target)] = true
	h.mu.Unlock()
}

// TestTunnelHalfClose: bytes pass both ways, and each side's half-close
// reaches the other while the other direction still flows: the client's
// request-then-EOF, and a workload that says its piece, shuts its side
// and then reads.
func TestTunnelHalfClose(t *testing.T) {
	h := newTunnelHost(t)
	p := h.pool(t, "beta")

	t.Run("client first", func(t *testing.T) {
		target, _ := tcpServer(t, func(c *net.TCPConn) {
			b, _ := io.ReadAll(c) // only a passed-on half-close ends this
			c.Write([]byte("got: " + string(b)))
		})
		h.allow(target)
		c, err := p.Dial(testCtx(t), "alpha", h.addr, target)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "hello ")
		io.WriteString(c, "world")
		if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "got: hello world" {
			t.Fatalf("answer %q, %v", b, err)
		}
	})

	t.Run("workload first", func(t *testing.T) {
		got := make(chan string, 1)
		target, _ := tcpServer(t, func(c *net.TCPConn) {
			c.Write([]byte("banner"))
			c.CloseWrite()
			b, _ := io.ReadAll(c)
			got <- string(b)
		})
		h.allow(target)
		c, err := p.Dial(testCtx(t), "alpha", h.addr, target)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c) // ends at the workload's half-close
		if err != nil || string(b) != "banner" {
			t.Fatalf("read %q, %v", b, err)
		}
		// The other direction is still open.
		if _, err := io.WriteString(c, "after the banner"); err != nil {
			t.Fatal(err)
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		select {
		case s := <-got:
			if s != "after the banner" {
				t.Fatalf("workload read %q", s)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the workload never saw the client's bytes and EOF")
		}
	})
}

// TestTunnelLargeBothWays moves megabytes each way at once, more than the
// HTTP/2 windows, through one tunnel.
func TestTunnelLargeBothWays(t *testing.T) {
	h := newTunnelHost(t)
	p := h.pool(t, "beta")
	const size = 8 << 20
	fromWorkload := make([]byte, size)
	toWorkload := make([]byte, size)
	rand.Read(fromWorkload)
	rand.Read(toWorkload)
	received := make(chan []byte, 1)
	target, _ := tcpServer(t, func(c *net.TCPConn) {
		go func() {
			c.Write(fromWorkload)
			c.CloseWrite()
		}()
		b, _ := io.ReadAll(c)
		received <- b
	})
	h.allow(target)
	c, err := p.Dial(testCtx(t), "alpha", h.addr, target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		c.Write(toWorkload)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	b, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(b, fromWorkload) {
		t.Fatalf("read %d bytes (%v), want the workload's %d", len(b), err, size)
	}
	select {
	case b := <-received:
		if !bytes.Equal(b, toWorkload) {
			t.Fatalf("the workload read %d bytes, not the %d sent", len(b), size)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the workload did not get all bytes")
	}
}

// TestTunnelRefused: a target that is not a published port of a running
// workload on the host is refused before anything is dialled, and one
// that is, but does not answer, fails the Dial too.
func TestTunnelRefused(t *testing.T) {
	h := newTunnelHost(t)
	p := h.pool(t, "beta")
	hit := make(chan struct{}, 1)
	target, _ := tcpServer(t, func(*net.TCPConn) { hit <- struct{}{} })
	_, err := p.Dial(testCtx(t), "alpha", h.addr, target)
	if !errors.Is(err, ErrNoTarget) {
		t.Fatalf("Dial to a target the host does not allow: %v, want ErrNoTarget", err)
	}
	if h.checked.Load() != 1 {
		t.Errorf("the host checked %d targets, want 1", h.checked.Load())
	}
	select {
	case <-hit:
		t.Fatal("the host connected to a target it refused")
	case <-time.After(100 * time.Millisecond):
	}

	// Allowed, but nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	h.allow(dead)
	_, err = p.Dial(testCtx(t), "alpha", h.addr, dead)
	if err == nil || errors.Is(err, ErrNoTarget) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("Dial to a closed workload port: %v, want the host's own error", err)
	}

	if _, err := p.Dial(testCtx(t), "alpha", h.addr, "not an address"); err == nil {
		t.Fatal("Dial took a target that is not ip:port")
	}
}

// TestTunnelDeadlines: a read deadline ends a Read with a timeout, which
// is not the end of the tunnel: data that comes later is still read. A
// deadline in the past ends a Read in progress (the proxy aborts with it).
func TestTunnelDeadlines(t *testing.T) {
	h := newTunnelHost(t)
	p := h.pool(t, "beta")
	release := make(chan struct{})
	target, _ := tcpServer(t, func(c *net.TCPConn) {
		<-release
		c.Write([]byte("late"))
		io.Copy(io.Discard, c)
	})
	h.allow(target)
	c, err := p.Dial(testCtx(t), "alpha", h.addr, target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 16)
	_, err = c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline: %v, want a timeout", err)
	}

	done := make(chan error, 1)
	c.SetReadDeadline(time.Time{})
	go func() {
		_, err := c.Read(buf)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	c.SetReadDeadline(time.Unix(1, 0))
	select {
	case err := <-done:
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read ended by a past deadline: %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline in the past did not end the Read")
	}

	// A deadline moved later before it passes does not fire at the
	// earlier time (the proxy moves it before every read).
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	go func() {
		time.Sleep(100 * time.Millisecond)
		close(release)
	}()
	n, err := io.ReadFull(c, buf[:4])
	if err != nil || string(buf[:n]) != "late" {
		t.Fatalf("after the timeouts: %q, %v", buf[:n], err)
	}
}

// TestTunnelCloseEndsWorkloadSide: closing the caller's end ends the
// host's connection to the workload, without a half-close first.
func TestTunnelCloseEndsWorkloadSide(t *testing.T) {
	h := newTunnelHost(t)
	p := h.pool(t, "beta")
	ended := make(chan struct{})
	target, _ := tcpServer(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c)
		close(ended)
	})
	h.allow(target)
	c, err := p.Dial(testCtx(t), "alpha", h.addr, target)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "x")
	c.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the workload's connection outlived the tunnel")
	}
	if _, err := c.Write([]byte("y")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
}

// TestOneConnectionPerPeer: many tunnels at once, and calls beside them,
// share one TCP connection to the peer.
func TestOneConnectionPerPeer(t *testing.T) {
	h := newTunnelHost(t)
	p := h.pool(t, "beta")
	target, workloadConns := tcpServer(t, func(c *net.TCPConn) { io.Copy(c, c) })
	h.allow(target)
	before := h.ln.accepted.Load() // the join's
	const n = 64
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c, err := p.Dial(testCtx(t), "alpha", h.addr, target)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// All open at once, each its own stream.
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := []byte{byte(i), 'x', byte(i)}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 3)
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("tunnel %d echoed %v, %v", i, got, err)
		}
	}
	// A PeerService call goes on the same connection.
	if _, err := p.Barrier(testCtx(t), "alpha", h.addr); err == nil {
		t.Fatal("Barrier on a server without it succeeded")
	}
	if got := h.ln.accepted.Load() - before; got != 1 {
		t.Fatalf("%d TCP connections to the peer, want 1", got)
	}
	if got := workloadConns.accepted.Load(); got != n {
		t.Fatalf("the workload got %d connections, want %d", got, n)
	}
}

// TestStreamLimitWaits: at the peer's stream limit a new tunnel waits for
// one to end, on the same connection, rather than dial another.
func TestStreamLimitWaits(t *testing.T) {
	h := newTunnelHost(t, func(srv *http.Server) { srv.HTTP2.MaxConcurrentStreams = 2 })
	p := h.pool(t, "beta")
	target, _ := tcpServer(t, func(c *net.TCPConn) { io.Copy(c, c) })
	h.allow(target)
	before := h.ln.accepted.Load()
	a, err := p.Dial(testCtx(t), "alpha", h.addr, target)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := p.Dial(testCtx(t), "alpha", h.addr, target)
	if err != nil {
		t.Fatal(err)
	}
	third := make(chan error, 1)
	go func() {
		c, err := p.Dial(testCtx(t), "alpha", h.addr, target)
		if err == nil {
			c.Close()
		}
		third <- err
	}()
	select {
	case err := <-third:
		t.Fatalf("a third tunnel opened beside two at a limit of two: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	b.Close()
	select {
	case err := <-third:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the third tunnel did not open when the second closed")
	}
	if got := h.ln.accepted.Load() - before; got != 1 {
		t.Fatalf("%d TCP connections to the peer, want 1", got)
	}
}

// BenchmarkTunnel measures bytes through one tunnel, workload to caller,
// and the time to open one on a warm connection.
func BenchmarkTunnel(b *testing.B) {
	b.Run("throughput", func(b *testing.B) {
		h := newTunnelHost(b)
		p := h.pool(b, "beta")
		chunk := make([]byte, 256<<10)
		target, _ := tcpServer(b, func(c *net.TCPConn) {
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		})
		h.allow(target)
		c, err := p.Dial(testCtx(b), "alpha", h.addr, target)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		b.SetBytes(int64(len(buf)))
		b.ResetTimer()
		for range b.N {
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("dial", func(b *testing.B) {
		h := newTunnelHost(b)
		p := h.pool(b, "beta")
		target, _ := tcpServer(b, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
		h.allow(target)
		b.ResetTimer()
		for range b.N {
			c, err := p.Dial(testCtx(b), "alpha", h.addr, target)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}
