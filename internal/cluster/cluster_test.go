package cluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
)

func material(t *testing.T, name string) *pki.Material {
	t.Helper()
	a, err := pki.Bootstrap(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := a.EnsureNode(name, []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRaftStreamVerifiesNodeName: raft traffic is TLS, and dialling an
// address under another node's name fails even though the certificate is
// from the cluster CA, so a member cannot answer for another.
func TestRaftStreamVerifiesNodeName(t *testing.T) {
	m := material(t, "n1")
	s, err := listenRaft("127.0.0.1:0", "", "n1", m)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hostport := s.Listener.Addr().String()
	go func() {
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()

	c, err := s.Dial(raft.ServerAddress("n1@"+hostport), time.Second)
	if err != nil {
		t.Fatalf("dial n1: %v", err)
	}
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo over raft TLS: %q %v", buf, err)
	}
	c.Close()

	c, err = s.Dial(raft.ServerAddress("n2@"+hostport), time.Second)
	if err == nil {
		_, err = c.Write([]byte("x"))
		if err == nil {
			_, err = c.Read(buf)
		}
		c.Close()
	}
	if err == nil {
		t.Fatal("dialled n1's listener as n2 and it answered")
	}
	if _, err := s.Dial("no-name-here", time.Second); err == nil {
		t.Fatal("dialled an address without a node name")
	}
	if got := s.Addr().String(); got != "n1@" {
		t.Fatalf("advertised %q", got)
	}
}

// TestTunnelOnlyReachesWorkloadPorts: a tunnel may only name a port of a
// running workload on the host, never the host's own services.
func TestTunnelOnlyReachesWorkloadPorts(t *testing.T) {
	locals := func() ([]store.Workload, error) {
		return []store.Workload{
			{ID: "a", IP: "10.77.0.2", State: store.StateRunning, Spec: spec.Spec{Ports: []spec.Port{{Public: 443, Target: 3000, Proto: spec.ProtoHTTP}}}},
			{ID: "b", IP: "10.77.0.3", State: store.StateStopped, Spec: spec.Spec{Ports: []spec.Port{{Public: 80, Target: 8080, Proto: spec.ProtoHTTP}}}},
		}, nil
	}
	for target, want := range map[string]bool{
		"10.77.0.2:3000": true,
		"10.77.0.2:22":   false, // not a published port
		"10.77.0.3:8080": false, // stopped
		"127.0.0.1:8000": false, // the host's API
		"10.77.0.1:3000": false, // the bridge, i.e. the host
		"garbage":        false,
	} {
		if got := isWorkloadTarget(target, locals); got != want {
			t.Errorf("isWorkloadTarget(%q) = %v, want %v", target, got, want)
		}
	}
}

func TestStreamTarget(t *testing.T) {
	id := "0b7c1f9e-1d1a-4c3b-9a1e-2b3c4d5e6f70"
	for path, want := range map[string]string{
		"/v1/workloads/" + id + "/exec":   id,
		"/v1/workloads/" + id + "/attach": id,
		"/v1/workloads/" + id + "/logs":   id,
		"/logs?id=" + id:                  id,
		"/v1/workloads/" + id:             "",
		"/v1/workloads/" + id + "/stop":   "",
		"/spawn":                          "",
	} {
		r := httptest.NewRequest("GET", path, nil)
		if got := streamTarget(r); got != want {
			t.Errorf("streamTarget(%s) = %q, want %q", path, got, want)
		}
	}
}

func TestRetryElsewhere(t *testing.T) {
	if retryElsewhere(image.ErrNotFound) {
		t.Error("a missing image is retried on another node")
	}
	if retryElsewhere(&spec.FieldError{Field: "ports", Msg: "x"}) {
		t.Error("a bad spec is retried on another node")
	}
	if !retryElsewhere(errHostDown) || !retryElsewhere(image.ErrRegistry) {
		t.Error("a node-local failure is not retried elsewhere")
	}
}

// TestPeerErrorsKeepTheirMeaning: an error a peer answers comes back as
// the same error, even where Connect codes coincide, and a peer that was
// not reached reads as down.
func TestPeerErrorsKeepTheirMeaning(t *testing.T) {
	for _, e := range errorKinds {
		if got := fromConnect("n2", toConnect(fmt.Errorf("wrapped: %w", e.err))); !errors.Is(got, e.err) {
			t.Errorf("%s came back as %v", e.kind, got)
		}
	}
	got := fromConnect("n2", toConnect(raftstore.ErrNotLeader{LeaderID: "n1"}))
	var nl raftstore.ErrNotLeader
	if !errors.As(got, &nl) || errors.Is(got, image.ErrRegistry) {
		t.Errorf("not-leader came back as %v", got)
	}
	if got := fromConnect("n2", connect.NewError(connect.CodeUnavailable, errors.New("dial tcp: connection refused"))); !errors.Is(got, errHostDown) || errors.Is(got, image.ErrRegistry) {
		t.Errorf("an unreachable peer came back as %v", got)
	}
}
