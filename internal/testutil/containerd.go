package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// PauseImageRef is the sandbox image a test containerd uses: busybox-static
// waiting for a signal, imported locally so nothing is pulled from outside.
const PauseImageRef = "hypercore.test/pause:1"

// Containerd is Debian's containerd started by a test, in a network
// namespace of its own, with CRI on a unix socket.
type Containerd struct {
	// Socket is the CRI endpoint's socket path (use unix:// + Socket).
	Socket string
	// NetNS names the network namespace containerd and its pods live in
	// (/run/netns/NetNS).
	NetNS string
}

// Endpoint is the CRI endpoint URL.
func (c *Containerd) Endpoint() string { return "unix://" + c.Socket }

// Import loads img into the endpoint's image store under ref, as a pull
// would, so a containerd in a namespace needs no route to the registry.
func (c *Containerd) Import(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	must(t, err)
	f := filepath.Join(t.TempDir(), "image.tar")
	must(t, tarball.WriteToFile(f, r, img))
	if out, err := exec.Command("ctr", "-a", c.Socket, "-n", "k8s.io", "images", "import", f).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", ref, err, out)
	}
}

// PauseImage is busybox-static as a pod sandbox's pause process: it sleeps
// until SIGTERM or SIGINT and then exits 0.
func PauseImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, Layer(t))
	must(t, err)
	cfg, err := img.ConfigFile()
	must(t, err)
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config.Cmd = []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done"}
	cfg.Config.Env = []string{"PATH=/bin"}
	img, err = mutate.ConfigFile(img, cfg)
	must(t, err)
	return img
}

// need fails (under CI) or skips the test when a program is missing.
func need(t testing.TB, prog, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(prog); err != nil {
		missing(t, fmt.Sprintf("%s not found: install the %s package (scripts/deps.sh)", prog, pkg))
	}
}

func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// StartContainerd starts containerd with its CRI plugin in a new network
// namespace, with cniConf as its only CNI network and the pause image
// imported, and stops it (pods included) when the test ends. It is started
// with nsenter --net, not `ip netns exec`, which remounts /sys and hides
// the cgroup v1 mounts; oom_score_adj is restricted because this kind of
// VM refuses values below 0.
func StartContainerd(t testing.TB, cniConf []byte) *Containerd {
	t.Helper()
	return StartContainerdWith(t, cniConf, ContainerdOptions{})
}

// StartContainerdIn is StartContainerd in the network namespace netns
// (a name `ip netns` knows), pulling from the registries insecure over
// plain HTTP.
func StartContainerdIn(t testing.TB, cniConf []byte, netns string, insecure ...string) *Containerd {
	t.Helper()
	return StartContainerdWith(t, cniConf, ContainerdOptions{NetNS: netns, InsecureRegistries: insecure})
}

// ContainerdOptions are the choices StartContainerdWith offers.
type ContainerdOptions struct {
	// NetNS is the network namespace to run in; "" makes a new one.
	NetNS string
	// InsecureRegistries are pulled from over plain HTTP.
	InsecureRegistries []string
	// TCP, when set, also serves the API (CRI included) over TCP with
	// mutual TLS, as a remote endpoint does.
	TCP *ContainerdTCP
}

// ContainerdTCP is containerd's TCP listener with mutual TLS.
type ContainerdTCP struct {
	// Addr is host:port, in containerd's network namespace.
	Addr string
	// CA verifies client certificates; Cert and Key are the server's.
	CA, Cert, Key string
}

// StartContainerdWith is StartContainerd with options.
func StartContainerdWith(t testing.TB, cniConf []byte, o ContainerdOptions) *Containerd {
	t.Helper()
	netns, insecure := o.NetNS, o.InsecureRegistries
	if os.Geteuid() != 0 {
		missing(t, "containerd tests need root")
	}
	need(t, "containerd", "containerd")
	need(t, "ctr", "containerd")
	need(t, "containerd-shim-runc-v2", "containerd")
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		missing(t, "/usr/lib/cni/bridge not found: install the containernetworking-plugins package (scripts/deps.sh)")
	}
	// Short paths: containerd's sockets must fit in sun_path.
	dir, err := os.MkdirTemp("/tmp", "hccrd")
	must(t, err)
	ns := netns
	if ns == "" {
		ns = filepath.Base(dir)
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v\n%s", err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("lo up: %v\n%s", err, out)
		}
	}
	nsPath := "/run/netns/" + ns
	must(t, os.MkdirAll(filepath.Join(dir, "cni"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "cni", "10-hypercore.conflist"), cniConf, 0o644))
	sock := filepath.Join(dir, "c.sock")
	tcpConf := ""
	if o.TCP != nil {
		tcpConf = fmt.Sprintf("  tcp_address = %q\n  tcp_tls_ca = %q\n  tcp_tls_cert = %q\n  tcp_tls_key = %q\n", o.TCP.Addr, o.TCP.CA, o.TCP.Cert, o.TCP.Key)
	}
	conf := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
%[6]s[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[4]q
  restrict_oom_score_adj = true
  disable_tcp_service = %[7]t
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, PauseImageRef, filepath.Join(dir, "cni"), tcpConf, o.TCP == nil)
	for _, r := range insecure {
		conf += fmt.Sprintf("  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.%q]\n    endpoint = [%q]\n", r, "http://"+r)
	}
	must(t, os.WriteFile(filepath.Join(dir, "config.toml"), []byte(conf), 0o644))
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	must(t, err)
	cmd := exec.Command("nsenter", "--net="+nsPath, "containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	must(t, cmd.Start())
	c := &Containerd{Socket: sock, NetNS: ns}
	t.Cleanup(func() {
		// Tasks a failing test left first, killed and deleted, so that no
		// shim or mount outlives the test.
		ctr := "ctr -a " + sock + " -n k8s.io"
		script := "for c in $(" + ctr + " containers ls -q); do " + ctr + " tasks kill -s KILL $c; " + ctr + " tasks rm -f $c; done"
		if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
			t.Logf("remove leftover tasks: %v %s", err, out)
		}
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		exec.Command("sh", "-c", "grep ' "+dir+"/' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r umount -l").Run()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "containerd.log")); err == nil {
				t.Logf("containerd log (tail):\n%s", tail(string(b), 4000))
			}
		}
		os.RemoveAll(dir)
	})
	WaitFor(t, 30*time.Second, "containerd socket", func() bool {
		return exec.Command("ctr", "-a", sock, "version").Run() == nil
	})
	c.Import(t, PauseImageRef, PauseImage(t))
	return c
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[strings.Index(s[len(s)-n:], "\n")+len(s)-n+1:]
}
