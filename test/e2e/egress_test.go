package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// Addresses of the cloud that egressCloud makes: the node's LAN address,
// the LAN's router (also a LAN host with a service), instance metadata
// and a public server, both beyond the router.
const (
	egNodeIP     = "192.168.50.2"
	egRouterIP   = "192.168.50.1"
	egMetadataIP = "169.254.169.254"
	egPublicIP   = "203.0.113.80"
)

// TestEgress is the egress policy as the black-box check probes it: from
// a workload, through `hypercore exec`, instance metadata and a LAN host,
// each served in another namespace, are refused while the public internet
// answers; a spec's egress opens one of them to that workload alone.
func TestEgress(t *testing.T) {
	ns := harness.NewNetNS(t)
	ref := harness.StartRegistry(t, ns, testutil.HTTPDImage(t))
	cloud := egressCloud(t, ns)
	metadata := "http://" + isoServe(t, cloud, egMetadataIP+":80", "instance credentials\n") + "/"
	lan := "http://" + isoServe(t, cloud, egRouterIP+":0", "LAN service\n") + "/"
	public := "http://" + isoServe(t, cloud, egPublicIP+":0", isoInternetPage) + "/"
	n := harness.StartNode(t, ns, hypercoreBin, filepath.Join(t.TempDir(), "data"))

	a := spawn(t, n, fmt.Sprintf(`{"cores":0.5,"memory":64,"image_ref":%q}`, ref))
	b := cliSpawn(t, n, "--cores", "0.5", "--memory", "64", "--egress", egMetadataIP+"/32", ref)

	refused := func(id, what, url string) {
		t.Helper()
		if out, err := isoWget(n, id, url); err == nil || strings.Contains(out, "HTTP/") {
			t.Errorf("workload %s reached %s at %s: %v %q", id, what, url, err, out)
		}
	}
	reaches := func(id, what, url, want string) {
		t.Helper()
		if out, err := isoWget(n, id, url); err != nil || out != want {
			t.Errorf("workload %s fetching %s at %s: %v %q, want %q", id, what, url, err, out, want)
		}
	}
	refused(a.ID, "instance metadata", metadata)
	refused(a.ID, "a LAN host", lan)
	reaches(a.ID, "the public internet", public, isoInternetPage)
	reaches(b, "instance metadata, opened by its spec", metadata, "instance credentials\n")
	refused(b, "a LAN host", lan)

	// The black-box check's own command.
	if out, err := n.CLI("exec", a.ID, "--", "wget", "-q", "-O-", metadata); err == nil {
		t.Errorf("exec wget %s succeeded: %q", metadata, out)
	}
	if out, err := n.CLI("list", "--json"); err != nil || !strings.Contains(out, egMetadataIP+"/32") {
		t.Errorf("list does not show the spec's egress: %v\n%s", err, out)
	}
	if t.Failed() {
		t.Logf("node log:\n%s", n.Log())
	}
}

// egressCloud links ns, as a cloud VM's host, to a new namespace standing
// in for the cloud: a LAN 192.168.50.0/24 with the node at egNodeIP and
// the router at egRouterIP, through which the node reaches metadata and
// everything else (the default route).
func egressCloud(t *testing.T, ns *harness.NetNS) *harness.NetNS {
	t.Helper()
	cloud := harness.NewNetNS(t)
	for _, args := range [][]string{
		{"-n", ns.Name, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", cloud.Name},
		{"-n", ns.Name, "addr", "add", egNodeIP + "/24", "dev", "lan0"},
		{"-n", ns.Name, "link", "set", "lan0", "up"},
		{"-n", ns.Name, "route", "add", egMetadataIP + "/32", "via", egRouterIP},
		{"-n", ns.Name, "route", "add", "default", "via", egRouterIP},
		{"-n", cloud.Name, "addr", "add", egRouterIP + "/24", "dev", "eth0"},
		{"-n", cloud.Name, "link", "set", "eth0", "up"},
		{"-n", cloud.Name, "addr", "add", egMetadataIP + "/32", "dev", "lo"},
		{"-n", cloud.Name, "addr", "add", egPublicIP + "/32", "dev", "lo"},
		{"-n", cloud.Name, "link", "set", "lo", "up"},
	} {
		isoRun(t, exec.Command("ip", args...))
	}
	return cloud
}
