package runc

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/mountutil"
)

// ensureNetNS makes a new network namespace with its loopback up and
// bind-mounts it at path, unless one is mounted there already. The runtime
// would leave loopback down in a namespace it makes itself, and a workload
// expects to reach its own 127.0.0.1.
func ensureNetNS(path string) error {
	mounted, err := mountutil.IsMountpoint(path)
	if err != nil || mounted {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("create netns mount point: %w", err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		// The thread enters the new namespace; it is only handed back to
		// the Go scheduler once it is back in the original one. If that
		// fails the goroutine exits still locked, and the thread dies.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		err = loopbackUp()
		if err == nil {
			if err = unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
				err = fmt.Errorf("bind-mount netns at %s: %w", path, err)
			}
		}
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("return to the original netns: %w", serr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		_ = mountutil.UnmountAll(path)
		_ = os.Remove(path)
		return err
	}
	return nil
}

// loopbackUp sets the calling thread's netns's lo interface up.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// removeNetNS unmounts and removes a netns made by ensureNetNS; the
// namespace goes away once no process is in it.
func removeNetNS(path string) error {
	if err := mountutil.UnmountAll(path); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns mount point: %w", err)
	}
	return nil
}
