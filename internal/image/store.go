// Package image pulls OCI images from registries, keeps their blobs in a
// content store so each layer is downloaded once, and unpacks every image
// each layer once; an image's rootfs is a read-only overlay of its layers
// that all workloads of that image share.
//
// On disk, under the store's directory:
//
//	index.db                 bbolt: ref → manifest digest, digest → image record
//	blobs/sha256/<hex>       manifests, configs, and compressed layers until unpacked
//	layers/<hex>/fs/         one layer unpacked, as an overlayfs lower dir
//	layers/<hex>/size        the bytes it was counted at against MaxImageSize
//	rootfs/<manifest hex>/   mount point of the image's read-only overlay of its layers
//	ext4/<manifest hex>.ext4 the image as a read-only disk for microVMs (Ext4)
//	empty/                   an empty lower dir for single-layer images
//	tmp/                     work in progress; emptied on Open
//
// A layer is unpacked once, whatever number of images share it (as
// containerd's overlayfs snapshotter does), and its compressed blob is then
// deleted. Everything that appears outside tmp/ appears by rename once
// complete, and the index is written last, so a crash never leaves something
// that looks finished but is not. Mounts do not survive a reboot: Get mounts
// an image's rootfs again when it finds it unmounted.
package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/mountutil"
)

// ErrNotFound means the image is not available: Get, Remove and Ensure's
// local lookup wrap it when the image is not in the store, and Pull wraps it
// when the registry says the repository or tag does not exist.
var ErrNotFound = errors.New("image not found")

// ErrRegistry means Pull failed because of the registry: it could not be
// reached, refused the credentials or answered with an error. Unlike
// ErrNotFound, trying again later or fixing access may help.
var ErrRegistry = errors.New("registry unavailable")

// Store keeps pulled images under one directory. One process at a time may
// have a directory open; a Store is safe for concurrent use.
type Store struct {
	dir      string
	ix       *index
	platform v1.Platform
	// locks serialises pulls of one digest, and downloads of one blob.
	locks keyedLocks
	// gcMu is held shared while a pull writes and exclusively while Remove
	// and GC delete, so they never delete what a pull is about to index.
	gcMu sync.RWMutex
	// pins counts the Acquire calls not yet released, by manifest digest.
	// A pin is taken only with gcMu held (shared, hence pinMu too), so GC,
	// holding gcMu exclusively, sees every pin taken before it began. A
	// release needs no gcMu: GC missing one only keeps an image longer.
	pinMu sync.Mutex
	pins  map[string]int
	// lastUsed is when each image was last pinned or seen in use by a GC,
	// by manifest digest, for GCUnusedFor. It is kept in memory only: on
	// Open every image counts as just used, so a restart grants each a
	// full grace period again rather than deleting what was in use before.
	// Guarded by pinMu.
	lastUsed map[string]time.Time
	now      func() time.Time
	opts     Options
	// answerTimeout bounds how long a registry may take to start
	// answering a request (0: registryAnswerTimeout); tests shorten it.
	answerTimeout time.Duration
}

// DefaultMaxImageSize is Options.MaxImageSize when it is left at zero.
const DefaultMaxImageSize = 10 << 30

// Options bounds what a Store writes.
type Options struct {
	// MaxImageSize bounds the bytes one image takes unpacked: file
	// contents, plus a block for every entry, so that a layer of many
	// empty files counts too. A pull past it fails with ErrTooLarge and
	// leaves nothing behind. 0 means DefaultMaxImageSize.
	MaxImageSize int64
	// MaxImageSizeFlag names the setting in ErrTooLarge's message
	// ("--max-image-size"), so that it says what to change.
	MaxImageSizeFlag string
	// MaxStoreSize bounds the store's disk use (see Usage): a pull that
	// would unpack past it fails with ErrStoreFull and leaves nothing
	// unpacked. 0 means no bound.
	MaxStoreSize int64
	// MaxStoreSizeFlag names the setting in ErrStoreFull's message.
	MaxStoreSizeFlag string
}

// ErrTooLarge means an image unpacks to more than Options.MaxImageSize, as
// a compression bomb does.
var ErrTooLarge = errors.New("image too large")

// Image is an image ready to run.
type Image struct {
	Ref    string    // as asked; "" for an image no ref points at any more
	Digest string    // manifest digest "sha256:..."
	Rootfs string    // absolute path of the image's read-only rootfs (an overlay of its layers), shared by its workloads
	Config v1.Config // from the image config: Entrypoint, Cmd, Env, WorkingDir, User
	Size   int64     // bytes of the compressed layers, as in the registry
	Pulled time.Time // when this digest was first unpacked
}

// Open opens (creating if needed) the store in dir. It clears work left in
// tmp/ by a crash, which is safe because the index lock keeps any other
// process out of dir.
func Open(dir string) (*Store, error) { return OpenWith(dir, Options{}) }

// OpenWith is Open with limits on what the store writes.
func OpenWith(dir string, opts Options) (*Store, error) {
	if opts.MaxImageSize <= 0 {
		opts.MaxImageSize = DefaultMaxImageSize
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("create image store %s: %w", abs, err)
	}
	ix, err := openIndex(filepath.Join(abs, "index.db"))
	if err != nil {
		return nil, err
	}
	s := &Store{dir: abs, ix: ix, platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, pins: map[string]int{},
		lastUsed: map[string]time.Time{}, now: time.Now, opts: opts}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		ix.close()
		return nil, fmt.Errorf("clear leftover work in %s: %w", s.tmpDir(), err)
	}
	for _, d := range []string{filepath.Join(abs, "blobs", "sha256"), filepath.Join(abs, "rootfs"), filepath.Join(abs, "layers"), s.emptyDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			ix.close()
			return nil, fmt.Errorf("create image store %s: %w", d, err)
		}
	}
	return s, nil
}

// Close releases the index so another process may open the directory.
func (s *Store) Close() error { return s.ix.close() }

func (s *Store) tmpDir() string { return filepath.Join(s.dir, "tmp") }

func (s *Store) rootfsPath(digest v1.Hash) string {
	return filepath.Join(s.dir, "rootfs", digest.Hex)
}

// Ensure returns the local image for ref if it was pulled before and its
// rootfs is unpacked, without any network traffic (docker's pull policy
// "missing"); otherwise it pulls ref. A moved tag is therefore not noticed:
// use Pull to refresh.
func (s *Store) Ensure(ctx context.Context, ref string, progress func(Progress)) (*Image, error) {
	img, err := s.Get(ref)
	if err == nil {
		return img, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return s.Pull(ctx, ref, progress)
}

// Acquire is Ensure for a workload about to be made from the image: it
// also pins the image, so GC keeps it until release is called although no
// workload record names it yet. Call release (once; more is harmless) when
// the workload's record names the image's digest, or when the spawn fails.
//
// Pinning is the store's job, not its callers': only here can the pin be
// taken before gcMu is released, so no GC can fall between the image being
// indexed or found and the pin that protects it. Remove ignores pins: it is
// an explicit request to delete.
func (s *Store) Acquire(ctx context.Context, ref string, progress func(Progress)) (img *Image, release func(), err error) {
	s.gcMu.RLock()
	img, err = s.Get(ref)
	if err == nil {
		s.pin(img.Digest)
	}
	s.gcMu.RUnlock()
	if errors.Is(err, ErrNotFound) {
		img, err = s.pull(ctx, ref, progress, true)
	}
	if err != nil {
		return nil, nil, err
	}
	digest := img.Digest
	var once sync.Once
	return img, func() { once.Do(func() { s.unpin(digest) }) }, nil
}

// pin keeps digest from GC. The caller holds gcMu, shared or exclusive.
func (s *Store) pin(digest string) {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	s.pins[digest]++
	s.lastUsed[digest] = s.now()
}

func (s *Store) unpin(digest string) {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	s.lastUsed[digest] = s.now()
	if s.pins[digest]--; s.pins[digest] <= 0 {
		delete(s.pins, digest)
	}
}

// Get returns the local image for a ref ("web:1", "repo@sha256:...") or a
// manifest digest ("sha256:..."), without network. It returns an error
// wrapping ErrNotFound if the image is not pulled or its rootfs is gone.
func (s *Store) Get(refOrDigest string) (*Image, error) {
	digest, err := s.lookup(refOrDigest)
	if err != nil {
		return nil, err
	}
	if digest == "" {
		return nil, fmt.Errorf("image %s: %w locally; pull it first", refOrDigest, ErrNotFound)
	}
	rec, ok, err := s.ix.image(digest)
	if err != nil {
		return nil, fmt.Errorf("read image index for %s: %w", refOrDigest, err)
	}
	if !ok {
		return nil, fmt.Errorf("image %s: %w locally; pull it first", refOrDigest, ErrNotFound)
	}
	img := s.imageOf(refOrDigest, rec)
	if err := s.ensureRootfs(rec); errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("image %s: %w", refOrDigest, err)
	} else if err != nil {
		return nil, fmt.Errorf("image %s: mount its rootfs: %w", refOrDigest, err)
	}
	return img, nil
}

// lookup returns the manifest digest refOrDigest names in the index, or ""
// if it names nothing there.
func (s *Store) lookup(refOrDigest string) (string, error) {
	if h, err := v1.NewHash(refOrDigest); err == nil {
		return h.String(), nil
	}
	r, err := parseRef(refOrDigest)
	if err != nil {
		return "", err
	}
	digest, err := s.ix.resolve(r.Name())
	if err != nil {
		return "", fmt.Errorf("read image index for %s: %w", refOrDigest, err)
	}
	// Content is content: repo@digest is that image whatever repo it came from.
	if d, ok := r.(name.Digest); ok && digest == "" {
		digest = d.DigestStr()
	}
	return digest, nil
}

func parseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q (want e.g. registry.example/web:1 or repo@sha256:<hex>): %w", ref, err)
	}
	return r, nil
}

func (s *Store) imageOf(ref string, rec record) *Image {
	h, _ := v1.NewHash(rec.Digest)
	return &Image{Ref: ref, Digest: rec.Digest, Rootfs: s.rootfsPath(h), Config: rec.Config, Size: rec.Size, Pulled: rec.Pulled}
}

// List returns the local images, one per ref (canonical form, e.g.
// index.docker.io/library/busybox:latest), plus images no ref points at any
// more with Ref "". It is sorted by Ref, then Digest.
func (s *Store) List() ([]Image, error) {
	recs, refs, err := s.ix.all()
	if err != nil {
		return nil, fmt.Errorf("read image index: %w", err)
	}
	var out []Image
	named := map[string]bool{}
	for ref, d := range refs {
		if rec, ok := recs[d]; ok {
			out = append(out, *s.imageOf(ref, rec))
			named[d] = true
		}
	}
	for d, rec := range recs {
		if !named[d] {
			out = append(out, *s.imageOf("", rec))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Ref != out[j].Ref {
			return out[i].Ref < out[j].Ref
		}
		return out[i].Digest < out[j].Digest
	})
	return out, nil
}

// Remove deletes a ref, or with a digest an image and every ref to it. An
// image no ref points at any more is deleted with its rootfs, its microVM
// disk and any layers and blobs no other image uses. It does not check whether a
// workload still runs the image: callers that care use GC.
func (s *Store) Remove(refOrDigest string) error {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	var err error
	if h, herr := v1.NewHash(refOrDigest); herr == nil {
		err = s.ix.removeImages(map[string]bool{h.String(): true})
	} else {
		r, perr := parseRef(refOrDigest)
		if perr != nil {
			return perr
		}
		err = s.ix.removeRef(r.Name())
		if d, ok := r.(name.Digest); ok && errors.Is(err, ErrNotFound) {
			err = s.ix.removeImages(map[string]bool{d.DigestStr(): true})
		}
	}
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("remove image %s: %w locally (see the image list for what is there)", refOrDigest, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("remove image %s from the index: %w", refOrDigest, err)
	}
	_, err = s.sweep()
	return err
}

// GCResult is what GC deleted.
type GCResult struct {
	// Removed are the manifest digests of the images whose rootfs went,
	// sorted.
	Removed []string
	// Freed is the disk space given back, in bytes, as du counts it:
	// blobs, unpacked layers, microVM disks and leftover work.
	Freed int64
}

// GC deletes every image that keep does not name and no Acquire has
// pinned, with its refs, rootfs and microVM disk, then every layer and blob
// no remaining image uses and any leftover temporary work. keep returns refs
// or manifest digests; a ref keeps the image it points at here, and names
// that match nothing are ignored. On an error GC may have deleted some
// images: the result says which.
//
// keep is called, with pulls held off, after the pins are read, and that
// order is what makes a spawn safe: a spawn writes its workload's digest
// into its record before it releases its pin, so if GC misses the pin it
// sees the record. keep must not call the Store's Acquire, Pull, Remove or
// GC, which would wait for this GC to end.
func (s *Store) GC(keep func() ([]string, error)) (GCResult, error) {
	return s.GCUnusedFor(0, keep)
}

// GCUnusedFor is GC that also keeps every image used (named by keep,
// pinned, or pulled) less than grace ago, so that a workload spawned again
// soon after the last one went finds its image unpacked. Layers no kept
// image uses go all the same.
func (s *Store) GCUnusedFor(grace time.Duration, keep func() ([]string, error)) (GCResult, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	inUse := map[string]bool{}
	s.pinMu.Lock()
	for d := range s.pins {
		inUse[d] = true
	}
	s.pinMu.Unlock()
	names, err := keep()
	if err != nil {
		return GCResult{}, fmt.Errorf("gc: list the images in use (nothing was deleted): %w", err)
	}
	for _, n := range names {
		// A name that does not parse cannot name a stored image either.
		if d, err := s.lookup(n); err == nil && d != "" {
			inUse[d] = true
		}
	}
	recs, _, err := s.ix.all()
	if err != nil {
		return GCResult{}, fmt.Errorf("gc: read image index: %w", err)
	}
	drop := map[string]bool{}
	now := s.now()
	s.pinMu.Lock()
	for d := range recs {
		last, seen := s.lastUsed[d]
		switch {
		case inUse[d]:
			s.lastUsed[d] = now
		case !seen:
			// Pulled before this process opened the store.
			s.lastUsed[d] = now
			if grace <= 0 {
				drop[d] = true
			}
		case now.Sub(last) >= grace:
			drop[d] = true
		}
	}
	for d := range drop {
		delete(s.lastUsed, d)
	}
	s.pinMu.Unlock()
	if len(drop) > 0 {
		if err := s.ix.removeImages(drop); err != nil && !errors.Is(err, ErrNotFound) {
			return GCResult{}, fmt.Errorf("gc: update image index: %w", err)
		}
	}
	return s.sweep()
}

// sweep unmounts and deletes the rootfs of every image not indexed, and
// deletes the layers, microVM disks and blobs that no indexed image refers
// to, and everything in tmp/. The caller holds gcMu
// exclusively, so no pull is between writing content and indexing it.
func (s *Store) sweep() (GCResult, error) {
	var res GCResult
	recs, _, err := s.ix.all()
	if err != nil {
		return res, fmt.Errorf("read image index: %w", err)
	}
	keepRootfs, keepBlobs := map[string]bool{}, map[string]bool{}
	for _, rec := range recs {
		keepRootfs[rec.Digest] = true
		for _, b := range rec.Blobs {
			keepBlobs[b] = true
		}
	}
	var errs []error
	rootfsDir := filepath.Join(s.dir, "rootfs")
	entries, err := os.ReadDir(rootfsDir)
	if err != nil {
		return res, fmt.Errorf("list %s: %w", rootfsDir, err)
	}
	for _, e := range entries {
		digest := "sha256:" + e.Name()
		if keepRootfs[digest] {
			continue
		}
		// Rename first: a crash midway through RemoveAll must not leave a
		// partial tree at the path that means "unpacked". The tree is
		// deleted, and counted, with the rest of tmp/ below.
		err := mountutil.UnmountAll(filepath.Join(rootfsDir, e.Name()))
		var trash string
		if err == nil {
			trash, err = os.MkdirTemp(s.tmpDir(), "trash-")
		}
		if err == nil {
			err = os.Rename(filepath.Join(rootfsDir, e.Name()), filepath.Join(trash, "rootfs"))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove rootfs of %s: %w", digest, err))
			continue
		}
		res.Removed = append(res.Removed, digest)
	}
	sort.Strings(res.Removed)
	// Disks are found by listing them, not from the rootfs dirs removed
	// above, so that disks left by removals before disks were swept go too.
	ext4Dir := filepath.Join(s.dir, "ext4")
	entries, err = os.ReadDir(ext4Dir)
	if err != nil && !os.IsNotExist(err) {
		return res, fmt.Errorf("list %s: %w", ext4Dir, err)
	}
	for _, e := range entries {
		hex, ok := ext4Digest(e.Name())
		if !ok || keepRootfs["sha256:"+hex] {
			continue
		}
		size := fileUsage(e)
		if err := RemoveExt4(filepath.Join(rootfsDir, hex)); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Freed += size
	}
	layerDir := filepath.Join(s.dir, "layers")
	entries, err = os.ReadDir(layerDir)
	if err != nil {
		return res, fmt.Errorf("list %s: %w", layerDir, err)
	}
	for _, e := range entries {
		if keepBlobs["sha256:"+e.Name()] {
			continue
		}
		trash, err := os.MkdirTemp(s.tmpDir(), "trash-")
		if err == nil {
			err = os.Rename(filepath.Join(layerDir, e.Name()), filepath.Join(trash, "layer"))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove layer sha256:%s: %w", e.Name(), err))
		}
	}
	blobDir := filepath.Join(s.dir, "blobs", "sha256")
	entries, err = os.ReadDir(blobDir)
	if err != nil {
		return res, fmt.Errorf("list %s: %w", blobDir, err)
	}
	for _, e := range entries {
		if !keepBlobs["sha256:"+e.Name()] {
			size := fileUsage(e)
			if err := os.Remove(filepath.Join(blobDir, e.Name())); err != nil {
				errs = append(errs, fmt.Errorf("remove blob: %w", err))
				continue
			}
			res.Freed += size
		}
	}
	entries, err = os.ReadDir(s.tmpDir())
	if err != nil {
		return res, fmt.Errorf("list %s: %w", s.tmpDir(), err)
	}
	for _, e := range entries {
		p := filepath.Join(s.tmpDir(), e.Name())
		// Counting walks the tree once more before RemoveAll does; GC is
		// rare enough that a true "freed" figure is worth it.
		size := treeUsage(p)
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove temporary %s: %w", e.Name(), err))
			continue
		}
		res.Freed += size
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("image store cleanup (run GC again to retry): %w", errors.Join(errs...))
	}
	return res, nil
}

// fileUsage is the disk space of a directory entry, 0 if it cannot be told.
func fileUsage(e os.DirEntry) int64 {
	info, err := e.Info()
	if err != nil {
		return 0
	}
	return usage(info)
}

// treeUsage is the disk space of everything under root, as du counts it:
// a file with several names in the tree is counted once.
func treeUsage(root string) int64 {
	var n int64
	seen := map[[2]uint64]bool{}
	filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // what cannot be read is not counted; removal reports it
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 && !info.IsDir() {
			id := [2]uint64{st.Dev, st.Ino}
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		n += usage(info)
		return nil
	})
	return n
}

// usage is the space info's file takes on disk: allocated blocks, so a
// sparse microVM disk counts what it holds, not its length.
func usage(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}
