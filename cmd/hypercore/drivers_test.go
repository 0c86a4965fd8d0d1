package main

import (
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/config"
	"github.com/hypercore-dev/hypercore/internal/rootless"
)

// TestDeadCRIEndpointStopsTheNode checks that a node told to use a CRI
// endpoint that does not answer refuses to start, naming the flag and the
// endpoint, rather than falling back to runc behind the operator's back.
func TestDeadCRIEndpointStopsTheNode(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // a socket file nobody listens on
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.CRIEndpoint = "unix://" + sock
	drivers, err := newDrivers(slog.New(slog.NewTextHandler(io.Discard, nil)), &cfg, "", rootless.State{})
	if err == nil || !strings.Contains(err.Error(), "--cri-endpoint") || !strings.Contains(err.Error(), sock) {
		t.Fatalf("newDrivers: %v, %v; want an error naming --cri-endpoint and %s", drivers, err, sock)
	}
}
