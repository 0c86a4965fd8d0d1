package spawn

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// plainRuntime is the floor of an OCI runtime: `<tool> run` of a bundle
// made once from the image's own files, detached, with no image store,
// overlay, network setup or daemon in between. The workload shares the
// bench namespace's network. runc and runsc take the same commands, so
// one type serves both; only their flags differ.
type plainRuntime struct {
	ns     *harness.NetNS
	tool   string   // the runtime's binary, runc or runsc; it also names its log
	global []string // its global flags: a private --root, and any it needs besides
	// runFlags are the flags of `run` for run id, up to the id itself:
	// detach, the bundle, and for runc a pid file.
	runFlags func(id string) []string
	bundle   string
	dir      string // scratch: the runtime's log, runc's pid files
	p        *poller
}

// newRunc is runc's floor, `runc run -d`.
func newRunc(t *testing.T, ns *harness.NetNS, img v1.Image) *plainRuntime {
	t.Helper()
	r := newRuntime(t, ns, img, "runc")
	r.runFlags = func(id string) []string {
		return []string{"-d", "--pid-file", filepath.Join(r.dir, id+".pid"), "--bundle", r.bundle}
	}
	return r
}

// newRuntime unpacks img into a bundle in a directory of its own and
// returns tool's contender for it, with a private --root before the global
// flags given; the caller sets runFlags. Whatever a failed run leaves goes
// when the test ends.
func newRuntime(t *testing.T, ns *harness.NetNS, img v1.Image, tool string, global ...string) *plainRuntime {
	t.Helper()
	dir := t.TempDir()
	r := &plainRuntime{
		ns:     ns,
		tool:   tool,
		global: append([]string{"--root", filepath.Join(dir, tool)}, global...),
		bundle: newBundle(t, ns, img, dir),
		dir:    dir,
		p:      newPoller(ns),
	}
	t.Cleanup(func() {
		out, _ := r.cmd("list", "--quiet").Output()
		for _, id := range strings.Fields(string(out)) {
			r.cmd("delete", "--force", id).Run()
		}
	})
	return r
}

// newBundle unpacks img into dir/bundle and writes its config.json.
func newBundle(t *testing.T, ns *harness.NetNS, img v1.Image, dir string) string {
	t.Helper()
	bundle := filepath.Join(dir, "bundle")
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := extract(img, rootfs); err != nil {
		t.Fatalf("unpack the image: %v", err)
	}
	if out, err := nsexec(ns, "runc", "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	if err := editSpec(filepath.Join(bundle, "config.json")); err != nil {
		t.Fatal(err)
	}
	return bundle
}

// editSpec turns `runc spec`'s default into the image's command: httpd in
// the foreground, no terminal, and no network namespace of its own, so it
// listens in the bench namespace runc is started in.
func editSpec(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	s.Process.Args = []string{"/bin/httpd", "-f", "-p", "8080", "-h", "/www"}
	s.Process.Terminal = false
	s.Process.Cwd = "/www"
	s.Process.Env = []string{"PATH=/bin"}
	s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool {
		return n.Type == specs.NetworkNamespace
	})
	if b, err = json.MarshalIndent(&s, "", "  "); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// cmd runs the runtime with its global flags, then args, in the bench
// namespace.
func (r *plainRuntime) cmd(args ...string) *exec.Cmd {
	return nsexec(r.ns, r.tool, append(slices.Clone(r.global), args...)...)
}

func (r *plainRuntime) Name() string { return r.tool + " run -d" }

func (r *plainRuntime) Returned() string { return r.tool + " run -d exited" }

func (r *plainRuntime) logPath() string { return filepath.Join(r.dir, r.tool+".log") }

// Launch runs the workload detached; the runtime returns once httpd is
// started.
func (r *plainRuntime) Launch(i int) (target, error) {
	logf, err := os.OpenFile(r.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return target{}, err
	}
	defer logf.Close()
	id := runID(i)
	cmd := r.cmd(append(append([]string{"run"}, r.runFlags(id)...), id)...)
	// A file, not a pipe: the detached workload keeps its stdio, and Run
	// would wait on a pipe until the workload exits.
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(r.logPath())
		return target{}, fmt.Errorf("%s run %s: %v; log:\n%s", r.tool, id, err, b)
	}
	return target{url: "http://127.0.0.1:8080/"}, nil
}

// Remove kills and deletes the workload, then checks that it is gone.
func (r *plainRuntime) Remove(i int) error {
	id := runID(i)
	if out, err := r.cmd("delete", "--force", id).CombinedOutput(); err != nil {
		return fmt.Errorf("%s delete %s: %v: %s", r.tool, id, err, out)
	}
	out, err := r.cmd("list", "--quiet").Output()
	if err != nil {
		return fmt.Errorf("%s list: %v", r.tool, err)
	}
	if ids := strings.Fields(string(out)); len(ids) != 0 {
		return fmt.Errorf("%s still lists %v after delete", r.tool, ids)
	}
	os.Remove(filepath.Join(r.dir, id+".pid")) // runc's; runsc writes none
	return r.p.waitRefused(target{url: "http://127.0.0.1:8080/"}, 10*time.Second)
}

// Logs returns what the runtime and its workloads printed, for a failed
// run.
func (r *plainRuntime) Logs() string {
	b, _ := os.ReadFile(r.logPath())
	return r.tool + " log:\n" + string(b)
}

// extract writes img's flattened filesystem under dir: the same files the
// other two contenders unpack.
func extract(img v1.Image, dir string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode).Perm())
		case tar.TypeReg:
			err = writeFile(p, tr, os.FileMode(h.Mode).Perm())
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		default:
			err = fmt.Errorf("%s: tar entry type %q not handled", h.Name, h.Typeflag)
		}
		if err != nil {
			return err
		}
	}
}

func writeFile(p string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
