package cri_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/cri"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

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
	ca := testutil.NewCA(t, dir, "endpoint-ca")
	srvCert, srvKey := ca.Issue(t, dir, "endpoint", x509.ExtKeyUsageServerAuth, linkNSIP)
	cliCert, cliKey := ca.Issue(t, dir, "node", x509.ExtKeyUsageClientAuth)
	other := testutil.NewCA(t, dir, "other-ca")
	badCert, badKey := other.Issue(t, dir, "stranger", x509.ExtKeyUsageClientAuth)

	// A remote endpoint: containerd in its own namespace, reached over a
	// veth link rather than a socket file.
	ns, nsIP := linkedNetNS(t)
	addr := net.JoinHostPort(nsIP, "10010")
	ctd := testutil.StartContainerdWith(t, cri.CNIConfList, testutil.ContainerdOptions{
		NetNS: ns,
		TCP:   &testutil.ContainerdTCP{Addr: addr, CA: ca.Path, Cert: srvCert, Key: srvKey},
	})
	ctd.Import(t, imageRef, testutil.HTTPDImage(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	endpoint := "tcp://" + addr

	d, err := cri.New(ctx, cri.Options{Endpoint: endpoint, CA: ca.Path, Cert: cliCert, Key: cliKey})
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
	refused("client certificate from another CA", "trust --cri-cert", cri.Options{CA: ca.Path, Cert: badCert, Key: badKey})
	refused("endpoint certificate not from --cri-ca", "unknown authority", cri.Options{CA: other.Path, Cert: cliCert, Key: cliKey})
	if _, err := cri.New(ctx, cri.Options{Endpoint: endpoint}); err == nil || !strings.Contains(err.Error(), "--cri-cert") {
		t.Errorf("tcp endpoint without certificates: %v, want an error naming --cri-cert", err)
	}
}
