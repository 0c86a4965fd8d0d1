package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"testing"
)

func TestSelfSignedCert(t *testing.T) {
	certPath, keyPath, pool := SelfSignedCert(t, t.TempDir(), "localhost", "127.0.0.1", "*.test")
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	leaf := pair.Leaf
	if !slices.Equal(leaf.DNSNames, []string{"localhost", "*.test"}) || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("SANs: DNS %v IP %v", leaf.DNSNames, leaf.IPAddresses)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "a.test"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if c := WriteSelfSignedCert(t, t.TempDir(), 7, "x.test"); c.SerialNumber.Int64() != 7 {
		t.Fatalf("serial %v, want 7", c.SerialNumber)
	}
}
