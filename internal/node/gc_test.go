package node

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// withExtraLayer is img with one more layer of its own, so it has content
// that no other test image shares.
func withExtraLayer(t *testing.T, img v1.Image) (v1.Image, v1.Hash) {
	t.Helper()
	l, err := random.Layer(4096, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	out, err := mutate.AppendLayers(img, l)
	if err != nil {
		t.Fatal(err)
	}
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return out, d
}

// blobPath is where the image store that unpacked rootfs keeps blob d.
func blobPath(rootfs, d string) string {
	h, _ := v1.NewHash(d)
	return filepath.Join(filepath.Dir(filepath.Dir(rootfs)), "blobs", h.Algorithm, h.Hex)
}

// layerPath is where the store unpacks layer d of the image at rootfs.
func layerPath(rootfs, d string) string {
	h, _ := v1.NewHash(d)
	return filepath.Join(filepath.Dir(filepath.Dir(rootfs)), "layers", h.Hex)
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Stat(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

// gcNode starts a node on an env of its own, with image GC every
// interval (0: none), and removes its workloads when the test ends.
func gcNode(t *testing.T, interval time.Duration) *testNode {
	t.Helper()
	e := newEnv(t)
	e.cfg.ImageGCInterval = interval
	tn := e.start()
	t.Cleanup(tn.removeAll)
	return tn
}

// sleeper is an allocation to n of a workload of ref that only sleeps, so
// it needs no port to be ready.
func sleeper(t *testing.T, n *testNode, ref string) workload.Allocation {
	t.Helper()
	sp, err := spec.Build(spec.Input{Image: ref, Cores: 0.5, MemoryMiB: 64, Args: []string{"/bin/sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	return n.alloc(sp)
}

// TestPruneImagesKeepsWhatWorkloadsUse pulls two images, runs a workload
// of one and stops it, and prunes: the other image goes, rootfs and blobs,
// and the stopped workload's image stays, since it may start again. Once
// the workload is removed its image goes too.
func TestPruneImagesKeepsWhatWorkloadsUse(t *testing.T) {
	if isolated(t) {
		return
	}
	ctx := ctx(t)
	host := testutil.Registry(t)
	usedRef, unusedRef := host+"/used:1", host+"/unused:1"
	base := testutil.HTTPDImage(t)
	testutil.Push(t, usedRef, base)
	unusedImg, ownLayer := withExtraLayer(t, base)
	testutil.Push(t, unusedRef, unusedImg)
	n := gcNode(t, 0)

	a := sleeper(t, n, usedRef)
	w, err := n.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if w.State != workload.StateRunning {
		t.Fatalf("workload is %s, want running", w.State)
	}
	unused, err := n.Pull(ctx, unusedRef, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Stop(ctx, a.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	used, err := n.Images.Get(w.ImageDigest)
	if err != nil {
		t.Fatal(err)
	}
	cfgName, err := unusedImg.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	unusedBlobs := []string{blobPath(unused.Rootfs, unused.Digest), blobPath(unused.Rootfs, cfgName.String()), layerPath(unused.Rootfs, ownLayer.String())}
	for _, p := range append(unusedBlobs, unused.Rootfs) {
		if !exists(t, p) {
			t.Fatalf("%s is missing before GC; the test is looking in the wrong place", p)
		}
	}

	res, err := n.PruneImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Removed, []string{unused.Digest}) {
		t.Errorf("PruneImages removed %v, want only the unused image %s", res.Removed, unused.Digest)
	}
	if res.Freed <= 0 {
		t.Errorf("PruneImages says it freed %d bytes", res.Freed)
	}
	for _, p := range append(unusedBlobs, unused.Rootfs) {
		if exists(t, p) {
			t.Errorf("%s of the unused image is still there", p)
		}
	}
	if _, err := n.Images.Get(unusedRef); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("Get of the unused image = %v, want ErrNotFound", err)
	}
	if !exists(t, filepath.Join(used.Rootfs, "bin", "busybox")) || !exists(t, blobPath(used.Rootfs, used.Digest)) {
		t.Errorf("the stopped workload's image lost its rootfs or manifest")
	}
	if got, err := n.Images.Get(usedRef); err != nil || got.Digest != used.Digest {
		t.Errorf("the stopped workload's image: %+v, %v", got, err)
	}

	if err := n.Remove(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if res, err = n.PruneImages(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Removed, []string{used.Digest}) {
		t.Errorf("PruneImages after the workload went removed %v, want %s", res.Removed, used.Digest)
	}
}

// TestPruneImagesSparesASpawnInProgress holds a spawn after it has its
// image and before its record names it, moves the image's tag as a pull
// would, and prunes. Neither the record nor the ref names the spawn's image
// then: only its pin keeps it, and the spawn goes on to run from it.
func TestPruneImagesSparesASpawnInProgress(t *testing.T) {
	if isolated(t) {
		return
	}
	ctx := ctx(t)
	host := testutil.Registry(t)
	ref := host + "/web:1"
	first := testutil.HTTPDImage(t)
	testutil.Push(t, ref, first)
	moved, _ := withExtraLayer(t, first)
	n := gcNode(t, 0)

	held, resume := make(chan *image.Image, 1), make(chan struct{})
	var resumeOnce sync.Once
	release := func() { resumeOnce.Do(func() { close(resume) }) }
	t.Cleanup(release) // a failing test must not leave the spawn holding its workload's lock
	n.afterImage = func(img *image.Image) {
		held <- img
		<-resume
	}
	type result struct {
		w   workload.Observation
		err error
	}
	done := make(chan result, 1)
	a := sleeper(t, n, ref)
	go func() {
		w, err := n.Run(ctx, a)
		done <- result{w, err}
	}()
	var img *image.Image
	select {
	case img = <-held:
	case r := <-done:
		t.Fatalf("spawn ended before it had its image: %+v, %v", r.w, r.err)
	}

	testutil.Push(t, ref, moved)
	now, err := n.Pull(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if now.Digest == img.Digest {
		t.Fatal("the tag did not move; the test proves nothing")
	}
	res, err := n.PruneImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(res.Removed, img.Digest) || !exists(t, filepath.Join(img.Rootfs, "bin", "busybox")) {
		t.Fatalf("GC removed the image of a spawn in progress (removed %v)", res.Removed)
	}

	release()
	r := <-done
	if r.err != nil {
		t.Fatalf("spawn after GC: %v", r.err)
	}
	if r.w.State != workload.StateRunning || r.w.ImageDigest != img.Digest {
		t.Fatalf("spawned workload is %s on %s, want running on %s", r.w.State, r.w.ImageDigest, img.Digest)
	}
	// The pin is gone; the record keeps the image now, and the ref the new one.
	if res, err = n.PruneImages(ctx); err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 0 {
		t.Errorf("PruneImages with the workload running removed %v", res.Removed)
	}
	for _, d := range []string{img.Digest, now.Digest} {
		if _, err := n.Images.Get(d); err != nil {
			t.Errorf("image %s: %v", d, err)
		}
	}
}

// TestImageGCRunsByItself: with an ImageGCInterval the node deletes an
// image no workload uses without being asked.
func TestImageGCRunsByItself(t *testing.T) {
	if isolated(t) {
		return
	}
	ctx := ctx(t)
	host := testutil.Registry(t)
	ref := host + "/idle:1"
	testutil.Push(t, ref, testutil.HTTPDImage(t))
	n := gcNode(t, 10*time.Millisecond)
	img, err := n.Pull(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The index entry goes first and the rootfs after it, so both are
	// waited for: a collection under way has done only the first.
	testutil.WaitFor(t, waitLimit, "the node to delete an image no workload uses, rootfs and all", func() bool {
		_, err := n.Images.Get(img.Digest)
		return errors.Is(err, image.ErrNotFound) && !exists(t, img.Rootfs)
	})
}
