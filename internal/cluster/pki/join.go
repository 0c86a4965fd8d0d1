package pki

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/hypercore-dev/hypercore/internal/atomicfile"
)

// The join protocol.
//
// A joining node dials the token's address with TLS 1.3 offering only the
// ALPN protocol JoinALPN and no client certificate. It trusts the server
// only if the chain the server presents contains a CA whose public key
// hashes to the token's CAPin and the server's leaf verifies against that
// CA; system roots play no part. A wrong pin fails the handshake, before a
// byte of the request is sent.
//
// Over that connection it sends one HTTP/1.1 request, POST JoinPath, with
// a JSON body {"csr": DER CSR, "proof": HMAC-SHA256(secret, proofLabel ||
// EKM || CSR)}, where EKM is 32 bytes of TLS exported keying material
// (RFC 8446 §7.5) under ekmLabel. The secret itself never crosses the wire,
// and the EKM ties the proof to this one TLS session, so a proof cannot be
// replayed on another connection even by someone who saw it.
//
// The server checks the proof in constant time (403 if wrong), then the CSR
// against its policy (400), then asks the caller's admit hook (409), and
// answers {"cert": PEM, "ca": PEM, "gossip_key": bytes}.
//
// Trust decision: the join secret is the cluster's admission credential. A
// holder gets the gossip key and a certificate for any node name and any
// IP addresses it claims (within the syntax checks); the server cannot
// verify either claim, so it does not try. Rejecting names already in use
// is left to the admit hook, which sees the membership list. What the
// server does decide is everything else: the certificate is never a CA,
// carries only server+client auth usage, lasts NodeCertValidity, and names
// the node as CN and sole DNS SAN. Peers should verify each other by node
// name (ClientTLS(serverName)), not by IP SAN.
const (
	// JoinALPN is the ALPN protocol a joining node offers. A listener set up
	// by EnableJoin accepts such connections without a client certificate
	// and serves only the join endpoint on them.
	JoinALPN = "hypercore-join/1"
	// JoinPath is the HTTP path of the join endpoint.
	JoinPath = "/v1/cluster/join"

	ekmLabel   = "EXPORTER-hypercore-join-v1"
	ekmSize    = 32
	proofLabel = "hypercore join proof v1\x00"

	// maxJoinRequest bounds what the server reads from an unauthenticated
	// client: a CSR is well under 1 KiB.
	maxJoinRequest = 16 << 10
	// maxJoinResponse bounds what the client reads back.
	maxJoinResponse = 64 << 10
	// maxConcurrentJoins bounds the signing work strangers can make the
	// server do at once; joins are rare, so a busy server answers 503.
	maxConcurrentJoins = 4
	// joinTimeout bounds a join when the caller's context has no deadline.
	joinTimeout = 30 * time.Second
)

const notJoinServer = "it is not the node holding the cluster CA, or runs an older hypercore"

type joinRequest struct {
	CSR   []byte `json:"csr"`
	Proof []byte `json:"proof"`
}

type joinResponse struct {
	Cert      []byte `json:"cert"`
	CA        []byte `json:"ca"`
	GossipKey []byte `json:"gossip_key"`
}

// JoinError is a join the server refused. Status is the HTTP status it
// answered with, so a caller can tell a wrong token (403) or a taken name
// (409) from a busy server (503) worth retrying.
type JoinError struct {
	Status int
	Msg    string
}

// Error says what the server answered and why.
func (e *JoinError) Error() string {
	return fmt.Sprintf("pki: join refused by server (%d %s): %s", e.Status, http.StatusText(e.Status), e.Msg)
}

func joinProof(secret, ekm, csrDER []byte) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(proofLabel))
	mac.Write(ekm) // fixed size, so the concatenation is unambiguous
	mac.Write(csrDER)
	return mac.Sum(nil)
}

// EnableJoin makes srv, the node's RPC server, also serve joins. It sets
// srv.TLSConfig to m.ServerTLS() plus a switch: a client that offers
// JoinALPN gets a handshake without client-certificate checks, and its
// connection is handed only to the join endpoint, never to srv.Handler;
// every other client must still present a cluster certificate in the
// handshake. It registers JoinALPN in srv.TLSNextProto and, because a
// non-nil TLSNextProto otherwise turns HTTP/2 off, enables HTTP/1 and
// HTTP/2 in srv.Protocols if neither was set. Call it before
// srv.ServeTLS("", "").
//
// admit, if not nil, is asked about each node name after the proof and the
// CSR check out; an error refuses the join with 409 and the error's text.
// Use it to reject names already in the cluster.
func (a *Authority) EnableJoin(srv *http.Server, m *Material, admit func(nodeName string) error) error {
	if m == nil || m.CACert == nil || spkiPin(m.CACert) != a.pin {
		return errors.New("pki: EnableJoin needs this node's material issued by this authority (use EnsureNode)")
	}
	// One setup serves both: an authority known from the start is one
	// that is enabled at once.
	return EnableJoinLater(srv, m, admit)(a)
}

// joinServerTLS is the config for join handshakes. It sends the CA with the
// leaf because the joiner has only a pin, not the CA, to check against.
func (a *Authority) joinServerTLS(m *Material) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{
			Certificate: [][]byte{m.Cert.Leaf.Raw, a.caCert.Raw},
			PrivateKey:  m.Cert.PrivateKey,
			Leaf:        m.Cert.Leaf,
		}},
		ClientAuth: tls.NoClientCert,
		NextProtos: []string{JoinALPN},
		// A join is one request; a session ticket from it has no use. (Go
		// would refuse to resume a certificate-less session on the strict
		// config anyway, but there is no need to rely on that.)
		SessionTicketsDisabled: true,
	}
}

// serveJoinConn serves HTTP/1.1 on one join connection with only the join
// handler. The connection is wrapped so the inner server does not see a
// *tls.Conn (it would look up JoinALPN in its own TLSNextProto and hang
// up); the TLS state is put back on each request instead.
func serveJoinConn(c *tls.Conn, h http.Handler) {
	state := c.ConnectionState()
	l := &oneConnListener{conn: plainConn{c}, done: make(chan struct{})}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != JoinPath {
				http.Error(w, "this connection serves only "+JoinPath, http.StatusNotFound)
				return
			}
			r.TLS = &state
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       joinTimeout,
		WriteTimeout:      joinTimeout,
		MaxHeaderBytes:    16 << 10,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed || s == http.StateHijacked {
				l.Close()
			}
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	// One request per connection; closing after it ends Serve.
	srv.SetKeepAlivesEnabled(false)
	_ = srv.Serve(l)
}

// plainConn hides the *tls.Conn type from the inner http.Server.
type plainConn struct{ net.Conn }

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	conn      net.Conn
	once      sync.Once
	closeOnce sync.Once
	done      chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

type joinHandler struct {
	a     *Authority
	admit func(string) error
	sem   chan struct{}
}

func (h *joinHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "join: use POST", http.StatusMethodNotAllowed)
		return
	}
	if r.TLS == nil || r.TLS.Version != tls.VersionTLS13 {
		http.Error(w, "join: must run over TLS 1.3", http.StatusBadRequest)
		return
	}
	select {
	case h.sem <- struct{}{}:
		defer func() { <-h.sem }()
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "join: too many joins in progress; retry shortly", http.StatusServiceUnavailable)
		return
	}
	var req joinRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJoinRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("join: request is larger than %d bytes", maxJoinRequest), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "join: request body is not the expected JSON", http.StatusBadRequest)
		return
	}
	ekm, err := r.TLS.ExportKeyingMaterial(ekmLabel, nil, ekmSize)
	if err != nil {
		http.Error(w, "join: cannot bind proof to this TLS session", http.StatusInternalServerError)
		return
	}
	// The proof comes first, so nobody without the secret reaches the CSR
	// parser or the admit hook.
	if !hmac.Equal(req.Proof, joinProof(h.a.secret, ekm, req.CSR)) {
		http.Error(w, "join: proof of the join secret is wrong: the token is not for this cluster; get a fresh one from <data-dir>/join-token on a server node", http.StatusForbidden)
		return
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		http.Error(w, "join: CSR does not parse: "+err.Error(), http.StatusBadRequest)
		return
	}
	pub, name, ips, err := checkCSR(csr)
	if err != nil {
		http.Error(w, "join: CSR refused: "+err.Error(), http.StatusBadRequest)
		return
	}
	if h.admit != nil {
		if err := h.admit(name); err != nil {
			http.Error(w, fmt.Sprintf("join: node %s not admitted: %v", name, err), http.StatusConflict)
			return
		}
	}
	der, err := h.a.sign(pub, name, ips, nil)
	if err != nil {
		http.Error(w, "join: signing failed; see the server's logs", http.StatusInternalServerError)
		return
	}
	body, err := json.Marshal(joinResponse{
		Cert:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		CA:        h.a.CACertPEM(),
		GossipKey: h.a.GossipKey(),
	})
	if err != nil {
		http.Error(w, "join: encode response failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

var (
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// checkCSR is the server's policy for what a joiner may ask. It refuses
// rather than silently ignores anything beyond a name and addresses, so a
// misbehaving client hears why. The issued certificate is built from the
// returned values only.
func checkCSR(csr *x509.CertificateRequest) (*ecdsa.PublicKey, string, []net.IP, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, "", nil, fmt.Errorf("signature does not verify: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, "", nil, errors.New("key must be ECDSA P-256")
	}
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidSubjectAltName):
			// Parsed into DNSNames and IPAddresses, checked below.
		case ext.Id.Equal(oidBasicConstraints):
			return nil, "", nil, errors.New("it asks for basic constraints; a node certificate is never a CA")
		case ext.Id.Equal(oidKeyUsage), ext.Id.Equal(oidExtKeyUsage):
			return nil, "", nil, errors.New("it asks for key usages; the cluster CA decides them")
		default:
			return nil, "", nil, fmt.Errorf("it asks for extension %v, which the cluster CA does not grant", ext.Id)
		}
	}
	name := csr.Subject.CommonName
	if err := checkNodeName(name); err != nil {
		return nil, "", nil, err
	}
	for _, n := range csr.DNSNames {
		if n != name {
			return nil, "", nil, fmt.Errorf("it asks for DNS name %q; a joined node's certificate names only the node (%q)", n, name)
		}
	}
	if len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, "", nil, errors.New("it asks for e-mail or URI names; a node certificate has neither")
	}
	ips, err := checkIPs(csr.IPAddresses)
	if err != nil {
		return nil, "", nil, err
	}
	return pub, name, ips, nil
}

// Join makes this node a member: it generates a key, has the server in
// token sign it (proving it knows the token's secret), and writes node.key,
// node.crt, ca.crt and gossip.key to dir (0700). Nothing is written unless
// the join succeeds. ips are the addresses peers will reach this node on;
// they become IP SANs. It refuses a dir that already holds a node
// certificate or a CA key, so a stray second join cannot clobber a member.
func Join(ctx context.Context, token JoinToken, nodeName string, ips []net.IP, dir string) (*Material, error) {
	if err := token.validate(); err != nil {
		return nil, err
	}
	if err := checkNodeName(nodeName); err != nil {
		return nil, err
	}
	ips, err := checkIPs(ips)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{NodeCertFile, CAKeyFile} {
		ok, err := exists(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		if ok {
			return nil, fmt.Errorf("pki: %s already exists: this node is already a cluster member; load it with pki.Load, or delete %s to join afresh", filepath.Join(dir, f), dir)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: make node key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: nodeName},
		DNSNames:    []string{nodeName},
		IPAddresses: ips,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: make CSR: %w", err)
	}
	resp, err := exchange(ctx, token, csrDER)
	if err != nil {
		return nil, err
	}

	// Check everything before writing anything.
	ca, err := parseCertPEM(resp.CA)
	if err != nil {
		return nil, fmt.Errorf("pki: join server %s sent a bad CA certificate: %w", token.Addr, err)
	}
	if spkiPin(ca) != token.CAPin {
		return nil, fmt.Errorf("pki: join server %s sent a CA that does not match the token's pin; refusing it", token.Addr)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	m, err := assemble(resp.CA, resp.Cert, keyPEM, resp.GossipKey)
	if err != nil {
		return nil, fmt.Errorf("pki: join server %s sent unusable material: %w", token.Addr, err)
	}
	if m.NodeName != nodeName {
		return nil, fmt.Errorf("pki: join server %s issued a certificate for %q, not %q", token.Addr, m.NodeName, nodeName)
	}

	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	// node.crt goes last: its presence is what marks the node as joined.
	writes := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CACertFile, resp.CA, 0o644},
		{GossipKeyFile, encodeGossipKey(resp.GossipKey), 0o600},
		{NodeKeyFile, keyPEM, 0o600},
		{NodeCertFile, resp.Cert, 0o644},
	}
	for _, w := range writes {
		if err := atomicfile.WriteFile(filepath.Join(dir, w.name), w.data, w.mode); err != nil {
			return nil, fmt.Errorf("pki: write %s: %w", filepath.Join(dir, w.name), err)
		}
	}
	return m, nil
}

// exchange runs the client side of the join protocol over one connection.
func exchange(ctx context.Context, token JoinToken, csrDER []byte) (*joinResponse, error) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{JoinALPN},
		// The system roots and host name play no part: trust comes from the
		// pin, checked in VerifyConnection, which still runs.
		InsecureSkipVerify: true,
		VerifyConnection:   pinVerifier(token.CAPin, token.Addr),
	}
	if host, _, err := net.SplitHostPort(token.Addr); err == nil && net.ParseIP(host) == nil {
		cfg.ServerName = host
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, joinTimeout)
		defer cancel()
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", token.Addr)
	if err != nil {
		if strings.Contains(err.Error(), "no application protocol") {
			return nil, fmt.Errorf("pki: %s does not serve joins: %s; use a token from the bootstrap node's <data-dir>/join-token: %w", token.Addr, notJoinServer, err)
		}
		return nil, fmt.Errorf("pki: join %s: %w", token.Addr, err)
	}
	conn := nc.(*tls.Conn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)

	cs := conn.ConnectionState()
	if cs.NegotiatedProtocol != JoinALPN {
		return nil, fmt.Errorf("pki: %s does not serve joins: %s; use a token from the bootstrap node's <data-dir>/join-token", token.Addr, notJoinServer)
	}
	ekm, err := cs.ExportKeyingMaterial(ekmLabel, nil, ekmSize)
	if err != nil {
		return nil, fmt.Errorf("pki: join %s: export TLS keying material: %w", token.Addr, err)
	}
	body, err := json.Marshal(joinRequest{CSR: csrDER, Proof: joinProof(token.Secret, ekm, csrDER)})
	if err != nil {
		return nil, fmt.Errorf("pki: encode join request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+token.Addr+JoinPath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("pki: join request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Close = true
	ctxErr := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("pki: join %s: %w", token.Addr, ctx.Err())
		}
		return fmt.Errorf("pki: join %s: %w", token.Addr, err)
	}
	if err := req.Write(conn); err != nil {
		return nil, ctxErr(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, ctxErr(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJoinResponse+1))
	if err != nil {
		return nil, ctxErr(err)
	}
	if len(data) > maxJoinResponse {
		return nil, fmt.Errorf("pki: join %s: response is larger than %d bytes", token.Addr, maxJoinResponse)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &JoinError{Status: resp.StatusCode, Msg: printable(data)}
	}
	var out joinResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("pki: join %s: response is not the expected JSON: %w", token.Addr, err)
	}
	return &out, nil
}

// pinVerifier accepts a server whose presented chain contains a CA with the
// pinned public key and whose leaf verifies against that CA for server use.
func pinVerifier(pin [32]byte, addr string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("join server %s presented no certificate", addr)
		}
		var ca *x509.Certificate
		for _, c := range cs.PeerCertificates[1:] {
			if spkiPin(c) == pin && c.IsCA {
				ca = c
				break
			}
		}
		if ca == nil {
			return fmt.Errorf("join server %s does not present the cluster CA the token pins (sha256:%s…): the token is for another cluster, or something else answers at that address", addr, hex.EncodeToString(pin[:8]))
		}
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return fmt.Errorf("join server %s certificate does not verify against the pinned CA: %w", addr, err)
		}
		return nil
	}
}

// printable trims a server's error text for inclusion in our error.
func printable(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
}
