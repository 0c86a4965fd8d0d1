package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"

	"github.com/hypercore-dev/hypercore/api/hypercore/v1/hypercorev1connect"
)

// apiFlags are the global flags every client verb uses to find the API.
type apiFlags struct {
	addr    string
	token   string
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
	base      string // http://host:port
	token     string
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
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/"), token, nil
}

func (f *apiFlags) client() (*client, error) {
	base, token, err := f.resolve()
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &bearer{token: token, next: http.DefaultTransport}}
	return &client{
		base: base, token: token, http: hc,
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
