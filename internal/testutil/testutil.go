// Package testutil builds the real parts tests run against: a busybox-static
// root filesystem, an OCI image made from it, and an in-process registry.
package testutil

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// IndexHTML is the page the test image's httpd serves at /.
const IndexHTML = "hello from hypercore\n"

// HTTPPort is the port the test image's httpd listens on.
const HTTPPort = 8080

// Applets are the busybox applets linked into the test rootfs.
var Applets = []string{"sh", "httpd", "wget", "cat", "echo", "sleep", "ls", "uname", "id", "env", "nc", "ps", "hostname", "true", "false", "kill", "mkdir", "rm", "stty", "ip", "ifconfig", "yes", "head", "seq", "df"}

// Busybox returns the path of a static busybox, skipping the test if the
// busybox-static package is not installed.
func Busybox(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if out, err := exec.Command("file", "-L", p).Output(); err == nil && !strings.Contains(string(out), "statically linked") {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("busybox-static is not installed (make deps installs it)")
	return ""
}

// files returns the rootfs as path → content, with symlinks as "->target".
func files(t testing.TB) (map[string][]byte, map[string]string) {
	t.Helper()
	bin, err := os.ReadFile(Busybox(t))
	if err != nil {
		t.Fatal(err)
	}
	regular := map[string][]byte{
		"bin/busybox":    bin,
		"www/index.html": []byte(IndexHTML),
		"etc/passwd":     []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
		"etc/group":      []byte("root:x:0:\nnogroup:x:65534:\n"),
		"etc/hostname":   []byte("busybox\n"),
		"tmp/.keep":      nil,
		"root/.keep":     nil,
	}
	links := map[string]string{}
	for _, a := range Applets {
		links["bin/"+a] = "busybox"
	}
	return regular, links
}

// WriteRootfs lays the test rootfs out in dir: busybox-static with its
// applets, and /www/index.html.
func WriteRootfs(t testing.TB, dir string) {
	t.Helper()
	regular, links := files(t)
	for p, data := range regular {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p, ".keep") {
			continue
		}
		mode := os.FileMode(0o644)
		if p == "bin/busybox" {
			mode = 0o755
		}
		if err := os.WriteFile(full, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, p)); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// Layer returns an uncompressed-tar layer holding the test rootfs.
func Layer(t testing.TB) v1.Layer {
	t.Helper()
	regular, links := files(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	addDir := func(d string) {
		for _, p := range parents(d) {
			if !dirs[p] {
				dirs[p] = true
				must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755}))
			}
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "etc", "tmp", "root", "www", "bin"} {
		addDir(d)
	}
	for p, data := range regular {
		addDir(filepath.Dir(p))
		if strings.HasSuffix(p, ".keep") {
			continue
		}
		mode := int64(0o644)
		if p == "bin/busybox" {
			mode = 0o755
		}
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data))}))
		_, err := tw.Write(data)
		must(t, err)
	}
	for p, target := range links {
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777}))
	}
	must(t, tw.Close())
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	must(t, err)
	return layer
}

func parents(d string) []string {
	if d == "." || d == "" {
		return nil
	}
	return append(parents(filepath.Dir(d)), d)
}

// HTTPDImage returns an image of the test rootfs whose command serves /www
// with busybox httpd on HTTPPort, in the foreground.
func HTTPDImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, Layer(t))
	must(t, err)
	cfg, err := img.ConfigFile()
	must(t, err)
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config.Cmd = []string{"/bin/httpd", "-f", "-v", "-p", "8080", "-h", "/www"}
	cfg.Config.Env = []string{"PATH=/bin", "GREETING=hello"}
	cfg.Config.WorkingDir = "/www"
	img, err = mutate.ConfigFile(img, cfg)
	must(t, err)
	return img
}

// Registry starts an in-process OCI registry on loopback and returns its
// host:port. It stops when the test ends.
func Registry(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(discardLogger())))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	must(t, err)
	return u.Host
}

// Push uploads img to ref (for example "127.0.0.1:5000/web:1").
func Push(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	must(t, err)
	must(t, remote.Write(r, img))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }
