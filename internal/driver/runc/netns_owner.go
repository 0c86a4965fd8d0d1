package runc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/mountutil"
)

// ownNetNS gives a workload with a private user namespace a network
// namespace that user namespace owns. The node makes the workload's netns
// (and the driver its own, without a node) in the host's user namespace,
// and a process in the workload's user namespace may not join one it does
// not own: runc 1.1 (Debian 12's) joins the user namespace first and so fails to
// exec into the workload, and root inside could not mount /sys or set its
// own net sysctls.
//
// So the driver makes the user namespace and, inside it, a new network
// namespace; pins the user namespace at usernsPath, where the runtime
// joins it; moves the interfaces of the netns at netnsPath, with their
// addresses and routes, into the new one; and mounts the new one over
// netnsPath in place of the old one, so everything that opens that path
// (the node's repairs and Release, the runtime) finds it.
//
// When the namespace at netnsPath is already owned by the one pinned at
// usernsPath, nothing is done.
func ownNetNS(netnsPath, usernsPath string, host uint32) error {
	if owned, err := ownedBy(netnsPath, usernsPath); err != nil || owned {
		return err
	}
	// The helper's tracer is this thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("user namespace: open network namespace %s: %w", netnsPath, err)
	}
	defer old.Close()

	proc, err := nsHelper(host, unix.CLONE_NEWUSER|unix.CLONE_NEWNET)
	if err != nil {
		return fmt.Errorf("user namespace: %w", err)
	}
	defer stopHelper(proc)
	if err := mountutil.UnmountAll(usernsPath); err != nil {
		return err
	}
	if err := bindNS(fmt.Sprintf("/proc/%d/ns/user", proc.Pid), usernsPath); err != nil {
		return err
	}
	newNS, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", proc.Pid))
	if err != nil {
		return fmt.Errorf("user namespace: open new network namespace: %w", err)
	}
	defer newNS.Close()
	if err := moveLinks(old, newNS); err != nil {
		return fmt.Errorf("user namespace: move the interfaces of %s: %w", netnsPath, err)
	}
	// The old namespace, now empty, goes: left beneath the new mount it
	// would stay alive, and every container made later would copy one
	// more mount per workload. A crash before the new one is bound
	// leaves netnsPath a plain file, which the node's Attach, run before
	// this on every setup, replaces with a fresh namespace.
	if err := mountutil.UnmountAll(netnsPath); err != nil {
		return err
	}
	return bindNS(fmt.Sprintf("/proc/%d/ns/net", proc.Pid), netnsPath)
}

// ownedBy reports whether the network namespace at netnsPath belongs to
// the user namespace pinned at usernsPath.
func ownedBy(netnsPath, usernsPath string) (bool, error) {
	var pinned unix.Stat_t
	if err := unix.Stat(usernsPath, &pinned); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat %s: %w", usernsPath, err)
	}
	f, err := os.Open(netnsPath)
	if err != nil {
		return false, fmt.Errorf("open network namespace %s: %w", netnsPath, err)
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		return false, fmt.Errorf("owner of network namespace %s: %w", netnsPath, err)
	}
	defer unix.Close(fd)
	var owner unix.Stat_t
	if err := unix.Fstat(fd, &owner); err != nil {
		return false, err
	}
	return owner.Dev == pinned.Dev && owner.Ino == pinned.Ino, nil
}

// bindNS bind-mounts the namespace file src at dst, on top of anything
// mounted there.
func bindNS(src, dst string) error {
	f, err := os.OpenFile(dst, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("create namespace mount point %s: %w", dst, err)
	}
	f.Close()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount namespace at %s: %w", dst, err)
	}
	return nil
}

// moveLinks moves every interface but lo from one network namespace to
// another and sets it up there as it was: up, with its addresses and
// routes, which the kernel drops on the move. lo is brought up in to.
func moveLinks(from, to netns.NsHandle) error {
	src, err := netlink.NewHandleAt(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := netlink.NewHandleAt(to)
	if err != nil {
		return err
	}
	defer dst.Close()
	lo, err := dst.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := dst.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	links, err := src.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		if err := moveLink(src, dst, l, to); err != nil {
			return fmt.Errorf("%s: %w", l.Attrs().Name, err)
		}
	}
	return nil
}

func moveLink(src, dst *netlink.Handle, l netlink.Link, to netns.NsHandle) error {
	addrs, err := src.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	routes, err := src.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	up := l.Attrs().Flags&net.FlagUp != 0
	if err := src.LinkSetNsFd(l, int(to)); err != nil {
		return err
	}
	moved, err := dst.LinkByName(l.Attrs().Name)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue // the kernel makes these itself
		}
		a.Label = ""
		if err := dst.AddrReplace(moved, &a); err != nil {
			return fmt.Errorf("address %s: %w", a.IPNet, err)
		}
	}
	if up {
		if err := dst.LinkSetUp(moved); err != nil {
			return err
		}
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL {
			continue // made again with the address
		}
		r.LinkIndex = moved.Attrs().Index
		if err := dst.RouteReplace(&r); err != nil {
			return fmt.Errorf("route %s: %w", r, err)
		}
	}
	return nil
}

// nsHelper starts a process in new namespaces (flags, with CLONE_NEWUSER
// mapping ids 0-65535 to host ids from host on) that runs nothing: it is
// ptrace-stopped at its execve of our own binary. Namespaces live only as
// long as a process or a mount holds them; the caller opens or mounts them
// from /proc/<pid>/ns and then calls stopHelper. It must run with its
// goroutine locked to its thread (the tracer), until stopHelper.
func nsHelper(host uint32, flags uintptr) (*os.Process, error) {
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(host), Size: idRangeSize}}
	proc, err := os.StartProcess("/proc/self/exe", []string{"hypercore-ns-holder"}, &os.ProcAttr{
		Sys: &syscall.SysProcAttr{
			Cloneflags:  flags,
			UidMappings: m,
			GidMappings: m,
			// Else Go writes "deny" to its setgroups file, and no
			// process in the namespace could ever set its groups.
			GidMappingsEnableSetgroups: true,
			Ptrace:                     true,
			Pdeathsig:                  syscall.SIGKILL,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("start a process in a new user namespace (%w); check that the kernel allows user namespaces (sysctl user.max_user_namespaces), or spawn with --security-opt userns=host", err)
	}
	return proc, nil
}

func stopHelper(proc *os.Process) {
	_ = proc.Kill()
	_, _ = proc.Wait()
}
