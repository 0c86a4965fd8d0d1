// Package e2e starts real hypercore daemons in network namespaces the tests
// make, and drives them the way a user and the black-box checks do.
package e2e

import (
	"bytes"
	"context"
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
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

var hypercoreBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped, needs root (network namespaces, runc)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "hypercore-e2e-bin")
	if err != nil {
		panic(err)
	}
	hypercoreBin = filepath.Join(dir, "hypercore")
	build := exec.Command("go", "build", "-o", hypercoreBin, "../../cmd/hypercore")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("e2e: build hypercore:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is one hypercore daemon in its own network namespace.
type node struct {
	t       *testing.T
	ns      *netNS
	dataDir string
	cmd     *exec.Cmd
	logPath string
	token   string
}

func startNode(t *testing.T, ns *netNS, dataDir string, args ...string) *node {
	t.Helper()
	n := &node{t: t, ns: ns, dataDir: dataDir, logPath: filepath.Join(dataDir, "..", filepath.Base(dataDir)+".log")}
	n.start(args...)
	t.Cleanup(n.cleanup)
	return n
}

func (n *node) start(args ...string) {
	t := n.t
	t.Helper()
	os.Remove(filepath.Join(n.dataDir, "api-addr"))
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	n.cmd = n.ns.command(hypercoreBin, append([]string{"cluster", "--data-dir", n.dataDir, "--log-level", "debug"}, args...)...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(n.dataDir, "api-addr")); err == nil {
			tok, err := os.ReadFile(filepath.Join(n.dataDir, "api-token"))
			if err != nil {
				t.Fatal(err)
			}
			n.token = strings.TrimSpace(string(tok))
			return
		}
		if n.cmd.ProcessState != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("node did not come up; log:\n%s", n.log())
}

func (n *node) log() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// kill9 kills the daemon as a crash would: no cleanup runs.
func (n *node) kill9() {
	n.cmd.Process.Signal(syscall.SIGKILL)
	n.cmd.Wait()
}

func (n *node) cleanup() {
	if n.t.Failed() {
		n.t.Logf("node log:\n%s", n.log())
	}
	if n.cmd.ProcessState == nil {
		var list struct{ Workloads []struct{ ID string } }
		if code, body := n.api("GET", "/list", ""); code == 200 {
			json.Unmarshal([]byte(body), &list)
		}
		for _, w := range list.Workloads {
			n.api("DELETE", "/v1/workloads/"+w.ID, "")
		}
		n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			n.kill9()
		}
	}
	// Anything the API could not remove goes with runc's own tools.
	root := filepath.Join(n.dataDir, "containers")
	out, _ := exec.Command("runc", "--root", filepath.Join(root, "runc"), "list", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		exec.Command("runc", "--root", filepath.Join(root, "runc"), "delete", "--force", id).Run()
	}
}

// api calls the node's API with its token.
func (n *node) api(method, path, body string) (int, string) {
	return n.apiAs(method, path, body, n.token)
}

func (n *node) apiAs(method, path, body, token string) (int, string) {
	n.t.Helper()
	req, _ := http.NewRequest(method, "http://127.0.0.1:8000"+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.ns.client().Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// page fetches / from the proxy on 127.0.0.1:port with the given Host.
func (n *node) page(port int, host string) (int, string) {
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	req.Host = host
	resp, err := n.ns.client().Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// cli runs the hypercore CLI inside the node's namespace.
func (n *node) cli(args ...string) (string, error) {
	cmd := n.ns.command(hypercoreBin, append([]string{"--data-dir", n.dataDir}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// startRegistry serves an OCI registry on 127.0.0.1:5000 inside ns and
// pushes the busybox httpd test image to it as web:1.
func startRegistry(t *testing.T, ns *netNS) string {
	t.Helper()
	l := ns.listen(t, "127.0.0.1:5000")
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	ref := "127.0.0.1:5000/web:1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: ns.dial}
	if err := remote.Write(r, testutil.HTTPDImage(t), remote.WithTransport(tr)); err != nil {
		t.Fatal(err)
	}
	return ref
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}

var _ = context.Background
