package runc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountOverlay mounts the image rootfs read-only under the workload's own
// upper dir at p.rootfs, unless something is mounted there already. All
// writes of the workload land in upper/, so the shared image stays intact.
func mountOverlay(lower string, p paths) error {
	mounted, err := isMountpoint(p.rootfs)
	if err != nil || mounted {
		return err
	}
	for _, dir := range []string{lower, p.upper, p.work} {
		// The kernel splits overlay options on ',' and lowerdir on ':'.
		if strings.ContainsAny(dir, ",:\\") {
			return fmt.Errorf("mount overlay: path %q contains ',', ':' or '\\', which overlayfs options cannot carry; use a data dir without them", dir)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, p.upper, p.work)
	if err := unix.Mount("overlay", p.rootfs, "overlay", unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount overlay at %s (lower %s): %w; the state dir must be on a filesystem overlayfs accepts as upper dir (ext4, xfs)", p.rootfs, lower, err)
	}
	return nil
}

// unmountAll lazily unmounts everything stacked at path. A path that is not
// a mount point, or does not exist, is fine.
func unmountAll(path string) error {
	for range 16 {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 16 unmounts", path)
}

// isMountpoint reports whether a filesystem other than its parent's is
// mounted at path. That holds for the overlay and for a netns bind mount,
// the only two kinds this driver makes.
func isMountpoint(path string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := unix.Lstat(filepath.Dir(path), &parent); err != nil {
		return false, fmt.Errorf("stat %s: %w", filepath.Dir(path), err)
	}
	return st.Dev != parent.Dev, nil
}

// mkdirs creates the workload dir and the overlay dirs.
func mkdirs(p paths) error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("create workload dir: %w", err)
	}
	for _, d := range []string{p.upper, p.work, p.rootfs} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create workload dir: %w", err)
		}
	}
	return nil
}
