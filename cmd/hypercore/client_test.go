package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
	"github.com/hypercore-dev/hypercore/internal/server"
)

// TestCLITrustsTheClusterCA serves a TLS-only API with a node certificate
// that names another address than loopback (as a node that joined before
// certificates named loopback has), and checks the CLI reaches it with
// the CA from the data dir, and not with a CA of another cluster.
func TestCLITrustsTheClusterCA(t *testing.T) {
	dataDir := t.TempDir()
	a, err := pki.Bootstrap(filepath.Join(dataDir, "cluster", "pki"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := a.EnsureNode("node-a", []net.IP{net.ParseIP("192.0.2.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const token = "0123456789abcdef0123456789abcdef"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvs := server.ServeAPI(l, authOnly(token), server.TLSConfig(m.Cert), false, func(err error) { t.Error(err) })
	t.Cleanup(func() {
		for _, s := range srvs {
			s.Close()
		}
	})
	flags := &apiFlags{addr: l.Addr().String(), token: token, dataDir: dataDir}
	c, err := flags.client()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.base, "https://") {
		t.Fatalf("with the CA in the data dir the CLI uses %s; want https://", c.base)
	}
	if err := info(c); err != nil {
		t.Fatalf("Info over TLS with the data dir's CA: %v", err)
	}

	// Another cluster's CA, given with --ca, is not trusted.
	other := t.TempDir()
	if _, err := pki.Bootstrap(other); err != nil {
		t.Fatal(err)
	}
	flags.ca = filepath.Join(other, pki.CACertFile)
	c, err = flags.client()
	if err != nil {
		t.Fatal(err)
	}
	if err := info(c); err == nil || !strings.Contains(err.Error(), "--ca") {
		t.Fatalf("Info with another cluster's CA: %v; want a refusal that names --ca", err)
	}

	// Without any CA, an address without a scheme is plain HTTP, which a
	// TLS-only port refuses, and the error says what to pass.
	empty := t.TempDir()
	os.Unsetenv("HYPERCORE_CA")
	c, err = (&apiFlags{addr: l.Addr().String(), token: token, dataDir: empty}).client()
	if err != nil {
		t.Fatal(err)
	}
	if err := info(c); err == nil || !strings.Contains(err.Error(), "--ca") {
		t.Fatalf("plain HTTP to a TLS-only port: %v; want an error naming --ca", err)
	}
}

func info(c *client) error {
	return c.rest(context.Background(), http.MethodGet, "/v1/node", nil, http.StatusOK, nil)
}

// authOnly answers every authenticated call with an empty Info.
func authOnly(token string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	})
}
