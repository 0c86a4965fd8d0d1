package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/libdns/libdns"
)

func TestWorkloadIDUnder(t *testing.T) {
	for name, want := range map[string]string{
		"web1.test": "web1", "WEB1.Test.": "web1",
		"test": "", "a.web1.test": "", "*.test": "", "web1.other": "", "": "", ".test": "", "web1test": "",
	} {
		got, ok := workloadIDUnder("test", name)
		if got != want || ok != (want != "") {
			t.Errorf("%q: %q %v, want %q", name, got, ok, want)
		}
	}
}

// offlineACME is an ACME source whose CA cannot be reached, so a test
// sees in the log when an attempt is made.
func offlineACME(t *testing.T, tbl *Table, mod func(*ACMEConfig)) (*ACME, *testutil.LockedBuffer) {
	t.Helper()
	log, buf := testLog()
	c := ACMEConfig{
		Email: "ops@test", CA: "https://127.0.0.1:1/dir", StorageDir: filepath.Join(t.TempDir(), "acme"),
		BaseDomain: "test", Table: tbl, HTTPAddr: "127.0.0.1:1", HTTPSAddr: "127.0.0.1:2", Log: log,
	}
	if mod != nil {
		mod(&c)
	}
	a, err := NewACME(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	return a, buf
}

// TestACMEOnlyRoutedIDs: the decision function and GetCertificate refuse
// every name but <id>.<base> of a routed workload, and GetCertificate
// refuses them without certmagic asking storage or the CA.
func TestACMEOnlyRoutedIDs(t *testing.T) {
	tbl := NewTable()
	tbl.Set(Route{ID: "web1", HTTP: map[uint16]string{443: "127.0.0.1:1"}})
	a, log := offlineACME(t, tbl, nil)
	ctx := context.Background()
	if err := a.decide(ctx, "web1.test"); err != nil {
		t.Fatalf("routed id refused: %v", err)
	}
	for _, name := range []string{"nope.test", "test", "a.web1.test", "*.test", "web1.example.org", "localhost"} {
		if err := a.decide(ctx, name); err == nil {
			t.Errorf("decide(%q) allowed", name)
		}
		c, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
		if c != nil || err != nil {
			t.Errorf("GetCertificate(%q): %v %v, want nil, nil", name, c, err)
		}
	}
	if c, err := a.GetCertificate(&tls.ClientHelloInfo{}); c != nil || err != nil {
		t.Errorf("no SNI: %v %v, want nil, nil", c, err)
	}
	// HTTP-01 requests for such names go straight to the next handler.
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) })
	for _, host := range []string{"nope.test", "test:80", "web1.example.org"} {
		rec := httptest.NewRecorder()
		a.HTTPChallengeHandler(next).ServeHTTP(rec, httptest.NewRequest("GET", "http://"+host+"/.well-known/acme-challenge/tok", nil))
		if rec.Code != 299 {
			t.Errorf("HTTP-01 request for %s: %d, want it passed on", host, rec.Code)
		}
	}
	if strings.Contains(log.String(), "obtain") {
		t.Errorf("the CA was contacted for a refused name:\n%s", log)
	}
}

// fakeConn gives certmagic's logging the addresses it asks a hello for.
type fakeConn struct{ net.Conn }

func (fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234} }
func (fakeConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443} }

func TestNewACMEErrors(t *testing.T) {
	ok := ACMEConfig{Email: "ops@test", StorageDir: t.TempDir(), BaseDomain: "test", Table: NewTable()}
	for want, mod := range map[string]func(*ACMEConfig){
		"not an email address":          func(c *ACMEConfig) { c.Email = "" },
		"storage directory":             func(c *ACMEConfig) { c.StorageDir = "" },
		"cannot get certificates":       func(c *ACMEConfig) { c.BaseDomain = "localhost" },
		"routing table":                 func(c *ACMEConfig) { c.Table = nil },
		"both HTTP-01 and TLS-ALPN-01":  func(c *ACMEConfig) { c.DisableHTTP01, c.DisableTLSALPN01 = true, true },
		"want a number from 1 to 65535": func(c *ACMEConfig) { c.HTTPSAddr = ":0" },
		"missing port in address":       func(c *ACMEConfig) { c.HTTPAddr = "127.0.0.1" },
		"":                              func(c *ACMEConfig) {}, // the good one
	} {
		c := ok
		mod(&c)
		a, err := NewACME(c)
		if want == "" {
			if err != nil {
				t.Fatalf("good config: %v", err)
			}
			a.Stop()
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want an error with %q, got %v", want, err)
		}
	}
}

// solverStub is a TLSALPNSolver with one certificate for everything.
type solverStub struct{ cert *tls.Certificate }

func (s solverStub) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cert, nil
}
func (solverStub) SolvesTLSALPN() {}

// TestTLSALPNChallengeRouting: the CA's challenge handshake goes to the
// ACME source even when a file certificate covers the name, and
// acme-tls/1 is offered only when there is a solver.
func TestTLSALPNChallengeRouting(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteSelfSignedCert(t, dir, 1, "*.example.test")
	cf, err := NewCertFile(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	challenge := &tls.Certificate{}
	srcs := CertSources{cf, solverStub{challenge}}
	c, err := srcs.GetCertificate(&tls.ClientHelloInfo{ServerName: "w.example.test", SupportedProtos: []string{"acme-tls/1"}})
	if c != challenge || err != nil {
		t.Fatalf("challenge hello: %v %v, want the solver's certificate", c, err)
	}
	c, err = srcs.GetCertificate(&tls.ClientHelloInfo{ServerName: "w.example.test", SupportedProtos: []string{"h2", "http/1.1"}})
	if c == nil || c == challenge || err != nil {
		t.Fatalf("normal hello: %v %v, want the file certificate", c, err)
	}
	if c, err := (CertSources{cf}).GetCertificate(&tls.ClientHelloInfo{ServerName: "w.example.test", SupportedProtos: []string{"acme-tls/1"}}); c != nil || err == nil {
		t.Fatalf("challenge hello without a solver: %v %v, want no certificate", c, err)
	}
	if p := TLSConfig(CertSources{cf}).NextProtos; slices.Contains(p, "acme-tls/1") {
		t.Errorf("without ACME: %v offers acme-tls/1", p)
	}
	if p := TLSConfig(CertSources{cf, CertSources{solverStub{}}}).NextProtos; !slices.Equal(p, []string{"h2", "http/1.1", "acme-tls/1"}) {
		t.Errorf("with ACME: %v, want h2, http/1.1, acme-tls/1", p)
	}
}

func TestDNSProviderRegistry(t *testing.T) {
	if _, err := NewDNSProvider("route99", nil); err == nil || !strings.Contains(err.Error(), "rfc2136") {
		t.Errorf("unknown provider: %v, want the list of built-in ones", err)
	}
	_, err := NewDNSProvider("rfc2136", map[string]string{"server": "ns1.example.org"})
	if err == nil || !strings.Contains(err.Error(), "key_name") || !strings.Contains(err.Error(), "HYPERCORE_ACME_DNS_KEY") {
		t.Errorf("missing settings: %v, want key_name and key named", err)
	}
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	good := map[string]string{"server": "ns1.example.org", "key_name": "acme", "key": key}
	if _, err := NewDNSProvider("rfc2136", good); err != nil {
		t.Errorf("good settings: %v", err)
	}
	for k, v := range map[string]string{"sever": "x", "key": "not base64!", "key_alg": "md5"} {
		bad := map[string]string{"server": "ns1.example.org", "key_name": "acme", "key": key}
		bad[k] = v
		if _, err := NewDNSProvider("rfc2136", bad); err == nil {
			t.Errorf("%s=%s accepted", k, v)
		}
	}

	got, err := ParseDNSConfig("server=ns1:53, key_name=acme.,key=" + key)
	if err != nil || got["server"] != "ns1:53" || got["key_name"] != "acme." || got["key"] != key {
		t.Errorf("parse: %v %v", got, err)
	}
	for _, bad := range []string{"server", "=x", "a=1,a=2"} {
		if _, err := ParseDNSConfig(bad); err == nil {
			t.Errorf("parse %q: no error", bad)
		}
	}
	env := map[string]string{"HYPERCORE_ACME_DNS_KEY": key, "HYPERCORE_ACME_DNS_OTHER": "x"}
	if got := DNSConfigFromEnv("rfc2136", func(k string) string { return env[k] }); len(got) != 1 || got["key"] != key {
		t.Errorf("env: %v", got)
	}
}

// acmeFront serves p over HTTPS with certificates from a, and plain HTTP
// with a's HTTP-01 answers in front of the redirect, on loopback ports
// chosen before a is made (Pebble must know them).
type acmeFront struct {
	httpL, httpsL net.Listener
}

func newACMEFront(t *testing.T) *acmeFront {
	t.Helper()
	f := &acmeFront{}
	var err error
	if f.httpL, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if f.httpsL, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *acmeFront) ports() (httpPort, httpsPort int) {
	return f.httpL.Addr().(*net.TCPAddr).Port, f.httpsL.Addr().(*net.TCPAddr).Port
}

func (f *acmeFront) serve(t *testing.T, p *Proxy, a *ACME) {
	log, _ := testLog()
	https := HTTPSServer("", p.Handler(443), CertSources{a}, log)
	plain := Server("", a.HTTPChallengeHandler(RedirectHTTPS(f.httpsL.Addr().String())), log)
	go Serve(https, f.httpsL)
	go plain.Serve(f.httpL)
	t.Cleanup(func() { https.Close(); plain.Close() })
}

// handshake connects to addr with SNI name, trusting roots, and returns
// the verified chain's leaf.
func handshake(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{ServerName: name, RootCAs: roots}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// TestACMEOnDemand gets a certificate from Pebble at the first handshake
// for a routed workload, through each per-name challenge type, and none
// for other names.
func TestACMEOnDemand(t *testing.T) {
	for _, chal := range []string{"tls-alpn-01", "http-01"} {
		t.Run(chal, func(t *testing.T) {
			dnsSrv := startTestDNS(t, "test", "unused", "unused")
			front := newACMEFront(t)
			httpPort, httpsPort := front.ports()
			pebble := startPebble(t, httpPort, httpsPort, dnsSrv.Addr)

			tbl := NewTable()
			tbl.Set(Route{ID: "web1", HTTP: map[uint16]string{443: echoBackend(t)}, Ready: true})
			log, logBuf := testLog()
			storage := filepath.Join(t.TempDir(), "acme")
			a, err := NewACME(ACMEConfig{
				Email: "ops@test", CA: pebble.DirURL, CARoots: pebble.TLSPool, StorageDir: storage,
				BaseDomain: "test", Table: tbl, Log: log,
				DisableHTTP01: chal != "http-01", DisableTLSALPN01: chal != "tls-alpn-01",
				HTTPAddr: front.httpL.Addr().String(), HTTPSAddr: front.httpsL.Addr().String(),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(a.Stop)
			front.serve(t, New("test", tbl, log), a)
			roots := pebble.Roots(t)
			addr := front.httpsL.Addr().String()

			leaf, err := handshake(addr, "web1.test", roots)
			if err != nil {
				t.Fatalf("handshake for a routed id: %v\nlog:\n%s\npebble:\n%s", err, logBuf, pebble.log)
			}
			if !slices.Equal(leaf.DNSNames, []string{"web1.test"}) {
				t.Fatalf("certificate for %v, want web1.test", leaf.DNSNames)
			}
			if !strings.Contains(logBuf.String(), "served key authentication") || !strings.Contains(logBuf.String(), chal) {
				t.Errorf("no %s answer in the log:\n%s", chal, logBuf)
			}
			// The page itself, over the certificate from Pebble.
			tr := &http.Transport{
				DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return net.Dial("tcp", addr) },
				TLSClientConfig: &tls.Config{RootCAs: roots},
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://web1.test/x")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.HasPrefix(string(body), "backend saw web1.test/x") {
				t.Fatalf("page: %d %q", resp.StatusCode, body)
			}

			orders := pebble.Orders()
			for _, name := range []string{"nope.test", "test", "a.web1.test", "web1.example.org"} {
				if _, err := handshake(addr, name, roots); err == nil {
					t.Errorf("handshake for %s succeeded", name)
				}
			}
			if got := pebble.Orders(); got != orders {
				t.Errorf("pebble took %d orders for names that are not workloads", got-orders)
			}
			if !hasFile(t, storage, "web1.test.crt") {
				t.Errorf("no web1.test.crt under %s", storage)
			}

			// A second source on the same storage, as after a restart,
			// serves the stored certificate without a new order.
			a.Stop()
			a2, err := NewACME(ACMEConfig{Email: "ops@test", CA: pebble.DirURL, CARoots: pebble.TLSPool, StorageDir: storage, BaseDomain: "test", Table: tbl, Log: log})
			if err != nil {
				t.Fatal(err)
			}
			defer a2.Stop()
			c, err := a2.GetCertificate(&tls.ClientHelloInfo{ServerName: "web1.test", Conn: fakeConn{}})
			if err != nil || c == nil || c.Leaf == nil || c.Leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
				t.Fatalf("after restart: %v %v, want the stored certificate", c, err)
			}
			if got := pebble.Orders(); got != orders {
				t.Errorf("restart ordered again")
			}
		})
	}
}

func hasFile(t *testing.T, dir, name string) bool {
	t.Helper()
	found := false
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == name {
			found = true
		}
		return nil
	})
	return found
}

// wildcardFrom obtains *.test through DNS-01 with provider and checks the
// certificate serves any <id>.test, routed or not.
func wildcardFrom(t *testing.T, pebble *pebbleCA, mod func(*ACMEConfig)) {
	t.Helper()
	log, logBuf := testLog()
	storage := filepath.Join(t.TempDir(), "acme")
	c := ACMEConfig{Email: "ops@test", CA: pebble.DirURL, CARoots: pebble.TLSPool, StorageDir: storage, BaseDomain: "test", Log: log}
	mod(&c)
	a, err := NewACME(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	if a.Wildcard() != "*.test" {
		t.Fatalf("wildcard %q", a.Wildcard())
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	roots := pebble.Roots(t)
	var cert *tls.Certificate
	for range 600 { // 60 s
		if cert, _ = a.GetCertificate(&tls.ClientHelloInfo{ServerName: "anything.test", Conn: fakeConn{}}); cert != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cert == nil {
		t.Fatalf("no *.test certificate in 60s\nlog:\n%s\npebble:\n%s", logBuf, pebble.log)
	}
	if !slices.Equal(cert.Leaf.DNSNames, []string{"*.test"}) {
		t.Fatalf("certificate for %v, want *.test", cert.Leaf.DNSNames)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(ic)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: "web7.test", Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("wildcard does not verify for web7.test against Pebble's root: %v", err)
	}
	if c, err := a.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.b.test"}); c != nil || err != nil {
		t.Errorf("two labels deep: %v %v, want nil, nil", c, err)
	}
	if !hasFile(t, storage, "wildcard_.test.crt") {
		t.Errorf("no wildcard_.test.crt under %s", storage)
	}
}

// TestACMEWildcardDNS01 obtains *.test through DNS-01 with a provider
// that keeps its records in pebble-challtestsrv, where Pebble looks.
func TestACMEWildcardDNS01(t *testing.T) {
	chall := startChalltestsrv(t)
	pebble := startPebble(t, loopbackPort(t), loopbackPort(t), chall.DNS)
	// challtestsrv answers no SOA queries; certmagic asks this one for the
	// zone of _acme-challenge.test.
	soa := startTestDNS(t, "test", "unused", "unused")
	provider := &challtestsrvProvider{srv: chall}
	wildcardFrom(t, pebble, func(c *ACMEConfig) {
		c.DNSProvider = provider
		c.DNSResolvers = []string{soa.Addr}
		c.DNSPropagationTimeout = -1 // no NS records to find the zone's servers by
	})
	provider.mu.Lock()
	defer provider.mu.Unlock()
	if !slices.Contains(provider.set, "_acme-challenge.test.") {
		t.Errorf("records set at %v, want _acme-challenge.test.", provider.set)
	}
}

// TestACMEWildcardRFC2136 obtains *.test with the built-in rfc2136
// provider, made from settings as the flags make it, against a DNS
// server that checks the TSIG signature and serves the records to Pebble.
func TestACMEWildcardRFC2136(t *testing.T) {
	secret := base64.StdEncoding.EncodeToString([]byte("a TSIG secret for the test zone!"))
	dnsSrv := startTestDNS(t, "test", "acme-key", secret)
	pebble := startPebble(t, loopbackPort(t), loopbackPort(t), dnsSrv.Addr)
	provider, err := NewDNSProvider("rfc2136", map[string]string{"server": dnsSrv.Addr, "key_name": "acme-key", "key": secret})
	if err != nil {
		t.Fatal(err)
	}
	wildcardFrom(t, pebble, func(c *ACMEConfig) {
		c.DNSProvider = provider
		c.DNSResolvers = []string{dnsSrv.Addr}
		c.DNSPropagationTimeout = -1
	})
	if u := dnsSrv.Updates(); len(u) == 0 || slices.ContainsFunc(u, func(s string) bool { return s != "ok" }) {
		t.Errorf("updates: %v, want all accepted", u)
	}

	// A wrong secret is refused by the server, and the error says so.
	bad, _ := NewDNSProvider("rfc2136", map[string]string{"server": dnsSrv.Addr, "key_name": "acme-key", "key": base64.StdEncoding.EncodeToString([]byte("wrong"))})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bad.AppendRecords(ctx, "test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "x"}}); err == nil {
		t.Errorf("update with a wrong TSIG secret succeeded")
	}
}
