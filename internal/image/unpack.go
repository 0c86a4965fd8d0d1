package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"golang.org/x/sys/unix"
)

// unpack makes the image with manifest m ready to run: it unpacks each of
// its layers that is not unpacked yet into layers/<hex>/fs, once for every
// image that shares it, and mounts their read-only overlay at
// rootfs/<manifest hex>. Each layer is built in tmp/ and renamed into
// place, so layers/<hex> existing means it is complete. A layer's blob is
// deleted once it is unpacked: the unpacked tree is what is kept.
//
// Every layer of the image, unpacked now or before, counts against one
// budget, so an image past MaxImageSize is refused even when most of it is
// shared.
func (s *Store) unpack(ctx context.Context, digest v1.Hash, raw []byte, m *v1.Manifest) error {
	img, err := partial.CompressedToImage(&localImage{s: s, raw: raw, manifest: m})
	if err != nil {
		return fmt.Errorf("unpack %s: %w", digest, err)
	}
	b, err := s.pullBudget()
	if err != nil {
		return fmt.Errorf("unpack %s: %w", digest, err)
	}
	for _, d := range m.Layers {
		// A layer's blob goes once it is unpacked: the room it takes now
		// is the unpack's to use.
		if !s.hasLayer(d.Digest) && s.hasBlob(d.Digest, d.Size) {
			b.store.left += d.Size
		}
	}
	for _, d := range m.Layers {
		if err := s.unpackLayer(ctx, img, d, b); err != nil {
			return fmt.Errorf("unpack %s: layer %s: %w", digest, d.Digest, err)
		}
	}
	if err := s.mountRootfs(digest, layerDigests(m)); err != nil {
		return fmt.Errorf("unpack %s: %w", digest, err)
	}
	return nil
}

func layerDigests(m *v1.Manifest) []string {
	out := make([]string, len(m.Layers))
	for i, d := range m.Layers {
		out[i] = d.Digest.String()
	}
	return out
}

// unpackLayer unpacks layer d of img unless it is unpacked already, and
// counts its size against b either way.
func (s *Store) unpackLayer(ctx context.Context, img v1.Image, d v1.Descriptor, b *budget) (err error) {
	unlock, err := s.locks.lock(ctx, "layer:"+d.Digest.String())
	if err != nil {
		return err
	}
	defer unlock()
	final := s.layerPath(d.Digest)
	if size, err := layerSize(final); err == nil {
		return b.takeShared(size)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp, err := os.MkdirTemp(s.tmpDir(), "layer-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Mkdir(filepath.Join(tmp, "fs"), 0o755); err != nil {
		return err
	}
	l, err := img.LayerByDigest(d.Digest)
	if err != nil {
		return err
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	before := b.written
	if err := extract(ctx, rc, filepath.Join(tmp, "fs"), b); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "size"), []byte(strconv.FormatInt(b.written-before, 10)), 0o644); err != nil {
		return err
	}
	// The rename says this layer is complete; make that true after a crash.
	if err := syncFS(tmp); err != nil {
		return fmt.Errorf("flush to disk: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("move into place: %w", err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return fmt.Errorf("flush to disk: %w", err)
	}
	if err := os.Remove(s.blobPath(d.Digest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		slog.Warn("image store: cannot delete a layer blob after unpacking it; GC will", "layer", d.Digest, "err", err)
	}
	return nil
}

// layerSize reads the size an unpacked layer was counted at.
func layerSize(dir string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(dir, "size"))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("layer %s: size file: %w", dir, err)
	}
	return n, nil
}

// extract writes the layer tar stream r into dir, which must be empty, in
// the form overlayfs reads as one of its lower layers: a whiteout entry
// (.wh.NAME) becomes a character device 0/0 named NAME, and an opaque
// marker (.wh..wh..opq) the xattr trusted.overlay.opaque=y on its
// directory. Every write goes through an os.Root, so no entry can reach
// outside dir whatever its name or the symlinks before it. Entries beneath
// a symlink or file the stream created are skipped: they are an attempt to
// write through a link.
//
// b bounds what is written; past it extract stops with ErrTooLarge.
func extract(ctx context.Context, r io.Reader, dir string, b *budget) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	x := &extractor{root: root, nonDirs: map[string]bool{}, dirs: map[string]*tar.Header{}, budget: b}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// Read on past the end-of-archive marker, within the budget: the
			// decompressor checks the layer's checksum only at its end.
			if _, err := io.Copy(limitedWriter{w: io.Discard, b: b}, r); errors.Is(err, ErrTooLarge) {
				return err
			} else if err != nil {
				return fmt.Errorf("read image layers; the image is corrupt or unsafe to unpack: %w", err)
			}
			break
		}
		if err != nil {
			return fmt.Errorf("read image layers; the image is corrupt or unsafe to unpack: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
	// A hard link may come before its target in a hand-made tar; those
	// were kept for now.
	links := x.links
	x.links = nil
	for _, hdr := range links {
		if err := x.entry(hdr, nil); err != nil {
			return err
		}
	}
	return x.finish()
}

type extractor struct {
	root    *os.Root
	nonDirs map[string]bool        // paths holding a non-directory
	dirs    map[string]*tar.Header // directories whose mode and times are set last
	links   []*tar.Header          // hard links waiting for their target
	budget  *budget
}

// limitedWriter writes to w while b allows.
type limitedWriter struct {
	w io.Writer
	b *budget
}

func (l limitedWriter) Write(p []byte) (int, error) {
	if err := l.b.take(int64(len(p))); err != nil {
		return 0, err
	}
	return l.w.Write(p)
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	name, err := localName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." {
		return nil // the root's own mode is fixed in finish
	}
	if err := x.budget.take(entryCost); err != nil {
		return err
	}
	if p := x.beneathNonDir(name); p != "" {
		slog.Debug("image unpack: skipping entry beneath a non-directory", "entry", name, "non_dir", p)
		return nil
	}
	if base := path.Base(name); base == opaqueMarker {
		return x.opaque(path.Dir(name))
	} else if hidden, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		return x.whiteout(path.Join(path.Dir(name), hidden))
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.dir(name, hdr)
	case tar.TypeReg:
		return x.file(name, hdr, r)
	case tar.TypeSymlink:
		return x.symlink(name, hdr)
	case tar.TypeLink:
		return x.link(name, hdr, r == nil)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		// The runtime makes /dev; device nodes from an image are not needed
		// and could open host devices.
		slog.Debug("image unpack: skipping device or fifo", "entry", name)
	default:
		slog.Debug("image unpack: skipping unsupported tar entry", "entry", name, "type", string(hdr.Typeflag))
	}
	return nil
}

// localName returns the tar name as a clean path relative to the rootfs,
// refusing names that climb out of it. A leading "/" is dropped, as docker
// does.
func localName(n string) (string, error) {
	clean := path.Clean(strings.TrimLeft(n, "/"))
	if clean != "." && !filepath.IsLocal(clean) {
		return "", fmt.Errorf("tar entry %q points outside the rootfs; the image is malformed or hostile", n)
	}
	return clean, nil
}

// beneathNonDir returns the ancestor of name that is a symlink or file, or "".
func (x *extractor) beneathNonDir(name string) string {
	for i := range len(name) {
		if name[i] == '/' && x.nonDirs[name[:i]] {
			return name[:i]
		}
	}
	return ""
}

// prepare makes name's parents and clears name for a new entry, keeping an
// existing directory when the new entry is one too.
func (x *extractor) prepare(name string, isDir bool) error {
	if err := x.root.MkdirAll(path.Dir(name), 0o755); err != nil {
		return fmt.Errorf("create parent of %s: %w", name, err)
	}
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if isDir && fi.IsDir() {
		return nil
	}
	delete(x.nonDirs, name)
	for d := range x.dirs {
		if d == name || strings.HasPrefix(d, name+"/") {
			delete(x.dirs, d)
		}
	}
	return x.root.RemoveAll(name)
}

func (x *extractor) dir(name string, hdr *tar.Header) error {
	if err := x.prepare(name, true); err != nil {
		return err
	}
	if err := x.root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create directory %s: %w", name, err)
	}
	if err := owned(x.root.Lchown(name, hdr.Uid, hdr.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", name, err)
	}
	x.dirs[name] = hdr
	return nil
}

func (x *extractor) file(name string, hdr *tar.Header, r io.Reader) error {
	if err := x.prepare(name, false); err != nil {
		return err
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	x.nonDirs[name] = true
	err = x.fill(f, hdr, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, ErrTooLarge) {
		return err
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := x.root.Chtimes(name, hdr.AccessTime, hdr.ModTime); err != nil {
		return fmt.Errorf("set times of %s: %w", name, err)
	}
	return nil
}

// fill writes the content, then owner, then mode (chown clears setuid),
// then xattrs (chown clears security.capability).
func (x *extractor) fill(f *os.File, hdr *tar.Header, r io.Reader) error {
	if _, err := io.Copy(limitedWriter{w: f, b: x.budget}, r); err != nil {
		return err
	}
	if err := owned(f.Chown(hdr.Uid, hdr.Gid)); err != nil {
		return err
	}
	if err := f.Chmod(mode(hdr)); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		if attr, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if strings.HasPrefix(attr, "trusted.overlay.") || strings.HasPrefix(attr, "user.overlay.") {
				// Only the store says what overlayfs does with a layer:
				// an image's own would redirect or hide paths.
				slog.Debug("image unpack: dropping an overlayfs xattr", "file", hdr.Name, "xattr", attr)
				continue
			}
			if err := unix.Fsetxattr(int(f.Fd()), attr, []byte(v), 0); err != nil {
				slog.Debug("image unpack: cannot set xattr", "file", hdr.Name, "xattr", attr, "err", err)
			}
		}
	}
	return nil
}

// The names OCI layers mark deletions with.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// whiteout marks name as deleted from the layers below, as overlayfs
// does: a character device 0/0.
func (x *extractor) whiteout(name string) error {
	if base := path.Base(name); base == "" || base == "." || base == ".." || strings.HasPrefix(base, whiteoutPrefix) {
		return fmt.Errorf("whiteout for %q is malformed; the image is broken or hostile", name)
	}
	if err := x.prepare(name, false); err != nil {
		return err
	}
	parent, err := x.root.Open(path.Dir(name))
	if err != nil {
		return fmt.Errorf("whiteout %s: %w", name, err)
	}
	defer parent.Close()
	if err := unix.Mknodat(int(parent.Fd()), path.Base(name), unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout %s: %w", name, err)
	}
	x.nonDirs[name] = true
	return nil
}

// opaque marks dir as hiding what the layers below hold at its path.
func (x *extractor) opaque(dir string) error {
	if err := x.root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("opaque directory %s: %w", dir, err)
	}
	d, err := x.root.Open(dir)
	if err != nil {
		return fmt.Errorf("opaque directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := unix.Fsetxattr(int(d.Fd()), overlayOpaque, []byte("y"), 0); err != nil {
		return fmt.Errorf("opaque directory %s: %w", dir, err)
	}
	return nil
}

// overlayOpaque is the xattr overlayfs reads an opaque directory by.
const overlayOpaque = "trusted.overlay.opaque"

func (x *extractor) symlink(name string, hdr *tar.Header) error {
	if err := x.prepare(name, false); err != nil {
		return err
	}
	// The target is stored as written; os.Root refuses to follow it out of
	// the rootfs, and beneathNonDir keeps later entries from going through it.
	if err := x.root.Symlink(hdr.Linkname, name); err != nil {
		return fmt.Errorf("create symlink %s: %w", name, err)
	}
	x.nonDirs[name] = true
	if err := owned(x.root.Lchown(name, hdr.Uid, hdr.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", name, err)
	}
	return nil
}

func (x *extractor) link(name string, hdr *tar.Header, last bool) error {
	target, err := localName(hdr.Linkname)
	if err != nil || target == "." {
		return fmt.Errorf("hard link %s to %q points outside the rootfs; the image is malformed or hostile", name, hdr.Linkname)
	}
	if p := x.beneathNonDir(target); p != "" {
		slog.Debug("image unpack: skipping hard link through a non-directory", "entry", name, "target", target)
		return nil
	}
	if _, err := x.root.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		if !last {
			x.links = append(x.links, hdr)
		} else {
			slog.Debug("image unpack: skipping hard link to a missing file", "entry", name, "target", target)
		}
		return nil
	}
	if err := x.prepare(name, false); err != nil {
		return err
	}
	if err := x.root.Link(target, name); err != nil {
		return fmt.Errorf("create hard link %s to %s: %w", name, target, err)
	}
	x.nonDirs[name] = true
	return nil
}

// finish sets directory modes and times, deepest first, now that nothing
// more is written into them, and opens the root up for the runtime.
func (x *extractor) finish() error {
	names := make([]string, 0, len(x.dirs))
	for n := range x.dirs {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		di, dj := strings.Count(names[i], "/"), strings.Count(names[j], "/")
		if di != dj {
			return di > dj
		}
		return names[i] < names[j]
	})
	for _, n := range names {
		hdr := x.dirs[n]
		if err := x.root.Chmod(n, mode(hdr)); err != nil {
			return fmt.Errorf("chmod %s: %w", n, err)
		}
		if err := x.root.Chtimes(n, hdr.AccessTime, hdr.ModTime); err != nil {
			return fmt.Errorf("set times of %s: %w", n, err)
		}
	}
	if err := x.root.Chmod(".", 0o755); err != nil {
		return fmt.Errorf("chmod rootfs: %w", err)
	}
	return nil
}

// mode is the permission part of hdr's mode, with setuid, setgid and sticky.
func mode(hdr *tar.Header) os.FileMode {
	return hdr.FileInfo().Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
}

// owned ignores a refused chown when not root, so unprivileged tests and
// rootless use still unpack (with the caller's ownership).
func owned(err error) error {
	if errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0 {
		return nil
	}
	return err
}

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
