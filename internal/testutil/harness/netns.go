// Package harness starts real hypercore daemons in network namespaces that
// a test makes, for end-to-end tests and benchmarks.
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// NetNS is a network namespace the test made, standing in for a fresh host.
type NetNS struct {
	// Name is the name `ip netns` knows it by.
	Name string
	h    netns.NsHandle
}

// NewNetNS makes a network namespace with loopback up, deleted when the
// test ends.
func NewNetNS(t testing.TB) *NetNS {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	name := "hce2e-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &NetNS{Name: name, h: h}
}

// Do runs fn on a thread inside the namespace. Sockets made there stay in
// the namespace after the thread switches back.
func (n *NetNS) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(n.h); err != nil {
		return err
	}
	defer netns.Set(orig)
	return fn()
}

// Listen opens a TCP listener inside the namespace.
func (n *NetNS) Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	err := n.Do(func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Dial connects from inside the namespace.
func (n *NetNS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Client is an HTTP client whose connections start inside the namespace.
func (n *NetNS) Client() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:       n.Dial,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Command runs a program inside the namespace, as `ip netns exec` does.
func (n *NetNS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}
