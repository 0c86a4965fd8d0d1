package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/mountutil"
)

func (s *Store) layerPath(digest v1.Hash) string {
	return filepath.Join(s.dir, "layers", digest.Hex)
}

// emptyDir is an empty directory under the one layer of a single-layer
// image: overlayfs with no upper dir wants at least two lower dirs.
func (s *Store) emptyDir() string { return filepath.Join(s.dir, "empty") }

// maxMountData is what mount(2) takes as its options: one page, with room
// for the other options.
const maxMountData = 4000

// mountRootfs mounts the read-only overlay of layers (bottom first, as in
// the manifest) at rootfs/<digest hex>, unless something is mounted there.
// Its lower dirs are the layers' trees, top first. Many layers make an
// option string longer than mount(2) takes; those are given one by one
// through the new mount API's lowerdir+ (Linux 6.8 and later), as are
// paths with characters the option string cannot carry.
func (s *Store) mountRootfs(digest v1.Hash, layers []string) error {
	target := s.rootfsPath(digest)
	if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("make rootfs mount point: %w", err)
	}
	if mounted, err := mountutil.IsMountpoint(target); err != nil || mounted {
		return err
	}
	if len(layers) == 0 {
		return errors.New("the image has no layers")
	}
	lowers := make([]string, 0, len(layers)+1)
	for i := len(layers) - 1; i >= 0; i-- {
		h, err := v1.NewHash(layers[i])
		if err != nil {
			return fmt.Errorf("layer %q: %w", layers[i], err)
		}
		lowers = append(lowers, filepath.Join(s.layerPath(h), "fs"))
	}
	if len(lowers) == 1 {
		lowers = append(lowers, s.emptyDir())
	}
	for _, l := range lowers {
		if _, err := os.Stat(l); err != nil {
			return fmt.Errorf("layer %s is missing (%w); pull the image again", l, ErrNotFound)
		}
	}
	opts := "lowerdir=" + strings.Join(lowers, ":")
	// The kernel splits the option string on ',' and lowerdir on ':'; the
	// new mount API takes each path whole.
	if len(opts) <= maxMountData && !strings.ContainsAny(strings.Join(lowers, ""), ",:\\") {
		if err := unix.Mount("overlay", target, "overlay", unix.MS_RDONLY, opts); err != nil {
			return fmt.Errorf("mount the image's %d layers at %s: %w", len(layers), target, err)
		}
		return nil
	}
	if err := mountMany(target, lowers); err != nil {
		return fmt.Errorf("mount the image's %d layers at %s (more than mount(2) takes in one string; the new mount API needs Linux 6.8 or later): %w", len(layers), target, err)
	}
	return nil
}

// mountMany mounts a read-only overlay of lowers (top first) at target,
// handing each lower dir over on its own.
func mountMany(target string, lowers []string) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fsfd)
	for _, l := range lowers {
		if err := unix.FsconfigSetString(fsfd, "lowerdir+", l); err != nil {
			return fmt.Errorf("lowerdir+ %s: %w", l, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// ensureRootfs mounts rec's rootfs again if it is not, as after a reboot.
// A store from before layers were shared holds a flattened tree there
// instead, which is used as it is.
func (s *Store) ensureRootfs(rec record) error {
	h, err := v1.NewHash(rec.Digest)
	if err != nil {
		return err
	}
	target := s.rootfsPath(h)
	if mounted, err := mountutil.IsMountpoint(target); err != nil || mounted {
		return err
	}
	if entries, err := os.ReadDir(target); err == nil && len(entries) > 0 {
		return nil // a flattened tree
	}
	unlock, err := s.locks.lock(context.Background(), "mount:"+rec.Digest)
	if err != nil {
		return err
	}
	defer unlock()
	return s.mountRootfs(h, rec.layers())
}

// layers are the digests of rec's layers, bottom first.
func (rec record) layers() []string {
	if len(rec.Blobs) < 2 {
		return nil
	}
	return rec.Blobs[2:]
}

// hasLayer reports whether layer digest is unpacked.
func (s *Store) hasLayer(digest v1.Hash) bool {
	_, err := os.Stat(filepath.Join(s.layerPath(digest), "size"))
	return err == nil
}
