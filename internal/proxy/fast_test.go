package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// front serves p's port-80 handler on loopback: through Serve (the fast
// path) when fast is set, with net/http alone otherwise. handed counts the
// connections net/http served, which with the fast path are those it
// handed over.
func front(t *testing.T, p *Proxy, fast bool) (addr string, handed *atomic.Int32) {
	t.Helper()
	log, _ := testLog()
	srv := Server("", p.Handler(80), log)
	handed = new(atomic.Int32)
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			handed.Add(1)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if fast {
		go Serve(srv, l)
	} else {
		go srv.Serve(l)
	}
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), handed
}

// exchange sends raw on a new connection to addr and returns the
// response as the client sees it: status, headers (less Date) and body.
func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	return readResponse(t, bufio.NewReader(c), !strings.HasPrefix(raw, "HEAD "))
}

func readResponse(t *testing.T, br *bufio.Reader, body bool) string {
	t.Helper()
	method := "GET"
	if !body {
		method = "HEAD"
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	resp.Header.Del("Date")
	var keys []string
	for k, v := range resp.Header {
		keys = append(keys, k+": "+strings.Join(v, ", "))
	}
	slices.Sort(keys)
	return fmt.Sprintf("%s\n%s\n\n%s", resp.Status, strings.Join(keys, "\n"), b)
}

// echo answers with what it received: request line, Host and headers,
// sorted, so that two proxies can be compared by what their backend saw.
func echo(w http.ResponseWriter, r *http.Request) {
	var lines []string
	for k, v := range r.Header {
		lines = append(lines, k+": "+strings.Join(v, ", "))
	}
	slices.Sort(lines)
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s %s %s\nHost: %s\n%s\n", r.Method, r.RequestURI, r.Proto, r.Host, strings.Join(lines, "\n"))
}

// TestFastPathSameAsNetHTTP sends the same raw requests to the proxy with
// and without the fast path, and wants the same answers: what the workload
// saw, and what the client got. Requests the fast path forwards itself and
// requests it leaves to net/http alike.
func TestFastPathSameAsNetHTTP(t *testing.T) {
	target := backend(t, echo)
	large := strings.Repeat("0123456789abcdef", 10000)
	raw, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/odd-headers": // lower case, a reason phrase of its own, hop-by-hop
				io.WriteString(c, "HTTP/1.1 200 Fine\r\ncontent-type: text/plain\r\ndate: Mon, 02 Jan 2006 15:04:05 GMT\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\nx-app: 1\r\ncontent-length: 2\r\n\r\nok")
			case "/no-date":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
			case "/no-type":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 5\r\n\r\n<html")
			case "/close":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
				return
			case "/until-close":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\n\r\nall of it")
				return
			case "/http10":
				io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 2\r\n\r\nok")
				return
			case "/bad-length":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!")
				return
			case "/large":
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: %d\r\n\r\n%s", len(large), large)
			case "/599":
				io.WriteString(c, "HTTP/1.1 599 Custom\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 2\r\n\r\nok")
			default:
				io.WriteString(c, "HTTP/1.1 404 Nope\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	const rawID = "raw"
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target}, Ready: true})
	tbl.Set(Route{ID: rawID, HTTP: map[uint16]string{80: raw}, Ready: true})
	tbl.Set(Route{ID: "starting", HTTP: map[uint16]string{80: target}})
	fast, handed := front(t, p, true)
	plain, _ := front(t, p, false)

	h := "Host: " + id + ".example.test\r\n"
	rh := "Host: " + rawID + ".example.test\r\n"
	for _, req := range []string{
		// Forwarded by the fast path.
		"GET / HTTP/1.1\r\n" + h + "\r\n",
		"GET /a/b%2Fc;x=1/(d)?q=1&r=%7a/?&s= HTTP/1.1\r\n" + h + "User-Agent: test\r\nAccept: */*\r\nX-Many: 1\r\nX-Many: 2\r\nx-lower:  padded \t\r\n\r\n",
		"GET /?only HTTP/1.1\r\nHost: " + strings.ToUpper(id) + ".Example.Test:80\r\nConnection: keep-alive\r\nX-Forwarded-For: 198.51.100.9\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\nForwarded: for=198.51.100.9\r\n\r\n",
		"HEAD /head HTTP/1.1\r\n" + h + "\r\n",
		"GET //double/../%41%2f%7E~@:[x]!$&'*+,= HTTP/1.1\r\n" + h + "\r\n",
		"GET /odd-headers HTTP/1.1\r\n" + rh + "\r\n",
		"GET /close HTTP/1.1\r\n" + rh + "\r\n",
		"GET /not-found HTTP/1.1\r\n" + rh + "\r\n",
		"GET /large HTTP/1.1\r\n" + rh + "\r\n",
		// Left to net/http, from here on.
		"POST /post HTTP/1.1\r\n" + h + "Content-Length: 4\r\n\r\nbody",
		"GET /length0 HTTP/1.1\r\n" + h + "Content-Length: 0\r\n\r\n",
		"GET /te HTTP/1.1\r\n" + h + "TE: trailers\r\n\r\n",
		"GET /expect HTTP/1.1\r\n" + h + "Expect: 100-continue\r\n\r\n",
		"GET /hop HTTP/1.1\r\n" + h + "Connection: X-Hop\r\nX-Hop: 1\r\n\r\n",
		"GET /proxy-auth HTTP/1.1\r\n" + h + "Proxy-Authorization: Basic eDp5\r\n\r\n",
		"GET http://" + id + ".example.test/absolute HTTP/1.1\r\n" + h + "\r\n",
		"GET /?bad=%zz HTTP/1.1\r\n" + h + "\r\n",
		"GET /bare-lf HTTP/1.1\n" + strings.TrimSuffix(h, "\r\n") + "\n\n",
		"GET /space%20 HTTP/1.0\r\n" + h + "\r\n",
		"GET /fragment#x HTTP/1.1\r\n" + h + "\r\n",
		"GET /path with space HTTP/1.1\r\n" + h + "\r\n",
		"GET /utf8/\xc3\xa9 HTTP/1.1\r\n" + h + "\r\n",
		// Every backend here refuses two Host headers too: see
		// TestFastPathRefusesTwoHosts for who refuses them.
		"GET /two-hosts HTTP/1.1\r\n" + h + h + "\r\n",
		"GET /no-host HTTP/1.1\r\n\r\n",
		"GET /bad-name HTTP/1.1\r\n" + h + "Bad Name: 1\r\n\r\n",
		"GET /ctl HTTP/1.1\r\n" + h + "X-Ctl: a\x01b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: unknown.example.test\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: starting.example.test\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET /big HTTP/1.1\r\n" + h + "X-Big: " + strings.Repeat("b", 5000) + "\r\n\r\n",
		"GET /no-date HTTP/1.1\r\n" + rh + "\r\n",
		"GET /no-type HTTP/1.1\r\n" + rh + "\r\n",
		"GET /until-close HTTP/1.1\r\n" + rh + "\r\n",
		"GET /http10 HTTP/1.1\r\n" + rh + "\r\n",
		"GET /bad-length HTTP/1.1\r\n" + rh + "\r\n",
		"GET /599 HTTP/1.1\r\n" + rh + "\r\n",
		"GET /query?a=1;b=2 HTTP/1.1\r\n" + h + "\r\n",
	} {
		forwarded := handed.Load() == 0 && !strings.HasPrefix(req, "POST")
		got, want := exchange(t, fast, req), exchange(t, plain, req)
		if got != want {
			t.Errorf("%q:\nfast path:\n%s\n\nnet/http:\n%s", req, got, want)
		}
		if forwarded && handed.Load() != 0 {
			t.Fatalf("%q was handed to net/http, want it forwarded by the fast path", req)
		}
	}
	if n := handed.Load(); n != 28 {
		t.Errorf("%d connections handed to net/http, want one for each request the fast path leaves alone (28)", n)
	}
}

// TestFastPathRefusesTwoHosts: a request with two Host headers, the same
// or different, is refused by the proxy itself with 400, as net/http
// refuses it, and never reaches the workload, even one that would take it.
func TestFastPathRefusesTwoHosts(t *testing.T) {
	// The workload reads heads by hand: http.ReadRequest, like net/http's
	// server, refuses two Host headers, and would hide a proxy that let
	// them through.
	var seen atomic.Int32
	raw, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				seen.Add(1)
				// A head the fast path copies as it is, not one it leaves
				// to net/http, which would answer 400 whatever the workload said.
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: raw}, Ready: true})
	tbl.Set(Route{ID: "other", HTTP: map[uint16]string{80: raw}, Ready: true})
	addr, _ := front(t, p, true)
	h := "Host: " + id + ".example.test\r\n"
	if got := exchange(t, addr, "GET /one HTTP/1.1\r\n"+h+"\r\n"); !strings.HasPrefix(got, "200 OK\n") || seen.Load() != 1 {
		t.Fatalf("one Host: %q, the backend saw %d requests; want 200 from it", got, seen.Load())
	}
	for _, hosts := range []string{h + h, h + "Host: other.example.test\r\n", "Host: other.example.test\r\n" + h} {
		got := exchange(t, addr, "GET /two HTTP/1.1\r\n"+hosts+"\r\n")
		if !strings.HasPrefix(got, "400 Bad Request\n") {
			t.Errorf("%q: got %q, want 400 Bad Request", hosts, got)
		}
	}
	if n := seen.Load(); n != 1 {
		t.Errorf("the backend saw %d requests with two Host headers, want none", n-1)
	}
}

// TestFastPathHandOff: on one kept-alive connection, requests the fast path
// forwards, then one it hands over with the connection (a POST), then more,
// which net/http serves; pipelined requests each get their answer.
func TestFastPathHandOff(t *testing.T) {
	target, conns := countingBackend(t, echo)
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target}, Ready: true})
	addr, handed := front(t, p, true)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	get := func(path string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: " + id + ".example.test\r\n\r\n"
	}
	want := func(line string) {
		t.Helper()
		if got := readResponse(t, br, true); !strings.Contains(got, "\n\n"+line+"\n") {
			t.Fatalf("want the backend to have seen %q, got:\n%s", line, got)
		}
	}
	for i := range 3 {
		io.WriteString(c, get(fmt.Sprint("/fast", i)))
		want(fmt.Sprint("GET /fast", i, " HTTP/1.1"))
	}
	if n := handed.Load(); n != 0 {
		t.Fatalf("%d connections handed to net/http after plain GETs, want 0", n)
	}
	// Pipelined: two GETs and a POST in one write, then a GET.
	io.WriteString(c, get("/p1")+get("/p2")+"POST /post HTTP/1.1\r\nHost: "+id+".example.test\r\nContent-Length: 2\r\n\r\nhi"+get("/after"))
	want("GET /p1 HTTP/1.1")
	want("GET /p2 HTTP/1.1")
	want("POST /post HTTP/1.1")
	want("GET /after HTTP/1.1")
	io.WriteString(c, get("/later"))
	want("GET /later HTTP/1.1")
	if n := handed.Load(); n != 1 {
		t.Fatalf("%d connections handed to net/http, want 1", n)
	}
	if n := conns.Load(); n > 2 {
		t.Fatalf("the backend saw %d connections, want the fast path's and http.Transport's at most", n)
	}
}

// TestFastPathHTTPS: over TLS, HTTP/1.1 takes the fast path, with
// X-Forwarded-Proto https, and a connection handed to net/http keeps its
// TLS state (421 when Host and SNI disagree).
func TestFastPathHTTPS(t *testing.T) {
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	target := backend(t, echo)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{443: target}, Ready: true})
	tbl.Set(Route{ID: "other", HTTP: map[uint16]string{443: target}, Ready: true})
	addr, client := httpsFront(t, p)
	c := client(id+".example.test", "http/1.1")
	for _, host := range []string{id, "other"} {
		req, _ := http.NewRequest("GET", "https://"+addr+"/x", nil)
		req.Host = host + ".example.test"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.Proto != "HTTP/1.1":
			t.Fatalf("%s: %s, want HTTP/1.1", host, resp.Proto)
		case host == id && (resp.StatusCode != 200 || !bytes.Contains(b, []byte("X-Forwarded-Proto: https\n"))):
			t.Fatalf("%s: %d %q", host, resp.StatusCode, b)
		case host == "other" && resp.StatusCode != http.StatusMisdirectedRequest:
			t.Fatalf("%s on a connection for %s: %d, want 421", host, id, resp.StatusCode)
		}
	}
}

// TestFastPathShutdown: Shutdown closes idle fast-path connections and
// makes Serve return.
func TestFastPathShutdown(t *testing.T) {
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: backend(t, echo)}, Ready: true})
	log, _ := testLog()
	srv := Server("", p.Handler(80), log)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- Serve(srv, l) }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s.example.test\r\n\r\n", id)
	readResponse(t, br, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve returned %v, want http.ErrServerClosed", err)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the idle connection is still open after Shutdown")
	}
}

// TestRoutingAllocs: finding a request's workload allocates nothing.
func TestRoutingAllocs(t *testing.T) {
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{443: "127.0.0.1:1"}, Ready: true})
	host := id + ".example.test:80"
	allocs := testing.AllocsPerRun(1000, func() {
		wid, ok := p.workloadID(host)
		if _, why := p.pick(wid, 80); !ok || why != routed {
			t.Fatal("not routed")
		}
	})
	if allocs != 0 {
		t.Fatalf("routing allocates %v times a request, want 0", allocs)
	}
}

// TestFastPathAllocs: a request forwarded by the fast path allocates
// nothing, in the whole process (client and backend included; both are
// written not to).
func TestFastPathAllocs(t *testing.T) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 5\r\n\r\nhello")
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bl.Close() })
	go func() {
		for {
			c, err := bl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for n := 0; ; {
					m, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
						n = copy(buf, buf[i+4:n])
						if _, err := c.Write(resp); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: bl.Addr().String()}, Ready: true})
	addr, handed := front(t, p, true)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req := []byte("GET / HTTP/1.1\r\nHost: " + id + ".example.test\r\nUser-Agent: allocs\r\n\r\n")
	buf := make([]byte, 4096)
	var failed error
	do := func() {
		if _, err := c.Write(req); err != nil {
			failed = err
			return
		}
		for n := 0; ; {
			m, err := c.Read(buf[n:])
			if err != nil {
				failed = err
				return
			}
			n += m
			if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 && n >= i+4+5 {
				return
			}
		}
	}
	do() // the first request dials the backend and fills the caches
	allocs := testing.AllocsPerRun(200, do)
	if failed != nil {
		t.Fatal(failed)
	}
	if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200 OK\r\n")) || handed.Load() != 0 {
		t.Fatalf("not forwarded by the fast path: %q, %d handed over", buf[:40], handed.Load())
	}
	if allocs != 0 {
		t.Fatalf("a request on the fast path allocates %v times, want 0", allocs)
	}
}

// TestFastPathTimeouts: the fast path closes a connection that stays idle
// for IdleTimeout after a request, or sends part of a request head and
// stops (ReadHeaderTimeout), as net/http does.
func TestFastPathTimeouts(t *testing.T) {
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: backend(t, echo)}, Ready: true})
	log, _ := testLog()
	srv := Server("", p.Handler(80), log)
	srv.IdleTimeout, srv.ReadHeaderTimeout = 100*time.Millisecond, 100*time.Millisecond
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go Serve(srv, l)
	t.Cleanup(func() { srv.Close() })
	for _, tc := range []struct{ name, send string }{
		{"idle", "GET / HTTP/1.1\r\nHost: " + id + ".example.test\r\n\r\n"},
		{"partial head", "GET / HTTP/1.1\r\nHost: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			io.WriteString(c, tc.send)
			if strings.HasSuffix(tc.send, "\r\n\r\n") {
				readResponse(t, br, true)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("read after the timeout: %v, want io.EOF (closed by the proxy)", err)
			}
		})
	}
}

// BenchmarkRouting is the work the proxy does of its own for a request on
// the fast path, without I/O: parse the request head, find the workload,
// parse the response head. Run with -benchmem: it allocates nothing.
func BenchmarkRouting(b *testing.B) {
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: "127.0.0.1:1"}, Ready: true})
	f := &fastServer{p: p, port: 80}
	c := &fastConn{f: f}
	reqHead := []byte("GET /index.html?x=1 HTTP/1.1\r\nHost: " + id + ".example.test\r\nUser-Agent: wrk\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n")
	respHead := []byte("HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Type: text/html\r\nContent-Length: 1024\r\nLast-Modified: Mon, 02 Jan 2006 15:04:05 GMT\r\nConnection: keep-alive\r\nETag: \"1-400\"\r\nAccept-Ranges: bytes\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		var req fastRequest
		if !parseRequest(reqHead, &req) {
			b.Fatal("request not taken")
		}
		if _, ok := c.route(req.host); !ok {
			b.Fatal("not routed")
		}
		var resp fastResponse
		if !parseResponse(respHead, &resp) {
			b.Fatal("response not taken")
		}
	}
}
