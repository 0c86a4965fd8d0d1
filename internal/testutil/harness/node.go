package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// Build compiles cmd/hypercore into dir and returns the binary's path.
// moduleRoot is the repository root, relative to the caller's directory.
func Build(dir, moduleRoot string) (string, error) {
	bin := filepath.Join(dir, "hypercore")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/hypercore")
	cmd.Dir = moduleRoot
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return bin, cmd.Run()
}

// Node is one hypercore daemon in its own network namespace.
type Node struct {
	t       testing.TB
	NS      *NetNS
	Bin     string
	DataDir string
	Token   string
	cmd     *exec.Cmd
	logPath string
	args    []string
	// user, when set, runs the daemon rootless (StartRootlessNode).
	user *syscall.Credential
	env  []string
}

// StartNode runs `hypercore cluster --data-dir dataDir args...` inside ns
// and waits until its API is up. The node and its workloads are removed
// when the test ends.
func StartNode(t testing.TB, ns *NetNS, bin, dataDir string, args ...string) *Node {
	t.Helper()
	n := &Node{t: t, NS: ns, Bin: bin, DataDir: dataDir, args: args,
		logPath: filepath.Join(filepath.Dir(dataDir), filepath.Base(dataDir)+".log")}
	n.Start()
	t.Cleanup(n.cleanup)
	return n
}

// Start starts the daemon again, as after a crash, with the same flags.
func (n *Node) Start() {
	t := n.t
	t.Helper()
	os.Remove(filepath.Join(n.DataDir, "api-addr"))
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := append([]string{"cluster", "--data-dir", n.DataDir, "--log-level", "debug"}, n.args...)
	if n.user != nil {
		n.cmd = rootlessCommand(n.user, n.env, n.Bin, args...)
	} else {
		n.cmd = n.NS.Command(n.Bin, args...)
	}
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if n.user != nil {
		n.NS = netNSOfPID(t, n.cmd.Process.Pid)
	}
	exited := make(chan struct{})
	go func() { n.cmd.Wait(); close(exited) }()
	deadline := time.After(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(n.DataDir, "api-addr")); err == nil {
			tok, err := os.ReadFile(filepath.Join(n.DataDir, "api-token"))
			if err != nil {
				t.Fatal(err)
			}
			n.Token = strings.TrimSpace(string(tok))
			return
		}
		select {
		case <-exited:
			t.Fatalf("node exited at start; log:\n%s", n.Log())
		case <-deadline:
			t.Fatalf("node did not come up in 60s; log:\n%s", n.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Log returns everything the daemon printed.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// Kill9 kills the daemon as a crash would: no cleanup of its own runs.
func (n *Node) Kill9() {
	n.cmd.Process.Signal(syscall.SIGKILL)
	for n.cmd.ProcessState == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// Term stops the daemon as a service manager would, with SIGTERM, and waits
// up to 15 s for it to exit. Its workloads keep running.
func (n *Node) Term() {
	n.t.Helper()
	n.cmd.Process.Signal(syscall.SIGTERM)
	for i := 0; i < 1500 && n.running(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n.running() {
		n.t.Fatalf("node still running 15s after SIGTERM; log:\n%s", n.Log())
	}
}

func (n *Node) running() bool { return n.cmd.ProcessState == nil }

// Pid is the daemon's process id (`ip netns exec` execs it in place).
func (n *Node) Pid() int { return n.cmd.Process.Pid }

func (n *Node) cleanup() {
	if n.t.Failed() {
		n.t.Logf("node log:\n%s", n.Log())
	}
	if n.running() {
		var list struct{ Workloads []struct{ ID string } }
		if code, body := n.API("GET", "/list", ""); code == 200 {
			json.Unmarshal([]byte(body), &list)
		}
		for _, w := range list.Workloads {
			n.API("DELETE", "/v1/workloads/"+w.ID, "")
		}
		n.cmd.Process.Signal(syscall.SIGTERM)
		for i := 0; i < 1500 && n.running(); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if n.running() {
			n.Kill9()
		}
	}
	// Whatever the API could not remove goes with the runtime's own tools,
	// at the --root the container driver gives it (<state>/<runtime>-root).
	for _, rt := range []string{"runc", "crun"} {
		root := filepath.Join(n.DataDir, "containers", rt+"-root")
		out, _ := exec.Command(rt, "--root", root, "list", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			exec.Command(rt, "--root", root, "delete", "--force", id).Run()
		}
	}
	exec.Command("sh", "-c", "grep -o ' "+n.DataDir+"[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l").Run()
}

// API calls the node's API on 127.0.0.1:8000 with its token.
func (n *Node) API(method, path, body string) (int, string) {
	return n.APIAs(method, path, body, n.Token)
}

// APIAs calls the API with the given token ("" sends none).
func (n *Node) APIAs(method, path, body, token string) (int, string) {
	req, _ := http.NewRequest(method, "http://127.0.0.1:8000"+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	return n.do(req)
}

// Page fetches / from the proxy on 127.0.0.1:port with the given Host.
func (n *Node) Page(port int, host string) (int, string) {
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	req.Host = host
	return n.do(req)
}

// do sends req from inside the node's namespace and returns the status
// code and body, or 0 and the error.
func (n *Node) do(req *http.Request) (int, string) {
	resp, err := n.NS.Client().Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// CLI runs the hypercore CLI inside the node's namespace and returns its
// combined output.
func (n *Node) CLI(args ...string) (string, error) {
	cmd := n.NS.Command(n.Bin, append([]string{"--data-dir", n.DataDir}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// StartRegistry serves an OCI registry on 127.0.0.1:5000 inside ns and
// pushes img to it as web:1, returning that reference.
func StartRegistry(t testing.TB, ns *NetNS, img v1.Image) string {
	t.Helper()
	l := ns.Listen(t, "127.0.0.1:5000")
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	ref := "127.0.0.1:5000/web:1"
	Push(t, ns, ref, img)
	return ref
}

// Push writes img to ref in a registry inside ns, such as StartRegistry's.
func Push(t testing.TB, ns *NetNS, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithTransport(&http.Transport{DialContext: ns.Dial})); err != nil {
		t.Fatal(err)
	}
}

// WaitFor polls ok until it holds or timeout passes; testutil.WaitFor with
// the arguments in the order the e2e tests use.
func WaitFor(t testing.TB, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	testutil.WaitFor(t, timeout, what, ok)
}
