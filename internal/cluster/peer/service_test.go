package peer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1"
	"github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1/clusterv1connect"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/node"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// fakeNode is alpha's side of the calls: what it was asked, and answers
// close to a node's.
type fakeNode struct {
	tc *testCluster

	mu      sync.Mutex
	runs    []workload.Allocation
	stops   []time.Duration
	resizes []driver.TermSize
	follow  *followLog // the followed log, written by the test
}

// followLog is a log being followed: the test writes to w; ended closes
// when the host's side of the stream ends.
type followLog struct {
	w     *io.PipeWriter
	ended chan struct{}
}

var known = spec.NewID()

func notFound(id spec.ID) error { return fmt.Errorf("%w: %s", workload.ErrNotFound, id) }

func newFakeNode(t *testing.T) *fakeNode {
	f := &fakeNode{}
	s := &Server{
		Apply: func(ctx context.Context, command []byte) (uint64, error) {
			f.tc.noteCaller(ctx)
			if string(command) == "refuse" {
				return 17, fmt.Errorf("applying: %w", raftstore.ErrConflict)
			}
			return 42, nil
		},
		AddPeer: func(ctx context.Context, name, raftAddr string, voter bool) error {
			f.tc.noteCaller(ctx)
			return raftstore.ErrNotLeader{LeaderID: "gamma"}
		},
		Run: func(ctx context.Context, a workload.Allocation) (uint64, error) {
			f.tc.noteCaller(ctx)
			f.mu.Lock()
			f.runs = append(f.runs, a)
			f.mu.Unlock()
			if a.Spec.MemoryMiB > 1<<16 {
				return 0, fmt.Errorf("%w: not on this host; the scheduler could not know this", node.ErrNoCapacity)
			}
			return 7, nil
		},
		Stop: func(ctx context.Context, id spec.ID, timeout time.Duration) (uint64, error) {
			if id != known {
				return 0, notFound(id)
			}
			f.mu.Lock()
			f.stops = append(f.stops, timeout)
			f.mu.Unlock()
			return 8, nil
		},
		Remove: func(ctx context.Context, id spec.ID) error {
			if id != known {
				return notFound(id)
			}
			return nil
		},
		Logs: func(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error) {
			if id != known {
				return nil, notFound(id)
			}
			if !opts.Follow {
				return io.NopCloser(strings.NewReader(fmt.Sprintf("tail=%d\n", opts.Tail))), nil
			}
			r, w := io.Pipe()
			fl := &followLog{w: w, ended: make(chan struct{})}
			f.mu.Lock()
			f.follow = fl
			f.mu.Unlock()
			// Following ends with ctx, as a driver's log does.
			context.AfterFunc(ctx, func() {
				w.Close()
				close(fl.ended)
			})
			return r, nil
		},
		Exec: func(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error) {
			if id != known {
				return -1, notFound(id)
			}
			// A real process with the IO the stream delivers.
			cmd := exec.CommandContext(ctx, cfg.Args[0], cfg.Args[1:]...)
			cmd.Env, cmd.Dir = cfg.Env, cfg.WorkDir
			cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.Stdin, cfg.Stdout, cfg.Stderr
			cmd.WaitDelay = time.Second
			err := cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode(), nil
			}
			if err != nil {
				return -1, err
			}
			return 0, nil
		},
		Attach: func(ctx context.Context, id spec.ID, stdio driver.IO) error {
			if id != known {
				return notFound(id)
			}
			// The "main process" echoes its stdin upper-cased, and
			// notes the terminal sizes, until stdin ends.
			go func() {
				for size := range stdio.Resize {
					f.mu.Lock()
					f.resizes = append(f.resizes, size)
					f.mu.Unlock()
				}
			}()
			b, err := io.ReadAll(stdio.Stdin)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdio.Stdout, "%s", bytes.ToUpper(b))
			fmt.Fprintf(stdio.Stderr, "tty=%v", stdio.Tty)
			return nil
		},
	}
	f.tc = newTestCluster(t, s)
	return f
}

// followed is the followed log, once the host has opened it.
func (f *fakeNode) followed(t *testing.T) *followLog {
	t.Helper()
	var fl *followLog
	testutil.WaitFor(t, 5*time.Second, "the host to open the log", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		fl = f.follow
		return fl != nil
	})
	return fl
}

func testAllocation() workload.Allocation {
	return workload.Allocation{
		ID: spec.NewID(),
		Spec: spec.Spec{
			Image: "docker.io/library/busybox:latest", Cores: 0.5, MemoryMiB: 64,
			Ports: []spec.Port{{Public: 443, Target: 8080, Proto: spec.ProtoHTTP}, {Public: 5432, Target: 5432, Proto: spec.ProtoTCP}},
			Env:   []string{"A=1", "B=two"}, Args: []string{"sh", "-c", "sleep 1"}, Isolation: spec.IsolationContainer, Tty: true,
			Egress:   []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("192.168.0.0/16")},
			Secrets:  map[string]string{"DB_PASSWORD": "db-password"},
			DiskMiB:  512,
			Security: spec.Security{Seccomp: "unconfined", UserNS: "host"},
			Restart:  "on-failure:3", Volumes: map[string]string{"data": "/var/lib/data"},
			Entrypoint: []string{"/bin/sh"}, Workdir: "/srv", User: "1000:1000",
		},
		Node: "alpha", Desired: workload.DesiredRunning, Generation: 3,
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC),
	}
}

// TestCalls: the unary calls carry typed values both ways, the host sees
// the caller's verified name, and errors keep their kind.
func TestCalls(t *testing.T) {
	f := newFakeNode(t)
	p := f.tc.pool(t, "beta")
	ctx := testCtx(t)
	addr := f.tc.addr

	a := testAllocation()
	index, err := p.Run(ctx, "alpha", addr, a)
	if err != nil || index != 7 {
		t.Fatalf("Run: %d, %v", index, err)
	}
	f.mu.Lock()
	got := f.runs[0]
	f.mu.Unlock()
	if got.ID != a.ID || got.Node != a.Node || got.Desired != a.Desired || got.Generation != a.Generation ||
		!got.CreatedAt.Equal(a.CreatedAt) || !sameSpec(got.Spec, a.Spec) {
		t.Fatalf("the host got\n%+v\nfor\n%+v", got, a)
	}

	// Node errors keep their kind.
	big := testAllocation()
	big.Spec.MemoryMiB = 1 << 17
	if _, err := p.Run(ctx, "alpha", addr, big); !errors.Is(err, node.ErrNoCapacity) || !strings.Contains(err.Error(), "scheduler could not know") {
		t.Fatalf("Run refused by the host: %v, want node.ErrNoCapacity with its message", err)
	}
	// An allocation for another node is refused before the node sees it.
	other := testAllocation()
	other.Node = "gamma"
	f.mu.Lock()
	runs := len(f.runs)
	f.mu.Unlock()
	if _, err := p.Run(ctx, "alpha", addr, other); err == nil || !strings.Contains(err.Error(), "gamma") {
		t.Fatalf("Run of gamma's allocation on alpha: %v", err)
	}
	// So is one that does not check out.
	bad := testAllocation()
	bad.Spec.Cores = 1000
	if _, err := p.Run(ctx, "alpha", addr, bad); err == nil || !strings.Contains(err.Error(), "cores") {
		t.Fatalf("Run of an allocation with 1000 cores: %v", err)
	}
	f.mu.Lock()
	if len(f.runs) != runs {
		t.Errorf("the host ran %d refused allocations", len(f.runs)-runs)
	}
	f.mu.Unlock()

	if index, err := p.Stop(ctx, "alpha", addr, known, 1500*time.Millisecond); err != nil || index != 8 {
		t.Fatalf("Stop: %d, %v", index, err)
	}
	f.mu.Lock()
	if !slices.Equal(f.stops, []time.Duration{2 * time.Second}) {
		t.Errorf("stop timeouts %v, want [2s] (whole seconds, rounded up)", f.stops)
	}
	f.mu.Unlock()
	if _, err := p.Stop(ctx, "alpha", addr, spec.NewID(), 0); !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("Stop of an unknown id: %v, want workload.ErrNotFound", err)
	}
	if _, err := p.Stop(ctx, "alpha", addr, known, 2*time.Hour); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("Stop with a 2h timeout: %v", err)
	}
	if err := p.Remove(ctx, "alpha", addr, known); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(ctx, "alpha", addr, spec.NewID()); !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("Remove of an unknown id: %v, want workload.ErrNotFound", err)
	}

	// Apply answers the log index, also with a refusal.
	if index, err := p.Apply(ctx, "alpha", addr, []byte("cmd")); err != nil || index != 42 {
		t.Fatalf("Apply: %d, %v", index, err)
	}
	if index, err := p.Apply(ctx, "alpha", addr, []byte("refuse")); !errors.Is(err, raftstore.ErrConflict) || index != 17 {
		t.Fatalf("refused Apply: %d, %v, want 17 and raftstore.ErrConflict", index, err)
	}
	// A node adds only itself, and not-leader comes back as such.
	if err := p.AddPeer(ctx, "alpha", addr, "gamma", "gamma@127.0.0.1:1", true); err == nil || !strings.Contains(err.Error(), "may not add") {
		t.Fatalf("beta adding gamma: %v", err)
	}
	// The address goes into every server's raft configuration: checked.
	before := len(f.tc.callers())
	for _, bad := range []string{"beta@" + strings.Repeat("x", 1<<20) + ":1", "beta@no-port", "gamma@127.0.0.1:1", "127.0.0.1:1"} {
		if err := p.AddPeer(ctx, "alpha", addr, "beta", bad, true); err == nil || !strings.Contains(err.Error(), "raft address") {
			t.Errorf("AddPeer with raft address %q: %v", truncate(bad, 40), err)
		}
	}
	if len(f.tc.callers()) != before {
		t.Fatal("a bad raft address reached the node's AddPeer")
	}
	var nl raftstore.ErrNotLeader
	if err := p.AddPeer(ctx, "alpha", addr, "beta", "beta@127.0.0.1:1", true); !errors.As(err, &nl) {
		t.Fatalf("AddPeer on a follower: %v, want raftstore.ErrNotLeader", err)
	}
	// Not served: unimplemented, not a crash.
	if _, err := p.Barrier(ctx, "alpha", addr); err == nil || !strings.Contains(err.Error(), "does not serve Barrier") {
		t.Fatalf("Barrier: %v", err)
	}
	for _, c := range f.tc.callers() {
		if c != "beta" {
			t.Fatalf("the host saw callers %v, want only beta", f.tc.callers())
		}
	}
	if len(f.tc.callers()) == 0 {
		t.Fatal("no caller seen")
	}
}

// sameSpec compares every field, through the JSON form the cluster state
// keeps, so a field added to spec.Spec but dropped on the wire shows.
func sameSpec(a, b spec.Spec) bool {
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(ja, jb)
}

// TestUnreachable: a peer that does not answer is ErrUnreachable, for
// calls and tunnels.
func TestUnreachable(t *testing.T) {
	f := newFakeNode(t)
	p := f.tc.pool(t, "beta")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	if err := p.Remove(testCtx(t), "delta", dead, known); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Remove on a dead peer: %v, want ErrUnreachable", err)
	}
	if _, err := p.Dial(testCtx(t), "delta", dead, "10.0.0.1:80"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Dial through a dead peer: %v, want ErrUnreachable", err)
	}
}

// TestPeerWithAnotherNameIsRefused: a member answering at an address under
// another node's name is not trusted: its certificate names it, so a
// call or a tunnel meant for alpha never reaches gamma's handlers.
func TestPeerWithAnotherNameIsRefused(t *testing.T) {
	f := newFakeNode(t)
	p := f.tc.pool(t, "beta")
	gammaMat := f.tc.join(t, "gamma")
	called := make(chan string, 4)
	gamma := &Server{
		NodeName: "gamma",
		Remove:   func(ctx context.Context, id spec.ID) error { called <- "remove"; return nil },
		Target:   func(netip.AddrPort) bool { called <- "tunnel"; return true },
	}
	srv := &http.Server{Handler: gamma.Handler(), TLSConfig: gammaMat.ServerTLS(), ErrorLog: log.New(io.Discard, "", 0)}
	ConfigureServer(srv)
	gammaAddr, gammaLn := serveTLS(t, srv)

	if err := p.Remove(testCtx(t), "alpha", gammaAddr, known); err == nil || !strings.Contains(err.Error(), "alpha") {
		t.Fatalf("Remove on gamma, called as alpha: %v, want a certificate error", err)
	}
	if _, err := p.Dial(testCtx(t), "alpha", gammaAddr, "127.0.0.1:1"); err == nil {
		t.Fatal("a tunnel through gamma, called as alpha, opened")
	}
	select {
	case what := <-called:
		t.Fatalf("gamma served %s to a caller that wanted alpha", what)
	default:
	}
	if gammaLn.accepted.Load() == 0 {
		t.Fatal("gamma was never dialled: the test tests nothing")
	}
	// Called by its own name, gamma answers.
	if err := p.Remove(testCtx(t), "gamma", gammaAddr, known); err != nil {
		t.Fatalf("Remove on gamma as gamma: %v", err)
	}
}

// TestLogs: a missing workload fails at once, a tail is passed on, and a
// followed log delivers what is written after it was opened.
func TestLogs(t *testing.T) {
	f := newFakeNode(t)
	p := f.tc.pool(t, "beta")
	ctx := testCtx(t)
	if _, err := p.Logs(ctx, "alpha", f.tc.addr, spec.NewID(), driver.LogOptions{Follow: true}); !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("Logs of an unknown id: %v, want workload.ErrNotFound", err)
	}
	rc, err := p.Logs(ctx, "alpha", f.tc.addr, known, driver.LogOptions{Tail: 12})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(b) != "tail=12\n" {
		t.Fatalf("log: %q, %v", b, err)
	}

	// Opened before anything is written: Logs returns all the same.
	rc, err = p.Logs(ctx, "alpha", f.tc.addr, known, driver.LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	fl := f.followed(t)
	br := bufio.NewReader(rc)
	for _, line := range []string{"one", "two"} {
		go fmt.Fprintln(fl.w, line)
		got, err := br.ReadString('\n')
		if err != nil || got != line+"\n" {
			t.Fatalf("followed log: %q, %v; want %q", got, err, line)
		}
	}
	// Close ends the follow on the host too.
	rc.Close()
	select {
	case <-fl.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the host still follows the log after the caller closed it")
	}
}

// TestHTTP1Callers: a node of the previous release calls over HTTP/1.1;
// its raft calls still work, and a tunnel, which needs HTTP/2, is
// refused with a clear answer.
func TestHTTP1Callers(t *testing.T) {
	f := newFakeNode(t)
	mat := f.tc.join(t, "beta")
	tr := &http.Transport{TLSClientConfig: mat.ClientTLS("alpha")} // HTTP/1.1 only
	defer tr.CloseIdleConnections()
	cl := clusterv1connect.NewPeerServiceClient(&http.Client{Transport: tr}, "https://"+f.tc.addr)
	resp, err := cl.Apply(testCtx(t), connect.NewRequest(&clusterv1.ApplyRequest{Command: []byte("cmd")}))
	if err != nil || resp.Msg.GetIndex() != 42 {
		t.Fatalf("Apply over HTTP/1.1: %v, %v", resp, err)
	}
	req, _ := http.NewRequest(http.MethodPost, "https://"+f.tc.addr+TunnelPath, strings.NewReader(""))
	req.Header.Set(targetHeader, "127.0.0.1:1")
	r, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.ProtoMajor != 1 || r.StatusCode != http.StatusHTTPVersionNotSupported {
		t.Fatalf("a tunnel over %s: %s, want 505", r.Proto, r.Status)
	}
}
