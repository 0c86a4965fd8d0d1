package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/hypercore-dev/hypercore/internal/driver/gvisor"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// restView is GET /v1/workloads/{id} with the fields these tests read;
// ExitCode is a pointer, so "absent" and 0 differ.
type restView struct {
	ID, State, Desired, Error string
	ExitCode                  *int `json:"exit_code"`
	Restarts                  int
	Restart                   string
}

func getWorkload(t *testing.T, n *harness.Node, id string) restView {
	t.Helper()
	code, out := n.API("GET", "/v1/workloads/"+id, "")
	var w restView
	if code != 200 || json.Unmarshal([]byte(out), &w) != nil || w.ID != id {
		t.Fatalf("GET /v1/workloads/%s: %d %s", id, code, out)
	}
	return w
}

// TestExitCodesRestartsAndStart spawns `sh -c 'exit 5'` and expects
// exit_code 5 in GET /v1/workloads/{id} and in `hypercore inspect`, with
// desired running; spawns a failing workload with restart on-failure and
// expects its restart count to climb (shown in list); then stops it and
// brings it back with `hypercore start`.
func TestExitCodesRestartsAndStart(t *testing.T) {
	n, ref := newNode(t)
	five := spawn(t, n, fmt.Sprintf(`{"memory":64,"image_ref":"%s","args":["sh","-c","exit 5"]}`, ref))
	harness.WaitFor(t, "the exit 5 workload to exit", 30*time.Second, func() bool {
		return getWorkload(t, n, five.ID).State == "exited"
	})
	if w := getWorkload(t, n, five.ID); w.ExitCode == nil || *w.ExitCode != 5 || w.Desired != "running" {
		_, out := n.API("GET", "/v1/workloads/"+five.ID, "")
		t.Errorf("GET /v1/workloads/%s after exit 5: %s, want exit_code 5 and desired running", five.ID, out)
	}
	if out, err := n.CLI("inspect", five.ID); err != nil || !strings.Contains(out, `"exit_code": 5`) || !strings.Contains(out, `"desired": "running"`) {
		t.Errorf("hypercore inspect %s: %v %s, want exit_code 5 and desired running", five.ID, err, out)
	}

	crash := spawn(t, n, fmt.Sprintf(`{"memory":64,"image_ref":"%s","restart":"on-failure","args":["sh","-c","sleep 0.3; exit 3"]}`, ref))
	harness.WaitFor(t, "a restart by the on-failure policy", 30*time.Second, func() bool {
		return getWorkload(t, n, crash.ID).Restarts > 0
	})
	if out, err := n.CLI("list"); err != nil || !strings.Contains(out, "RESTARTS") {
		t.Errorf("hypercore list: %v %s, want a RESTARTS column", err, out)
	}
	if _, err := n.CLI("stop", crash.ID); err != nil {
		t.Fatal(err)
	}
	if w := getWorkload(t, n, crash.ID); w.State != "stopped" || w.Desired != "stopped" {
		t.Fatalf("after stop: %+v", w)
	}
	time.Sleep(3 * time.Second)
	if w := getWorkload(t, n, crash.ID); w.State != "stopped" {
		t.Fatalf("a stopped workload was restarted by its policy: %+v", w)
	}
	if out, err := n.CLI("start", crash.ID); err != nil {
		t.Fatalf("hypercore start %s: %v %s", crash.ID, err, out)
	}
	if w := getWorkload(t, n, crash.ID); w.Desired != "running" || (w.State != "running" && w.State != "exited") || w.Restart != "on-failure" {
		t.Errorf("after hypercore start: %+v, want desired running, running again, its policy kept", w)
	}
}

// TestImageExposedPortServed spawns an image whose config has EXPOSE 8080,
// without ports, and expects it served at its URL; then a port the server
// does not listen on, which the CLI reports with the port it does listen
// on and a non-zero exit.
func TestImageExposedPortServed(t *testing.T) {
	n, ref := newNode(t)
	img := testutil.HTTPDImage(t)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.ExposedPorts = map[string]struct{}{fmt.Sprintf("%d/tcp", testutil.HTTPPort): {}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	exposed := strings.Replace(ref, "/web:", "/exposed:", 1)
	harness.Push(t, n.NS, exposed, img)

	w := spawn(t, n, fmt.Sprintf(`{"memory":64,"image_ref":"%s"}`, exposed))
	if code, body := n.Page(80, w.URL); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("the EXPOSE 8080 workload spawned without ports at its URL: %d %q, want 200 and the page\n%s", code, body, n.Log())
	}

	out, err := n.CLI("spawn", "--memory", "64", "--ports", "80:9999", exposed)
	if err == nil || !strings.Contains(out+err.Error(), fmt.Sprintf("not listening on 9999 after 15s; it listens on %d", testutil.HTTPPort)) {
		t.Errorf("spawn with a port nothing listens on: %v %s, want a non-zero exit naming port %d", err, out, testutil.HTTPPort)
	}
	if out, err := n.CLI("spawn", "--detach", "--memory", "64", "--ports", "80:9998", exposed); err != nil {
		t.Errorf("spawn --detach with a port nothing listens on: %v %s, want exit 0", err, out)
	}
}

// TestDevStdoutLogsInEveryIsolation runs the pattern of Docker's official
// nginx image, a log file that is a link to /dev/stdout, in every
// isolation this node offers, and expects what is written to it in
// `hypercore logs`.
func TestDevStdoutLogsInEveryIsolation(t *testing.T) {
	isolations := []string{"container"}
	probeCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := gvisor.Probe(probeCtx, "", ""); err == nil {
		isolations = append(isolations, "gvisor")
	} else {
		t.Logf("gvisor left out: %v", err)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		isolations = append(isolations, "microvm")
	} else {
		t.Log("microvm left out: qemu-system-x86_64 is not installed")
	}
	n, ref := newNode(t)
	const script = `mkdir -p /tmp/log; ln -sf /dev/stdout /tmp/log/access.log; ln -sf /dev/stderr /tmp/log/error.log; ` +
		`echo GET / 200 >> /tmp/log/access.log; echo warn: disk >> /tmp/log/error.log; ls -l /dev/fd/ > /dev/null && echo fd-ok; sleep 1000`
	for _, iso := range isolations {
		w := spawn(t, n, fmt.Sprintf(`{"memory":128,"image_ref":"%s","isolation":"%s","args":["sh","-c",%q]}`, ref, iso, script))
		harness.WaitFor(t, iso+" logs through /dev/stdout", 90*time.Second, func() bool {
			out, _ := n.CLI("logs", w.ID)
			return strings.Contains(out, "GET / 200") && strings.Contains(out, "warn: disk") && strings.Contains(out, "fd-ok")
		})
		if _, err := n.CLI("rm", w.ID); err != nil {
			t.Errorf("rm %s: %v", w.ID, err)
		}
	}
}

// TestVolumeKeepsDataAcrossWorkloads is the pattern of PostgreSQL's
// official image with a data volume, as the outside check drives it: a
// volume is created, the test image spawned with -v NAME:/path, a file
// written through `hypercore exec`, the workload removed, the image
// spawned again with the same volume, and the file read back. The volume
// is refused removal while mounted (409), keeps its data across a daemon
// restart, and goes once nothing mounts it.
func TestVolumeKeepsDataAcrossWorkloads(t *testing.T) {
	n, ref := newNode(t)
	if out, err := n.CLI("volume", "create", "pgdata", "--size", "64"); err != nil {
		t.Fatalf("volume create: %v %s", err, out)
	}
	const target = "/var/lib/postgresql/data"
	first := cliSpawn(t, n, "--memory", "64", "-v", "pgdata:"+target, ref)
	if out, err := n.CLI("exec", first, "--", "sh", "-c", "echo 16 > "+target+"/PG_VERSION"); err != nil {
		t.Fatalf("exec write: %v %s", err, out)
	}
	if code, out := n.API("DELETE", "/v1/volumes/pgdata", ""); code != 409 || !strings.Contains(out, first) {
		t.Errorf("DELETE of a mounted volume: %d %s, want 409 naming %s", code, out, first)
	}
	if out, err := n.CLI("volume", "inspect", "pgdata"); err != nil || !strings.Contains(out, first) || !strings.Contains(out, `"size_mib": 64`) {
		t.Errorf("volume inspect: %v %s", err, out)
	}
	if _, err := n.CLI("rm", first); err != nil {
		t.Fatal(err)
	}
	n.Term()
	n.Start()
	second := cliSpawn(t, n, "--memory", "64", "-v", "pgdata:"+target, ref)
	if out, err := n.CLI("exec", second, "--", "cat", target+"/PG_VERSION"); err != nil || out != "16\n" {
		t.Fatalf("the file in a new workload with the same volume, after a daemon restart: %v %q, want 16", err, out)
	}
	if out, err := n.CLI("exec", second, "--", "sh", "-c", "dd if=/dev/zero of="+target+"/big bs=1M count=100"); err == nil || !strings.Contains(out, "No space left") {
		t.Errorf("writing 100 MiB to a 64 MiB volume: %v %s, want no space left", err, out)
	}
	if out, err := n.CLI("spawn", "--memory", "64", "-v", "nope:/data", ref); err == nil || !strings.Contains(out, "hypercore volume create nope") {
		t.Errorf("spawn with a volume that does not exist: %v %s, want it named with the command to create it", err, out)
	}
	if _, err := n.CLI("rm", second); err != nil {
		t.Fatal(err)
	}
	if out, err := n.CLI("volume", "rm", "pgdata"); err != nil {
		t.Fatalf("volume rm of an unused volume: %v %s", err, out)
	}
	if out, _ := n.CLI("volume", "list"); strings.Contains(out, "pgdata") {
		t.Errorf("volume list after rm: %s", out)
	}
}

// TestVolumeInEveryIsolation writes through a volume in one workload and
// reads it back in a new one, for gVisor (a bind through the gofer) and
// microVMs (a virtio-blk disk), where this node offers them; the second
// reader is a container, so the data is the same file system everywhere.
func TestVolumeInEveryIsolation(t *testing.T) {
	var isolations []string
	probeCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := gvisor.Probe(probeCtx, "", ""); err == nil {
		isolations = append(isolations, "gvisor")
	} else {
		t.Logf("gvisor left out: %v", err)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		isolations = append(isolations, "microvm")
	} else {
		t.Log("microvm left out: qemu-system-x86_64 is not installed")
	}
	if len(isolations) == 0 {
		t.Skip("neither gvisor nor microvm isolation is available here")
	}
	n, ref := newNode(t)
	for _, iso := range isolations {
		vol := "data-" + iso
		if out, err := n.CLI("volume", "create", vol, "--size", "32"); err != nil {
			t.Fatalf("volume create: %v %s", err, out)
		}
		writer := cliSpawn(t, n, "--memory", "128", "--isolation", iso, "-v", vol+":/data", ref)
		if out, err := n.CLI("exec", writer, "--", "sh", "-c", "echo written-in-"+iso+" > /data/f && sync"); err != nil {
			t.Fatalf("%s: exec write: %v %s", iso, err, out)
		}
		if _, err := n.CLI("rm", writer); err != nil {
			t.Fatal(err)
		}
		reader := cliSpawn(t, n, "--memory", "64", "-v", vol+":/data", ref)
		if out, err := n.CLI("exec", reader, "--", "cat", "/data/f"); err != nil || out != "written-in-"+iso+"\n" {
			t.Errorf("%s: the file read back in a container: %v %q", iso, err, out)
		}
		if _, err := n.CLI("rm", reader); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStopSignalInEveryIsolation stops, in every isolation this node
// offers, a workload whose image asks for SIGQUIT (as nginx's does for a
// graceful stop), and expects that signal's trap in its logs.
func TestStopSignalInEveryIsolation(t *testing.T) {
	isolations := []string{"container"}
	probeCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := gvisor.Probe(probeCtx, "", ""); err == nil {
		isolations = append(isolations, "gvisor")
	} else {
		t.Logf("gvisor left out: %v", err)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		isolations = append(isolations, "microvm")
	} else {
		t.Log("microvm left out: qemu-system-x86_64 is not installed")
	}
	n, ref := newNode(t)
	img := testutil.HTTPDImage(t)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.StopSignal = "SIGQUIT"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	quits := strings.Replace(ref, "/web:", "/quits:", 1)
	harness.Push(t, n.NS, quits, img)
	const script = `trap 'echo got QUIT; exit 0' QUIT; trap 'echo got TERM; exit 0' TERM; echo trapping; while true; do sleep 0.1; done`
	for _, iso := range isolations {
		w := spawn(t, n, fmt.Sprintf(`{"memory":128,"image_ref":"%s","isolation":"%s","args":["sh","-c",%q]}`, quits, iso, script))
		harness.WaitFor(t, iso+" traps set", 90*time.Second, func() bool {
			out, _ := n.CLI("logs", w.ID)
			return strings.Contains(out, "trapping")
		})
		if out, err := n.CLI("stop", "--timeout", "10", w.ID); err != nil {
			t.Fatalf("%s: stop: %v %s", iso, err, out)
		}
		harness.WaitFor(t, iso+" QUIT trap in the logs", 10*time.Second, func() bool {
			out, _ := n.CLI("logs", w.ID)
			return strings.Contains(out, "got QUIT")
		})
		if _, err := n.CLI("rm", w.ID); err != nil {
			t.Errorf("rm %s: %v", w.ID, err)
		}
	}
}
