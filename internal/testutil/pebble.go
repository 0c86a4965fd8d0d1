package testutil

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// PebbleVersion is the Pebble release scripts/deps.sh installs.
const PebbleVersion = "v2.10.1"

// PebbleTool finds a Pebble binary (pebble or pebble-challtestsrv) in the
// cache scripts/deps.sh fills, ${HYPERCORE_TOOLS:-/var/cache/hypercore/tools}/
// pebble-<PebbleVersion>, or on PATH, and skips the test when it is in
// neither.
func PebbleTool(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("HYPERCORE_TOOLS")
	if dir == "" {
		dir = "/var/cache/hypercore/tools"
	}
	p := filepath.Join(dir, "pebble-"+PebbleVersion, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Skipf("%s not found in %s or on PATH; run scripts/deps.sh to install Pebble %s", name, filepath.Dir(p), PebbleVersion)
	return ""
}

// PebbleConfig is what the tests set in Pebble's JSON config.
type PebbleConfig struct {
	Listen, Management string // host:port of the ACME and management APIs
	Certificate, Key   string // PEM files for Pebble's own HTTPS
	HTTPPort, TLSPort  int    // where it validates HTTP-01 and TLS-ALPN-01
}

// WritePebbleConfig writes c as dir/pebble.json, with OCSP off and ECDSA
// keys, and returns its path.
func WritePebbleConfig(t testing.TB, dir string, c PebbleConfig) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":           c.Listen,
		"managementListenAddress": c.Management,
		"certificate":             c.Certificate,
		"privateKey":              c.Key,
		"httpPort":                c.HTTPPort,
		"tlsPort":                 c.TLSPort,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
	}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// PebbleEnv is the environment Pebble runs with in tests: the base
// environment, no random validation sleeps and no rejected nonces.
func PebbleEnv() []string {
	return append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
}

// ChalltestsrvArgs are the arguments for pebble-challtestsrv with only its
// DNS server on dnsAddr, answering 127.0.0.1 for every name, and its
// management API on mgmtAddr: the challenge servers it could also run
// would listen on fixed ports.
func ChalltestsrvArgs(dnsAddr, mgmtAddr string) []string {
	return []string{"-dnsserver", dnsAddr, "-management", mgmtAddr,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""}
}

// PebbleRoots returns the root that Pebble's certificates chain to, from
// its management API at mgmtURL (https://host:port) through client. Pebble
// makes a new one at every start.
func PebbleRoots(t testing.TB, client *http.Client, mgmtURL string) *x509.CertPool {
	t.Helper()
	resp, err := client.Get(mgmtURL + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if resp.StatusCode != 200 || !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root: %d %q", resp.StatusCode, b)
	}
	return pool
}

// StartTool starts cmd with its output in out and kills it when the test
// ends, waiting for it to exit.
func StartTool(t testing.TB, cmd *exec.Cmd, out io.Writer) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
}

// LockedBuffer is a bytes.Buffer safe for concurrent use: a tool or a
// server writes its output or log to it while the test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what has been written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
