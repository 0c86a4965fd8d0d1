package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// viaDialer stands in for a tunnel to another node: whatever address it
// is asked for, it connects to the one backend it leads to, and it
// records the addresses it was asked for.
type viaDialer struct {
	to    string
	dials atomic.Int32
	mu    sync.Mutex
	asked []string
	fail  error
}

func (d *viaDialer) dial(ctx context.Context, target string) (net.Conn, error) {
	d.dials.Add(1)
	d.mu.Lock()
	d.asked = append(d.asked, target)
	d.mu.Unlock()
	if d.fail != nil {
		return nil, d.fail
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.to)
}

func (d *viaDialer) askedFor() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.asked...)
}

// TestViaKeepsNodesApart: two workloads with the same address, one on this
// node and one on another (as two nodes' bridges may hand out), each get
// their own requests, on the fast path and on net/http's, pooled or not:
// a connection kept alive to one is never used for the other, and the
// other node's is reached only through its route's Dial.
func TestViaKeepsNodesApart(t *testing.T) {
	answer := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s %s", name, r.Method)
		}
	}
	addr, localConns := countingBackend(t, answer("local"))
	remote, _ := countingBackend(t, answer("remote"))
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast=%v", fast), func(t *testing.T) {
			d := &viaDialer{to: remote}
			tbl := NewTable()
			p := New("example.test", tbl, nil)
			t.Cleanup(p.transport.CloseIdleConnections)
			tbl.Set(Route{ID: "here", HTTP: map[uint16]string{80: addr}, Ready: true})
			tbl.Set(Route{ID: "there", HTTP: map[uint16]string{80: addr}, Ready: true, Via: "node-b", Dial: d.dial})
			front, _ := front(t, p, fast)
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			do := func(method, id string) string {
				t.Helper()
				req, _ := http.NewRequest(method, "http://"+front+"/", nil)
				if method == http.MethodPost {
					req, _ = http.NewRequest(method, "http://"+front+"/", strings.NewReader("body"))
				}
				req.Host = id + ".example.test"
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return fmt.Sprintf("%d %s", resp.StatusCode, b)
			}
			before := localConns.Load()
			for range 3 {
				for _, c := range []struct{ method, id, want string }{
					{"GET", "here", "200 local GET"},
					{"GET", "there", "200 remote GET"},
					{"POST", "here", "200 local POST"},
					{"POST", "there", "200 remote POST"},
				} {
					if got := do(c.method, c.id); got != c.want {
						t.Fatalf("%s %s: %q, want %q", c.method, c.id, got, c.want)
					}
				}
			}
			// Kept alive: one connection for the pooled GETs and one
			// for net/http's POSTs, each way.
			if n := d.dials.Load(); n != 2 {
				t.Errorf("the other node's workload was dialled %d times, want 2 (one per pool)", n)
			}
			if n := localConns.Load() - before; n != 2 {
				t.Errorf("the local workload got %d connections, want 2 (one per pool)", n)
			}
			for _, a := range d.askedFor() {
				if a != addr {
					t.Errorf("Dial was asked for %q, want the route's address %q", a, addr)
				}
			}
		})
	}
}

// TestViaDialFails: a route whose Dial fails answers 502, as a workload
// that does not answer does.
func TestViaDialFails(t *testing.T) {
	d := &viaDialer{fail: errors.New("node-b is down")}
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: "10.255.0.1:80"}, Ready: true, Via: "node-b", Dial: d.dial})
	for _, fast := range []bool{true, false} {
		addr, _ := front(t, p, fast)
		got := exchange(t, addr, "GET / HTTP/1.1\r\nHost: "+id+".example.test\r\n\r\n")
		if !strings.HasPrefix(got, "502 ") {
			t.Errorf("fast=%v: %q, want 502", fast, got)
		}
	}
	if d.dials.Load() == 0 {
		t.Error("Dial was never called")
	}
}

// TestTCPVia: a raw TCP port whose route has a Dial is forwarded through
// it, half-close included; a route moving to another node ends the
// connections to the old one.
func TestTCPVia(t *testing.T) {
	echoed := tcpBackend(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		io.WriteString(c, "got: "+string(b))
	})
	d := &viaDialer{to: echoed}
	tbl := NewTable()
	newTestTCP(t, tbl, TCPOptions{})
	port := freePort(t)
	const workloadAddr = "10.255.0.1:7000"
	tbl.Set(Route{ID: id, TCP: map[uint16]string{port: workloadAddr}, Via: "node-b", Dial: d.dial})
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
	if got := d.askedFor(); len(got) != 1 || got[0] != workloadAddr {
		t.Fatalf("Dial asked for %q, want [%s]", got, workloadAddr)
	}

	// A connection open while the workload moves to another node (same
	// address there) is ended: it leads to the old one.
	held := tcpBackend(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	d2 := &viaDialer{to: held}
	tbl.Set(Route{ID: id, TCP: map[uint16]string{port: workloadAddr}, Via: "node-b", Dial: d2.dial})
	c2, err := dialPort(port)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.WriteString(c2, "x")
	testutil.WaitFor(t, 5*time.Second, "the dial through node-b", func() bool { return d2.dials.Load() == 1 })
	tbl.Set(Route{ID: id, TCP: map[uint16]string{port: workloadAddr}, Via: "node-c", Dial: d.dial})
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the connection through node-b outlived the move to node-c: %v", err)
	}
}
