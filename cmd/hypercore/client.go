package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"

	"github.com/hypercore-dev/hypercore/api/hypercore/v1/hypercorev1connect"
	"github.com/hypercore-dev/hypercore/internal/cluster"
)

// apiFlags are the global flags every client verb uses to find the API.
type apiFlags struct {
	addr    string
	token   string
	ca      string
	dataDir string
}

const (
	defaultDataDir = "/var/lib/hypercore"
	defaultAPIAddr = "127.0.0.1:8000"
	tokenFile      = "api-token"
	addrFile       = "api-addr"
)

// client talks to one node's API.
type client struct {
	base      string // https://host:port, or http:// on loopback without a CA
	token     string
	tls       *tls.Config // nil for http://
	http      *http.Client
	workloads hypercorev1connect.WorkloadServiceClient
	nodes     hypercorev1connect.NodeServiceClient
	volumes   hypercorev1connect.VolumeServiceClient
}

// resolve finds the API address and token: flags first, then
// HYPERCORE_ADDR and HYPERCORE_TOKEN, then the files the daemon wrote in
// --data-dir.
func (f *apiFlags) resolve() (addr, token string, err error) {
	addr, token = f.addr, f.token
	if addr == "" {
		addr = os.Getenv("HYPERCORE_ADDR")
	}
	if token == "" {
		token = os.Getenv("HYPERCORE_TOKEN")
	}
	if addr == "" {
		if b, err := os.ReadFile(filepath.Join(f.dataDir, addrFile)); err == nil {
			addr = strings.TrimSpace(string(b))
		} else {
			addr = defaultAPIAddr
		}
	}
	if token == "" {
		path := filepath.Join(f.dataDir, tokenFile)
		b, rerr := os.ReadFile(path)
		if rerr != nil {
			return "", "", fmt.Errorf("no API token: pass --token, set HYPERCORE_TOKEN, or run as a user who can read %s (%v)", path, rerr)
		}
		token = strings.TrimSpace(string(b))
	}
	return strings.TrimRight(addr, "/"), token, nil
}

// tlsSetup picks the scheme for addr and the CA the CLI trusts: --ca, else
// HYPERCORE_CA, else the cluster CA in --data-dir when this user can read
// it. An address without a scheme is reached over https:// when there is
// such a CA and over http:// (which a node serves on loopback only)
// otherwise; https:// with no CA trusts the system's roots.
func (f *apiFlags) tlsSetup(addr string) (string, *tls.Config, error) {
	caPath, explicit := f.ca, f.ca != ""
	if caPath == "" {
		caPath = os.Getenv("HYPERCORE_CA")
		explicit = caPath != ""
	}
	if caPath == "" {
		caPath = cluster.CACertFile(f.dataDir)
	}
	var pool *x509.CertPool
	pem, err := os.ReadFile(caPath)
	switch {
	case err == nil:
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return "", nil, fmt.Errorf("--ca %s holds no PEM certificate", caPath)
		}
	case explicit:
		return "", nil, fmt.Errorf("read --ca: %w", err)
	}
	if !strings.Contains(addr, "://") {
		if pool == nil {
			return "http://" + addr, nil, nil
		}
		addr = "https://" + addr
	}
	if strings.HasPrefix(addr, "http://") {
		return addr, nil, nil
	}
	if pool != nil && !explicit {
		return addr, clusterCATLS(pool), nil
	}
	return addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// clusterCATLS trusts any certificate the cluster CA in the data dir
// signed, whatever address it names: that CA signs node certificates only,
// and a node that joined before node certificates named loopback must
// still answer the CLI on 127.0.0.1.
func clusterCATLS(pool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // VerifyConnection checks the chain instead
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the node sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return fmt.Errorf("the node's certificate is not from the cluster CA in the data dir: %w", err)
			}
			return nil
		},
	}
}

func (f *apiFlags) client() (*client, error) {
	addr, token, err := f.resolve()
	if err != nil {
		return nil, err
	}
	base, tlsCfg, err := f.tlsSetup(addr)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	hc := &http.Client{Transport: &bearer{token: token, next: tr}}
	return &client{
		base: base, token: token, tls: tlsCfg, http: hc,
		workloads: hypercorev1connect.NewWorkloadServiceClient(hc, base),
		nodes:     hypercorev1connect.NewNodeServiceClient(hc, base),
		volumes:   hypercorev1connect.NewVolumeServiceClient(hc, base),
	}, nil
}

// bearer adds the API token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// explain turns an API error into one line a user can act on.
func explain(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		if h := tlsHint(ce.Message()); h != nil {
			return h
		}
		switch ce.Code() {
		case connect.CodeUnauthenticated:
			return fmt.Errorf("the API refused the token: %s", ce.Message())
		case connect.CodeUnavailable:
			if strings.Contains(ce.Message(), "connection refused") {
				return fmt.Errorf("no hypercore node answers there (%s); start one with 'hypercore cluster' or pass --addr", ce.Message())
			}
		}
		return errors.New(ce.Message())
	}
	if errors.Is(err, context.Canceled) {
		return errors.New("interrupted")
	}
	return err
}

// tlsHint explains a failure to speak to the API that comes from TLS: a
// plain request to a TLS-only port, or a certificate this CLI does not
// trust. It is nil for other failures.
func tlsHint(msg string) error {
	switch {
	case strings.Contains(msg, "malformed HTTP response"), strings.Contains(msg, "HTTP request to an HTTPS server"), strings.Contains(msg, "server gave HTTP response"):
		return fmt.Errorf("the node speaks TLS there: pass the cluster CA with --ca (it is <data-dir>/cluster/pki/ca.crt on a node), or an https:// --addr (%s)", msg)
	case (strings.HasPrefix(msg, `Post "`) || strings.HasPrefix(msg, `Get "`) || strings.HasPrefix(msg, `Delete "`) || strings.HasPrefix(msg, "TLS with ")) && strings.Contains(msg, "certificate"):
		// Only the CLI's own request, not an error the node passes on
		// (a registry's certificate, say).
		return fmt.Errorf("the node's TLS certificate is not trusted: pass the cluster CA with --ca (<data-dir>/cluster/pki/ca.crt on a node) and an address its certificate names (%s)", msg)
	}
	return nil
}
