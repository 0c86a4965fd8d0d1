package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// acmeLab is a network namespace with Pebble and pebble-challtestsrv in it,
// and a node started there with ACME pointed at Pebble.
type acmeLab struct {
	ns        *harness.NetNS
	node      *harness.Node
	ref       string // the test image in the namespace's registry
	pebbleLog *testutil.LockedBuffer
	pebbleTLS *x509.CertPool // trusts Pebble's own HTTPS
}

// newACMELab starts, inside a fresh namespace: pebble-challtestsrv as the
// DNS server resolving every name to 127.0.0.1, Pebble validating on
// ports 80 and 443 there (where the node's proxy listens), and the node
// with flags added to the ACME ones.
func newACMELab(t *testing.T, flags ...string) *acmeLab {
	t.Helper()
	pebbleBin, challBin := testutil.PebbleTool(t, "pebble"), testutil.PebbleTool(t, "pebble-challtestsrv")
	lab := &acmeLab{ns: harness.NewNetNS(t), pebbleLog: &testutil.LockedBuffer{}}
	lab.ref = harness.StartRegistry(t, lab.ns, testutil.HTTPDImage(t))
	dir := t.TempDir()
	// Pebble's own HTTPS certificate doubles as the node's --acme-ca-root.
	certPath, keyPath, pool := testutil.SelfSignedCert(t, dir, "localhost", "127.0.0.1")
	lab.pebbleTLS = pool

	// `ip netns exec` execs the tool in place, so the process StartTool
	// kills at the end is the tool itself.
	challLog := &testutil.LockedBuffer{}
	testutil.StartTool(t, lab.ns.Command(challBin, testutil.ChalltestsrvArgs("127.0.0.1:8053", "127.0.0.1:8055")...), challLog)

	cfgPath := testutil.WritePebbleConfig(t, dir, testutil.PebbleConfig{
		Listen: "127.0.0.1:14000", Management: "127.0.0.1:15000", Certificate: certPath, Key: keyPath,
		HTTPPort: 80, TLSPort: 443,
	})
	pebble := lab.ns.Command(pebbleBin, "-config", cfgPath, "-dnsserver", "127.0.0.1:8053")
	pebble.Env = testutil.PebbleEnv()
	testutil.StartTool(t, pebble, lab.pebbleLog)
	harness.WaitFor(t, "pebble's directory", 10*time.Second, func() bool {
		resp, err := lab.pebbleClient().Get("https://127.0.0.1:14000/dir")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	args := append([]string{"--cluster-base-url", "test", "--acme-email", "ops@test",
		"--acme-ca", "https://127.0.0.1:14000/dir", "--acme-ca-root", certPath}, flags...)
	lab.node = harness.StartNode(t, lab.ns, hypercoreBin, filepath.Join(t.TempDir(), "data"), args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble:\n%s\npebble-challtestsrv:\n%s", lab.pebbleLog, challLog)
		}
	})
	return lab
}

func (l *acmeLab) pebbleClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:     l.ns.Dial,
		TLSClientConfig: &tls.Config{RootCAs: l.pebbleTLS},
	}}
}

// issuingRoot is the root Pebble's certificates chain to; Pebble makes a
// new one at every start.
func (l *acmeLab) issuingRoot(t *testing.T) *x509.CertPool {
	t.Helper()
	return testutil.PebbleRoots(t, l.pebbleClient(), "https://127.0.0.1:15000")
}

// orders counts the orders Pebble has taken.
func (l *acmeLab) orders() int { return strings.Count(l.pebbleLog.String(), "Added order") }

// handshakeNS does a TLS handshake with 127.0.0.1:443 in the namespace
// for name, verifying against roots, and returns the leaf.
func (l *acmeLab) handshake(name string, roots *x509.CertPool) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := l.ns.Dial(ctx, "tcp", "127.0.0.1:443")
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, &tls.Config{ServerName: name, RootCAs: roots})
	defer c.Close()
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

// certFiles lists the certificate files under the node's <data-dir>/acme.
func certFiles(t *testing.T, n *harness.Node) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(filepath.Join(n.DataDir, "acme"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(d.Name(), ".crt") {
			names = append(names, d.Name())
		}
		return nil
	})
	return names
}

// httpsPage fetches https://host/ as httpsGet does, again while the
// workload is still starting (503): the first request is the one that
// makes the node get the certificate, whether or not the page is ready.
func httpsPage(t *testing.T, n *harness.Node, roots *x509.CertPool, host string) (*http.Response, string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, body := httpsGet(t, n, roots, host)
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return resp, body
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestACME: a node with --acme-email gets a certificate from Pebble for a
// workload at the first HTTPS request, through TLS-ALPN-01 on its :443,
// and none for a name that is not a workload.
func TestACME(t *testing.T) {
	lab := newACMELab(t, "--acme-challenges", "tls-alpn-01")
	n := lab.node
	a := spawn(t, n, `{"cores":0.5,"memory":64,"image_ref":"`+lab.ref+`","ports":{"443":8080}}`)
	host := a.ID + ".test"
	roots := lab.issuingRoot(t)

	resp, body := httpsPage(t, n, roots, host) // verifies the chain to Pebble's root
	if resp.StatusCode != 200 || body != testutil.IndexHTML || resp.Proto != "HTTP/2.0" {
		t.Fatalf("https://%s/: %d %s %q, want 200 HTTP/2.0 with the page", host, resp.StatusCode, resp.Proto, body)
	}
	if leaf := resp.TLS.PeerCertificates[0]; !slices.Equal(leaf.DNSNames, []string{host}) {
		t.Fatalf("certificate for %v, want %s", leaf.DNSNames, host)
	}
	if log := n.Log(); !strings.Contains(log, "served key authentication certificate") || !strings.Contains(log, "tls-alpn-01") {
		t.Errorf("the node's log shows no TLS-ALPN-01 answer")
	}
	if files := certFiles(t, n); !slices.Contains(files, host+".crt") {
		t.Errorf("certificates in <data-dir>/acme: %v, want %s.crt", files, host)
	}

	// Names that are not workloads: no certificate, and no order at Pebble.
	orders := lab.orders()
	for _, name := range []string{"0b7c1f9e-1d1a-4c3b-9a1e-2b3c4d5e6f70.test", "test", "x." + host, "other.example"} {
		if _, err := lab.handshake(name, roots); err == nil {
			t.Errorf("handshake for %s got a certificate", name)
		}
	}
	time.Sleep(500 * time.Millisecond) // an order, if one were made, would show by now
	if got := lab.orders(); got != orders {
		t.Errorf("pebble got %d orders for names that are not workloads", got-orders)
	}

	// Plain HTTP still redirects to HTTPS.
	req, _ := http.NewRequest("GET", "http://127.0.0.1:80/p", nil)
	req.Host = host
	rr, err := n.NS.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rr.Body.Close()
	if rr.StatusCode != http.StatusPermanentRedirect || rr.Header.Get("Location") != "https://"+host+"/p" {
		t.Fatalf(":80: %d %q, want 308 to https://%s/p", rr.StatusCode, rr.Header.Get("Location"), host)
	}
}

// TestACMEHTTP01: the same through HTTP-01, which the node answers on :80
// ahead of its redirect to HTTPS.
func TestACMEHTTP01(t *testing.T) {
	lab := newACMELab(t, "--acme-challenges", "http-01")
	n := lab.node
	a := spawn(t, n, `{"cores":0.5,"memory":64,"image_ref":"`+lab.ref+`","ports":{"443":8080}}`)
	host := a.ID + ".test"
	resp, body := httpsPage(t, n, lab.issuingRoot(t), host)
	if resp.StatusCode != 200 || body != testutil.IndexHTML {
		t.Fatalf("https://%s/: %d %q", host, resp.StatusCode, body)
	}
	if log := n.Log(); !strings.Contains(log, "served key authentication") || !strings.Contains(log, "http-01") {
		t.Errorf("the node's log shows no HTTP-01 answer")
	}
}

// TestACMEFlagErrors: wrong ACME flags stop the node at once with a
// message that says what to do.
func TestACMEFlagErrors(t *testing.T) {
	ns := harness.NewNetNS(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--acme-dns", "rfc2136"}, "--acme-dns needs --acme-email"},
		{[]string{"--acme-email", "ops@example.com"}, "--cluster-base-url"},
		{[]string{"--cluster-base-url", "example.com", "--acme-email", "ops@example.com", "--acme-dns", "route99"}, `unknown DNS provider "route99"; built in: rfc2136`},
		{[]string{"--cluster-base-url", "example.com", "--acme-email", "ops@example.com", "--acme-dns", "rfc2136", "--acme-dns-config", "server=ns1.example.com"}, "needs settings: key_name"},
		{[]string{"--cluster-base-url", "example.com", "--acme-email", "ops@example.com", "--acme-dns-config", "server=x"}, "need --acme-dns PROVIDER"},
		{[]string{"--cluster-base-url", "example.com", "--acme-email", "ops@example.com", "--acme-challenges", "dns-01"}, "unknown challenge"},
		{[]string{"--cluster-base-url", "example.com", "--acme-email", "ops@example.com", "--acme-ca-root", "/nonexistent.pem"}, "--acme-ca-root"},
	} {
		args := append([]string{"cluster", "--data-dir", filepath.Join(t.TempDir(), "data")}, c.args...)
		cmd := ns.Command(hypercoreBin, args...)
		var out testutil.LockedBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// A node that wrongly starts would run until stopped.
		timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
		err := cmd.Wait()
		timer.Stop()
		if err == nil || !strings.Contains(out.String(), c.want) {
			t.Errorf("%v: %v %q, want a failure naming %q", c.args, err, out.String(), c.want)
		}
	}
}
