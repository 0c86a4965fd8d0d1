package spawn

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
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

// plainRunc is the floor: `runc run -d` of a bundle made once from the
// image's own files, with no image store, overlay, network setup or daemon
// in between. The container shares the bench namespace's network.
type plainRunc struct {
	ns     *harness.NetNS
	root   string // runc's --root, private to the benchmark
	bundle string
	dir    string // scratch: runc's log and pid files
	p      *poller
}

// newRunc unpacks img into a bundle and writes its config.json.
func newRunc(t *testing.T, ns *harness.NetNS, img v1.Image) *plainRunc {
	t.Helper()
	dir := t.TempDir()
	r := &plainRunc{ns: ns, root: filepath.Join(dir, "runc"), bundle: filepath.Join(dir, "bundle"), dir: dir, p: newPoller(ns)}
	rootfs := filepath.Join(r.bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := extract(img, rootfs); err != nil {
		t.Fatalf("unpack the image: %v", err)
	}
	if out, err := nsexec(ns, "runc", "spec", "--bundle", r.bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	if err := editSpec(filepath.Join(r.bundle, "config.json")); err != nil {
		t.Fatal(err)
	}
	// Whatever a failed run leaves goes when the test ends.
	t.Cleanup(func() {
		out, _ := nsexec(ns, "runc", "--root", r.root, "list", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			nsexec(ns, "runc", "--root", r.root, "delete", "--force", id).Run()
		}
	})
	return r
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

func (r *plainRunc) Name() string { return "runc run -d" }

func (r *plainRunc) Returned() string { return "runc run -d exited" }

// Launch runs the container detached; runc returns once httpd is exec'd.
func (r *plainRunc) Launch(i int) (target, error) {
	logf, err := os.OpenFile(filepath.Join(r.dir, "runc.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return target{}, err
	}
	defer logf.Close()
	id := runID(i)
	cmd := nsexec(r.ns, "runc", "--root", r.root, "run", "-d",
		"--pid-file", filepath.Join(r.dir, id+".pid"), "--bundle", r.bundle, id)
	// A file, not a pipe: the detached container keeps its stdio, and Run
	// would wait on a pipe until the container exits.
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(filepath.Join(r.dir, "runc.log"))
		return target{}, fmt.Errorf("runc run %s: %v; log:\n%s", id, err, b)
	}
	return target{url: "http://127.0.0.1:8080/"}, nil
}

// Remove kills and deletes the container, then checks that it is gone.
func (r *plainRunc) Remove(i int) error {
	id := runID(i)
	if out, err := nsexec(r.ns, "runc", "--root", r.root, "delete", "--force", id).CombinedOutput(); err != nil {
		return fmt.Errorf("runc delete %s: %v: %s", id, err, out)
	}
	out, err := nsexec(r.ns, "runc", "--root", r.root, "list", "-q").Output()
	if err != nil {
		return fmt.Errorf("runc list: %v", err)
	}
	if ids := strings.Fields(string(out)); len(ids) != 0 {
		return fmt.Errorf("runc still lists %v after delete", ids)
	}
	os.Remove(filepath.Join(r.dir, id+".pid"))
	return r.p.waitRefused(target{url: "http://127.0.0.1:8080/"}, 10*time.Second)
}

// Logs returns what runc and the containers printed, for a failed run.
func (r *plainRunc) Logs() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "runc.log"))
	return "runc log:\n" + string(b)
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
