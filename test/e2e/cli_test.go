package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

var idLine = regexp.MustCompile(`(?m)^id:\s+([0-9a-f-]{36})$`)

// cliSpawn runs `hypercore spawn args...` and returns the id it prints.
func cliSpawn(t *testing.T, n *harness.Node, args ...string) string {
	t.Helper()
	out, err := n.CLI(append([]string{"spawn"}, args...)...)
	m := idLine.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("spawn %v: %v\n%s", args, err, out)
	}
	if !strings.Contains(out, "url:  "+m[1]+".localhost") {
		t.Fatalf("spawn output lacks the url:\n%s", out)
	}
	return m[1]
}

// TestCLI covers the docker-like verbs: spawn with flags and from hac.toml,
// logs -f, exec -it with a real terminal and resize, attach, stop, rm.
func TestCLI(t *testing.T) {
	n, ref := newNode(t)

	id := cliSpawn(t, n, "--ports", "80:8080", "--cores", "1", "--memory", "128", ref)
	if code, body := n.Page(80, id+".localhost"); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("page: %d %q", code, body)
	}

	hac := filepath.Join(t.TempDir(), "hac.toml")
	os.WriteFile(hac, []byte(`
[spacecore]
name = "web"
description = "busybox httpd"

[hardware]
cores = 1
memory = 64
ref = "`+ref+`"
ports = { "80" = 8080 }
`), 0o644)
	hacID := cliSpawn(t, n, "-f", hac)
	if code, _ := n.Page(80, hacID+".localhost"); code != 200 {
		t.Fatalf("hac.toml workload page: %d", code)
	}
	out, err := n.CLI("inspect", hacID)
	if err != nil || !strings.Contains(out, `"memory": 64`) || !strings.Contains(out, `"state": "running"`) {
		t.Fatalf("inspect: %v\n%s", err, out)
	}

	t.Run("logs -f", func(t *testing.T) {
		cmd := n.NS.Command(n.Bin, "--data-dir", n.DataDir, "logs", "-f", id)
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		lines := make(chan string, 100)
		go func() {
			s := bufio.NewScanner(stdout)
			for s.Scan() {
				lines <- s.Text()
			}
			close(lines)
		}()
		// Old lines first, then one caused after the follow began.
		time.Sleep(300 * time.Millisecond)
		for len(lines) > 0 {
			<-lines
		}
		n.Page(80, id+".localhost")
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("logs -f ended")
				}
				if strings.Contains(l, "response:200") {
					return
				}
			case <-timeout:
				t.Fatal("logs -f did not show the new request")
			}
		}
	})

	t.Run("exec -it", func(t *testing.T) {
		master, slavePath, err := console.NewPty()
		if err != nil {
			t.Fatal(err)
		}
		defer master.Close()
		if err := master.Resize(console.WinSize{Height: 33, Width: 77}); err != nil {
			t.Fatal(err)
		}
		slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		cmd := n.NS.Command(n.Bin, "--data-dir", n.DataDir, "exec", "-it", id, "sh", "-c", "stty size; tty; exit 4")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		slave.Close()
		var buf strings.Builder
		done := make(chan struct{})
		go func() { io.Copy(&buf, master); close(done) }()
		err = cmd.Wait()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
		out := buf.String()
		if !strings.Contains(out, "33 77") || !strings.Contains(out, "/dev/pts/") {
			t.Fatalf("exec -it output %q: want the terminal size 33 77 and a /dev/pts tty", out)
		}
		if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 4 {
			t.Fatalf("exec -it exit: %v, want 4", err)
		}
	})

	t.Run("attach", func(t *testing.T) {
		echo := cliSpawn(t, n, "--memory", "32", ref, "--", "sh", "-c", "while read l; do echo got $l; done")
		cmd := n.NS.Command(n.Bin, "--data-dir", n.DataDir, "attach", echo)
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		io.WriteString(stdin, "hello\n")
		found := make(chan bool, 1)
		go func() {
			s := bufio.NewScanner(stdout)
			for s.Scan() {
				if s.Text() == "got hello" {
					found <- true
					return
				}
			}
			found <- false
		}()
		select {
		case ok := <-found:
			if !ok {
				t.Fatal("attach ended without echoing our input")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("attach did not echo our input")
		}
	})

	if out, err := n.CLI("stop", "--timeout", "1", id); err != nil || strings.TrimSpace(out) != id {
		t.Fatalf("stop: %v %q", err, out)
	}
	if code, _ := n.Page(80, id+".localhost"); code != 404 {
		t.Fatalf("after stop: %d, want 404", code)
	}
	if out, err := n.CLI("list"); err != nil || !regexp.MustCompile(id+`\s+\S+\s+stopped`).MatchString(out) {
		t.Fatalf("list after stop: %v\n%s", err, out)
	}
	if out, err := n.CLI("rm", id); err != nil {
		t.Fatalf("rm: %v %q", err, out)
	}
	if out, _ := n.CLI("inspect", id); !strings.Contains(out, "not found") {
		t.Fatalf("inspect after rm: %q", out)
	}
	if out, err := n.CLI("logs", "../../etc/passwd"); err == nil || !strings.Contains(out, "id:") {
		t.Fatalf("logs with a path: %v %q", err, out)
	}

	// image prune deletes a pulled image no workload uses, and keeps the
	// image the remaining workloads run.
	unused := strings.Replace(ref, "/web:", "/unused:", 1)
	img, err := mutate.Config(testutil.HTTPDImage(t), v1.Config{Labels: map[string]string{"unused": "yes"}})
	if err != nil {
		t.Fatal(err)
	}
	harness.Push(t, n.NS, unused, img)
	if out, err := n.CLI("pull", unused); err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	out, err = n.CLI("image", "prune", "--json")
	var pruned struct {
		Removed    []string `json:"removed"`
		FreedBytes int64    `json:"freed_bytes"`
	}
	if err != nil || json.Unmarshal([]byte(out), &pruned) != nil {
		t.Fatalf("image prune --json: %v\n%s", err, out)
	}
	if len(pruned.Removed) != 1 || pruned.Removed[0] != digest.String() || pruned.FreedBytes <= 0 {
		t.Fatalf("image prune removed %v (%d bytes), want only %s", pruned.Removed, pruned.FreedBytes, digest)
	}
	if code, _ := n.Page(80, hacID+".localhost"); code != 200 {
		t.Fatalf("after image prune, the running workload's page: %d", code)
	}
}

// TestImageErrors: an unknown image and a registry that is down each get a
// clear error, and nothing is left behind.
func TestImageErrors(t *testing.T) {
	n, _ := newNode(t)
	code, out := n.API("POST", "/spawn", `{"image_ref":"127.0.0.1:5000/nope:1","ports":{"80":8080}}`)
	if code != 400 || !strings.Contains(out, "nope") || !strings.Contains(out, `"field": "image_ref"`) {
		t.Fatalf("unknown image: %d %s", code, out)
	}
	code, out = n.API("POST", "/spawn", `{"image_ref":"127.0.0.1:5999/web:1"}`)
	if code != 502 || !strings.Contains(out, "127.0.0.1:5999") {
		t.Fatalf("registry down: %d %s", code, out)
	}
	if _, body := n.API("GET", "/list", ""); strings.Contains(body, `"id"`) {
		t.Fatalf("a failed spawn left a workload: %s", body)
	}
	entries, _ := os.ReadDir(filepath.Join(n.DataDir, "images", "rootfs"))
	if len(entries) != 0 {
		t.Fatalf("a failed pull left %d unpacked images", len(entries))
	}
	if leases, _ := filepath.Glob(filepath.Join(n.DataDir, "network", "netns", "*")); len(leases) != 0 {
		t.Fatalf("a failed spawn left network namespaces: %v", leases)
	}
}
