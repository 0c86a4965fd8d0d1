package runc

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

const cgroupRoot = "/sys/fs/cgroup"

// cgroupLayout says how cgroups are mounted on this host.
type cgroupLayout int

const (
	cgroupV1      cgroupLayout = iota // one hierarchy per controller
	cgroupHybrid                      // v1 controllers plus an empty v2 at unified/
	cgroupUnified                     // v2 only
)

func detectCgroups() cgroupLayout {
	var st unix.Statfs_t
	if unix.Statfs(cgroupRoot, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return cgroupUnified
	}
	if unix.Statfs(filepath.Join(cgroupRoot, "unified"), &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return cgroupHybrid
	}
	return cgroupV1
}

// canLimitSwap reports whether the kernel accounts swap, so memory+swap can
// be limited. On v1 that needs the memsw files (swapaccount=1).
func canLimitSwap() bool {
	if detectCgroups() == cgroupUnified {
		return true
	}
	dir := v1Hierarchy("memory")
	if dir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes"))
	return err == nil
}

// v1Hierarchy returns where the v1 hierarchy holding controller is mounted,
// or "" if none is. Controllers may share a hierarchy (cpu,cpuacct), so the
// mount options are what tells.
func v1Hierarchy(controller string) string {
	mounts, _ := cgroupMounts("/proc/self/mountinfo")
	for _, m := range mounts {
		if m.fstype == "cgroup" && slices.Contains(strings.Split(m.options, ","), controller) {
			return m.point
		}
	}
	return ""
}

// cgroupMount is one cgroup filesystem as mountinfo lists it.
type cgroupMount struct {
	point, fstype, options string
}

// cgroupMounts lists the cgroup filesystems in a mountinfo file.
func cgroupMounts(mountinfo string) ([]cgroupMount, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	s := bufio.NewScanner(f)
	for s.Scan() {
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 3 || (tail[0] != "cgroup" && tail[0] != "cgroup2") {
			continue
		}
		out = append(out, cgroupMount{point: fields[4], fstype: tail[0], options: tail[2]})
	}
	return out, s.Err()
}

// ensureCgroupMounts makes the cgroup filesystems visible when the daemon
// runs in a mount namespace that hid them: `ip netns exec` mounts a fresh
// sysfs on /sys, and runc then finds no cgroups at all. It mounts the same
// hierarchies, at the same places, as PID 1 sees; that changes only this
// mount namespace, since the host already has them.
func ensureCgroupMounts() error {
	mine, err := cgroupMounts("/proc/self/mountinfo")
	if err != nil || len(mine) > 0 {
		return err
	}
	host, err := cgroupMounts("/proc/1/mountinfo")
	if err != nil {
		return fmt.Errorf("no cgroup filesystem is mounted and PID 1's mounts cannot be read (%v); mount cgroups on %s", err, cgroupRoot)
	}
	if len(host) == 0 {
		return fmt.Errorf("no cgroup filesystem is mounted on this host; mount cgroups on %s (systemd does this at boot)", cgroupRoot)
	}
	var st unix.Statfs_t
	if unix.Statfs(cgroupRoot, &st) == nil && st.Type != unix.CGROUP2_SUPER_MAGIC && host[0].point != cgroupRoot {
		if err := unix.Mount("tmpfs", cgroupRoot, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s to hold cgroup hierarchies: %w", cgroupRoot, err)
		}
	}
	for _, m := range host {
		if err := os.MkdirAll(m.point, 0o755); err != nil {
			return fmt.Errorf("create cgroup mount point %s: %w", m.point, err)
		}
		opts := strings.Join(slices.DeleteFunc(strings.Split(m.options, ","), func(o string) bool { return o == "rw" || o == "ro" }), ",")
		if err := unix.Mount(m.fstype, m.point, m.fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
			return fmt.Errorf("mount %s (%s) on %s: %w", m.fstype, opts, m.point, err)
		}
	}
	return nil
}
