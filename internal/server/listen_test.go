package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
)

// nodeCert makes a cluster CA and a node certificate for loopback the way a
// first node does, and returns the certificate and a pool trusting the CA
// read from the file a client is told to use.
func nodeCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	a, err := pki.Bootstrap(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := a.EnsureNode("node-a", []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA in ca.crt")
	}
	return m.Cert, pool
}

func TestServeAPITLS(t *testing.T) {
	cert, pool := nodeCert(t)
	h := New(newBackend(t), Options{Token: testToken, Log: quietLog()})
	for _, plain := range []bool{true, false} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srvs := ServeAPI(l, h, TLSConfig(cert), plain, func(err error) { t.Error(err) })
		t.Cleanup(func() {
			for _, s := range srvs {
				s.Close()
			}
		})
		addr := l.Addr().String()
		get := func(c *http.Client, url string) (int, string, error) {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := c.Do(req)
			if err != nil {
				return 0, "", err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, resp.Proto, json.Unmarshal(b, new(map[string]any))
		}
		tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
		code, proto, err := get(tlsClient, "https://"+addr+"/v1/node")
		if err != nil || code != http.StatusOK {
			t.Fatalf("plain=%v: https with the cluster CA: %d %v", plain, code, err)
		}
		if proto != "HTTP/2.0" {
			t.Errorf("plain=%v: TLS speaks %s; want HTTP/2 for gRPC clients", plain, proto)
		}
		// A client that trusts only the system roots refuses the node.
		if _, _, err := get(&http.Client{}, "https://"+addr+"/v1/node"); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("plain=%v: a client without the CA got through: %v", plain, err)
		}
		code, _, err = get(&http.Client{}, "http://"+addr+"/v1/node")
		if plain && (err != nil || code != http.StatusOK) {
			t.Errorf("loopback API: plain HTTP answers %d %v; want 200", code, err)
		}
		if !plain && err == nil && code == http.StatusOK {
			t.Errorf("TLS-only API answered plain HTTP with 200")
		}
	}
}

func TestPlainAllowed(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8000": true, "[::1]:8000": true, "localhost:8000": true, "127.0.0.2:1": true,
		":8000": false, "0.0.0.0:8000": false, "[::]:8000": false, "10.0.0.1:8000": false, "example.com:8000": false, "garbage": false,
	} {
		if got := PlainAllowed(addr); got != want {
			t.Errorf("PlainAllowed(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestSplitTLSSurvivesSilentClients checks that a client that connects and
// leaves without a byte is dropped, that the next one is served, and that
// closing the listener ends Accept on both sides with an error.
func TestSplitTLSSurvivesSilentClients(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl, pl := SplitTLS(l)
	for range 3 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err == nil {
			c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			defer c.Close()
			b := make([]byte, 1)
			c.Read(b)
		}
	}()
	c, err := pl.Accept()
	if err != nil {
		t.Fatalf("plain Accept after silent clients: %v", err)
	}
	b := make([]byte, 3)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "GET" {
		t.Fatalf("the plain connection reads %q %v; want the bytes the sniffing peeked", b, err)
	}
	c.Close()
	tl.Close()
	for name, sub := range map[string]net.Listener{"tls": tl, "plain": pl} {
		if _, err := sub.Accept(); err == nil {
			t.Errorf("%s Accept after Close: no error", name)
		}
	}
}
