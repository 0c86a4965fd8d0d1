package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver/gvisor"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// TestGvisor is issue 6's black-box check for gVisor: the busybox httpd
// image spawned with "isolation":"gvisor" on a node in a fresh network
// namespace is served through the proxy, answers `hypercore exec ID --
// uname -r` with gVisor's kernel release rather than the host's, and can
// open no connection to its node, while it reaches the internet. It keeps
// being served after the daemon is killed with -9 and restarted (the node
// then repairs the workload's veth, which gVisor must survive), and rm
// leaves no sandbox behind.
func TestGvisor(t *testing.T) {
	probeCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := gvisor.Probe(probeCtx, "", ""); err != nil {
		t.Skipf("gVisor cannot run here, so the node offers no gvisor isolation: %v", err)
	}
	n, ref := newNode(t)
	if code, out := n.API("GET", "/v1/node", ""); code != 200 || !strings.Contains(out, `"gvisor"`) {
		t.Fatalf("GET /v1/node: %d %s; want gvisor among the isolations (runsc probes fine here)\n%s", code, out, n.Log())
	}
	internet := isoInternet(t, n.NS)
	internetURL := "http://" + isoServe(t, internet, isoInternetIP+":0", isoInternetPage) + "/"
	anyPort := isoPort(isoServe(t, n.NS, "0.0.0.0:0", isoNodeSecret))

	const web = `{"cores":0.5,"memory":64,"image_ref":"%s","ports":{"80":8080},"isolation":"%s"}`
	a := spawn(t, n, fmt.Sprintf(web, ref, "gvisor"))
	other := spawn(t, n, fmt.Sprintf(web, ref, "container"))
	if code, body := n.Page(80, a.URL); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("proxy to the gvisor workload: %d %q\n%s", code, body, n.Log())
	}

	hostRelease, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimSpace(string(hostRelease))
	out, err := n.CLI("exec", a.ID, "--", "uname", "-r")
	if guest := strings.TrimSpace(out); err != nil || guest == "" || guest == host {
		t.Fatalf("hypercore exec %s -- uname -r: %v %q; want a release other than the host's %q", a.ID, err, out, host)
	}
	if out, err := n.CLI("exec", a.ID, "--", "sh", "-c", "exit 7"); err == nil || !strings.Contains(err.Error(), "exit status 7") {
		t.Errorf("exec exit code in the sandbox: %v %q, want exit status 7", err, out)
	}

	// What the sandbox must not reach on its node, as in TestIsolation.
	aIP := isoWorkloadIP(t, n, a.ID)
	toNode := []struct{ what, url string }{
		{"the API port on the bridge address", "http://" + isoGatewayIP + ":8000/"},
		{"a node service on 0.0.0.0, via the bridge address", "http://" + isoGatewayIP + ":" + anyPort + "/"},
		{"a node service on 0.0.0.0, via the uplink address", "http://" + isoUplinkIP + ":" + anyPort + "/"},
		{"the node's proxy on the bridge address", "http://" + isoGatewayIP + ":80/"},
		{"another workload", "http://" + isoWorkloadIP(t, n, other.ID) + fmt.Sprintf(":%d/", testutil.HTTPPort)},
	}
	check := func(when string) {
		t.Helper()
		for _, c := range toNode {
			if out, err := isoWget(n, a.ID, c.url); err == nil || strings.Contains(out, "HTTP/") {
				t.Errorf("%s: the gvisor workload reached %s (%s): %v %q", when, c.what, c.url, err, out)
			}
		}
		// The refusals above are not a dead network: the sandbox gets out.
		if out, err := isoWget(n, a.ID, internetURL); err != nil || out != isoInternetPage {
			t.Errorf("%s: the gvisor workload fetching %s: %v %q, want %q", when, internetURL, err, out, isoInternetPage)
		}
		if code, body := n.Page(80, a.URL); code != 200 || body != testutil.IndexHTML {
			t.Errorf("%s: proxy to the gvisor workload: %d %q", when, code, body)
		}
	}
	check("first run")

	n.Kill9()
	n.Start()
	if ip := isoWorkloadIP(t, n, a.ID); ip != aIP {
		t.Errorf("after restart the workload's IP is %s, was %s", ip, aIP)
	}
	check("after kill -9 and restart")

	// A terminal workload cannot run in gVisor: refused, saying so.
	code, out := n.API("POST", "/spawn", fmt.Sprintf(`{"memory":64,"image_ref":"%s","isolation":"gvisor","tty":true}`, ref))
	if code == 200 {
		var tty spawnAnswer
		if err := json.Unmarshal([]byte(out), &tty); err != nil || tty.ID == "" {
			t.Fatalf("spawn answer %q: %v", out, err)
		}
		harness.WaitFor(t, "the tty workload's error", 30*time.Second, func() bool {
			_, out = n.API("GET", "/v1/workloads/"+tty.ID, "")
			return strings.Contains(out, "gVisor")
		})
	} else if !strings.Contains(out, "gVisor") && !strings.Contains(out, "tty") {
		t.Errorf("spawn with tty in gVisor: %d %s, want a refusal that names tty or gVisor", code, out)
	}

	if code, out := n.API("DELETE", "/v1/workloads/"+a.ID, ""); code != 200 {
		t.Fatalf("remove: %d %s", code, out)
	}
	if ps, err := exec.Command("ps", "-eo", "args").Output(); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(ps), a.ID) {
		t.Errorf("a process naming %s is left after rm:\n%s", a.ID, ps)
	}
}
