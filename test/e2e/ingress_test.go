package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// httpsGet fetches https://host/ through 127.0.0.1:443 in the node's
// namespace, as `curl --resolve host:443:127.0.0.1` does.
func httpsGet(t *testing.T, n *harness.Node, pool *x509.CertPool, host string) (*http.Response, string) {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return n.NS.Dial(ctx, "tcp", "127.0.0.1:443")
		},
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: host},
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	resp, err := c.Get("https://" + host + "/")
	if err != nil {
		t.Fatalf("https://%s/: %v", host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestIngress is the black-box check of the public ingress: a wildcard
// certificate for *.test, HTTPS with HTTP/2, a redirect on :80, 404 for an
// unknown id, and a raw TCP port.
func TestIngress(t *testing.T) {
	certPath, keyPath, pool := testutil.SelfSignedCert(t, t.TempDir(), "*.test")
	n, ref := newNode(t, "--cluster-base-url", "test", "--cluster-tls-cert", certPath, "--cluster-tls-key", keyPath)

	a := spawn(t, n, `{"cores":0.5,"memory":64,"image_ref":"`+ref+`","ports":{"443":8080}}`)
	host := a.ID + ".test"
	if a.URL != host {
		t.Fatalf("url %q, want %s", a.URL, host)
	}
	resp, body := httpsGet(t, n, pool, host)
	if resp.StatusCode != 200 || body != testutil.IndexHTML || resp.Proto != "HTTP/2.0" {
		t.Fatalf("https: %d %s %q, want 200 HTTP/2.0 with the page", resp.StatusCode, resp.Proto, body)
	}

	// The same with curl, as the black-box check does, when curl is here.
	// -k: OpenSSL refuses a wildcard over a single-label domain such as
	// *.test; Go's client above has verified the certificate.
	if _, err := exec.LookPath("curl"); err == nil {
		out, err := n.NS.Command("curl", "-sS", "-k", "--http2", "--resolve", host+":443:127.0.0.1",
			"-w", "\n%{http_version} %{http_code}", "https://"+host+"/").CombinedOutput()
		if err != nil || string(out) != testutil.IndexHTML+"\n2 200" {
			t.Fatalf("curl: %v %q", err, out)
		}
	}

	req, _ := http.NewRequest("GET", "http://127.0.0.1:80/some/path?q=1", nil)
	req.Host = host
	rr, err := n.NS.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rr.Body.Close()
	if rr.StatusCode/100 != 3 || rr.Header.Get("Location") != "https://"+host+"/some/path?q=1" {
		t.Fatalf(":80: %d Location %q, want a redirect to https://%s/some/path?q=1", rr.StatusCode, rr.Header.Get("Location"), host)
	}

	if resp, _ := httpsGet(t, n, pool, "0b7c1f9e-1d1a-4c3b-9a1e-2b3c4d5e6f70.test"); resp.StatusCode != 404 {
		t.Fatalf("unknown id over https: %d, want 404", resp.StatusCode)
	}

	// A raw TCP port: plain HTTP spoken straight to the workload on :9000.
	tcpW := spawn(t, n, `{"cores":0.5,"memory":64,"image_ref":"`+ref+`","ports":{"tcp:9000":8080}}`)
	if got := rawHTTP(t, n, "127.0.0.1:9000"); !strings.HasSuffix(got, testutil.IndexHTML) || !strings.HasPrefix(got, "HTTP/1.") {
		t.Fatalf("tcp :9000: %q", got)
	}

	// One workload per TCP port, and the daemon's own ports are not for
	// workloads: both refused at placement with a clear reason.
	for body, want := range map[string]string{
		`{"image_ref":"` + ref + `","ports":{"9000":8080}}`:     "public TCP port 9000 is taken on node",
		`{"image_ref":"` + ref + `","ports":{"tcp:80":8080}}`:   "HTTP proxy",
		`{"image_ref":"` + ref + `","ports":{"tcp:443":8080}}`:  "HTTPS proxy",
		`{"image_ref":"` + ref + `","ports":{"tcp:8000":8080}}`: "API",
	} {
		code, out := n.API("POST", "/spawn", body)
		if code != 409 || !strings.Contains(out, want) {
			t.Errorf("spawn %s: %d %s, want 409 naming %q", body, code, out, want)
		}
	}
	if code, out := n.API("POST", "/spawn", `{"image_ref":"`+ref+`","ports":{"9000":8080},"dry_run":true}`); code != 409 || !strings.Contains(out, tcpW.ID) {
		t.Fatalf("dry run on a taken port: %d %s, want 409 naming %s", code, out, tcpW.ID)
	}

	// Stopping the workload closes its port and frees it for another.
	if code, out := n.API("POST", "/stop", `{"id":"`+tcpW.ID+`"}`); code != 200 {
		t.Fatalf("stop: %d %s", code, out)
	}
	if c, err := n.NS.Dial(context.Background(), "tcp", "127.0.0.1:9000"); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial :9000 after stop: %v, want connection refused", err)
	}
	spawn(t, n, `{"cores":0.5,"memory":64,"image_ref":"`+ref+`","ports":{"9000":8080}}`)
	if got := rawHTTP(t, n, "127.0.0.1:9000"); !strings.HasSuffix(got, testutil.IndexHTML) {
		t.Fatalf("tcp :9000 after the port changed hands: %q", got)
	}
}

// rawHTTP sends a bare HTTP/1.0 request over TCP in the node's namespace,
// half-closes, and returns everything the other end sent.
func rawHTTP(t *testing.T, n *harness.Node, addr string) string {
	t.Helper()
	c, err := n.NS.Dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: anything\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read %s: %v", addr, err)
	}
	return string(b)
}
