package gvisor

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// TestNetwork runs httpd in a sandbox on a network namespace made as the
// node makes one (a veth with an address and a default route), and checks
// that gVisor serves that address, also after something puts the address
// back on the host side of the namespace, as the node does when a
// restarted daemon repairs a workload's veth.
func TestNetwork(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t)
	peer, wl := harness.NewNetNS(t), harness.NewNetNS(t)
	const peerIP, wlIP = "10.252.0.1", "10.252.0.2"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("-n", peer.Name, "link", "add", "veth-peer", "type", "veth", "peer", "name", "eth0", "netns", wl.Name)
	ip("-n", peer.Name, "addr", "add", peerIP+"/24", "dev", "veth-peer")
	ip("-n", peer.Name, "link", "set", "veth-peer", "up")
	ip("-n", wl.Name, "addr", "add", wlIP+"/24", "dev", "eth0")
	ip("-n", wl.Name, "link", "set", "eth0", "up")
	ip("-n", wl.Name, "route", "add", "default", "via", peerIP)

	cfg := testConfig(t, "httpd", "-f", "-p", fmt.Sprint(testutil.HTTPPort), "-h", "/www")
	cfg.Network.NetNSPath = "/run/netns/" + wl.Name
	cfg.Network.IP = wlIP
	drivertest.Run(t, testCtx(t), d, cfg)

	url := fmt.Sprintf("http://%s:%d/", wlIP, testutil.HTTPPort)
	page := func() string {
		resp, err := peer.Client().Get(url)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	testutil.WaitFor(t, waitLimit, "the page from the sandbox", func() bool { return page() == testutil.IndexHTML })
	if out := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "ip", "addr"); !strings.Contains(out, wlIP) {
		t.Errorf("ip addr in the sandbox = %q, want %s", out, wlIP)
	}

	ip("-n", wl.Name, "addr", "replace", wlIP+"/24", "dev", "eth0")
	for range 5 {
		if got := page(); got != testutil.IndexHTML {
			t.Fatalf("with the address back on the host side: page = %q", got)
		}
	}
}
