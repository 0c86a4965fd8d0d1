package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/diskimage"
	"github.com/hypercore-dev/hypercore/internal/mountutil"
)

// mountOverlay mounts the image rootfs read-only under the workload's own
// upper dir at p.rootfs, unless something is mounted there already. All
// writes of the workload land in upper/, so the shared image stays intact.
func mountOverlay(lower string, p paths) error {
	mounted, err := mountutil.IsMountpoint(p.rootfs)
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

// mkdirs creates the workload dir and the overlay dirs. With diskMiB above
// zero, upper/ and work/ live on an ext4 image of that size mounted at
// p.disk, so the workload's writes stop with ENOSPC at its limit instead of
// filling the host's disk; overlayfs reports the upper filesystem's size to
// statfs, so df inside shows the limit. An image made by an earlier setup
// is kept: it holds the workload's writes.
//
// spare, if not nil, hands out ready-made images of its size.
func mkdirs(p paths, diskMiB int64, spare *diskimage.Spare) error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("create workload dir: %w", err)
	}
	if err := os.Mkdir(p.disk, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create workload dir: %w", err)
	}
	if diskMiB > 0 {
		if err := makeDisk(p, diskMiB, spare); err != nil {
			return err
		}
	}
	for _, d := range []string{p.upper, p.work, p.rootfs} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create workload dir: %w", err)
		}
	}
	return nil
}

// makeDisk makes the workload's disk image unless it exists, and mounts it.
// The image is made under a temporary name and renamed, so an image at
// p.diskImage is always a whole filesystem.
func makeDisk(p paths, diskMiB int64, spare *diskimage.Spare) error {
	if _, err := os.Stat(p.diskImage); errors.Is(err, os.ErrNotExist) {
		tmp := p.diskImage + ".tmp"
		create := diskimage.Create
		if spare != nil {
			create = spare.Take
		}
		if err := create(context.Background(), tmp, diskMiB); err != nil {
			return fmt.Errorf("make the workload's %d MiB disk: %w", diskMiB, err)
		}
		if err := os.Rename(tmp, p.diskImage); err != nil {
			return fmt.Errorf("make the workload's disk: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("workload disk: %w", err)
	}
	if err := diskimage.Mount(p.diskImage, p.disk); err != nil {
		return fmt.Errorf("mount the workload's disk: %w", err)
	}
	return nil
}

// mountDisk mounts the workload's disk image again if it has one, as after
// a reboot.
func mountDisk(p paths) error {
	if _, err := os.Stat(p.diskImage); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := diskimage.Mount(p.diskImage, p.disk); err != nil {
		return fmt.Errorf("mount the workload's disk: %w", err)
	}
	return nil
}

// unmountDisk unmounts the workload's disk image, if mounted, and makes
// sure nothing is left mounted at p.disk before the dir is removed.
func unmountDisk(p paths) error {
	if err := diskimage.Unmount(p.disk); err != nil {
		return err
	}
	if mounted, err := mountutil.IsMountpoint(p.disk); err != nil || mounted {
		return fmt.Errorf("workload disk %s is still mounted (%v); unmount it by hand", p.disk, err)
	}
	return nil
}
