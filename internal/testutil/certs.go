package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// SelfSignedCert writes a self-signed ECDSA P-256 certificate for names,
// valid from an hour ago for a day, to dir/cert.pem (0644) and its PKCS#8
// key to dir/key.pem (0600). It returns their paths and a pool that trusts
// the certificate. Names that parse as IP addresses go into the IP SANs,
// the others (wildcards included) into the DNS SANs; the first name is
// also the common name. The certificate is its own CA, so it can serve as
// a root for clients. The serial number is the current time in
// nanoseconds.
func SelfSignedCert(t testing.TB, dir string, names ...string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	cert := WriteSelfSignedCert(t, dir, time.Now().UnixNano(), names...)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), pool
}

// WriteSelfSignedCert is SelfSignedCert with the serial number given, for
// tests that tell one certificate from the next by it; it returns the
// certificate. Writing again to the same dir replaces both files.
func WriteSelfSignedCert(t testing.TB, dir string, serial int64, names ...string) *x509.Certificate {
	t.Helper()
	if len(names) == 0 {
		t.Fatal("WriteSelfSignedCert: no names")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
