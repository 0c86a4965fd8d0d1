// Package mountutil holds the mount-point checks and unmounts that the
// image store, the container driver and the disk images share, so there is
// one definition of "something is mounted here" and one of "take it all
// down" on the host.
package mountutil

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maxStacked bounds UnmountAll: mounts stacked deeper than this at one
// path are not something this program makes, so it stops and says so.
const maxStacked = 16

// IsMountpoint reports whether a filesystem other than its parent's is
// mounted at path; a missing path is not. That holds for overlays, loop
// mounted images and namespace bind mounts (nsfs), the kinds hypercore
// makes; a bind mount of a directory onto another of the same filesystem
// is not seen.
func IsMountpoint(path string) (bool, error) {
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

// UnmountAll lazily unmounts everything stacked at path: whoever still
// uses a mount (a workload's overlay stacked on an image's rootfs, a
// process inside) keeps its view until it goes. A path that is not a mount
// point, or does not exist, is fine.
func UnmountAll(path string) error {
	for range maxStacked {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after %d unmounts", path, maxStacked)
}
