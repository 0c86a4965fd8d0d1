package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
	"github.com/hypercore-dev/hypercore/internal/cluster/portmux"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/workload"
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
	// The node's TLS port, serving raft alone: the ALPN and the hand-over
	// as serveRPC does them.
	srv := &http.Server{TLSConfig: m.ServerTLS(), TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	srv.TLSConfig.NextProtos = []string{RaftALPN}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := portmux.NewListener(ln.Addr())
	stop := make(chan struct{})
	srv.TLSNextProto[RaftALPN] = func(_ *http.Server, c *tls.Conn, _ http.Handler) { serveRaftConn(conns, c, stop) }
	go srv.ServeTLS(ln, "", "")
	defer func() { close(stop); srv.Close() }()
	s := newRaftStream(conns, "", "n1", m)
	defer s.Close()
	hostport := ln.Addr().String()
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

	// A raft address kept from the layout before one port per node, the
	// cluster port + 2, reaches the node on its one port.
	port := ln.Addr().(*net.TCPAddr).Port
	if old, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+2)); err == nil {
		old.Close() // now nothing listens there, as after an upgrade
		c, err := s.Dial(raft.ServerAddress(fmt.Sprintf("n1@127.0.0.1:%d", port+2)), time.Second)
		if err != nil {
			t.Errorf("dial n1 at its raft address of the old layout: %v", err)
		} else {
			c.Close()
		}
	}

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

// TestTunnelOnlyReachesWorkloadPorts: a tunnel may only name a published
// port of a workload running here, never the host's own services.
func TestTunnelOnlyReachesWorkloadPorts(t *testing.T) {
	a, b, gone := spec.NewID(), spec.NewID(), spec.NewID()
	list := []store.Record{
		{ID: a, Spec: spec.Spec{Ports: []spec.Port{{Public: 443, Target: 3000, Proto: spec.ProtoHTTP}}}},
		{ID: b, Spec: spec.Spec{Ports: []spec.Port{{Public: 80, Target: 8080, Proto: spec.ProtoHTTP}}}},
		{ID: gone, Spec: spec.Spec{Ports: []spec.Port{{Public: 81, Target: 9090, Proto: spec.ProtoHTTP}}}},
	}
	seen := map[spec.ID]workload.Observation{
		a: {Node: "n1", State: workload.StateRunning, IP: "10.77.0.2"},
		b: {Node: "n1", State: workload.StateStopped, IP: "10.77.0.3"},
	}
	for target, want := range map[string]bool{
		"10.77.0.2:3000": true,
		"10.77.0.2:22":   false, // not a published port
		"10.77.0.3:8080": false, // stopped
		"10.77.0.4:9090": false, // nothing observed of it
		"127.0.0.1:8000": false, // the host's API
		"10.77.0.1:3000": false, // the bridge, i.e. the host
	} {
		if got := workloadTarget(netip.MustParseAddrPort(target), list, seen); got != want {
			t.Errorf("workloadTarget(%q) = %v, want %v", target, got, want)
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

// TestCallersCountEachCall: a workload stays driven until every call that
// drives it has returned, so a retried spawn's second call does not let the
// reconciler in while the first is still starting it.
func TestCallersCountEachCall(t *testing.T) {
	var c callers
	id := spec.NewID()
	if c.Busy(id) {
		t.Fatal("busy before any call")
	}
	c.Add(id)
	c.Add(id)
	c.Done(id)
	if !c.Busy(id) {
		t.Fatal("not busy while one of two calls still runs")
	}
	c.Done(id)
	if c.Busy(id) || len(c.n) != 0 {
		t.Fatalf("busy or remembered after every call returned: %v", c.n)
	}
}

// TestStopServerEndsLongCalls: closing the cluster ends the node RPC
// calls still in flight (a tunnel, a followed log) once the grace has
// passed, instead of leaving them, and the goroutines serving them,
// running after Close.
func TestStopServerEndsLongCalls(t *testing.T) {
	started, ended := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		close(started)
		<-r.Context().Done() // a tunnel: open until its client ends it
		close(ended)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	resp, err := http.Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started

	t0 := time.Now()
	stopServer(srv, 100*time.Millisecond)
	select {
	case <-ended:
	case <-time.After(3 * time.Second):
		t.Fatal("a call in flight is still served after the server was stopped")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("stopping took %v with a grace of 100ms", d)
	}
}

// TestWaitIndexLeavesChangesToTheReconciler: a spawn or stop that waits
// for its report to be applied must not take the change notifications the
// reconcile loop waits on; a wake-up taken is a failover start or a stop
// the loop only notices at its next tick.
func TestWaitIndexLeavesChangesToTheReconciler(t *testing.T) {
	s, err := raftstore.Open(raftstore.Config{
		NodeID: "n1", BindAddr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: true,
		Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := &Cluster{raft: s}
	for drained := false; !drained; {
		select {
		case <-s.Changes():
		default:
			drained = true
		}
	}

	target := s.AppliedIndex() + 1
	waited := make(chan error, 1)
	go func() { waited <- c.waitIndex(context.Background(), target) }()
	time.Sleep(50 * time.Millisecond) // the wait is under way
	if err := s.Create(workload.Allocation{ID: spec.NewID(), Node: "n1", Desired: workload.DesiredRunning}); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if s.AppliedIndex() < target {
		t.Fatalf("waitIndex returned at index %d, before %d", s.AppliedIndex(), target)
	}
	select {
	case <-s.Changes():
	default:
		t.Fatal("waitIndex took the change notification the reconcile loop waits on")
	}
}
