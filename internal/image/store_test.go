package image

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/mountutil"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

func layerExists(s *Store, l v1.Layer) bool {
	d, err := l.Digest()
	if err != nil {
		return false
	}
	return s.hasLayer(d)
}

// TestGC pulls two images sharing a layer and collects the one not in use:
// its rootfs, refs and own blobs go; the shared layer and the kept image stay.
func TestGC(t *testing.T) {
	host := testutil.Registry(t)
	shared := layerOf(t, fileE("shared", "shared"))
	onlyA, onlyB := layerOf(t, fileE("a", "a")), layerOf(t, fileE("b", "b"))
	imgA, imgB := imageOf(t, "/a", shared, onlyA), imageOf(t, "/b", shared, onlyB)
	testutil.Push(t, host+"/a:1", imgA)
	testutil.Push(t, host+"/b:1", imgB)
	s := openStore(t)
	a, err := s.Pull(context.Background(), host+"/a:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Pull(context.Background(), host+"/b:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// An orphan rootfs, as a crash between unpack and index would leave.
	orphan := filepath.Join(s.dir, "rootfs", strings.Repeat("ab", 32))
	if err := os.MkdirAll(filepath.Join(orphan, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// MicroVM disks of both images, one half made by a crash, and one whose
	// image went before GC removed disks.
	diskA, _ := writeDisks(t, a.Rootfs)
	diskB, tmpB := writeDisks(t, b.Rootfs)
	orphanDisk, _ := writeDisks(t, filepath.Join(s.dir, "rootfs", strings.Repeat("cd", 32)))

	before := du(t, s.dir)
	res, err := s.GC(keep(a.Digest))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{b.Digest, "sha256:" + strings.Repeat("ab", 32)}
	slices.Sort(want)
	if !slices.Equal(res.Removed, want) {
		t.Errorf("GC removed %v, want %v", res.Removed, want)
	}
	// GC also counts the trash dirs it made, which du never saw.
	if gone := before - du(t, s.dir); res.Freed < gone || res.Freed > gone+64<<10 {
		t.Errorf("GC says it freed %d bytes; du says %d went", res.Freed, gone)
	}
	for _, p := range []string{b.Rootfs, orphan, diskB, tmpB, orphanDisk} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists", p)
		}
	}
	if _, err := os.Stat(diskA); err != nil {
		t.Errorf("disk of the kept image: %v", err)
	}
	if _, err := s.Get(host + "/b:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of the collected image = %v", err)
	}
	if layerExists(s, onlyB) || !layerExists(s, shared) || !layerExists(s, onlyA) {
		t.Errorf("layers after GC: onlyB %v shared %v onlyA %v", layerExists(s, onlyB), layerExists(s, shared), layerExists(s, onlyA))
	}
	cfgB, _ := imgB.ConfigName()
	if _, err := os.Stat(s.blobPath(cfgB)); !os.IsNotExist(err) {
		t.Errorf("config blob of the collected image still exists")
	}
	if got, err := s.Get(host + "/a:1"); err != nil || got.Digest != a.Digest {
		t.Errorf("kept image: %+v, %v", got, err)
	}
	if data, err := os.ReadFile(filepath.Join(a.Rootfs, "shared")); err != nil || string(data) != "shared" {
		t.Errorf("kept rootfs: %q %v", data, err)
	}

	// Nothing in use: everything goes.
	if _, err := s.GC(keep()); err != nil {
		t.Fatal(err)
	}
	assertEmptyStore(t, s)
}

// keep is a GC argument that keeps the images that names name.
func keep(names ...string) func() ([]string, error) {
	return func() ([]string, error) { return names, nil }
}

// du is the disk usage of dir in bytes, as du(1) tells it, so GC's own
// count is checked against something that does not share its code.
func du(t *testing.T, dir string) int64 {
	t.Helper()
	// -x: not into the images' rootfs overlays, which hold nothing of
	// their own.
	out, err := exec.Command("du", "-s", "-x", "-B1", dir).Output()
	if err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatalf("du %s said %q", dir, out)
	}
	return n
}

// TestGCKeepsRefs: a ref in keep keeps the image it points at, and names
// that point at nothing here keep nothing and are no error.
func TestGCKeepsRefs(t *testing.T) {
	host := testutil.Registry(t)
	testutil.Push(t, host+"/k:1", imageOf(t, "/k", layerOf(t, fileE("k", "k"))))
	s := openStore(t)
	img, err := s.Pull(context.Background(), host+"/k:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(keep(host+"/k:1", host+"/other:1", "not a ref", "sha256:"+strings.Repeat("0", 64)))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 0 {
		t.Errorf("GC removed %v, want nothing", res.Removed)
	}
	if _, err := s.Get(img.Digest); err != nil {
		t.Errorf("image kept by its ref: %v", err)
	}
	if _, err := s.GC(func() ([]string, error) { return nil, errors.New("store down") }); err == nil {
		t.Error("GC went ahead without knowing what is in use")
	}
	if _, err := s.Get(img.Digest); err != nil {
		t.Errorf("image after a GC that could not list what is in use: %v", err)
	}
}

// TestAcquirePins: an image a spawn acquired survives GC until released,
// whether Acquire pulled it or found it, and even after its tag moved to
// another image, as a pull during the spawn would do.
func TestAcquirePins(t *testing.T) {
	host := testutil.Registry(t)
	ref := host + "/p:1"
	imgA, imgB := imageOf(t, "/a", layerOf(t, fileE("a", "a"))), imageOf(t, "/b", layerOf(t, fileE("b", "b")))
	testutil.Push(t, ref, imgA)
	s := openStore(t)
	ctx := context.Background()
	a, releasePulled, err := s.Acquire(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != digestOf(t, imgA) {
		t.Fatalf("Acquire gave %s, want %s", a.Digest, digestOf(t, imgA))
	}
	a2, releaseFound, err := s.Acquire(ctx, ref, nil)
	if err != nil || a2.Digest != a.Digest {
		t.Fatalf("second Acquire = %+v, %v", a2, err)
	}
	testutil.Push(t, ref, imgB)
	b, err := s.Pull(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}

	collect := func() GCResult {
		t.Helper()
		res, err := s.GC(keep(ref))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := collect(); len(res.Removed) != 0 {
		t.Errorf("GC with both pins held removed %v", res.Removed)
	}
	releasePulled()
	releasePulled() // a second release must not drop the other pin
	if res := collect(); len(res.Removed) != 0 {
		t.Errorf("GC with one pin held removed %v", res.Removed)
	}
	if _, err := os.Stat(filepath.Join(a.Rootfs, "a")); err != nil {
		t.Errorf("pinned rootfs: %v", err)
	}
	releaseFound()
	if res := collect(); !slices.Equal(res.Removed, []string{a.Digest}) {
		t.Errorf("GC after the last release removed %v, want %s", res.Removed, a.Digest)
	}
	if got, err := s.Get(ref); err != nil || got.Digest != b.Digest {
		t.Errorf("image the tag points at now: %+v, %v", got, err)
	}
}

// TestGCReadsPinsFirst: GC reads the pins before it asks keep what is in
// use, so a spawn that records its image and then releases its pin while
// GC runs is seen one way or the other. Here keep plays that spawn at its
// worst moment: it releases the pin and its answer cannot include the
// record yet.
func TestGCReadsPinsFirst(t *testing.T) {
	host := testutil.Registry(t)
	testutil.Push(t, host+"/r:1", imageOf(t, "/r", layerOf(t, fileE("r", "r"))))
	s := openStore(t)
	img, release, err := s.Acquire(context.Background(), host+"/r:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(func() ([]string, error) { release(); return nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 0 {
		t.Fatalf("GC removed %v: it read the pins after keep", res.Removed)
	}
	if _, err := s.GC(keep()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(img.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after the pin went = %v, want ErrNotFound", err)
	}
}

// TestRemove removes by ref and by digest.
func TestRemove(t *testing.T) {
	host := testutil.Registry(t)
	img := imageOf(t, "/r", layerOf(t, fileE("r", "r")))
	testutil.Push(t, host+"/r:1", img)
	testutil.Push(t, host+"/r:2", img)
	s := openStore(t)
	one, err := s.Pull(context.Background(), host+"/r:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), host+"/r:2", nil); err != nil {
		t.Fatal(err)
	}
	disk, _ := writeDisks(t, one.Rootfs)

	// Another ref still uses the image: only the ref goes.
	if err := s.Remove(host + "/r:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(host + "/r:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a removed ref = %v", err)
	}
	if _, err := os.Stat(one.Rootfs); err != nil {
		t.Errorf("rootfs gone while r:2 uses it: %v", err)
	}
	if _, err := os.Stat(disk); err != nil {
		t.Errorf("microVM disk gone while r:2 uses it: %v", err)
	}
	if err := s.Remove(host + "/r:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}

	if err := s.Remove(one.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(host + "/r:2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after removing the digest = %v", err)
	}
	assertEmptyStore(t, s)
}

// TestReopen checks the index survives Close, leftovers in tmp/ are
// cleared, a second opener is refused, and a lost rootfs is noticed.
func TestReopen(t *testing.T) {
	host := testutil.Registry(t)
	testutil.Push(t, host+"/re:1", imageOf(t, "/r", layerOf(t, fileE("r", "r"))))
	dir := t.TempDir()
	t.Cleanup(func() { testutil.UnmountUnder(t, dir) })
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := s.Pull(context.Background(), host+"/re:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "another hypercore process") {
		t.Errorf("second Open = %v, want refused", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash mid-unpack leaves this behind.
	if err := os.MkdirAll(filepath.Join(dir, "tmp", "unpack-123", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if left := tree(t, s.tmpDir()); len(left) != 0 {
		t.Errorf("tmp holds %v after Open", left)
	}
	got, err := s.Get(host + "/re:1")
	if err != nil || got.Digest != pulled.Digest || got.Rootfs != pulled.Rootfs {
		t.Fatalf("Get after reopen = %+v, %v", got, err)
	}
	// A reboot unmounts the rootfs; Get mounts it again.
	if err := mountutil.UnmountAll(got.Rootfs); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(host + "/re:1"); err != nil {
		t.Fatalf("Get after a reboot = %+v, %v", got, err)
	}
	if data, err := os.ReadFile(filepath.Join(got.Rootfs, "r")); err != nil || string(data) != "r" {
		t.Errorf("rootfs mounted again: r = %q, %v", data, err)
	}
	if err := mountutil.UnmountAll(got.Rootfs); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "layers")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(host + "/re:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get with the layers gone = %v, want ErrNotFound", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "layers"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Ensure repairs it from the content store.
	again, err := s.Ensure(context.Background(), host+"/re:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(again.Rootfs, "r")); err != nil || string(data) != "r" {
		t.Errorf("re-unpacked r = %q, %v", data, err)
	}
}

func TestGetUnknown(t *testing.T) {
	s := openStore(t)
	for _, ref := range []string{"busybox", "sha256:" + strings.Repeat("0", 64), "127.0.0.1:5000/x@sha256:" + strings.Repeat("1", 64)} {
		if _, err := s.Get(ref); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ref) {
			t.Errorf("Get(%s) = %v", ref, err)
		}
	}
}

// writeDisks puts a stand-in for the microVM disk of rootfs where Ext4
// would make it, and for one a crash left half made, and returns their
// paths. The store removes them by name, whatever their content.
func writeDisks(t *testing.T, rootfs string) (disk, tmp string) {
	t.Helper()
	disk, tmp = ext4Paths(rootfs)
	if err := os.MkdirAll(filepath.Dir(disk), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{disk, tmp} {
		if err := os.WriteFile(p, []byte("disk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return disk, tmp
}

// TestSharedLayers pulls two images on one base layer: the base is
// unpacked once, both rootfs show it, its compressed blob is gone once
// unpacked, and each image's own layer is its own.
func TestSharedLayers(t *testing.T) {
	host := testutil.Registry(t)
	base := layerOf(t, dirE("etc/", 0o755), fileE("etc/base", "base"))
	a, b := layerOf(t, fileE("a", "a")), layerOf(t, fileE("b", "b"))
	testutil.Push(t, host+"/a:1", imageOf(t, "/a", base, a))
	testutil.Push(t, host+"/b:1", imageOf(t, "/b", base, b))
	s := openStore(t)
	var imgs []*Image
	for _, ref := range []string{host + "/a:1", host + "/b:1"} {
		img, err := s.Pull(context.Background(), ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	if got := tree(t, filepath.Join(s.dir, "layers")); len(got) == 0 || countDepth(got, 0) != 3 {
		t.Errorf("layers/ holds %v; want 3 layers, the base once", got)
	}
	for _, l := range []v1.Layer{base, a, b} {
		d, _ := l.Digest()
		if _, err := os.Stat(s.blobPath(d)); !os.IsNotExist(err) {
			t.Errorf("blob of unpacked layer %s: %v; want it deleted", d, err)
		}
	}
	for i, img := range imgs {
		own := []string{"a", "b"}[i]
		want := []string{own, "etc", "etc/base"}
		if got := tree(t, img.Rootfs); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("rootfs of %s holds %v, want %v", img.Ref, got, want)
		}
		if err := os.WriteFile(filepath.Join(img.Rootfs, "new"), nil, 0o644); err == nil {
			t.Errorf("rootfs of %s is writable", img.Ref)
		}
	}
	// Collecting one image keeps the base the other uses.
	if _, err := s.GC(keep(imgs[1].Digest)); err != nil {
		t.Fatal(err)
	}
	if !layerExists(s, base) || layerExists(s, a) || !layerExists(s, b) {
		t.Errorf("after GC of a: base %v a %v b %v; want base and b kept", layerExists(s, base), layerExists(s, a), layerExists(s, b))
	}
	if data, err := os.ReadFile(filepath.Join(imgs[1].Rootfs, "etc/base")); err != nil || string(data) != "base" {
		t.Errorf("b's etc/base after GC = %q, %v", data, err)
	}
}

// countDepth counts the paths of a tree listing with depth slashes.
func countDepth(paths []string, depth int) int {
	n := 0
	for _, p := range paths {
		if strings.Count(p, "/") == depth {
			n++
		}
	}
	return n
}

// TestManyLayers pulls an image of more layers than the lowerdir option
// of mount(2) has room for, which the store mounts one layer at a time.
func TestManyLayers(t *testing.T) {
	const n = 60
	var layers []v1.Layer
	for i := range n {
		layers = append(layers, layerOf(t, fileE("f"+strconv.Itoa(i), strconv.Itoa(i)), fileE("top", strconv.Itoa(i))))
	}
	host := testutil.Registry(t)
	testutil.Push(t, host+"/many:1", imageOf(t, "/x", layers...))
	s := openStore(t)
	if len(filepath.Join(s.dir, "layers", strings.Repeat("0", 64), "fs"))*n < maxMountData {
		t.Fatalf("%d layers fit in one mount(2) option here; the test needs more", n)
	}
	img, err := s.Pull(context.Background(), host+"/many:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := tree(t, img.Rootfs); len(got) != n+1 {
		t.Errorf("rootfs holds %d entries, want %d", len(got), n+1)
	}
	if data, err := os.ReadFile(filepath.Join(img.Rootfs, "top")); err != nil || string(data) != strconv.Itoa(n-1) {
		t.Errorf("top = %q, %v; want the last layer's %d", data, err, n-1)
	}
}

// TestGCGrace keeps an unused image for the grace period after its last
// use, then collects it with the layers only it used.
func TestGCGrace(t *testing.T) {
	host := testutil.Registry(t)
	base, own := layerOf(t, fileE("base", "base")), layerOf(t, fileE("own", "own"))
	testutil.Push(t, host+"/kept:1", imageOf(t, "/k", base))
	testutil.Push(t, host+"/idle:1", imageOf(t, "/i", base, own))
	s := openStore(t)
	clock := time.Unix(1700000000, 0)
	s.now = func() time.Time { return clock }
	kept, err := s.Pull(context.Background(), host+"/kept:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, release, err := s.Acquire(context.Background(), host+"/idle:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(10 * time.Minute)
	release() // the workload that used it went

	clock = clock.Add(59 * time.Minute)
	if res, err := s.GCUnusedFor(time.Hour, keep(kept.Digest)); err != nil || len(res.Removed) != 0 {
		t.Fatalf("GC 59 minutes after the last use, grace 1h: removed %v, %v; want nothing", res.Removed, err)
	}
	if !layerExists(s, own) {
		t.Error("the idle image's own layer went within its grace")
	}
	clock = clock.Add(2 * time.Minute)
	res, err := s.GCUnusedFor(time.Hour, keep(kept.Digest))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 1 || res.Removed[0] == kept.Digest {
		t.Errorf("GC past the grace removed %v; want the idle image only", res.Removed)
	}
	if layerExists(s, own) || !layerExists(s, base) {
		t.Errorf("after GC: own layer %v, shared base %v; want only the base kept", layerExists(s, own), layerExists(s, base))
	}
	// The kept image was in use at every GC, so no grace runs out for it.
	clock = clock.Add(24 * time.Hour)
	if res, err := s.GCUnusedFor(time.Hour, keep(kept.Digest)); err != nil || len(res.Removed) != 0 {
		t.Errorf("GC of an image in use: removed %v, %v", res.Removed, err)
	}
}

// TestStoreBudget fills a store with a MaxStoreSize: a pull that would
// pass it fails with ErrStoreFull naming the setting and leaves nothing
// unpacked, and fits once GC made room.
func TestStoreBudget(t *testing.T) {
	host := testutil.Registry(t)
	// Random data does not compress, so blob and layer are about 3 MiB each.
	big := func(name string) v1.Layer {
		data := make([]byte, 3<<20)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		return layerOf(t, fileE(name, string(data)))
	}
	testutil.Push(t, host+"/one:1", imageOf(t, "/x", big("one")))
	testutil.Push(t, host+"/two:1", imageOf(t, "/x", big("two")))
	s := openStoreWith(t, Options{MaxStoreSize: 5 << 20, MaxStoreSizeFlag: "--image-store-max"})
	one, err := s.Pull(context.Background(), host+"/one:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if used, err := s.Usage(); err != nil || used < 3<<20 || used > 4<<20 {
		t.Errorf("Usage after one 3 MiB image = %d, %v", used, err)
	}
	_, err = s.Pull(context.Background(), host+"/two:1", nil)
	if !errors.Is(err, ErrStoreFull) || !strings.Contains(err.Error(), "--image-store-max") {
		t.Fatalf("second 3 MiB pull into a 5 MiB store: %v; want ErrStoreFull naming --image-store-max", err)
	}
	if got := tree(t, filepath.Join(s.dir, "layers")); countDepth(got, 0) != 1 {
		t.Errorf("layers after the refused pull: %v; want only the first image's", got)
	}
	if _, err := s.GC(keep()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(one.Digest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("first image after GC: %v", err)
	}
	if _, err := s.Pull(context.Background(), host+"/two:1", nil); err != nil {
		t.Errorf("pull after GC made room: %v", err)
	}
}
