package proxy

import (
	"bufio"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// httpFront runs the public plain HTTP server for p on loopback.
func httpFront(t *testing.T, p *Proxy) string {
	t.Helper()
	log, _ := testLog()
	srv := Server("", p.Handler(80), log)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go Serve(srv, l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func backend(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	b := httptest.NewServer(h)
	t.Cleanup(b.Close)
	return strings.TrimPrefix(b.URL, "http://")
}

// wsAccept is the Sec-WebSocket-Accept value for key (RFC 6455 4.2.2).
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

func TestWebSocket(t *testing.T) {
	// A minimal WebSocket server: the handshake by hand, then it echoes
	// bytes until the client closes. The proxy must not care what flows.
	target := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want websocket", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(r.Header.Get("Sec-WebSocket-Key")))
		brw.Flush()
		io.Copy(conn, brw)
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target}, Ready: true})

	for _, front := range []string{"http", "https"} {
		t.Run(front, func(t *testing.T) {
			var conn net.Conn
			var err error
			if front == "http" {
				conn, err = net.Dial("tcp", httpFront(t, p))
			} else {
				// Browsers open WebSockets on an HTTP/1.1 connection.
				addr, _ := httpsFront(t, p)
				conn, err = tls.Dial("tcp", addr, &tls.Config{ServerName: id + ".example.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			key := "dGhlIHNhbXBsZSBub25jZQ=="
			fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: %s.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", id, key)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
				t.Fatalf("upgrade: %d %v", resp.StatusCode, resp.Header)
			}
			// A masked text frame "hi", then one the other way: echoed as is.
			for _, frame := range []string{"\x81\x82abcd\x09\x0b", "\x81\x03yes"} {
				io.WriteString(conn, frame)
				got := make([]byte, len(frame))
				if _, err := io.ReadFull(br, got); err != nil || string(got) != frame {
					t.Fatalf("echo: %q %v, want %q", got, err, frame)
				}
			}
		})
	}
}

// TestStreaming checks that SSE and chunked bodies reach the client while
// the backend is still writing: the backend sends one event and then waits
// for the client to have it.
func TestStreaming(t *testing.T) {
	got := make(chan struct{}, 1)
	target := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sse" {
			w.Header().Set("Content-Type", "text/event-stream")
		} else {
			w.Header().Set("Content-Type", "text/plain") // chunked: no length
		}
		io.WriteString(w, "data: one\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			return // the proxy held the event back
		}
		io.WriteString(w, "data: two\n\n")
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target}, Ready: true})
	plain := httpFront(t, p)
	_, tlsClient := httpsFront(t, p)

	clients := map[string]struct {
		c   *http.Client
		url string
	}{
		"http/1.1": {&http.Client{Timeout: 20 * time.Second}, "http://" + plain},
		"h2":       {tlsClient(id + ".example.test"), "https://" + id + ".example.test"},
	}
	for name, c := range clients {
		for _, path := range []string{"/sse", "/chunked"} {
			t.Run(name+path, func(t *testing.T) {
				req, _ := http.NewRequest("GET", c.url+path, nil)
				req.Host = id + ".example.test"
				resp, err := c.c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				br := bufio.NewReader(resp.Body)
				line, err := br.ReadString('\n')
				if err != nil || line != "data: one\n" {
					t.Fatalf("first event: %q %v", line, err)
				}
				got <- struct{}{}
				rest, _ := io.ReadAll(br)
				if string(rest) != "\ndata: two\n\n" {
					t.Fatalf("rest: %q", rest)
				}
			})
		}
	}
}

// TestForwardedHeaders checks X-Forwarded-* and that hop-by-hop headers
// stop at the proxy both ways.
func TestForwardedHeaders(t *testing.T) {
	target := backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Internal")
		w.Header().Set("X-Internal", "secret")
		w.Header().Set("Keep-Alive", "timeout=99")
		json.NewEncoder(w).Encode(r.Header)
	})
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: target}, Ready: true})
	conn, err := net.Dial("tcp", httpFront(t, p))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s.example.test\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Forwarded-For: 198.51.100.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\nX-End-To-End: kept\r\n\r\n", id)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var seen http.Header
	if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"X-Hop", "Keep-Alive", "Proxy-Connection"} {
		if v := seen.Get(h); v != "" {
			t.Errorf("backend got hop-by-hop %s: %q", h, v)
		}
	}
	want := map[string]string{
		"X-Forwarded-For":   "127.0.0.1", // a client's own claim is not passed on
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  id + ".example.test",
		"X-End-To-End":      "kept",
	}
	for h, v := range want {
		if got := seen.Get(h); got != v {
			t.Errorf("backend got %s %q, want %q", h, got, v)
		}
	}
	if v := resp.Header.Get("X-Internal"); v != "" {
		t.Errorf("client got the backend's hop-by-hop X-Internal %q", v)
	}
	if v := resp.Header.Get("Keep-Alive"); v == "timeout=99" {
		t.Errorf("client got the backend's Keep-Alive %q", v)
	}
}
