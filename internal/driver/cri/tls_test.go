package cri_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/cri"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	path string
}

func newCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	path := filepath.Join(dir, name+".pem")
	writePEM(t, path, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, path: path}
}

// issue writes a leaf certificate for usage and names, and its key;
// it returns their paths.
func (ca *testCA) issue(t *testing.T, dir, name string, usage x509.ExtKeyUsage, names ...string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	cert, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, cert, "CERTIFICATE", der)
	writePEM(t, keyPath, "PRIVATE KEY", kder)
	return cert, keyPath
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The addresses of the link between the host and linkedNetNS's namespace.
const (
	linkHostIP = "10.214.77.1"
	linkNSIP   = "10.214.77.2"
)

// linkedNetNS makes a network namespace joined to the host by a veth pair,
// linkHostIP on the host and linkNSIP inside, and returns its name and
// the inside address.
func linkedNetNS(t *testing.T) (string, string) {
	t.Helper()
	var b [3]byte
	rand.Read(b[:])
	name := fmt.Sprintf("hccri%x", b)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	host, peer := name+"h", name+"n"
	run("link", "add", host, "type", "veth", "peer", "name", peer, "netns", name)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	run("addr", "add", linkHostIP+"/30", "dev", host)
	run("link", "set", host, "up")
	run("-n", name, "addr", "add", linkNSIP+"/30", "dev", peer)
	run("-n", name, "link", "set", peer, "up")
	run("-n", name, "link", "set", "lo", "up")
	return name, linkNSIP
}

// TestRemoteMutualTLS drives containerd over TCP with mutual TLS, as a
// remote endpoint: a client certificate of the right CA runs a workload;
// one from another CA, or a server name the certificate does not hold,
// is refused with an error naming the endpoint.
func TestRemoteMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir, "endpoint-ca")
	srvCert, srvKey := ca.issue(t, dir, "endpoint", x509.ExtKeyUsageServerAuth, linkNSIP)
	cliCert, cliKey := ca.issue(t, dir, "node", x509.ExtKeyUsageClientAuth)
	other := newCA(t, dir, "other-ca")
	badCert, badKey := other.issue(t, dir, "stranger", x509.ExtKeyUsageClientAuth)

	// A remote endpoint: containerd in its own namespace, reached over a
	// veth link rather than a socket file.
	ns, nsIP := linkedNetNS(t)
	addr := net.JoinHostPort(nsIP, "10010")
	ctd := testutil.StartContainerdWith(t, cri.CNIConfList, testutil.ContainerdOptions{
		NetNS: ns,
		TCP:   &testutil.ContainerdTCP{Addr: addr, CA: ca.path, Cert: srvCert, Key: srvKey},
	})
	ctd.Import(t, imageRef, testutil.HTTPDImage(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	endpoint := "tcp://" + addr

	d, err := cri.New(ctx, cri.Options{Endpoint: endpoint, CA: ca.path, Cert: cliCert, Key: cliKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	cfg := config(t)
	drivertest.Run(t, ctx, d, cfg)
	if out, code := drivertest.Exec(t, ctx, d, cfg.ID, "echo", "over tls"); code != 0 || out != "over tls\n" {
		t.Errorf("exec over TLS: %d %q", code, out)
	}
	if err := d.Stop(ctx, cfg.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	if st, err := d.Status(ctx, cfg.ID); err != nil || st.State != driver.StateStopped {
		t.Errorf("after stop: %+v %v", st, err)
	}

	refused := func(what, why string, o cri.Options) {
		t.Helper()
		o.Endpoint, o.DialTimeout = endpoint, 3*time.Second
		_, err := cri.New(ctx, o)
		if err == nil || !strings.Contains(err.Error(), endpoint) || !strings.Contains(err.Error(), why) {
			t.Errorf("%s: %v, want a refusal naming %s and %q", what, err, endpoint, why)
		}
	}
	refused("client certificate from another CA", "trust --cri-cert", cri.Options{CA: ca.path, Cert: badCert, Key: badKey})
	refused("endpoint certificate not from --cri-ca", "unknown authority", cri.Options{CA: other.path, Cert: cliCert, Key: cliKey})
	if _, err := cri.New(ctx, cri.Options{Endpoint: endpoint}); err == nil || !strings.Contains(err.Error(), "--cri-cert") {
		t.Errorf("tcp endpoint without certificates: %v, want an error naming --cri-cert", err)
	}
}
