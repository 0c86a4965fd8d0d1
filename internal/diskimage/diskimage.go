// Package diskimage makes fixed-size ext4 filesystems in plain files and
// mounts them through loop devices. A directory on such a filesystem cannot
// grow past the file's size whatever the host filesystem is: a writer that
// reaches the end gets ENOSPC from the kernel, and nothing else on the host
// runs short. Workloads' writable layers use it as their disk limit.
//
// The file is sparse, so it takes on the host only what was written to it,
// up to its size. The loop device is set to detach itself when the last
// mount of it goes (autoclear), so Unmount is all the cleanup there is and a
// crash leaves no loop device behind once its mount is gone.
package diskimage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/mountutil"
)

// MinSizeMiB is the smallest filesystem Create makes: below it, ext4's own
// metadata (journal, inode tables) leaves little room for files.
const MinSizeMiB = 8

// Create makes a sparse file of sizeMiB MiB at path, formatted as ext4 with
// no blocks reserved for root (a workload's root would get them anyway).
// An existing file at path is replaced.
func Create(ctx context.Context, path string, sizeMiB int64) error {
	if sizeMiB < MinSizeMiB {
		return fmt.Errorf("disk image %s: %d MiB is below the least of %d MiB", path, sizeMiB, MinSizeMiB)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	err = f.Truncate(sizeMiB << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("size disk image %s: %w", path, err)
	}
	// Lazy init leaves inode tables and journal unzeroed, so mkfs writes
	// a few MiB instead of the whole metadata area and the file stays sparse.
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		os.Remove(path)
		return fmt.Errorf("mkfs.ext4 %s (is e2fsprogs installed?): %w: %s", path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// Mount attaches image to a free loop device and mounts it as ext4 at dir,
// without device nodes honoured. A filesystem already mounted at dir is
// left as it is, so Mount can redo a setup half done before a crash.
func Mount(image, dir string) error { return MountFlags(image, dir, 0) }

// MountFlags is Mount with the mount flags in extra added, such as
// unix.MS_NOSUID for a filesystem that workloads share.
func MountFlags(image, dir string, extra uintptr) error {
	if mounted, err := mountutil.IsMountpoint(dir); err != nil || mounted {
		return err
	}
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open disk image: %w", err)
	}
	defer f.Close()
	// A filesystem of the image may still be alive, lazily unmounted but
	// held by a process or mount namespace on its way out. A second loop
	// device on the file would be a second ext4 on the same blocks, which
	// corrupts both; mounting the first device again shares its filesystem.
	loop, err := findLoop(f)
	if err == nil && loop == nil {
		loop, err = attach(f)
	}
	if err != nil {
		return fmt.Errorf("attach %s to a loop device: %w", image, err)
	}
	// With autoclear set, closing our handle after the mount leaves the
	// mount as the device's only user; if the mount fails, the close
	// detaches it.
	defer loop.Close()
	// noinit_itable: the kernel would otherwise zero the inode tables
	// mkfs left for later, allocating blocks of a file whose holes read
	// as zeros anyway.
	if err := unix.Mount(loop.Name(), dir, "ext4", unix.MS_NODEV|unix.MS_NOATIME|extra, "noinit_itable"); err != nil {
		return fmt.Errorf("mount %s (on %s) at %s: %w", image, loop.Name(), dir, err)
	}
	return nil
}

// attach binds f to a free loop device, set to detach itself on last
// close. Another process may take the device the kernel calls free before
// we configure it; that shows as EBUSY, and we ask again.
func attach(f *os.File) (*os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	for range 32 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		loop, err := os.OpenFile("/dev/loop"+strconv.Itoa(n), os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		err = unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
		if err == nil {
			return loop, nil
		}
		loop.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("configure %s: %w", loop.Name(), err)
		}
	}
	return nil, errors.New("every free loop device was taken by someone else first; try again")
}

// findLoop returns, open, the loop device backed by f, or nil if there is
// none. Holding it open keeps it from detaching itself meanwhile.
func findLoop(f *os.File) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	bound, err := boundLoops(st.Size / 1024)
	if err != nil {
		return nil, err
	}
	for _, name := range bound {
		loop, err := os.OpenFile("/dev/"+name, os.O_RDWR, 0)
		if err != nil {
			continue // gone since the listing
		}
		info, err := unix.IoctlLoopGetStatus64(int(loop.Fd()))
		if err == nil && info.Device == st.Dev && info.Inode == st.Ino {
			return loop, nil
		}
		loop.Close()
	}
	return nil, nil
}

// boundLoops names the loop devices of the given size in KiB that have a
// backing file. /proc/partitions lists a loop device only while it has a
// size, so one read finds them, where a look at each loop device in sysfs
// costs a lookup for every device the kernel has made, bound or not (about
// 10 ms with 300 of them), and a node makes one per workload.
func boundLoops(kib int64) ([]string, error) {
	b, err := os.ReadFile("/proc/partitions")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "7" || !strings.HasPrefix(f[3], "loop") || strings.Contains(f[3][4:], "p") {
			continue // 7 is the loop devices' major number; loopNpM is a partition
		}
		if n, err := strconv.ParseInt(f[2], 10, 64); err == nil && n == kib {
			names = append(names, f[3])
		}
	}
	return names, nil
}

// Unmount lazily unmounts what is mounted at dir; the loop device detaches
// itself once the filesystem is no longer in use. A dir with nothing
// mounted, or no dir, is fine.
func Unmount(dir string) error {
	return unmount(dir, unix.MNT_DETACH)
}

// UnmountIdle unmounts what is mounted at dir only if nothing uses it: with
// a process or another mount namespace still in the filesystem it fails
// (EBUSY) and the filesystem stays mounted. After it returns nil the image
// has no writer left, so it can be handed to another (a microVM's disk).
// A dir with nothing mounted, or no dir, is fine.
func UnmountIdle(dir string) error {
	return unmount(dir, 0)
}

func unmount(dir string, flags int) error {
	mounted, err := mountutil.IsMountpoint(dir)
	if err != nil || !mounted {
		return err
	}
	if err := unix.Unmount(dir, flags); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}
