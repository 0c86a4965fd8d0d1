// Package images measures the image store's disk use: ten images that
// share one base layer of BASE_MIB (200 by default) of incompressible data,
// each with its own small layer, pulled from an in-process registry into a
// fresh store. It prints what du counts in the store (not crossing into the
// images' rootfs mounts) against the sum of the unique layers' unpacked
// sizes, the number the store should come close to when each layer is
// unpacked once.
//
// It runs only with HYPERCORE_BENCH=1 and as root (the store mounts
// overlays); bench/images/run.sh runs it. It uses only image.Open and
// Store.Pull, so the same file runs against an older tree for a
// before-and-after comparison.
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

const (
	images     = 10
	ownKiB     = 512 // each image's own layer
	defaultMiB = 200 // the shared base layer
)

func TestImagesBench(t *testing.T) {
	if os.Getenv("HYPERCORE_BENCH") != "1" {
		t.Skip("set HYPERCORE_BENCH=1 (bench/images/run.sh) to run")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the store mounts overlays")
	}
	baseMiB := testutil.EnvInt(t, "BASE_MIB", defaultMiB)
	host := testutil.Registry(t)

	base := layer(t, "base/data", baseMiB<<20)
	var refs []string
	for i := range images {
		own := layer(t, "own/"+strconv.Itoa(i), ownKiB<<10)
		ref := fmt.Sprintf("%s/app%d:1", host, i)
		testutil.Push(t, ref, imageOf(t, base, own))
		refs = append(refs, ref)
	}
	unique := int64(baseMiB)<<20 + int64(images)*ownKiB<<10

	dir := t.TempDir()
	t.Cleanup(func() { unmountUnder(t, dir) })
	s, err := image.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var pulls []time.Duration
	for _, ref := range refs {
		start := time.Now()
		if _, err := s.Pull(context.Background(), ref, nil); err != nil {
			t.Fatal(err)
		}
		pulls = append(pulls, time.Since(start))
	}
	used := du(t, dir)
	t.Logf("\n%d images sharing a %d MiB base, each with a %d KiB layer of its own\n"+
		"  unique layers, unpacked:  %7.1f MiB\n"+
		"  store on disk (du -x):    %7.1f MiB  (%.2fx the unique layers)\n"+
		"  first pull %v, later pulls median %v",
		images, baseMiB, ownKiB, mib(unique), mib(used), float64(used)/float64(unique),
		pulls[0].Round(time.Millisecond), median(pulls[1:]).Round(time.Millisecond))
}

// layer is a layer holding one file of n random (incompressible) bytes.
func layer(t *testing.T, name string, n int) v1.Layer {
	t.Helper()
	data := make([]byte, n)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(n), ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
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

func imageOf(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	return img
}

// du is what du(1) counts under dir on dir's filesystem.
func du(t *testing.T, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-s", "-x", "-B1", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	v := make([]float64, len(d))
	for i, x := range d {
		v[i] = float64(x)
	}
	return time.Duration(testutil.Median(v))
}

// unmountUnder detaches the store's mounts so the temp dir can go.
func unmountUnder(t *testing.T, dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+string(filepath.Separator)) {
			points = append(points, f[4])
		}
	}
	for _, p := range points {
		unix.Unmount(p, unix.MNT_DETACH)
	}
}
