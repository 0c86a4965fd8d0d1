package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Material is what every node needs to be a cluster member: the CA to check
// peers against, its own certificate and key, and the gossip key.
type Material struct {
	// NodeName is the node's identity, the CN and first DNS SAN of Cert.
	NodeName string
	// CACert is the cluster CA.
	CACert *x509.Certificate
	// Cert is the node's certificate and private key; Cert.Leaf is set.
	Cert tls.Certificate
	// GossipKey is serf's keyring key (AES-256).
	GossipKey []byte
}

// String describes the material without the private key or gossip key. It
// has a value receiver so that printing a Material or a *Material with %v
// never dumps the key.
func (m Material) String() string {
	if m.CACert == nil || m.Cert.Leaf == nil {
		return "pki.Material{node: " + m.NodeName + ", incomplete}"
	}
	pin := spkiPin(m.CACert)
	return fmt.Sprintf("pki.Material{node: %s, CA: sha256:%s, expires: %s}", m.NodeName, hex.EncodeToString(pin[:8]), m.Cert.Leaf.NotAfter.Format("2006-01-02"))
}

// GoString redacts %#v as String does %v.
func (m Material) GoString() string { return m.String() }

// Load reads a node's material from dir, as Join or EnsureNode left it,
// and checks that it fits together: the key matches the certificate and
// the certificate chains to the CA and has not expired.
func Load(dir string) (*Material, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pki: %s is missing: this node has not joined a cluster yet (join with --join-token): %w", filepath.Join(dir, name), err)
		}
		if err != nil {
			return nil, fmt.Errorf("pki: read %s: %w", filepath.Join(dir, name), err)
		}
		return b, nil
	}
	caPEM, err := read(CACertFile)
	if err != nil {
		return nil, err
	}
	certPEM, err := read(NodeCertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(NodeKeyFile)
	if err != nil {
		return nil, err
	}
	gossip, err := readGossipKey(filepath.Join(dir, GossipKeyFile))
	if err != nil {
		return nil, err
	}
	m, err := assemble(caPEM, certPEM, keyPEM, gossip)
	if err != nil {
		return nil, fmt.Errorf("pki: node material in %s: %w", dir, err)
	}
	return m, nil
}

// assemble parses and cross-checks the parts of a Material. Load and Join
// both go through it, so what Join writes is exactly what Load accepts.
func assemble(caPEM, certPEM, keyPEM, gossip []byte) (*Material, error) {
	ca, err := parseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !ca.IsCA {
		return nil, errors.New("CA certificate is not a CA")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node certificate and key do not form a pair (rejoin to get a new pair): %w", err)
	}
	if len(pair.Certificate) != 1 {
		return nil, errors.New("node certificate file holds more than one certificate")
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("node key is not ECDSA P-256")
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("node certificate: %w", err)
		}
		pair.Leaf = leaf
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("node certificate does not verify against the cluster CA (expired? from another cluster?); join again with a fresh token: %w", err)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return nil, errors.New("node certificate is not valid for TLS clients")
	}
	name := leaf.Subject.CommonName
	if err := checkNodeName(name); err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	if !slices.Contains(leaf.DNSNames, name) {
		return nil, fmt.Errorf("node certificate CN %q is not among its DNS names", name)
	}
	if len(gossip) != GossipKeySize {
		return nil, fmt.Errorf("gossip key is %d bytes, want %d", len(gossip), GossipKeySize)
	}
	return &Material{NodeName: name, CACert: ca, Cert: pair, GossipKey: bytes.Clone(gossip)}, nil
}

func (m *Material) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(m.CACert)
	return p
}

// ServerTLS is the TLS config for a node's RPC listener: TLS 1.3 only, and
// every client must present a certificate from the cluster CA or the
// handshake fails, so an outsider never reaches a handler. It sets no
// NextProtos; http.Server.ServeTLS adds h2 and http/1.1. To also accept
// joins on the same listener, use Authority.EnableJoin instead.
func (m *Material) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{m.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    m.pool(),
	}
}

// ClientTLS is the TLS config for calling another node: TLS 1.3 only,
// presents this node's certificate, and trusts only the cluster CA.
// serverName is the peer's node name, which is what its certificate names;
// checking it (rather than leaving it empty and relying on the dialled IP)
// is what stops one member from answering for another. For HTTP/2 with a
// custom transport, set http.Transport.ForceAttemptHTTP2.
func (m *Material) ClientTLS(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{m.Cert},
		RootCAs:      m.pool(),
		ServerName:   serverName,
	}
}

// PeerNode returns the node name of the peer on a connection whose
// certificate crypto/tls has verified against the cluster CA (ServerTLS or
// ClientTLS). It refuses unverified connections, so a handler can use it as
// the caller's identity: on a server, pass r.TLS.
func PeerNode(cs *tls.ConnectionState) (string, error) {
	if cs == nil {
		return "", errors.New("pki: connection is not TLS, so the peer has no node identity")
	}
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", errors.New("pki: peer certificate was not verified against the cluster CA")
	}
	leaf := cs.VerifiedChains[0][0]
	name := leaf.Subject.CommonName
	if err := checkNodeName(name); err != nil {
		return "", fmt.Errorf("pki: peer certificate: %w", err)
	}
	if !slices.Contains(leaf.DNSNames, name) {
		return "", fmt.Errorf("pki: peer certificate CN %q is not among its DNS names", name)
	}
	return name, nil
}
