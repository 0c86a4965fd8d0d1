package peer

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
)

var loopback = []net.IP{net.IPv4(127, 0, 0, 1)}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// countingListener counts the TCP connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// testCluster is a CA and the first node, "alpha", serving s on loopback
// as the daemon will: joins and PeerService on one TLS listener, HTTP/2.
type testCluster struct {
	a    *pki.Authority
	mat  *pki.Material // alpha's
	addr string
	ln   *countingListener
	mu   sync.Mutex
	seen []string // callers of the handlers, by Caller
}

func newTestCluster(t testing.TB, s *Server, mods ...func(*http.Server)) *testCluster {
	t.Helper()
	a, err := pki.Bootstrap(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	mat, err := a.EnsureNode("alpha", loopback, nil)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCluster{a: a, mat: mat}
	s.NodeName = "alpha"
	s.Log = slog.New(slog.DiscardHandler)
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	// In the order the daemon may use: HTTP/2 first, then joins.
	ConfigureServer(srv)
	if err := a.EnableJoin(srv, mat, nil); err != nil {
		t.Fatal(err)
	}
	for _, mod := range mods {
		mod(srv)
	}
	tc.addr, tc.ln = serveTLS(t, srv)
	return tc
}

// serveTLS serves srv, whose TLSConfig is set, on a loopback listener
// that counts connections.
func serveTLS(t testing.TB, srv *http.Server) (string, *countingListener) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: l}
	go srv.ServeTLS(cl, "", "")
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), cl
}

// join makes a new member called name, through alpha's join endpoint.
func (tc *testCluster) join(t testing.TB, name string) *pki.Material {
	t.Helper()
	s, err := tc.a.JoinToken(tc.addr)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.ParseJoinToken(s)
	if err != nil {
		t.Fatal(err)
	}
	m, err := pki.Join(testCtx(t), tok, name, loopback, filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// pool is a pool for a member called name, closed at the end of the test.
func (tc *testCluster) pool(t testing.TB, name string) *Pool {
	t.Helper()
	p := NewPool(tc.join(t, name))
	t.Cleanup(p.Close)
	return p
}

// noteCaller records who called a handler.
func (tc *testCluster) noteCaller(ctx context.Context) {
	tc.mu.Lock()
	tc.seen = append(tc.seen, Caller(ctx))
	tc.mu.Unlock()
}

func (tc *testCluster) callers() []string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return append([]string(nil), tc.seen...)
}

// tcpServer accepts connections on loopback and runs serve on each.
func tcpServer(t testing.TB, serve func(*net.TCPConn)) (string, *countingListener) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := cl.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c.(*net.TCPConn)) }()
		}
	}()
	return l.Addr().String(), cl
}

func ctxWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	t.Cleanup(cancel)
	return ctx, cancel
}

// notifyWriter closes first at its first write.
type notifyWriter struct {
	first chan struct{}
	once  sync.Once
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.first) })
	return len(p), nil
}
