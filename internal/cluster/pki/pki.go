// Package pki is the cluster's trust root. The first node makes a cluster CA,
// a gossip key and a join secret (Bootstrap). Every other node proves it
// holds the join secret, carried in a join token, to get a node certificate
// signed by that CA and the gossip key (Join). From then on nodes talk only
// over mutual TLS with those certificates (Material), so a machine without
// the token can neither read gossip nor call a node RPC.
//
// A node's pki directory (mode 0700) holds:
//
//	ca.crt       cluster CA certificate (every node)
//	ca.key       cluster CA private key (the bootstrap node only)
//	join.secret  the secret join tokens carry (the bootstrap node only)
//	gossip.key   serf's AES-256 keyring key, base64 (every node)
//	node.crt     this node's certificate (every node)
//	node.key     this node's private key (every node)
//
// Keys and secrets are written 0600, certificates 0644, every file through
// a temp file and a rename so a crash never leaves half a key behind. The
// package never logs, and the types that hold secrets print redacted.
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/hypercore-dev/hypercore/internal/atomicfile"
)

// Sizes and lifetimes. GossipKeySize is 32 because serf's keyring picks
// AES-256 from a 32-byte key.
const (
	GossipKeySize    = 32
	JoinSecretSize   = 32
	NodeCertValidity = 365 * 24 * time.Hour
	CAValidity       = 10 * 365 * 24 * time.Hour
	// renewBefore is how close to expiry EnsureNode reissues the bootstrap
	// node's own certificate.
	renewBefore = 30 * 24 * time.Hour
	// clockSkew backdates certificates so a peer whose clock runs a little
	// behind does not reject a certificate issued a moment ago.
	clockSkew = 5 * time.Minute
	// Bounds on what one certificate may name; they bound input from a join.
	maxIPs      = 16
	maxDNSNames = 16
)

// File names inside a pki directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	JoinSecretFile = "join.secret"
	GossipKeyFile  = "gossip.key"
	NodeCertFile   = "node.crt"
	NodeKeyFile    = "node.key"
)

// Authority is the cluster CA together with the secrets only the bootstrap
// node holds. It is safe for concurrent use: nothing in it changes after
// Bootstrap.
type Authority struct {
	dir       string
	caCert    *x509.Certificate
	caPEM     []byte
	caKey     *ecdsa.PrivateKey
	gossipKey []byte
	secret    []byte
	pin       [32]byte
}

// String describes the authority without any of its secrets, so that an
// Authority that ends up in a log line leaks nothing. It has a value
// receiver so that holds for an Authority as well as an *Authority.
func (a Authority) String() string {
	return fmt.Sprintf("pki.Authority{dir: %s, CA: sha256:%s}", a.dir, hex.EncodeToString(a.pin[:]))
}

// GoString redacts %#v as String does %v.
func (a Authority) GoString() string { return a.String() }

// Bootstrap creates the cluster's secrets in dir (first start of the first
// node) or loads them (every later start): an ECDSA P-256 CA, a gossip key
// and a join secret. Creating them is all or nothing from the caller's
// view: if only some of the files exist it refuses rather than make a new
// CA that would silently split the node from its cluster.
func Bootstrap(dir string) (*Authority, error) {
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	var have, missing []string
	for _, f := range []string{CACertFile, CAKeyFile, GossipKeyFile, JoinSecretFile} {
		ok, err := exists(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		if ok {
			have = append(have, f)
		} else {
			missing = append(missing, f)
		}
	}
	switch {
	case len(missing) == 0:
		return loadAuthority(dir)
	case len(have) == 0:
		if err := createAuthority(dir); err != nil {
			return nil, err
		}
		return loadAuthority(dir)
	case slices.Contains(missing, CAKeyFile) && slices.Contains(have, CACertFile):
		return nil, fmt.Errorf("pki: %s holds a joined node's certificates but not the cluster CA key: only the node that bootstrapped the cluster can issue certificates; load this directory with pki.Load instead", dir)
	default:
		return nil, fmt.Errorf("pki: %s has %v but is missing %v: a bootstrap was interrupted or files were deleted; restore them from a backup, or, if no node ever joined with this CA, delete %s and start again", dir, have, missing, dir)
	}
}

// createAuthority writes a fresh CA, gossip key and join secret. ca.crt is
// written last: Bootstrap treats the set as complete only when it exists.
func createAuthority(dir string) error {
	gossip := make([]byte, GossipKeySize)
	secret := make([]byte, JoinSecretSize)
	if _, err := rand.Read(gossip); err != nil {
		return fmt.Errorf("pki: make gossip key: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("pki: make join secret: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: make CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	// The short id in the name lets an operator tell two clusters' CAs apart
	// in tools that show only the subject.
	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return fmt.Errorf("pki: make CA id: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "hypercore cluster CA " + hex.EncodeToString(id), Organization: []string{"hypercore"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs node certificates only, never another CA.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("pki: sign CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	writes := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{GossipKeyFile, encodeGossipKey(gossip), 0o600},
		{JoinSecretFile, []byte(base64.StdEncoding.EncodeToString(secret) + "\n"), 0o600},
		{CAKeyFile, keyPEM, 0o600},
		{CACertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
	}
	for _, w := range writes {
		if err := atomicfile.WriteFile(filepath.Join(dir, w.name), w.data, w.mode); err != nil {
			return fmt.Errorf("pki: write %s: %w", filepath.Join(dir, w.name), err)
		}
	}
	return nil
}

func loadAuthority(dir string) (*Authority, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: read CA certificate: %w", err)
	}
	ca, err := parseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", filepath.Join(dir, CACertFile), err)
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate; was it overwritten?", filepath.Join(dir, CACertFile))
	}
	if time.Now().After(ca.NotAfter) {
		return nil, fmt.Errorf("pki: the cluster CA in %s expired at %s; CA rotation is not supported, so the cluster must be bootstrapped again", dir, ca.NotAfter.Format(time.RFC3339))
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("pki: read CA key: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	if !key.PublicKey.Equal(ca.PublicKey) {
		return nil, fmt.Errorf("pki: %s does not belong to %s; restore the matching pair from a backup", filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile))
	}
	gossip, err := readGossipKey(filepath.Join(dir, GossipKeyFile))
	if err != nil {
		return nil, err
	}
	secret, err := readBase64File(filepath.Join(dir, JoinSecretFile), JoinSecretSize)
	if err != nil {
		return nil, err
	}
	return &Authority{
		dir:       dir,
		caCert:    ca,
		caPEM:     caPEM,
		caKey:     key,
		gossipKey: gossip,
		secret:    secret,
		pin:       spkiPin(ca),
	}, nil
}

// GossipKey returns a copy of the cluster's serf keyring key.
func (a *Authority) GossipKey() []byte { return bytes.Clone(a.gossipKey) }

// CACertPEM returns the cluster CA certificate, PEM encoded.
func (a *Authority) CACertPEM() []byte { return bytes.Clone(a.caPEM) }

// CAPin returns the SHA-256 of the CA's public key, the value join tokens
// pin the server to.
func (a *Authority) CAPin() [32]byte { return a.pin }

// JoinToken returns the token a new node needs to join through the join
// endpoint at serverAddr (host:port of this node's RPC listener, as the new
// node can reach it). Anyone holding it can join the cluster: treat it like
// a password.
func (a *Authority) JoinToken(serverAddr string) (string, error) {
	t := JoinToken{Addr: serverAddr, CAPin: a.pin, Secret: bytes.Clone(a.secret)}
	if err := t.validate(); err != nil {
		return "", err
	}
	return t.Encode(), nil
}

// WriteJoinToken writes JoinToken(serverAddr) to path (e.g.
// <data-dir>/join-token) with mode 0600, since the token admits whoever
// reads it.
func (a *Authority) WriteJoinToken(path, serverAddr string) error {
	tok, err := a.JoinToken(serverAddr)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("pki: write join token %s: %w", path, err)
	}
	return nil
}

// IssueNode signs a fresh key for nodeName and returns the PEM certificate
// and PKCS#8 key. The certificate is good for NodeCertValidity as both TLS
// server and client, names nodeName as CN and first DNS SAN, and carries
// ips and dnsNames as extra SANs. It is for the bootstrap node and tools;
// a joining node makes its own key and uses Join.
func (a *Authority) IssueNode(nodeName string, ips []net.IP, dnsNames []string) (certPEM, keyPEM []byte, err error) {
	if err := checkNodeName(nodeName); err != nil {
		return nil, nil, err
	}
	ips, err = checkIPs(ips)
	if err != nil {
		return nil, nil, err
	}
	if err := checkDNSNames(dnsNames); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: make node key: %w", err)
	}
	der, err := a.sign(&key.PublicKey, nodeName, ips, dnsNames)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// EnsureNode gives the bootstrap node its own certificate in the
// authority's directory, so it loads like any joined node. It keeps the
// existing one when that still names exactly these addresses and is more
// than 30 days from expiry, and issues a new one otherwise.
func (a *Authority) EnsureNode(nodeName string, ips []net.IP, dnsNames []string) (*Material, error) {
	if err := checkNodeName(nodeName); err != nil {
		return nil, err
	}
	ips, err := checkIPs(ips)
	if err != nil {
		return nil, err
	}
	if err := checkDNSNames(dnsNames); err != nil {
		return nil, err
	}
	if m, err := Load(a.dir); err == nil && m.NodeName == nodeName && spkiPin(m.CACert) == a.pin &&
		sameNames(m.Cert.Leaf, ips, withName(nodeName, dnsNames)) &&
		time.Until(m.Cert.Leaf.NotAfter) > renewBefore {
		return m, nil
	}
	certPEM, keyPEM, err := a.IssueNode(nodeName, ips, dnsNames)
	if err != nil {
		return nil, err
	}
	// node.crt goes last: Load pairs it with node.key, and a crash between
	// the two writes leaves a mismatch that the next EnsureNode repairs.
	if err := atomicfile.WriteFile(filepath.Join(a.dir, NodeKeyFile), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("pki: write node key: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(a.dir, NodeCertFile), certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("pki: write node certificate: %w", err)
	}
	return Load(a.dir)
}

// sign issues a node certificate for pub. Everything in it comes from the
// arguments, never from a CSR's extensions, so a joiner cannot ask for CA
// rights or other key usages.
func (a *Authority) sign(pub *ecdsa.PublicKey, nodeName string, ips []net.IP, dnsNames []string) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(NodeCertValidity)
	if notAfter.After(a.caCert.NotAfter) {
		notAfter = a.caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: nodeName, Organization: []string{"hypercore node"}},
		DNSNames:              withName(nodeName, dnsNames),
		IPAddresses:           ips,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.caCert, pub, a.caKey)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate for node %s: %w", nodeName, err)
	}
	return der, nil
}

// withName returns nodeName followed by the other names, without repeats.
func withName(nodeName string, dnsNames []string) []string {
	out := []string{nodeName}
	for _, n := range dnsNames {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// sameNames reports whether leaf names exactly these IPs and DNS names, in
// any order.
func sameNames(leaf *x509.Certificate, ips []net.IP, dnsNames []string) bool {
	if len(leaf.IPAddresses) != len(ips) || len(leaf.DNSNames) != len(dnsNames) {
		return false
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return false
		}
	}
	for _, n := range dnsNames {
		if !slices.Contains(leaf.DNSNames, n) {
			return false
		}
	}
	return true
}

// nodeNameRE is a lower-case DNS name. Node names go into certificates as
// DNS SANs, and TLS compares host names without regard to case, so
// allowing upper case would let "Node-A" and "node-a" pass for each other.
var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

func checkNodeName(name string) error {
	if name == "" {
		return errors.New("pki: node name is empty")
	}
	if len(name) > 253 || !nodeNameRE.MatchString(name) {
		return fmt.Errorf("pki: node name %q is not a lower-case DNS name (letters a-z, digits, '-' and '.', at most 253 characters); pick another --node-name", name)
	}
	return nil
}

func checkDNSNames(names []string) error {
	if len(names) > maxDNSNames {
		return fmt.Errorf("pki: %d DNS names is more than the %d a node certificate may carry", len(names), maxDNSNames)
	}
	for _, n := range names {
		if len(n) > 253 || !nodeNameRE.MatchString(n) {
			return fmt.Errorf("pki: DNS name %q is not a lower-case DNS name", n)
		}
	}
	return nil
}

// checkIPs rejects addresses no peer could ever dial and returns the list
// with IPv4 addresses in their 4-byte form, which is how x509 stores them.
func checkIPs(ips []net.IP) ([]net.IP, error) {
	if len(ips) > maxIPs {
		return nil, fmt.Errorf("pki: %d IP addresses is more than the %d a node certificate may carry", len(ips), maxIPs)
	}
	out := make([]net.IP, 0, len(ips))
	for _, ip := range ips {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return nil, fmt.Errorf("pki: IP address %v is malformed", []byte(ip))
		}
		if ip.IsUnspecified() || ip.IsMulticast() {
			return nil, fmt.Errorf("pki: IP address %s cannot identify a node; pass the address peers reach it on", ip)
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if !slices.ContainsFunc(out, ip.Equal) {
			out = append(out, ip)
		}
	}
	return out, nil
}

// spkiPin is the SHA-256 of cert's DER SubjectPublicKeyInfo. Pinning the key
// rather than the certificate keeps tokens valid if the CA certificate is
// ever re-signed with the same key.
func spkiPin(cert *x509.Certificate) [32]byte {
	return sha256.Sum256(cert.RawSubjectPublicKeyInfo)
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: make certificate serial: %w", err)
	}
	// A zero serial is invalid; 1 in 2^127 but cheap to rule out.
	return serial.Add(serial, big.NewInt(1)), nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}

func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("private key is not ECDSA P-256")
	}
	return key, nil
}

// encodeGossipKey writes the key as standard base64, the form `serf keygen`
// prints and serf's -encrypt flag takes, so operators can use serf tools.
func encodeGossipKey(key []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(key) + "\n")
}

func readGossipKey(path string) ([]byte, error) {
	return readBase64File(path, GossipKeySize)
}

func readBase64File(path string, size int) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read %s: %w", path, err)
	}
	b, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil || len(b) != size {
		// The content is secret: say what is wrong, never what is there.
		return nil, fmt.Errorf("pki: %s is not %d base64-encoded bytes; restore it from a backup or another node", path, size)
	}
	return b, nil
}

// ensureDir makes dir with mode 0700, tightening it if it already exists:
// it holds private keys.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("pki: restrict %s to its owner: %w", dir, err)
	}
	return nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("pki: %w", err)
}
