package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// sysPair returns a sysConn and the other end of its loopback TCP
// connection.
func sysPair(t *testing.T) (*sysConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	sc, ok := newSysConn(c).(*sysConn)
	if !ok {
		t.Fatal("not a sysConn")
	}
	t.Cleanup(func() { sc.Close(); peer.Close() })
	return sc, peer
}

// TestWriteAwaitRead checks that writeAwaitRead writes what it is given
// and that the reply is read after it, whether the reply comes at once
// or later, and that the connection's failures are still reported.
func TestWriteAwaitRead(t *testing.T) {
	t.Run("replies", func(t *testing.T) {
		sc, peer := sysPair(t)
		go func() { // an echo server: each request back as its reply
			buf := make([]byte, 64)
			for {
				n, err := peer.Read(buf)
				if err != nil {
					return
				}
				if bytes.Equal(buf[:n], []byte("later")) {
					time.Sleep(20 * time.Millisecond)
				}
				peer.Write(buf[:n])
			}
		}()
		for _, msg := range []string{"now", "later", "again", "now"} {
			n, err := sc.writeAwaitRead([]byte(msg))
			if n != len(msg) || err != nil {
				t.Fatalf("writeAwaitRead(%q) = %d, %v", msg, n, err)
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != msg {
				t.Fatalf("read %q, %v; want %q", buf, err, msg)
			}
		}
	})
	t.Run("more than the socket takes", func(t *testing.T) {
		// The write fills the socket's buffers: the rest is written as
		// Write writes it, while the peer reads.
		sc, peer := sysPair(t)
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
			peer.Write([]byte("ok"))
			got <- b
		}()
		if n, err := sc.writeAwaitRead(big); n != len(big) || err != nil {
			t.Fatalf("writeAwaitRead = %d, %v", n, err)
		}
		if b := <-got; !bytes.Equal(b, big) {
			t.Fatalf("the peer got %d bytes, not what was written", len(b))
		}
		buf := make([]byte, 2)
		if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ok" {
			t.Fatalf("read %q, %v", buf, err)
		}
	})
	t.Run("peer closes", func(t *testing.T) {
		// The peer reads the request and closes: the wait ends, and the
		// Read that follows reports the end.
		sc, peer := sysPair(t)
		go func() {
			buf := make([]byte, 16)
			peer.Read(buf)
			peer.Close()
		}()
		if n, err := sc.writeAwaitRead([]byte("bye")); n != 3 || err != nil {
			t.Fatalf("writeAwaitRead = %d, %v", n, err)
		}
		if _, err := sc.Read(make([]byte, 16)); err != io.EOF {
			t.Fatalf("Read after the peer closed: %v, want EOF", err)
		}
	})
	t.Run("deadline during the wait", func(t *testing.T) {
		// No reply: the read deadline ends the wait, the write is
		// reported done, and the Read that follows reports the deadline.
		sc, peer := sysPair(t)
		go io.Copy(io.Discard, peer)
		sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if n, err := sc.writeAwaitRead([]byte("anyone?")); n != 7 || err != nil {
			t.Fatalf("writeAwaitRead = %d, %v", n, err)
		}
		if _, err := sc.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read: %v, want a deadline error", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		sc, _ := sysPair(t)
		sc.Close()
		if _, err := sc.writeAwaitRead([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("writeAwaitRead on a closed connection: %v, want net.ErrClosed", err)
		}
	})
}

// TestPeerLeft: peerLeft tells a peer that closed or reset the connection
// from one that is there, without taking what it sent.
func TestPeerLeft(t *testing.T) {
	sc, peer := sysPair(t)
	if sc.peerLeft() {
		t.Fatal("peerLeft on an open, quiet connection")
	}
	io.WriteString(peer, "x")
	peer.(*net.TCPConn).CloseWrite()
	time.Sleep(50 * time.Millisecond) // for the FIN to be there too
	if sc.peerLeft() {
		t.Fatal("peerLeft with data unread before the FIN")
	}
	b := make([]byte, 2)
	if n, err := sc.Read(b); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v; want the byte peerLeft left", n, err)
	}
	testutil.WaitFor(t, 5*time.Second, "peerLeft after the FIN", sc.peerLeft)

	sc, peer = sysPair(t)
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close() // a reset
	testutil.WaitFor(t, 5*time.Second, "peerLeft after the reset", sc.peerLeft)
}
