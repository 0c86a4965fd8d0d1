package runc

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// TestImageLayers runs a workload on an image store's rootfs, the store's
// read-only overlay of the image's layers under the workload's own
// overlay: a file and a directory the upper layer deletes are gone, an
// opaque directory shows only the upper layer's files, and the workload's
// writes, a copy-up of a layer's file among them, stay out of the store's
// layers.
func TestImageLayers(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	upper := tarLayer(t, map[string]string{
		"www/.wh.index.html": "", "etc/.wh..wh..opq": "", "etc/only-upper": "u", ".wh.tmp": "",
	})
	img, err := mutate.AppendLayers(testutil.HTTPDImage(t), upper)
	if err != nil {
		t.Fatal(err)
	}
	host := testutil.Registry(t)
	testutil.Push(t, host+"/layers:1", img)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.UnmountUnder(t, dir) })
	store, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	pulled, err := store.Pull(context.Background(), host+"/layers:1", nil)
	if err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(pulled.Rootfs, "sleep", "1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	out := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "ls /www /etc; ls -d /tmp 2>&1; echo x >> /etc/only-upper; cat /etc/only-upper")
	// /etc holds only the upper layer's file and what the runtime mounts.
	for _, gone := range []string{"index.html", "passwd"} {
		if strings.Contains(out, gone) {
			t.Errorf("the workload sees %s, which the upper layer deletes:\n%s", gone, out)
		}
	}
	if !strings.Contains(out, "only-upper") || !strings.Contains(out, "No such file") || !strings.HasSuffix(out, "\nux\n") {
		t.Errorf("the workload's view of the layers:\n%s", out)
	}
	layers, err := filepath.Glob(filepath.Join(dir, "layers", "*", "fs", "etc", "only-upper"))
	if err != nil || len(layers) != 1 {
		t.Fatalf("the upper layer's etc/only-upper in the store: %v, %v", layers, err)
	}
	if b, err := os.ReadFile(layers[0]); err != nil || string(b) != "u" {
		t.Errorf("the store's layer holds %q, %v after the workload appended to it; want it untouched", b, err)
	}
	if err := d.Delete(testCtx(t), cfg.ID); err != nil {
		t.Fatal(err)
	}
}

// tarLayer is a layer of regular files (a name ending in "/" is a dir).
func tarLayer(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, data := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}
