package node

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

func TestListeningPorts(t *testing.T) {
	// /proc/net/tcp as the kernel writes it: 8000 (1F40) listening on
	// 0.0.0.0, 53 listening on loopback, an established connection, and
	// 8000 again from tcp6.
	tables := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0200000A:1F40 0100000A:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
`)
	got := listeningPorts(tables)
	if len(got) != 2 || got[0] != 53 || got[1] != 8000 {
		t.Fatalf("listening ports %v, want [53 8000]", got)
	}
}

// TestImageConfigHonoured spawns an image whose config says EXPOSE 8080
// (as most web images do) without ports, and checks it is served on 8080
// behind 80 and 443; then maps a port nothing listens on and checks the
// spawn says where it listens instead; then replaces the entrypoint,
// working directory and user.
func TestImageConfigHonoured(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	img := testutil.HTTPDImage(t)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.ExposedPorts = map[string]struct{}{"8080/tcp": {}, "9090/udp": {}, "8443/tcp": {}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref := strings.Replace(e.ref, "/web:1", "/exposed:1", 1)
	testutil.Push(t, ref, img)
	e.cfg.ReadyTimeout = 2 * time.Second
	n := e.start()

	w := n.spawn(`{"image_ref":"` + ref + `"}`)
	if w.ExposedPort != 8080 || !w.Ready {
		t.Fatalf("spawned without ports: %+v, want exposed port 8080 and ready", w.Observation)
	}
	mustServe(t, w.IP)

	wrong := n.spawn(`{"image_ref":"` + ref + `","ports":{"80":9999}}`)
	if wrong.Ready || wrong.ExposedPort != 0 || !strings.Contains(wrong.Error, "not listening on 9999 after 2s; it listens on 8080") {
		t.Fatalf("spawned with a port nothing listens on: %+v, want not ready with an error naming 8080", wrong.Observation)
	}

	o := n.spawn(`{"entrypoint":["/bin/sh","-c"],"args":["echo $(pwd) $(id -u):$(id -g); sleep 100"],"workdir":"/tmp","user":"1000:1001"}`)
	testutil.WaitFor(t, waitLimit, "the override's output", func() bool {
		return strings.Contains(readLogs(t, n, o.ID), "/tmp 1000:1001")
	})
	n.removeAll()
}

// TestStopUsesTheImagesStopSignal stops a workload whose image asks for
// SIGQUIT (as nginx's does, for a graceful stop) and checks that is the
// signal it got.
func TestStopUsesTheImagesStopSignal(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
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
	ref := strings.Replace(e.ref, "/web:1", "/quits:1", 1)
	testutil.Push(t, ref, img)
	n := e.start()
	w := n.spawn(`{"image_ref":"` + ref + `","args":["sh","-c","trap 'echo got QUIT; exit 0' QUIT; trap 'echo got TERM; exit 0' TERM; echo trapping; while true; do sleep 0.1; done"]}`)
	testutil.WaitFor(t, waitLimit, "the traps to be set", func() bool {
		return strings.Contains(readLogs(t, n, w.ID), "trapping")
	})
	if _, err := n.Stop(ctx(t), w.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if logs := readLogs(t, n, w.ID); !strings.Contains(logs, "got QUIT") {
		t.Fatalf("logs after stop: %q, want the QUIT trap's output", logs)
	}
	n.removeAll()
}

// TestExecAsUserInDir runs exec with --user, --workdir and --env.
func TestExecAsUserInDir(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	w := n.spawn(`{"args":["sleep","1000"]}`)
	var out strings.Builder
	code, err := n.Exec(ctx(t), w.ID, driver.ExecConfig{
		Args: []string{"sh", "-c", "id -u; id -g; pwd; echo $FOO"}, Env: []string{"FOO=bar"},
		User: "1000:1001", WorkDir: "/tmp", IO: driver.IO{Stdout: &out, Stderr: &out},
	})
	if err != nil || code != 0 || out.String() != "1000\n1001\n/tmp\nbar\n" {
		t.Fatalf("exec as 1000:1001 in /tmp with FOO=bar: %d %v %q", code, err, out.String())
	}
	n.removeAll()
}
