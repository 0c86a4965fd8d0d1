package runc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/mountutil"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// sandbox is what a workload gets beyond namespaces and cgroups: Docker's
// default seccomp filter and a private user namespace, unless its spec's
// security settings opt out. runsc gets neither from the driver: gVisor
// filters the system calls of its own kernel and maps users itself.
type sandbox struct {
	seccomp bool
	// hostRoot is the host uid (and gid) of root in the workload's user
	// namespace, the first of its range; 0 means no user namespace (the
	// ranges never start at 0).
	hostRoot uint32
}

// sandboxFor decides cfg's sandbox. A workload that already has a bundle
// (Recover of a stopped one) keeps the user namespace, and the host id
// range, it was created with: its upper dir holds files owned by those ids.
// A bundle made before user namespaces existed keeps none.
func (d *Driver) sandboxFor(cfg driver.Config, p paths) (sandbox, error) {
	if d.name == "runsc" {
		return sandbox{}, nil
	}
	sec := cfg.Spec.Security
	sb := sandbox{seccomp: sec.Seccomp != spec.SeccompUnconfined}
	if sec.UserNS == spec.UserNSHost || d.opts.Rootless {
		// Rootless, the host id ranges for workloads are not mapped:
		// the workload shares the daemon's user namespace.
		return sb, nil
	}
	if old, err := readSpec(p.config); err == nil {
		host, ok := hostRoot(old)
		if !ok {
			return sb, nil
		}
		sb.hostRoot = host
		return sb, d.ids.claim(d.opts.StateDir, cfg.ID, host)
	}
	host, err := d.ids.get(d.opts.StateDir, cfg.ID)
	if err != nil {
		return sandbox{}, err
	}
	sb.hostRoot = host
	return sb, nil
}

// sandboxOf is the sandbox a bundle was made with.
func sandboxOf(s *specs.Spec) sandbox {
	host, _ := hostRoot(s)
	return sandbox{seccomp: s.Linux != nil && s.Linux.Seccomp != nil, hostRoot: host}
}

// pingGroupRange is the sysctl of the groups that may open ping sockets.
const pingGroupRange = "net.ipv4.ping_group_range"

// Files of a workload with a user namespace, next to those of paths.
func shiftedLowerDir(p paths) string { return filepath.Join(p.dir, "lower") }
func usernsPath(p paths) string      { return filepath.Join(p.dir, "userns") }

// mountRootfs mounts the workload's rootfs over the image rootfs lower.
// With a user namespace the image is seen through an idmapped mount, or,
// where the kernel cannot make one, through a copy with shifted owners,
// and the upper dir is owned by the workload's root: what root writes in
// the workload is owned by its host uid.
func (d *Driver) mountRootfs(lower string, p paths, sb sandbox) error {
	if sb.hostRoot == 0 {
		return mountOverlay(lower, p)
	}
	if mounted, err := mountutil.IsMountpoint(p.rootfs); err != nil || mounted {
		return err
	}
	// The runtime reaches the rootfs and the bind-mounted /etc files as
	// the workload's root, so the dirs above the workload's dir must let
	// it pass, and that dir lets it, by group, and no other host user in.
	// The dir stays host root's: a process that escaped the workload, as
	// its root's host uid, must not be able to replace config.json.
	if err := searchableByAll(filepath.Dir(p.dir)); err != nil {
		return err
	}
	host := int(sb.hostRoot)
	if err := os.Chown(p.dir, 0, host); err != nil {
		return fmt.Errorf("user namespace: chgrp %s: %w", p.dir, err)
	}
	if err := os.Chmod(p.dir, 0o710); err != nil {
		return fmt.Errorf("user namespace: chmod %s: %w", p.dir, err)
	}
	if err := os.Chown(p.upper, host, host); err != nil {
		return fmt.Errorf("user namespace: chown upper dir: %w", err)
	}
	if err := logWritableBy(p.log, host); err != nil {
		return err
	}
	shifted := shiftedLowerDir(p)
	if _, err := os.Stat(shifted + ".done"); err != nil && !d.noIDMap.Load() {
		err := mountIdmapped(lower, shifted, p, sb.hostRoot)
		if err == nil || !errors.Is(err, errNoIDMap) {
			return err
		}
		d.noIDMap.Store(true)
	}
	if err := shiftedCopy(lower, shifted, sb.hostRoot); err != nil {
		return fmt.Errorf("user namespace: %w", err)
	}
	return mountOverlay(shifted, p)
}

// mountIdmapped mounts the overlay on an idmapped mount of lower, unless
// one is mounted already. An error wrapping errNoIDMap means this kernel
// or filesystem cannot: the caller falls back to a copy.
func mountIdmapped(lower, shifted string, p paths, host uint32) error {
	mounted, err := isBindMounted(shifted)
	if err != nil {
		return err
	}
	if !mounted {
		if err := idmapBind(lower, shifted, host); err != nil {
			return err
		}
	}
	if err := mountOverlay(shifted, p); err != nil {
		_ = mountutil.UnmountAll(shifted)
		if errors.Is(err, unix.EINVAL) {
			// overlayfs before Linux 5.19 refuses idmapped layers.
			return fmt.Errorf("%w: %v", errNoIDMap, err)
		}
		return err
	}
	return nil
}

// apply writes sb into the workload's OCI spec. With a user namespace, the
// runtime joins the one ownNetNS pinned, with the network namespace at
// netns, which it owns, so that root inside may mount /sys and set its net
// sysctls, and an exec may join it.
func (sb sandbox) apply(s *specs.Spec, p paths, netns string) error {
	if sb.seccomp {
		profile, err := seccompProfile(s)
		if err != nil {
			return err
		}
		s.Linux.Seccomp = profile
	}
	if sb.hostRoot == 0 {
		return nil
	}
	if err := ownNetNS(netns, usernsPath(p), sb.hostRoot); err != nil {
		return err
	}
	ids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: sb.hostRoot, Size: idRangeSize}}
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: usernsPath(p)})
	s.Linux.UIDMappings, s.Linux.GIDMappings = ids, ids
	if _, ok := s.Linux.Sysctl[pingGroupRange]; ok {
		// Written from inside, it may only name groups mapped there.
		s.Linux.Sysctl[pingGroupRange] = fmt.Sprintf("0 %d", idRangeSize-1)
	}
	return nil
}

// unprivileged drops from s what a daemon without the host's root cannot
// set up: the workload's cgroup (runc's rootless cgroup manager then
// creates none, and fails only for limits it was asked to set) and its
// limits, and ping_group_range beyond the mapped group ids. The device
// rules stay: in a user namespace runc applies none, and mknod is denied
// there anyway.
func (d *Driver) unprivileged(s *specs.Spec) {
	s.Linux.CgroupsPath = ""
	if r := s.Linux.Resources; r != nil {
		s.Linux.Resources = &specs.LinuxResources{Devices: r.Devices}
	}
	if _, ok := s.Linux.Sysctl[pingGroupRange]; ok {
		if d.opts.MappedGIDs > 0 {
			s.Linux.Sysctl[pingGroupRange] = fmt.Sprintf("0 %d", min(d.opts.MappedGIDs, 1<<31)-1)
		} else {
			delete(s.Linux.Sysctl, pingGroupRange)
		}
	}
}

// remountSandbox redoes, for a bundle made with a user namespace, what a
// reboot or a new network namespace from the node undid.
func remountSandbox(s *specs.Spec, p paths) error {
	sb := sandboxOf(s)
	if sb.hostRoot == 0 {
		return nil
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ownNetNS(ns.Path, usernsPath(p), sb.hostRoot)
		}
	}
	return errors.New("user namespace: the bundle names no network namespace")
}

// unmountSandbox unmounts the idmapped image and the pinned user namespace
// of a workload before its dir is removed recursively.
func unmountSandbox(p paths) error {
	for _, path := range []string{shiftedLowerDir(p), usernsPath(p)} {
		if err := mountutil.UnmountAll(path); err != nil {
			return err
		}
	}
	return nil
}

// logWritableBy lets the workload's root group write its log, as host root
// could before: a process exec'd into the workload logs by appending to
// /proc/1/fd/1, which opens the file anew. Only the group: the owner stays
// host root, so the workload cannot change the file's mode. Rotation copies
// the log out and truncates it in place, so the live file keeps both.
func logWritableBy(path string, gid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o660)
	if err != nil {
		return fmt.Errorf("create log: %w", err)
	}
	defer f.Close()
	if err := f.Chown(-1, gid); err != nil {
		return fmt.Errorf("user namespace: chgrp log: %w", err)
	}
	if err := f.Chmod(0o660); err != nil {
		return fmt.Errorf("user namespace: chmod log: %w", err)
	}
	return nil
}

// isBindMounted reports whether a mount sits at path, a bind mount of the
// same filesystem included, which mountutil.IsMountpoint cannot tell by device
// number: it compares the mount ids of path and its parent.
func isBindMounted(path string) (bool, error) {
	var st, parent unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW
	if err := unix.Statx(unix.AT_FDCWD, path, flags, unix.STATX_MNT_ID, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := unix.Statx(unix.AT_FDCWD, filepath.Dir(path), flags, unix.STATX_MNT_ID, &parent); err != nil {
		return false, fmt.Errorf("stat %s: %w", filepath.Dir(path), err)
	}
	return st.Mnt_id != parent.Mnt_id, nil
}
