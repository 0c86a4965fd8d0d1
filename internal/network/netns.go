package network

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// prepareNetNSDir makes dir a mount point with shared propagation of its
// own, as `ip netns` does for /run/netns. Mount namespaces made later (by a
// container runtime, say) then hold peers of our namespace mounts, so an
// unmount here reaches them too instead of leaving a copy that keeps a
// released namespace, and its veth, alive.
func prepareNetNSDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create netns dir %s: %w", dir, err)
	}
	err := unix.Mount("", dir, "", unix.MS_SHARED, "")
	if err == nil {
		return nil // a mount point already, from an earlier run
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	// EINVAL: dir is not a mount point yet. Bind it onto itself, then
	// leave the parent's peer group before sharing: otherwise every netns
	// mount would also be copied under the parent mount, hidden beneath
	// this one, where no unmount of ours could reach it.
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount netns dir %s onto itself: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s a private mount: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	return nil
}

// netnsMounted reports whether path holds a namespace bind mount. A plain
// file there is what a crash between creating and mounting leaves behind.
func netnsMounted(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat netns %s: %w", path, err)
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

// ensureNetNS makes sure a network namespace is bind-mounted at path: the
// one at from when from is set, else the one there or a new one.
func ensureNetNS(path, from string) error {
	if from != "" {
		return bindNetNS(path, from)
	}
	if ok, err := netnsMounted(path); err != nil || ok {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("create netns mount point %s: %w", path, err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked on purpose: when a goroutine
		// exits locked, Go throws its thread away, so the new namespace
		// can never leak to other goroutines, whatever happens here.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mount new netns onto %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// removeNetNS unmounts and deletes the namespace file at path. Nothing being
// there is success, so that Release can be repeated.
func removeNetNS(path string) error {
	// Loop because a repeated repair could, in theory, have stacked mounts.
	for i := 0; i < 8; i++ {
		ok, err := netnsMounted(path)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		// Detach rather than fail when a process still has it open:
		// the namespace then dies with its last user.
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount netns %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns file %s: %w", path, err)
	}
	return nil
}

// bindNetNS makes path name the same namespace as from, replacing whatever
// path named before.
func bindNetNS(path, from string) error {
	var want, got unix.Stat_t
	if err := unix.Stat(from, &want); err != nil {
		return fmt.Errorf("open workload netns %s: %w", from, err)
	}
	if ok, err := netnsMounted(path); err != nil {
		return err
	} else if ok {
		if err := unix.Stat(path, &got); err == nil && got.Dev == want.Dev && got.Ino == want.Ino {
			return nil
		}
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount stale netns %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("create netns mount point %s: %w", path, err)
	}
	f.Close()
	if err := unix.Mount(from, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount netns %s onto %s: %w", from, path, err)
	}
	return nil
}
