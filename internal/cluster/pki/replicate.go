package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
)

// The authority's secrets (the CA key and the join secret) are what lets a
// node admit new ones. The node that made the CA exports them, the cluster
// seals them and replicates them through raft, and every server opens them
// into an Authority of its own (FromExport), so any server admits new
// nodes once the first is gone.

// exported is what Export writes: the authority's secrets, PEM and raw.
type exported struct {
	CAKeyPEM   []byte `json:"ca_key"`
	JoinSecret []byte `json:"join_secret"`
}

// Export returns the authority's secrets, to be sealed before they go
// anywhere: whoever holds them can issue certificates and admit nodes.
func (a *Authority) Export() ([]byte, error) {
	keyPEM, err := encodeKey(a.caKey)
	if err != nil {
		return nil, err
	}
	return json.Marshal(exported{CAKeyPEM: keyPEM, JoinSecret: a.secret})
}

// FromExport makes an Authority from what Export wrote, for a server whose
// material m comes from the same CA. It keeps nothing on disk: the node
// opens it again from the cluster state at each start.
func FromExport(m *Material, data []byte) (*Authority, error) {
	var e exported
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("pki: exported authority: %w", err)
	}
	key, err := parseKeyPEM(e.CAKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: exported authority: %w", err)
	}
	if m == nil || m.CACert == nil || !key.PublicKey.Equal(m.CACert.PublicKey) {
		return nil, errors.New("pki: the exported CA key does not belong to this node's cluster CA")
	}
	if len(e.JoinSecret) != JoinSecretSize {
		return nil, fmt.Errorf("pki: exported join secret is %d bytes, want %d", len(e.JoinSecret), JoinSecretSize)
	}
	return &Authority{
		caCert: m.CACert, caPEM: encodeCertPEM(m.CACert), caKey: key,
		gossipKey: slices.Clone(m.GossipKey), secret: e.JoinSecret, pin: spkiPin(m.CACert),
	}, nil
}

// joinState is what a join listener needs from an authority.
type joinState struct {
	cfg *tls.Config
	h   *joinHandler
}

// EnableJoinLater sets srv up as EnableJoin does, before this node has an
// authority: join handshakes fail until enable is called with one, and
// every other client is held to a cluster certificate as always. Call it
// before srv.ServeTLS("", "").
func EnableJoinLater(srv *http.Server, m *Material, admit func(nodeName string) error) (enable func(*Authority) error) {
	var cur atomic.Pointer[joinState]
	cfg := m.ServerTLS()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hello.SupportedProtos, JoinALPN) {
			if s := cur.Load(); s != nil {
				return s.cfg, nil
			}
			return nil, errors.New("this node cannot admit joins yet: it has not read the cluster's authority")
		}
		return nil, nil // the strict config
	}
	srv.TLSConfig = cfg
	if srv.TLSNextProto == nil {
		if srv.Protocols == nil {
			p := new(http.Protocols)
			p.SetHTTP1(true)
			p.SetHTTP2(true)
			srv.Protocols = p
		}
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	srv.TLSNextProto[JoinALPN] = func(_ *http.Server, c *tls.Conn, _ http.Handler) {
		s := cur.Load()
		if s == nil {
			c.Close()
			return
		}
		serveJoinConn(c, s.h)
	}
	return func(a *Authority) error {
		if spkiPin(m.CACert) != a.pin {
			return errors.New("pki: the authority is not this node's cluster CA")
		}
		cur.Store(&joinState{cfg: a.joinServerTLS(m), h: &joinHandler{a: a, admit: admit, sem: make(chan struct{}, maxConcurrentJoins)}})
		return nil
	}
}

func encodeCertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
