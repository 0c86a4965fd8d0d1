package pki

import (
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
)

// TestJoinThroughAnotherServer has node-b join the first node, take the
// first node's exported authority, and admit node-c by itself with a
// token naming node-b, as after the first node is gone.
func TestJoinThroughAnotherServer(t *testing.T) {
	c := newCluster(t)
	dirB := filepath.Join(t.TempDir(), "pki")
	mB, err := Join(testCtx(t), c.token(t), "node-b", loopback, dirB)
	if err != nil {
		t.Fatal(err)
	}

	// node-b serves node RPC with joins switched on later.
	var admitted []string
	srv := &http.Server{Handler: http.NotFoundHandler(), ErrorLog: quietLog()}
	enable := EnableJoinLater(srv, mB, func(name string) error { admitted = append(admitted, name); return nil })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	blob, err := c.a.Export()
	if err != nil {
		t.Fatal(err)
	}
	aB, err := FromExport(mB, blob)
	if err != nil {
		t.Fatal(err)
	}
	tokS, err := aB.JoinToken(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ParseJoinToken(tokS)
	if err != nil {
		t.Fatal(err)
	}
	// Before enable: refused.
	if _, err := Join(testCtx(t), tok, "node-c", loopback, filepath.Join(t.TempDir(), "pki")); err == nil {
		t.Fatal("a join went through before the server had the authority")
	}
	if err := enable(aB); err != nil {
		t.Fatal(err)
	}
	mC, err := Join(testCtx(t), tok, "node-c", loopback, filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatalf("join through node-b: %v", err)
	}
	if !slices.Equal(admitted, []string{"node-c"}) || !mC.CACert.Equal(c.m.CACert) {
		t.Fatalf("admitted %v; same CA %v", admitted, mC.CACert.Equal(c.m.CACert))
	}

	// Another cluster's authority does not open for node-b.
	other := newCluster(t)
	blob2, _ := other.a.Export()
	if _, err := FromExport(mB, blob2); err == nil {
		t.Error("another cluster's CA key was taken")
	}
}
