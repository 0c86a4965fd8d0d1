package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingBackend is an httptest server that counts the connections made
// to it.
func countingBackend(t *testing.T, h http.HandlerFunc) (addr string, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	b := httptest.NewUnstartedServer(h)
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return strings.TrimPrefix(b.URL, "http://"), conns
}

// TestPoolReuse sends responses of every framing over the pooled path
// and checks that one kept-alive connection carried them all, and that a
// request with a body still goes through.
func TestPoolReuse(t *testing.T) {
	target, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "chunk one,")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "chunk two")
			w.Header().Set("X-Sum", "42")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/notmodified":
			w.WriteHeader(http.StatusNotModified)
		case "/post":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s", r.Method, b)
		}
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target}, Ready: true})
	c := &http.Client{Timeout: 10 * time.Second}
	front := "http://" + httpFront(t, p)
	do := func(method, path, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, front+path, strings.NewReader(body))
		if body == "" {
			req.Body = nil
		}
		req.Host = id + ".example.test"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return resp, string(b)
	}
	for range 3 {
		if resp, body := do("GET", "/length", ""); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("/length: %d %q", resp.StatusCode, body)
		}
		if resp, body := do("HEAD", "/length", ""); resp.StatusCode != 200 || body != "" || resp.ContentLength != 5 {
			t.Fatalf("HEAD /length: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
		}
		resp, body := do("GET", "/chunked", "")
		if resp.StatusCode != 200 || body != "chunk one,chunk two" || resp.Trailer.Get("X-Sum") != "42" {
			t.Fatalf("/chunked: %d %q trailer %v", resp.StatusCode, body, resp.Trailer)
		}
		if resp, _ := do("GET", "/empty", ""); resp.StatusCode != 204 {
			t.Fatalf("/empty: %d", resp.StatusCode)
		}
		if resp, _ := do("GET", "/notmodified", ""); resp.StatusCode != 304 {
			t.Fatalf("/notmodified: %d", resp.StatusCode)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("the backend saw %d connections for 15 requests in a row, want 1", n)
	}
	// A body goes through http.Transport, on a connection of its own.
	if resp, body := do("POST", "/post", "data"); resp.StatusCode != 200 || body != "POST data" {
		t.Fatalf("POST: %d %q", resp.StatusCode, body)
	}
}

// rawBackend serves each connection with serve, by hand.
func rawBackend(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (addr string, conns *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	conns = new(atomic.Int32)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return l.Addr().String(), conns
}

// TestPoolStaleConnection: a workload that closes a kept-alive connection,
// silently or with a 408, costs the client nothing: the GET is sent again
// on a new connection.
func TestPoolStaleConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func(c net.Conn, br *bufio.Reader) // what follows the first response on a connection
	}{
		{"closed", func(net.Conn, *bufio.Reader) {}},
		{"408", func(c net.Conn, br *bufio.Reader) {
			http.ReadRequest(br)
			io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			closed := make(chan struct{}, 10)
			target, conns := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				tc.after(c, br)
				c.Close()
				closed <- struct{}{}
			})
			tbl := NewTable()
			p := New("example.test", tbl, nil)
			tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target}, Ready: true})
			h := p.Handler(80)
			for i := range 3 {
				if code, body := get(t, h, id+".example.test"); code != 200 || body != "ok" {
					t.Fatalf("request %d: %d %q", i, code, body)
				}
				if tc.name == "closed" {
					<-closed // the pooled connection is dead before the next request
				}
			}
			if n := conns.Load(); n != 3 {
				t.Fatalf("%d connections, want 3 (one per request)", n)
			}
		})
	}
}

// TestPool1xx: informational responses reach the client, then the final
// one.
func TestPool1xx(t *testing.T) {
	target, _ := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target}, Ready: true})
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+httpFront(t, p)+"/", nil)
	req.Host = id + ".example.test"
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "final" {
		t.Fatalf("final: %d %q", resp.StatusCode, body)
	}
	if len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload" {
		t.Fatalf("1xx seen by the client: %q", hints)
	}
}

// TestPoolClientGone: when the client goes away, the proxy lets go of the
// workload's connection, whether it was waiting for the response headers
// or in the middle of a streamed body.
func TestPoolClientGone(t *testing.T) {
	released := make(chan string, 2)
	target, _ := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: one\n\n")
			http.NewResponseController(w).Flush()
		}
		select {
		case <-r.Context().Done():
			released <- r.URL.Path
		case <-time.After(15 * time.Second):
		}
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target}, Ready: true})
	front := httpFront(t, p)
	for _, path := range []string{"/headers", "/stream"} {
		t.Run(path, func(t *testing.T) {
			conn, err := net.Dial("tcp", front)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s.example.test\r\n\r\n", path, id)
			if path == "/stream" {
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(conn)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if line, err := bufio.NewReader(resp.Body).ReadString('\n'); line != "data: one\n" {
					t.Fatalf("first event: %q %v", line, err)
				}
			} else {
				time.Sleep(100 * time.Millisecond) // the request reaches the backend
			}
			conn.Close()
			select {
			case got := <-released:
				if got != path {
					t.Fatalf("released %s, want %s", got, path)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the backend's request was not ended after the client left")
			}
		})
	}
}

// TestPoolHeaderLimit: a workload cannot make the proxy read endless
// response headers.
func TestPoolHeaderLimit(t *testing.T) {
	target, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: ")
		chunk := strings.Repeat("a", 64<<10)
		for i := 0; i < (maxResponseHeaderBytes>>16)+2; i++ {
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
		br.ReadByte() // the connection stays open until the proxy gives up
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target}, Ready: true})
	start := time.Now()
	if code, _ := get(t, p.Handler(80), id+".example.test"); code != 502 {
		t.Fatalf("endless headers: %d, want 502", code)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the proxy gave up only after %v, when the backend closed", d)
	}
}

// TestPoolIdleTimeout: connections idle for longer than idleConnTimeout
// are closed by the sweep, and never handed out.
func TestPoolIdleTimeout(t *testing.T) {
	closed := make(chan struct{}, 3)
	target, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		br.ReadByte() // returns when the proxy closes the connection
		closed <- struct{}{}
	})
	tr := newBackendTransport()
	defer tr.CloseIdleConnections()
	key := backendKey{addr: target}
	var bcs []*backendConn
	for range 3 {
		bc, err := tr.dial(context.Background(), backendAddr{backendKey: key})
		if err != nil {
			t.Fatal(err)
		}
		tr.put(bc)
		bcs = append(bcs, bc)
	}
	bcs[0].since = time.Now().Add(-2 * idleConnTimeout)
	tr.sweep()
	if tr.nIdle != 2 || len(tr.idle[key]) != 2 {
		t.Fatalf("after the sweep: %d idle, want 2", tr.nIdle)
	}
	bcs[2].since = bcs[0].since // the most recently used, next to be handed out
	if bc := tr.get(key); bc != nil {
		t.Fatal("get handed out an expired connection")
	}
	for range 2 {
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("an expired connection was not closed")
		}
	}
	if bc := tr.get(key); bc != bcs[1] {
		t.Fatal("get did not hand out the connection that is still fresh")
	}
}

func TestValidHeader(t *testing.T) {
	for _, h := range []http.Header{
		{"X-Bad\nName": {"v"}},
		{"X Space": {"v"}},
		{"": {"v"}},
		{"X-Value": {"a\r\nX-Injected: 1"}},
		{"X-Value": {"nul\x00"}},
	} {
		if validHeader(h) == nil {
			t.Errorf("%q passed", h)
		}
	}
	if err := validHeader(http.Header{"X-Ok": {"tab\tand text"}, "User-Agent": {""}}); err != nil {
		t.Error(err)
	}
}
