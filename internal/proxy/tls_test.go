package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func testLog() (*slog.Logger, *testutil.LockedBuffer) {
	var buf testutil.LockedBuffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

// httpsFront runs the public HTTPS server for p on loopback with a
// *.example.test certificate and returns its address and a client that
// trusts the certificate and always dials that address.
func httpsFront(t *testing.T, p *Proxy) (addr string, client func(serverName string, protos ...string) *http.Client) {
	t.Helper()
	dir := t.TempDir()
	leaf := testutil.WriteSelfSignedCert(t, dir, 1, "*.example.test")
	log, _ := testLog()
	cf, err := NewCertFile(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), log)
	if err != nil {
		t.Fatal(err)
	}
	srv := HTTPSServer("", p.Handler(443), CertSources{cf}, log)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go Serve(srv, l)
	t.Cleanup(func() { srv.Close() })
	addr = l.Addr().String()
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return addr, func(serverName string, protos ...string) *http.Client {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: serverName, NextProtos: protos},
			ForceAttemptHTTP2: len(protos) == 0,
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
}

func echoBackend(t *testing.T) string {
	t.Helper()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend saw "+r.Host+r.URL.Path+" proto="+r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(b.Close)
	return strings.TrimPrefix(b.URL, "http://")
}

func TestHTTPS(t *testing.T) {
	tbl := NewTable()
	p := New("example.test", tbl, nil)
	addr, client := httpsFront(t, p)
	other := "0b7c1f9e-1d1a-4c3b-9a1e-2b3c4d5e6f70"
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{443: echoBackend(t)}, Ready: true})
	tbl.Set(Route{ID: other, HTTP: map[uint16]string{80: echoBackend(t)}, Ready: true})

	// HTTP/2 by ALPN, X-Forwarded-Proto https.
	resp, err := client(id + ".example.test").Get("https://" + id + ".example.test/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" || string(body) != "backend saw "+id+".example.test/x proto=https" {
		t.Fatalf("https: %d %s %q", resp.StatusCode, resp.Proto, body)
	}

	// HTTP/1.1 clients are served too.
	resp, err = client(id+".example.test", "http/1.1").Get("https://" + id + ".example.test/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" {
		t.Fatalf("https http/1.1: %d %s", resp.StatusCode, resp.Proto)
	}

	// A workload that maps only 80 is served on 443, since :80 redirects.
	resp, err = client(other + ".example.test").Get("https://" + other + ".example.test/y")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "/y") {
		t.Fatalf("80-only over https: %d %q", resp.StatusCode, body)
	}

	// Host naming another workload than SNI: 421 Misdirected Request.
	for _, sni := range []string{other + ".example.test", "x.example.test"} {
		req, _ := http.NewRequest("GET", "https://"+id+".example.test/", nil)
		resp, err = client(sni).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Fatalf("sni %s, host %s: %d, want 421", sni, id, resp.StatusCode)
		}
	}

	// Unknown id: 404 over HTTPS.
	resp, err = client("nope.example.test").Get("https://nope.example.test/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown id: %d, want 404", resp.StatusCode)
	}

	// A name the certificate does not cover gets no certificate at all.
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "a.other.test", InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Fatal("handshake for a name outside the certificate succeeded")
	}
}

// serialAt does a handshake with serverName and returns the served
// certificate's serial.
func serialAt(t *testing.T, addr, serverName string) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestCertFileReload(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testutil.WriteSelfSignedCert(t, dir, 1, "*.example.test")
	log, logs := testLog()
	cf, err := NewCertFile(certPath, keyPath, log)
	if err != nil {
		t.Fatal(err)
	}
	cf.CheckEvery = 0
	l, err := tls.Listen("tcp", "127.0.0.1:0", TLSConfig(CertSources{cf}))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	addr := l.Addr().String()
	if s := serialAt(t, addr, "a.example.test"); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}

	testutil.WriteSelfSignedCert(t, dir, 2, "*.example.test")
	if s := serialAt(t, addr, "a.example.test"); s != 2 {
		t.Fatalf("after rewrite: serial %d, want 2", s)
	}

	// Broken files: the previous certificate stays, and the log says why.
	writeFile(t, certPath, []byte("not a certificate"))
	if s := serialAt(t, addr, "a.example.test"); s != 2 {
		t.Fatalf("after broken cert: serial %d, want 2", s)
	}
	if !strings.Contains(logs.String(), "do not load") {
		t.Fatalf("no log line for the broken files:\n%s", logs)
	}
	os.Remove(keyPath)
	if s := serialAt(t, addr, "a.example.test"); s != 2 || cf.Leaf().SerialNumber.Int64() != 2 {
		t.Fatalf("after missing key: serial %d, want 2", s)
	}

	// A fixed pair is picked up again.
	testutil.WriteSelfSignedCert(t, dir, 3, "*.example.test")
	if s := serialAt(t, addr, "a.example.test"); s != 3 {
		t.Fatalf("after repair: serial %d, want 3", s)
	}

	// Broken files at start are an error, not a server without a certificate.
	writeFile(t, keyPath, []byte("junk"))
	if _, err := NewCertFile(certPath, keyPath, log); err == nil {
		t.Fatal("NewCertFile accepted a broken key")
	}
}

func TestCertFileCheckEvery(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteSelfSignedCert(t, dir, 1, "a.example.test")
	cf, err := NewCertFile(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cf.CheckEvery = time.Hour
	testutil.WriteSelfSignedCert(t, dir, 2, "a.example.test")
	hello := &tls.ClientHelloInfo{ServerName: "a.example.test"}
	if c, _ := cf.GetCertificate(hello); c == nil || c.Leaf.SerialNumber.Int64() != 1 {
		t.Fatal("files were looked at before CheckEvery passed")
	}
	// Exact names: covered, a sub-label is not, and no SNI gets the default.
	for name, want := range map[string]bool{"a.example.test": true, "A.Example.Test.": true, "b.a.example.test": false, "example.test": false, "": true} {
		c, err := cf.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
		if err != nil || (c != nil) != want {
			t.Errorf("%q: cert %v err %v, want cert %v", name, c != nil, err, want)
		}
	}
}

// acmeStub stands in for an ACME source: it has a certificate for one name.
type acmeStub struct {
	name string
	cert *tls.Certificate
	err  error
}

func (s acmeStub) GetCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if h.ServerName == s.name {
		return s.cert, s.err
	}
	return nil, nil
}

func TestCertSources(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteSelfSignedCert(t, dir, 1, "*.example.test")
	cf, err := NewCertFile(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	custom := &tls.Certificate{}
	boom := errors.New("issuance failed")
	srcs := CertSources{acmeStub{name: "shop.example.org", cert: custom}, acmeStub{name: "w.example.test", err: boom}, cf}
	get := func(name string) (*tls.Certificate, error) {
		return srcs.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
	}
	if c, err := get("shop.example.org"); c != custom || err != nil {
		t.Fatalf("custom domain: %v %v", c, err)
	}
	if c, err := get("w.example.test"); c == nil || c == custom || err != nil {
		t.Fatalf("a failing source before the file: %v %v, want the file certificate", c, err)
	}
	if c, err := get("nowhere.example.org"); c != nil || err == nil {
		t.Fatalf("uncovered name: %v %v, want an error", c, err)
	}
}

func TestRedirectHTTPS(t *testing.T) {
	for _, c := range []struct{ addr, host, target, want string }{
		{":443", "w.example.test", "/a/b?c=d", "https://w.example.test/a/b?c=d"},
		{":443", "w.example.test:80", "/", "https://w.example.test/"},
		{"0.0.0.0:8443", "w.example.test:8080", "/x", "https://w.example.test:8443/x"},
		{":443", "[::1]:80", "/", "https://[::1]/"},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "http://"+c.host+c.target, nil)
		RedirectHTTPS(c.addr).ServeHTTP(rec, req)
		if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != c.want {
			t.Errorf("%s %s: %d %q, want 308 %q", c.addr, c.host, rec.Code, rec.Header().Get("Location"), c.want)
		}
	}
}
