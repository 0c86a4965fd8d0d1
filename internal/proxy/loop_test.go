package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loopFront serves p on loopback through Serve, over plain HTTP (port 80's
// handler) or TLS (port 443's), and returns a function that opens a
// client connection to it. Each connection comes with the TCP connection
// under it, so that tests can shape what reaches the wire.
func loopFront(t *testing.T, p *Proxy, overTLS bool) func() (net.Conn, *net.TCPConn) {
	t.Helper()
	var addr string
	if overTLS {
		addr, _ = httpsFront(t, p)
	} else {
		addr = httpFront(t, p)
	}
	return func() (net.Conn, *net.TCPConn) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tcp := c.(*net.TCPConn)
		if !overTLS {
			return c, tcp
		}
		// What is under test is reading the connection, not its
		// certificate (TestFastPathHTTPS checks that).
		tc := tls.Client(c, &tls.Config{ServerName: id + ".example.test", NextProtos: []string{"http/1.1"}, InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return tc, tcp
	}
}

func getRequest(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + id + ".example.test\r\n\r\n"
}

// wantSeen reads a response from br and fails unless the workload saw the
// request line line.
func wantSeen(t *testing.T, br *bufio.Reader, line string) {
	t.Helper()
	if got := readResponse(t, br, true); !strings.Contains(got, "\n\n"+line+"\n") {
		t.Fatalf("want the workload to have seen %q, got:\n%s", line, got)
	}
}

// TestFastPathNextRequestDuringResponse: the fast path waits for a
// client's next request without reading after each response (serveLoop),
// so a request that arrives while the one before is still with the
// workload must not be missed: sent before the proxy starts watching the
// client, and after (when the watch, on a descriptor of its own, takes
// part of it). After a watch the connection still works; over TLS, the
// watch's end must not end the TLS connection.
func TestFastPathNextRequestDuringResponse(t *testing.T) {
	target := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow") {
			time.Sleep(3 * watchDelay)
		}
		echo(w, r)
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target, 443: target}, Ready: true})
	for _, overTLS := range []bool{false, true} {
		t.Run(fmt.Sprint("tls=", overTLS), func(t *testing.T) {
			c, _ := loopFront(t, p, overTLS)()
			br := bufio.NewReader(c)
			send := func(path string) {
				t.Helper()
				if _, err := io.WriteString(c, getRequest(path)); err != nil {
					t.Fatal(err)
				}
			}
			send("/first")
			wantSeen(t, br, "GET /first HTTP/1.1")
			for _, after := range []time.Duration{watchDelay / 5, 2 * watchDelay} {
				send("/slow")
				time.Sleep(after)
				send(fmt.Sprint("/next", after))
				wantSeen(t, br, "GET /slow HTTP/1.1")
				wantSeen(t, br, fmt.Sprint("GET /next", after, " HTTP/1.1"))
			}
			// A watch that ends with the response, having read nothing.
			send("/slow-alone")
			wantSeen(t, br, "GET /slow-alone HTTP/1.1")
			send("/last")
			wantSeen(t, br, "GET /last HTTP/1.1")
		})
	}
}

// TestFastPathHalfClose: a client that sends its request and its FIN in
// one segment (as `nc -N` may) gets the response, and then the proxy
// closes the connection, though the FIN reached the socket with the
// request and woke nothing after it. Without the sweeper, the connection
// would stay open until the idle timeout (two minutes).
func TestFastPathHalfClose(t *testing.T) {
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	target := backend(t, echo)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target, 443: target}, Ready: true})
	for _, overTLS := range []bool{false, true} {
		t.Run(fmt.Sprint("tls=", overTLS), func(t *testing.T) {
			c, tcp := loopFront(t, p, overTLS)()
			// Corked, the request waits in the socket and goes out with
			// the FIN.
			rc, err := tcp.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			rc.Control(func(fd uintptr) {
				err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1)
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, getRequest("/bye")); err != nil {
				t.Fatal(err)
			}
			if err := tcp.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			wantSeen(t, br, "GET /bye HTTP/1.1")
			c.SetReadDeadline(time.Now().Add(5 * sweepEvery))
			if b, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the response: %q, %v; want the proxy to close the connection", b, err)
			}
		})
	}
}

// TestFastPathClientGoneTLS: over TLS too, a client that leaves while its
// request is with the workload ends the workload's request (as
// TestPoolClientGone checks over plain HTTP).
func TestFastPathClientGoneTLS(t *testing.T) {
	released := make(chan struct{}, 1)
	target := backend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			released <- struct{}{}
		case <-time.After(15 * time.Second):
		}
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{443: target}, Ready: true})
	c, _ := loopFront(t, p, true)()
	if _, err := io.WriteString(c, getRequest("/hang")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * watchDelay) // the request reaches the workload, and the watch starts
	c.Close()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("the workload's request was not ended after the client left")
	}
}
