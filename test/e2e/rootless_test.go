package e2e

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// rootlessUser is the account the rootless tests run the daemon as.
const rootlessUser = "hcrootless"

// testUser returns the uid and gid of rootlessUser, creating the account,
// with subordinate ids for `unshare --map-auto`, if it is missing.
func testUser(t *testing.T) (uid, gid uint32) {
	t.Helper()
	u, err := user.Lookup(rootlessUser)
	if err != nil {
		if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", rootlessUser).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v: %s", rootlessUser, err, out)
		}
		if u, err = user.Lookup(rootlessUser); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, _ := os.ReadFile(f)
		if !strings.Contains(string(b), rootlessUser+":") {
			t.Fatalf("%s has no subordinate ids for %s; add a line such as %s:200000:65536", f, rootlessUser, rootlessUser)
		}
	}
	if _, err := exec.LookPath("newuidmap"); err != nil {
		t.Fatal("newuidmap not found; run scripts/deps.sh (package uidmap)")
	}
	id, _ := strconv.ParseUint(u.Uid, 10, 32)
	g, _ := strconv.ParseUint(u.Gid, 10, 32)
	return uint32(id), uint32(g)
}

// userDir makes a directory the test user owns, with a copy of the
// hypercore binary in it (the test's own build dir is root's alone).
func userDir(t *testing.T, uid, gid uint32) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hypercore-rootless")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin = filepath.Join(dir, "hypercore")
	src, err := os.Open(hypercoreBin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	for _, p := range []string{dir, bin} {
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o755)
	return dir, bin
}

// TestRootlessNode runs the real daemon as a user without root, in the
// user and network namespace `unshare --map-auto --map-root-user` makes:
// it must say that it runs rootless and which limits it cannot enforce,
// spawn the test image, serve it through the proxy, refuse a disk limit
// clearly, and with --ephemeral remove its workload on SIGTERM.
func TestRootlessNode(t *testing.T) {
	uid, gid := testUser(t)
	dir, bin := userDir(t, uid, gid)
	// As a batch job's node: it offers its allocation, not the machine.
	slurm := []string{"SLURM_JOB_ID=42", "SLURM_CPUS_ON_NODE=1", "SLURM_MEM_PER_CPU=1000"}
	n := harness.StartRootlessNode(t, bin, filepath.Join(dir, "data"), uid, gid, slurm, "--http-addr", "127.0.0.1:8080", "--ephemeral")
	ref := harness.StartRegistry(t, n.NS, testutil.HTTPDImage(t))

	log := n.Log()
	for _, want := range []string{`msg="rootless: running in a user namespace`, `not_enforced="[cores memory pids disk`, "ignored and spawns that give disk are refused"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}

	var info struct {
		Cores     float64 `json:"cores"`
		MemoryMiB int64   `json:"memory_mib"`
	}
	if code, out := n.API("GET", "/v1/node", ""); code != 200 || json.Unmarshal([]byte(out), &info) != nil || info.Cores != 1 || info.MemoryMiB != 1000 {
		t.Errorf("GET /v1/node: %d %+v; want the Slurm allocation, 1 core and 1000 MiB", code, info)
	}

	a := spawn(t, n, `{"image_ref":"`+ref+`","ports":{"80":8080},"memory":64}`)
	harness.WaitFor(t, "the workload served through the proxy", 30e9, func() bool {
		code, body := n.Page(8080, a.ID+".localhost")
		return code == 200 && body == testutil.IndexHTML
	})
	if code, out := n.API("POST", "/spawn", `{"image_ref":"`+ref+`","disk":100,"memory":64}`); code == 200 || !strings.Contains(out, "rootless") {
		t.Errorf("spawn with disk on a rootless node: %d %s; want a refusal that says why", code, out)
	}

	// The workload runs as the user's ids, in no host cgroup of its own.
	pids, _ := exec.Command("pgrep", "-u", strconv.Itoa(int(uid)), "httpd").Output()
	if len(strings.Fields(string(pids))) == 0 {
		t.Errorf("no httpd of uid %d runs: the workload is not the user's", uid)
	}

	n.Term()
	if !strings.Contains(n.Log(), "ephemeral node: workload stopped and removed") {
		t.Errorf("ephemeral node did not remove its workload at SIGTERM")
	}
	if out, _ := exec.Command("pgrep", "-u", strconv.Itoa(int(uid)), "-a", ".").Output(); len(out) > 0 {
		t.Errorf("processes of the rootless user left after SIGTERM:\n%s", out)
	}
}
