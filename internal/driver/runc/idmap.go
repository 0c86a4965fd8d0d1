package runc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// idmapBind mounts src read-only at dst with its ids shifted by host: a
// file of uid 0 in src is uid host at dst, uid 1000 is host+1000. This is
// how a workload with a private user namespace sees the shared image rootfs
// as owned by its own root, without a copy (Linux 5.12+, and overlayfs
// takes such a mount as lower layer from 5.19).
func idmapBind(src, dst string, host uint32) error {
	userns, err := usernsFile(host)
	if err != nil {
		return err
	}
	defer userns.Close()
	if err := os.Mkdir(dst, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("%w: open_tree %s: %v", errNoIDMap, src, err)
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("%w: idmap %s: %v", errNoIDMap, src, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount idmapped %s at %s: %w", src, dst, err)
	}
	return nil
}

// usernsFile returns a user namespace that maps ids 0-65535 to host ids
// from host on, held by an open file.
func usernsFile(host uint32) (*os.File, error) {
	// ptrace makes this thread the helper's tracer, and only the tracer
	// may wait for it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	proc, err := nsHelper(host, unix.CLONE_NEWUSER)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoIDMap, err)
	}
	defer stopHelper(proc)
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", proc.Pid))
	if err != nil {
		return nil, fmt.Errorf("open user namespace: %w", err)
	}
	return f, nil
}

// shiftedCopy copies the tree src to dst with every owner shifted by host:
// the fallback where the kernel or filesystem cannot idmap a mount. It is
// the one place that makes such a copy, so a cache (per image digest and
// range) can take its place without touching the callers. A copy is
// complete once dst+".done" exists; an incomplete one is made again.
func shiftedCopy(src, dst string, host uint32) error {
	done := dst + ".done"
	if _, err := os.Stat(done); err == nil {
		return nil
	}
	if err := os.RemoveAll(dst); err != nil {
		return fmt.Errorf("remove incomplete copy %s: %w", dst, err)
	}
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		return copyShifted(path, filepath.Join(dst, rel), host)
	})
	if err != nil {
		return fmt.Errorf("copy image rootfs with shifted owners: %w", err)
	}
	return os.WriteFile(done, nil, 0o644)
}

// copyShifted copies one file, dir, symlink or device node, keeping its
// mode and times and shifting its owner.
func copyShifted(src, dst string, host uint32) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return err
	}
	mode := st.Mode & 0o7777
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
	case unix.S_IFREG:
		if err := copyFile(src, dst); err != nil {
			return err
		}
	default:
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
	}
	uid, gid := int(host+st.Uid), int(host+st.Gid)
	if st.Uid >= idRangeSize || st.Gid >= idRangeSize {
		// Outside the range: the workload sees it as nobody.
		uid, gid = -1, -1
	}
	if err := os.Lchown(dst, uid, gid); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil
	}
	// After the chown, which clears setuid and setgid bits.
	if err := unix.Chmod(dst, mode); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
