package proxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// tcpBackend accepts connections on loopback and runs serve on each.
func tcpBackend(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return l.Addr().String()
}

func newTestTCP(t *testing.T, tbl *Table, opts TCPOptions) *TCP {
	t.Helper()
	opts.BindAddr = "127.0.0.1"
	opts.Log, _ = testLog()
	f := NewTCP(tbl, opts)
	t.Cleanup(func() { f.Close() })
	return f
}

func dialPort(port uint16) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(int(port)), 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn), nil
}

func TestTCPHalfClose(t *testing.T) {
	// The backend reads to EOF, which only a passed-on half-close gives,
	// then answers and closes.
	target := tcpBackend(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		io.WriteString(c, "got: "+string(b))
	})
	tbl := NewTable()
	f := newTestTCP(t, tbl, TCPOptions{})
	port := freePort(t)
	tbl.Set(Route{ID: id, TCP: map[uint16]string{port: target}})
	if got := f.Ports(); len(got) != 1 || got[0] != port {
		t.Fatalf("ports %v, want [%d]", got, port)
	}
	c, err := dialPort(port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hello")
	c.CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "got: hello" {
		t.Fatalf("answer %q %v", b, err)
	}
}

func TestTCPEchoLarge(t *testing.T) {
	target := tcpBackend(t, func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
	tbl := NewTable()
	newTestTCP(t, tbl, TCPOptions{})
	port := freePort(t)
	tbl.Set(Route{ID: id, TCP: map[uint16]string{port: target}})
	c, err := dialPort(port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 4<<20)
	rand.Read(data)
	go func() { c.Write(data); c.CloseWrite() }() // both ways at once
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echoed %d of %d bytes, equal %v, err %v", len(got), len(data), bytes.Equal(got, data), err)
	}
}

func TestTCPListenerFollowsRoutes(t *testing.T) {
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	target := tcpBackend(t, func(c net.Conn) {
		io.WriteString(c, "hi")
		<-hold
	})
	tbl := NewTable()
	f := newTestTCP(t, tbl, TCPOptions{})
	port := freePort(t)
	if _, err := dialPort(port); err == nil {
		t.Fatal("port open before any route needs it")
	}
	tbl.Set(Route{ID: id, TCP: map[uint16]string{port: target}, HTTP: map[uint16]string{80: target}})
	c, err := dialPort(port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q %v", buf, err)
	}
	// Readiness changes leave connections alone.
	tbl.Set(Route{ID: id, TCP: map[uint16]string{port: target}, HTTP: map[uint16]string{80: target}, Ready: true})

	tbl.Delete(id)
	if len(f.Ports()) != 0 {
		t.Fatalf("ports after delete: %v", f.Ports())
	}
	if _, err := dialPort(port); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after delete: %v, want connection refused", err)
	}
	// The open connection led to a workload that is gone: it is closed.
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("open connection still reads %q after its route went", buf[:n])
	}

	// HTTP ports never open TCP listeners.
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{port: target}})
	if len(f.Ports()) != 0 {
		t.Fatalf("an HTTP route opened TCP ports %v", f.Ports())
	}
}

func TestTCPLimitsAndIdle(t *testing.T) {
	target := tcpBackend(t, func(c net.Conn) {
		b := make([]byte, 1)
		c.Read(b)
		if b[0] == 't' { // talk: a byte every 50ms for 600ms
			for range 12 {
				time.Sleep(50 * time.Millisecond)
				if _, err := c.Write([]byte{'.'}); err != nil {
					return
				}
			}
		}
		io.Copy(io.Discard, c)
	})
	tbl := NewTable()
	newTestTCP(t, tbl, TCPOptions{MaxConns: 1, IdleTimeout: 300 * time.Millisecond})
	port := freePort(t)
	tbl.Set(Route{ID: id, TCP: map[uint16]string{port: target}})

	// A connection where only the backend talks outlives the idle timeout.
	c, err := dialPort(port)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "t")
	buf := make([]byte, 12)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != strings.Repeat(".", 12) {
		t.Fatalf("one-way traffic: %q %v", buf, err)
	}

	// The limit is one: a second client is refused while the first is open.
	c2, err := dialPort(port)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Read(buf); err == nil {
		t.Fatal("second connection over the limit was served")
	}
	c2.Close()

	// Silence ends the first connection.
	start := time.Now()
	if _, err := c.Read(buf); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("idle connection: %v after %v", err, time.Since(start))
	}
	c.Close()

	// Its slot is free again.
	testutil.WaitFor(t, 5*time.Second, "the connection's slot to be free again", func() bool {
		c3, err := dialPort(port)
		if err != nil {
			return false
		}
		defer c3.Close()
		io.WriteString(c3, "x")
		c3.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err = c3.Read(buf)
		return isTimeout(err) // open and quiet, not closed
	})
}

func TestTCPPortOwner(t *testing.T) {
	tbl := NewTable()
	f := newTestTCP(t, tbl, TCPOptions{})
	reserved := freePort(t)
	tbl.Reserve(reserved, "the HTTP proxy (--http-addr)")
	if owner, taken := tbl.PortOwner(reserved); !taken || owner != "the HTTP proxy (--http-addr)" {
		t.Fatalf("reserved port: %q %v", owner, taken)
	}
	// A route naming a reserved port does not open it.
	tbl.Set(Route{ID: id, TCP: map[uint16]string{reserved: "127.0.0.1:1"}})
	if len(f.Ports()) != 0 {
		t.Fatalf("reserved port opened: %v", f.Ports())
	}

	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	busy := uint16(other.Addr().(*net.TCPAddr).Port)
	if owner, taken := tbl.PortOwner(busy); !taken || !strings.Contains(owner, "another program") {
		t.Fatalf("port of another program: %q %v", owner, taken)
	}

	free := freePort(t)
	if _, taken := tbl.PortOwner(free); taken {
		t.Fatal("free port reported taken")
	}
	tbl.Set(Route{ID: id, TCP: map[uint16]string{free: "127.0.0.1:1"}})
	if _, taken := tbl.PortOwner(free); taken {
		t.Fatal("a workload's port is reported as another program's")
	}
}

func TestTCPConflictKeepsOwner(t *testing.T) {
	a := tcpBackend(t, func(c net.Conn) { io.WriteString(c, "a") })
	b := tcpBackend(t, func(c net.Conn) { io.WriteString(c, "b") })
	tbl := NewTable()
	newTestTCP(t, tbl, TCPOptions{})
	port := freePort(t)
	read := func() string {
		c, err := dialPort(port)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got, _ := io.ReadAll(c)
		return string(got)
	}
	tbl.Set(Route{ID: "zzz", TCP: map[uint16]string{port: a}})
	tbl.Set(Route{ID: "aaa", TCP: map[uint16]string{port: b}})
	if got := read(); got != "a" {
		t.Fatalf("conflict moved the port to %q", got)
	}
	tbl.Delete("zzz")
	if got := read(); got != "b" {
		t.Fatalf("after the owner left: %q, want b", got)
	}
}
