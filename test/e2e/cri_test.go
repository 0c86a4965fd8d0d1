package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/hypercore-dev/hypercore/internal/driver/cri"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// TestCRIEndpoint walks the CRI contract: Debian's containerd with CRI on a
// unix socket, in the node's namespace; a node with --cri-endpoint spawns
// the test image there (containerd pulls it from the registry itself),
// the proxy serves it by Host, the pod sandbox is labelled with the
// workload id, hypercore logs reads its output, a kill -9 and restart of the node re-adopts it, and rm
// removes the sandbox.
func TestCRIEndpoint(t *testing.T) {
	ns := harness.NewNetNS(t)
	ref := harness.StartRegistry(t, ns, testutil.HTTPDImage(t))
	ctd := testutil.StartContainerdIn(t, cri.CNIConfList, ns.Name, "127.0.0.1:5000")
	n := harness.StartNode(t, ns, hypercoreBin, filepath.Join(t.TempDir(), "data"), "--cri-endpoint", ctd.Endpoint())

	a := spawn(t, n, `{"cores":0.5,"memory":64,"image_ref":"`+ref+`","ports":{"80":8080}}`)
	host := a.ID + ".localhost"
	if code, body := n.Page(80, host); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("proxy to the CRI workload: %d %q\n%s", code, body, n.Log())
	}

	// One-shot exec works; what needs the endpoint's streaming server
	// says it is not supported.
	if out, err := n.CLI("exec", a.ID, "--", "cat", "/www/index.html"); err != nil || out != testutil.IndexHTML {
		t.Errorf("exec: %v %q, want the index page", err, out)
	}
	if out, err := n.CLI("attach", a.ID); err == nil || !strings.Contains(out, "not supported on this CRI endpoint") {
		t.Errorf("attach: %v %q, want an error saying it is not supported", err, out)
	}

	// The proxied request was logged by httpd, and the node reads the
	// endpoint's log file back.
	harness.WaitFor(t, "the request in hypercore logs", 10*time.Second, func() bool {
		out, err := n.CLI("logs", a.ID)
		return err == nil && strings.Contains(out, "response:200") && !strings.Contains(out, "stderr F")
	})

	conn, err := grpc.NewClient(ctd.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	pods := func() []*runtimeapi.PodSandbox {
		resp, err := rt.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{cri.LabelWorkload: a.ID}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Items
	}
	if p := pods(); len(p) != 1 || p[0].State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandboxes labelled %s=%s: %+v, want one ready", cri.LabelWorkload, a.ID, p)
	}
	var before struct{ IP, State string }
	_, out := n.API("GET", "/v1/workloads/"+a.ID, "")
	json.Unmarshal([]byte(out), &before)
	if before.State != "running" || before.IP == "" {
		t.Fatalf("workload %s", out)
	}

	// The endpoint keeps the pod while the node is away; the restarted
	// node finds it by its label, and nothing is duplicated.
	n.Kill9()
	n.Start()
	if code, body := n.Page(80, host); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("after kill -9 and restart: %d %q\n%s", code, body, n.Log())
	}
	var after struct{ IP, State string }
	_, out = n.API("GET", "/v1/workloads/"+a.ID, "")
	json.Unmarshal([]byte(out), &after)
	if after != before {
		t.Errorf("after restart: %+v, want %+v", after, before)
	}
	if p := pods(); len(p) != 1 {
		t.Errorf("after restart: %d sandboxes, want the same one", len(p))
	}

	if out, err := n.CLI("rm", a.ID); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	harness.WaitFor(t, "sandbox removed", 30*time.Second, func() bool { return len(pods()) == 0 })
}

// TestCRIRemoteEndpoint spawns through a remote endpoint with mutual TLS:
// containerd in a namespace of its own, reached over a link from the
// node's namespace with the pod subnet routed across it, as a machine
// next to the node would be. The proxy serves the workload by Host, and
// rm removes its sandbox.
func TestCRIRemoteEndpoint(t *testing.T) {
	ns := harness.NewNetNS(t)
	ref := harness.StartRegistry(t, ns, testutil.HTTPDImage(t))
	remote := harness.NewNetNS(t)
	const nodeIP, endpointIP = "10.214.78.1", "10.214.78.2"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	ip("-n", ns.Name, "link", "add", "crilink", "type", "veth", "peer", "name", "crilink", "netns", remote.Name)
	ip("-n", ns.Name, "addr", "add", nodeIP+"/30", "dev", "crilink")
	ip("-n", ns.Name, "link", "set", "crilink", "up")
	ip("-n", remote.Name, "addr", "add", endpointIP+"/30", "dev", "crilink")
	ip("-n", remote.Name, "link", "set", "crilink", "up")
	// The shipped conflist's pod subnet, routed to the endpoint's machine.
	ip("-n", ns.Name, "route", "add", "10.213.0.0/16", "via", endpointIP)

	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "endpoint-ca")
	srvCert, srvKey := ca.Issue(t, dir, "endpoint", x509.ExtKeyUsageServerAuth, endpointIP)
	cliCert, cliKey := ca.Issue(t, dir, "node", x509.ExtKeyUsageClientAuth)
	addr := endpointIP + ":10010"
	ctd := testutil.StartContainerdWith(t, cri.CNIConfList, testutil.ContainerdOptions{
		NetNS: remote.Name,
		TCP:   &testutil.ContainerdTCP{Addr: addr, CA: ca.Path, Cert: srvCert, Key: srvKey},
	})
	// The endpoint's machine cannot reach the node's loopback registry:
	// it gets the image under the same reference another way.
	ctd.Import(t, ref, testutil.HTTPDImage(t))

	n := harness.StartNode(t, ns, hypercoreBin, filepath.Join(dir, "data"),
		"--cri-endpoint", "tcp://"+addr, "--cri-ca", ca.Path, "--cri-cert", cliCert, "--cri-key", cliKey)
	a := spawn(t, n, `{"cores":0.5,"memory":64,"image_ref":"`+ref+`","ports":{"80":8080}}`)
	if code, body := n.Page(80, a.ID+".localhost"); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("proxy to the remote CRI workload: %d %q\n%s", code, body, n.Log())
	}

	conn, err := grpc.NewClient(ctd.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	pods := func() int {
		resp, err := rt.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{cri.LabelWorkload: a.ID}}})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Items)
	}
	if p := pods(); p != 1 {
		t.Fatalf("%d sandboxes labelled with the workload on the endpoint, want 1", p)
	}
	if out, err := n.CLI("rm", a.ID); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	harness.WaitFor(t, "sandbox removed", 30*time.Second, func() bool { return pods() == 0 })
}
