package pki

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var loopback = []net.IP{net.IPv4(127, 0, 0, 1)}

// cluster is a bootstrap node serving node RPC and joins on one loopback
// listener, as the daemon will.
type cluster struct {
	a        *Authority
	m        *Material
	addr     string
	rpcHits  atomic.Int32
	mu       sync.Mutex
	callers  []string // PeerNode of each RPC caller
	admitted []string
	admitErr error
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{}
	a, err := Bootstrap(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := a.EnsureNode("node-a", loopback, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.a, c.m = a, m
	rpc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.rpcHits.Add(1)
		name, err := PeerNode(r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		c.mu.Lock()
		c.callers = append(c.callers, name)
		c.mu.Unlock()
		fmt.Fprintf(w, "hello %s over %s", name, r.Proto)
	})
	srv := &http.Server{Handler: rpc, ErrorLog: quietLog()}
	err = a.EnableJoin(srv, m, func(name string) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.admitted = append(c.admitted, name)
		return c.admitErr
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return c
}

func (c *cluster) token(t *testing.T) JoinToken {
	t.Helper()
	s, err := c.a.JoinToken(c.addr)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ParseJoinToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (c *cluster) admittedNames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.admitted)
}

func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func assertNotExist(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		entries, _ := os.ReadDir(dir)
		t.Fatalf("%s should not exist after a failed join; stat err %v, entries %v", dir, err, entries)
	}
}

func TestBootstrapIsIdempotentAndPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	a1, err := Bootstrap(dir)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := Bootstrap(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a1.CACertPEM(), a2.CACertPEM()) || a1.CAPin() != a2.CAPin() {
		t.Error("second Bootstrap made a new CA")
	}
	if !bytes.Equal(a1.GossipKey(), a2.GossipKey()) || len(a1.GossipKey()) != GossipKeySize {
		t.Error("second Bootstrap changed the gossip key, or it has the wrong size")
	}
	t1, _ := a1.JoinToken("10.0.0.1:7946")
	t2, _ := a2.JoinToken("10.0.0.1:7946")
	if t1 != t2 {
		t.Error("second Bootstrap changed the join secret")
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("dir mode %o, want 700", m)
	}
	for _, f := range []string{CAKeyFile, GossipKeyFile, JoinSecretFile} {
		if m := mode(t, filepath.Join(dir, f)); m != 0o600 {
			t.Errorf("%s mode %o, want 600", f, m)
		}
	}
	ca, err := parseCertPEM(a1.CACertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || !ca.MaxPathLenZero || ca.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("CA: IsCA %v MaxPathLenZero %v alg %v", ca.IsCA, ca.MaxPathLenZero, ca.PublicKeyAlgorithm)
	}
	// No temp files left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover temp file %s", e.Name())
		}
	}
}

func TestSecretsPrintRedacted(t *testing.T) {
	a, err := Bootstrap(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := a.EnsureNode("node-a", loopback, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := m.Cert.PrivateKey.(*ecdsa.PrivateKey).D.String()
	secrets := []string{fmt.Sprint(a.secret), fmt.Sprint(a.gossipKey), fmt.Sprintf("%x", a.secret), fmt.Sprintf("%x", a.gossipKey), d, a.caKey.D.String()}
	for _, v := range []any{a, *a, m, *m} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(verb, v)
			for _, sec := range secrets {
				if strings.Contains(out, sec) {
					t.Errorf("%s of %T leaks a secret: %s", verb, v, out)
				}
			}
		}
	}
}

func TestBootstrapTightensExistingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Bootstrap(dir); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("dir mode %o, want 700", m)
	}
}

func TestBootstrapRefusesPartialState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := Bootstrap(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, GossipKeyFile)); err != nil {
		t.Fatal(err)
	}
	_, err := Bootstrap(dir)
	if err == nil || !strings.Contains(err.Error(), "missing [gossip.key]") {
		t.Fatalf("Bootstrap with a missing gossip key: %v", err)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	a, err := Bootstrap(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"10.0.0.7:7947", "[fd00::1]:7947", "node-a.example.com:443"} {
		s, err := a.JoinToken(addr)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, TokenPrefix) || strings.ContainsAny(s, "+/= \n") {
			t.Errorf("token %q is not prefix + base64url", s)
		}
		tok, err := ParseJoinToken("  " + s + "\n")
		if err != nil {
			t.Fatal(err)
		}
		if tok.Addr != addr || tok.CAPin != a.CAPin() || !bytes.Equal(tok.Secret, a.secret) {
			t.Errorf("round trip of %s: got %v", addr, tok)
		}
		if tok.Encode() != s {
			t.Error("Encode(Parse(s)) != s")
		}
		for _, printed := range []string{tok.String(), fmt.Sprintf("%v %+v %#v", tok, tok, tok)} {
			if strings.Contains(printed, s[len(TokenPrefix):len(TokenPrefix)+8]) || !strings.Contains(printed, "redacted") {
				t.Errorf("printing a token leaks it: %s", printed)
			}
		}
	}
	if _, err := a.JoinToken("no-port"); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("JoinToken without a port: %v", err)
	}
}

func TestParseJoinTokenRejects(t *testing.T) {
	a, err := Bootstrap(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good, _ := a.JoinToken("10.0.0.7:7947")
	payload := good[len(TokenPrefix):]
	flip := []byte(payload)
	if flip[10] == 'A' {
		flip[10] = 'B'
	} else {
		flip[10] = 'A'
	}
	cases := []struct{ name, tok, want string }{
		{"empty", "", "empty"},
		{"not a token", "eyJhbGciOi.xyz", "does not start with"},
		{"newer version", "hcjoin2." + payload, `version "2"`},
		{"garbled", TokenPrefix + "!!!!" + payload, "garbled"},
		{"truncated", good[:len(good)-6], "wrong length"},
		{"prefix only", TokenPrefix, "wrong length"},
		{"changed character", TokenPrefix + string(flip), "checksum"},
	}
	for _, tc := range cases {
		_, err := ParseJoinToken(tc.tok)
		if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an ErrInvalidToken saying %q", tc.name, err, tc.want)
		}
	}
	// A well-formed token with a bad address is still rejected.
	bad := JoinToken{Addr: "nohostport", Secret: make([]byte, JoinSecretSize)}
	if _, err := ParseJoinToken(bad.Encode()); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Errorf("bad address: %v", err)
	}
}

func TestJoinThenMutualTLS(t *testing.T) {
	c := newCluster(t)
	dirB := filepath.Join(t.TempDir(), "pki")
	mB, err := Join(testCtx(t), c.token(t), "node-b", loopback, dirB)
	if err != nil {
		t.Fatal(err)
	}
	if mB.NodeName != "node-b" || !bytes.Equal(mB.GossipKey, c.a.GossipKey()) {
		t.Errorf("joined material: name %s, same gossip key %v", mB.NodeName, bytes.Equal(mB.GossipKey, c.a.GossipKey()))
	}
	if !slices.Equal(c.admittedNames(), []string{"node-b"}) {
		t.Errorf("admit hook saw %v", c.admittedNames())
	}
	leaf := mB.Cert.Leaf
	if leaf.IsCA || !slices.Equal(leaf.DNSNames, []string{"node-b"}) || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(loopback[0]) {
		t.Errorf("issued leaf: IsCA %v DNS %v IPs %v", leaf.IsCA, leaf.DNSNames, leaf.IPAddresses)
	}
	if d := time.Until(leaf.NotAfter); d < NodeCertValidity-time.Hour || d > NodeCertValidity {
		t.Errorf("leaf valid for %v, want about %v", d, NodeCertValidity)
	}
	if m := mode(t, dirB); m != 0o700 {
		t.Errorf("dir mode %o", m)
	}
	for _, f := range []string{NodeKeyFile, GossipKeyFile} {
		if m := mode(t, filepath.Join(dirB, f)); m != 0o600 {
			t.Errorf("%s mode %o, want 600", f, m)
		}
	}
	for _, f := range []string{CAKeyFile, JoinSecretFile} {
		if _, err := os.Stat(filepath.Join(dirB, f)); err == nil {
			t.Errorf("joined node got %s", f)
		}
	}
	loaded, err := Load(dirB)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.NodeName != "node-b" || !bytes.Equal(loaded.Cert.Leaf.Raw, leaf.Raw) || !bytes.Equal(loaded.GossipKey, mB.GossipKey) {
		t.Error("Load does not give back what Join wrote")
	}

	// B calls A's RPC over the same port that served the join, over HTTP/2.
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: loaded.ClientTLS("node-a"), ForceAttemptHTTP2: true}}
	defer cl.CloseIdleConnections()
	resp, err := cl.Get("https://" + c.addr + "/rpc")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello node-b over HTTP/2.0" {
		t.Errorf("RPC from B: %d %q", resp.StatusCode, body)
	}

	// And the other way: B serves with ServerTLS, A calls with ClientTLS.
	got := make(chan string, 1)
	srvB := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, err := PeerNode(r.TLS)
		if err != nil {
			name = err.Error()
		}
		got <- name
	}), TLSConfig: loaded.ServerTLS(), ErrorLog: quietLog()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srvB.ServeTLS(ln, "", "")
	defer srvB.Close()
	clA := &http.Client{Transport: &http.Transport{TLSClientConfig: c.m.ClientTLS("node-b")}}
	defer clA.CloseIdleConnections()
	resp, err = clA.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if name := <-got; name != "node-a" {
		t.Errorf("PeerNode on B = %q, want node-a", name)
	}

	// A client that expects another node name refuses B's certificate.
	clWrong := &http.Client{Transport: &http.Transport{TLSClientConfig: c.m.ClientTLS("node-c")}}
	defer clWrong.CloseIdleConnections()
	if _, err := clWrong.Get("https://" + ln.Addr().String() + "/"); err == nil || !strings.Contains(err.Error(), "node-c") {
		t.Errorf("calling B as node-c: %v", err)
	}

	// A second join into the same directory is refused.
	if _, err := Join(testCtx(t), c.token(t), "node-b", loopback, dirB); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second Join into %s: %v", dirB, err)
	}
}

func TestJoinWithWrongSecretIsRefused(t *testing.T) {
	c := newCluster(t)
	tok := c.token(t)
	tok.Secret = bytes.Repeat([]byte{7}, JoinSecretSize)
	dir := filepath.Join(t.TempDir(), "pki")
	_, err := Join(testCtx(t), tok, "node-b", loopback, dir)
	var je *JoinError
	if !errors.As(err, &je) || je.Status != http.StatusForbidden {
		t.Fatalf("Join with a wrong secret: %v, want a 403 JoinError", err)
	}
	assertNotExist(t, dir)
	if len(c.admittedNames()) != 0 {
		t.Error("admit hook ran for an unproven joiner")
	}
}

func TestJoinRefusedByAdmitHook(t *testing.T) {
	c := newCluster(t)
	c.mu.Lock()
	c.admitErr = errors.New("name node-a is taken")
	c.mu.Unlock()
	dir := filepath.Join(t.TempDir(), "pki")
	_, err := Join(testCtx(t), c.token(t), "node-a", nil, dir)
	var je *JoinError
	if !errors.As(err, &je) || je.Status != http.StatusConflict || !strings.Contains(je.Msg, "taken") {
		t.Fatalf("Join of a refused name: %v", err)
	}
	assertNotExist(t, dir)
}

// A token pinning another CA: the joiner aborts the handshake, so the
// server never receives a byte of application data.
func TestJoinWithWrongPinSendsNothing(t *testing.T) {
	c := newCluster(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.a.joinServerTLS(c.m))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		hsErr error
		n     int
	}
	res := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			res <- result{hsErr: err}
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		hsErr := tc.Handshake()
		n, _ := io.Copy(io.Discard, tc)
		res <- result{hsErr, int(n)}
	}()

	other, err := Bootstrap(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok := c.token(t)
	tok.Addr = ln.Addr().String()
	tok.CAPin = other.CAPin()
	dir := filepath.Join(t.TempDir(), "pki")
	_, err = Join(testCtx(t), tok, "node-b", loopback, dir)
	if err == nil || !strings.Contains(err.Error(), "does not present the cluster CA the token pins") {
		t.Fatalf("Join with the wrong pin: %v", err)
	}
	r := <-res
	if r.hsErr == nil || r.n != 0 {
		t.Errorf("server side: handshake err %v, %d bytes received; want a failed handshake and nothing sent", r.hsErr, r.n)
	}
	assertNotExist(t, dir)
}

func TestJoinAgainstNonJoinServer(t *testing.T) {
	c := newCluster(t)
	srv := &http.Server{Handler: http.NotFoundHandler(), TLSConfig: c.m.ServerTLS(), ErrorLog: quietLog()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	tok := c.token(t)
	tok.Addr = ln.Addr().String()
	_, err = Join(testCtx(t), tok, "node-b", nil, filepath.Join(t.TempDir(), "pki"))
	if err == nil || !strings.Contains(err.Error(), "does not serve joins") {
		t.Fatalf("Join against a strict RPC server: %v", err)
	}
}

func TestClientWithoutCertCannotConnect(t *testing.T) {
	c := newCluster(t)
	// Trusts the cluster CA but has no certificate of its own.
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: c.m.pool(), ServerName: "node-a"}
	conn, err := tls.Dial("tcp", c.addr, cfg)
	if err == nil {
		// TLS 1.3 clients finish their side first; the server's refusal
		// arrives on the first read.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("cert-less handshake: %v, want the server to require a certificate", err)
	}
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	defer cl.CloseIdleConnections()
	if resp, err := cl.Get("https://" + c.addr + "/rpc"); err == nil {
		resp.Body.Close()
		t.Errorf("cert-less request got %d", resp.StatusCode)
	}
	if n := c.rpcHits.Load(); n != 0 {
		t.Errorf("RPC handler ran %d times for cert-less clients", n)
	}
}

func TestCertFromAnotherCAIsRefused(t *testing.T) {
	c := newCluster(t)
	other, err := Bootstrap(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	mallory, err := other.EnsureNode("node-b", loopback, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Mallory trusts our CA (it is public) but her certificate is not ours.
	// She sends her certificate even though it is not from a CA the server
	// asks for, as an attacker would.
	cfg := mallory.ClientTLS("node-a")
	cfg.RootCAs = c.m.pool()
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &mallory.Cert, nil }
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	defer cl.CloseIdleConnections()
	if resp, err := cl.Get("https://" + c.addr + "/rpc"); err == nil {
		resp.Body.Close()
		t.Errorf("foreign certificate got %d", resp.StatusCode)
	} else if !strings.Contains(err.Error(), "bad certificate") && !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Errorf("foreign certificate: %v", err)
	}
	if n := c.rpcHits.Load(); n != 0 {
		t.Errorf("RPC handler ran %d times for a foreign certificate", n)
	}
	// Our client refuses a server with a certificate from another CA.
	mine := c.m.ClientTLS("node-b")
	srv := &http.Server{Handler: http.NotFoundHandler(), TLSConfig: mallory.ServerTLS(), ErrorLog: quietLog()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	conn, err := tls.Dial("tcp", ln.Addr().String(), mine)
	if err == nil {
		conn.Close()
		t.Fatal("client accepted a server certificate from another CA")
	}
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("foreign server: %v, want x509.UnknownAuthorityError", err)
	}
}

// rawJoinConn speaks to the join endpoint directly, pinning the CA as Join
// does, to send requests Join never would.
func rawJoinConn(t *testing.T, c *cluster, request string) (int, string) {
	t.Helper()
	conn, err := tls.Dial("tcp", c.addr, &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{JoinALPN},
		InsecureSkipVerify: true, VerifyConnection: pinVerifier(c.a.CAPin(), c.addr),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestJoinConnectionReachesOnlyJoinEndpoint(t *testing.T) {
	c := newCluster(t)
	if code, _ := rawJoinConn(t, c, "GET /rpc HTTP/1.1\r\nHost: x\r\n\r\n"); code != http.StatusNotFound {
		t.Errorf("join connection asking for /rpc: %d, want 404", code)
	}
	if n := c.rpcHits.Load(); n != 0 {
		t.Errorf("RPC handler ran %d times on a join connection", n)
	}
	if code, _ := rawJoinConn(t, c, "GET "+JoinPath+" HTTP/1.1\r\nHost: x\r\n\r\n"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET join: %d, want 405", code)
	}
	big := `{"csr":"` + strings.Repeat("A", maxJoinRequest) + `"}`
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", JoinPath, len(big), big)
	if code, _ := rawJoinConn(t, c, req); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized join: %d, want 413", code)
	}
	garbage := `{"csr":"AAAA","proof":"AAAA"}`
	req = fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", JoinPath, len(garbage), garbage)
	if code, _ := rawJoinConn(t, c, req); code != http.StatusForbidden {
		t.Errorf("join with a made-up proof: %d, want 403", code)
	}
}

func TestServerRefusesOverreachingCSR(t *testing.T) {
	c := newCluster(t)
	tok := c.token(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	bc, _ := asn1.Marshal(struct{ IsCA bool }{true})
	eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 3}}) // code signing
	ku, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{0x04}, BitLength: 6})     // keyCertSign
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	base := func() *x509.CertificateRequest {
		return &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node-b"}, DNSNames: []string{"node-b"}}
	}
	cases := []struct {
		name string
		csr  func() *x509.CertificateRequest
		key  any
		want string
	}{
		{"CA", func() *x509.CertificateRequest {
			r := base()
			r.ExtraExtensions = []pkix.Extension{{Id: oidBasicConstraints, Critical: true, Value: bc}}
			return r
		}, key, "never a CA"},
		{"ext key usage", func() *x509.CertificateRequest {
			r := base()
			r.ExtraExtensions = []pkix.Extension{{Id: oidExtKeyUsage, Value: eku}}
			return r
		}, key, "key usages"},
		{"key usage", func() *x509.CertificateRequest {
			r := base()
			r.ExtraExtensions = []pkix.Extension{{Id: oidKeyUsage, Critical: true, Value: ku}}
			return r
		}, key, "key usages"},
		{"other DNS name", func() *x509.CertificateRequest {
			r := base()
			r.DNSNames = append(r.DNSNames, "node-a")
			return r
		}, key, `DNS name "node-a"`},
		{"upper case name", func() *x509.CertificateRequest {
			r := base()
			r.Subject.CommonName, r.DNSNames = "Node-B", nil
			return r
		}, key, "lower-case"},
		{"unspecified IP", func() *x509.CertificateRequest {
			r := base()
			r.IPAddresses = []net.IP{net.IPv4zero}
			return r
		}, key, "cannot identify"},
		{"e-mail", func() *x509.CertificateRequest {
			r := base()
			r.EmailAddresses = []string{"root@example.com"}
			return r
		}, key, "e-mail"},
		{"RSA key", base, rsaKey, "ECDSA P-256"},
	}
	for _, tc := range cases {
		der, err := x509.CreateCertificateRequest(rand.Reader, tc.csr(), tc.key)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, err = exchange(testCtx(t), tok, der)
		var je *JoinError
		if !errors.As(err, &je) || je.Status != http.StatusBadRequest || !strings.Contains(je.Msg, tc.want) {
			t.Errorf("%s: %v, want 400 saying %q", tc.name, err, tc.want)
		}
	}
	if len(c.admittedNames()) != 0 {
		t.Errorf("admit hook ran for refused CSRs: %v", c.admittedNames())
	}
}

func TestIssueNodeGrantsOnlyNodeUsage(t *testing.T) {
	a, err := Bootstrap(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := a.IssueNode("node-x", []net.IP{net.ParseIP("10.1.2.3"), net.ParseIP("fd00::5")}, []string{"node-x.internal"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	leaf, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature ||
		!slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("leaf: IsCA %v KeyUsage %v ExtKeyUsage %v", leaf.IsCA, leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	if leaf.Subject.CommonName != "node-x" || !slices.Equal(leaf.DNSNames, []string{"node-x", "node-x.internal"}) || len(leaf.IPAddresses) != 2 {
		t.Errorf("leaf names: CN %s DNS %v IP %v", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses)
	}
	for _, bad := range []string{"", "Node-X", "node_x", "-x", strings.Repeat("a", 64)} {
		if _, _, err := a.IssueNode(bad, nil, nil); err == nil {
			t.Errorf("IssueNode(%q) succeeded", bad)
		}
	}
}

func TestEnsureNodeKeepsOrRenews(t *testing.T) {
	a, err := Bootstrap(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m1, err := a.EnsureNode("node-a", loopback, nil)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := a.EnsureNode("node-a", loopback, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m1.Cert.Leaf.SerialNumber.Cmp(m2.Cert.Leaf.SerialNumber) != 0 {
		t.Error("EnsureNode reissued an unchanged, fresh certificate")
	}
	m3, err := a.EnsureNode("node-a", []net.IP{net.ParseIP("10.9.9.9")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m3.Cert.Leaf.SerialNumber.Cmp(m1.Cert.Leaf.SerialNumber) == 0 || !m3.Cert.Leaf.IPAddresses[0].Equal(net.ParseIP("10.9.9.9")) {
		t.Error("EnsureNode kept a certificate with the wrong IP")
	}
	if m := mode(t, filepath.Join(a.dir, NodeKeyFile)); m != 0o600 {
		t.Errorf("node.key mode %o", m)
	}
	// The bootstrap node's directory loads like a joined node's.
	if m, err := Load(a.dir); err != nil || m.NodeName != "node-a" {
		t.Errorf("Load of the bootstrap dir: %v", err)
	}
}

func TestLoadExplainsMissingMaterial(t *testing.T) {
	_, err := Load(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "has not joined") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of an empty dir: %v", err)
	}
}

func TestPeerNodeNeedsVerifiedChain(t *testing.T) {
	if _, err := PeerNode(nil); err == nil {
		t.Error("PeerNode(nil) succeeded")
	}
	if _, err := PeerNode(&tls.ConnectionState{}); err == nil {
		t.Error("PeerNode without verified chains succeeded")
	}
}
