package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// TestMicroVM is issue 6 for QEMU: the busybox httpd image spawned with
// "isolation":"microvm" is served through the proxy, runs on its own
// kernel, cannot reach its node, and survives a kill -9 of the daemon.
func TestMicroVM(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (make deps)")
	}
	n, ref := newNode(t)
	nodeService := isoPort(isoServe(t, n.NS, "0.0.0.0:0", isoNodeSecret))

	// The node says how it runs microVMs, as detected once at its start.
	if code, out := n.API("GET", "/v1/node", ""); code != 200 || !(strings.Contains(out, `"microvm_accel": "tcg"`) || strings.Contains(out, `"microvm_accel": "kvm"`)) {
		t.Errorf("GET /v1/node: %d %s, want microvm_accel tcg or kvm", code, out)
	}

	// 64 MiB, as a container spec would say, is less than a VM needs: the
	// node would reserve less than the VM takes, so it is refused.
	if code, out := n.API("POST", "/spawn", fmt.Sprintf(`{"cores":1,"memory":64,"image_ref":"%s","isolation":"microvm"}`, ref)); code != 400 || !strings.Contains(out, "at least 128 MiB for isolation microvm") {
		t.Errorf("spawn of a 64 MiB microVM: %d %s, want 400 saying the minimum", code, out)
	}
	const secret = "SECRET=only-over-the-agent-stream-7f3a"
	vm := spawn(t, n, fmt.Sprintf(`{"cores":1,"memory":128,"image_ref":"%s","ports":{"80":%d},"isolation":"microvm","env":[%q]}`, ref, testutil.HTTPPort, secret))
	if code, body := n.Page(80, vm.URL); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("proxy to the microVM: %d %q, want 200 and the page", code, body)
	}

	host, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	guest, err := n.CLI("exec", vm.ID, "--", "uname", "-r")
	if err != nil || strings.TrimSpace(guest) == "" || strings.TrimSpace(guest) == strings.TrimSpace(string(host)) {
		t.Errorf("uname -r in the microVM = %q (%v); want a kernel of its own, not the host's %q", guest, err, host)
	}
	if !strings.Contains(guest, "cloud-amd64") {
		t.Errorf("uname -r in the microVM = %q; want Debian's cloud kernel", guest)
	}

	// Env (secrets included) reaches the workload over the agent stream,
	// never through QEMU's argv or the guest kernel's command line.
	if env, err := n.CLI("exec", vm.ID, "--", "env"); err != nil || !strings.Contains(env, secret) {
		t.Errorf("env in the microVM: %v %q, want %s", err, env, secret)
	}
	if cmdline, err := n.CLI("exec", vm.ID, "--", "cat", "/proc/cmdline"); err != nil || strings.Contains(cmdline, "only-over") {
		t.Errorf("guest kernel command line: %v %q must not hold the env", err, cmdline)
	}
	var rec struct{ Pid int }
	if code, out := n.API("GET", "/v1/workloads/"+vm.ID, ""); code != 200 || json.Unmarshal([]byte(out), &rec) != nil || rec.Pid == 0 {
		t.Errorf("record of the microVM: %d %s, want its VMM's pid", code, out)
	} else if argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", rec.Pid)); err != nil || !strings.Contains(string(argv), "qemu") || strings.Contains(string(argv), "only-over") {
		t.Errorf("QEMU's argv (pid %d): %v %q: want qemu, and not the env", rec.Pid, err, argv)
	}

	// The guest is a workload like any other on the node's network: it
	// reaches neither the API nor any other service of its node. The
	// same wget reaching the guest's own server shows the probe works.
	if out, err := isoWget(n, vm.ID, fmt.Sprintf("http://127.0.0.1:%d/", testutil.HTTPPort)); err != nil || out != testutil.IndexHTML {
		t.Errorf("wget in the microVM of its own page: %q, %v", out, err)
	}
	for _, url := range []string{
		"http://" + isoGatewayIP + ":8000/",
		"http://" + isoGatewayIP + ":" + nodeService + "/",
	} {
		if out, err := isoWget(n, vm.ID, url); err == nil || strings.Contains(out, "HTTP/") {
			t.Errorf("the microVM reached its node at %s: %q (%v)", url, out, err)
		}
	}

	// A daemon killed with -9 leaves the VM running; the next one adopts it.
	n.Kill9()
	n.Start()
	if code, body := n.Page(80, vm.URL); code != 200 || body != testutil.IndexHTML {
		t.Errorf("proxy to the microVM after a daemon restart: %d %q", code, body)
	}
	if out, err := n.CLI("exec", vm.ID, "--", "echo", "adopted"); err != nil || out != "adopted\n" {
		t.Errorf("exec after a daemon restart: %q, %v", out, err)
	}

	if out, err := n.CLI("stop", vm.ID); err != nil {
		t.Fatalf("stop: %v: %s", err, out)
	}
	if code, _ := n.Page(80, vm.URL); code == 200 {
		t.Error("the proxy still serves a stopped microVM")
	}
}
