package runc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

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

// cgroupBusyWait is how long removeCgroup waits for a cgroup's processes
// to be gone: killed processes take a moment to exit, and the runtime's own
// removal gives up after about 300 ms.
const cgroupBusyWait = time.Second

// removeCgroup removes the cgroup at rel, a path below each hierarchy's
// root as config.json gives it, from every hierarchy. The runtime does
// this itself on delete, but when processes are still in the cgroup then it
// gives up and forgets the container all the same, and nothing would ever
// remove the directories. Only rmdir is used: processes still there are
// reported, not killed, as they outlived the runtime's kill and may not be
// the workload's at all.
func removeCgroup(rel string) error {
	mounts, err := cgroupMounts("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("list cgroup mounts to remove cgroup %s: %w", rel, err)
	}
	// One wait for all hierarchies: the same processes keep each busy.
	deadline := time.Now().Add(cgroupBusyWait)
	var errs []error
	for _, m := range mounts {
		if err := rmdirCgroup(filepath.Join(m.point, rel), deadline); err != nil {
			errs = append(errs, err)
		}
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return fmt.Errorf("%w (%d other cgroup hierarchies failed too)", errs[0], len(errs)-1)
}

// rmdirCgroup removes one cgroup directory, waiting until deadline while
// it is busy. One that is not there is not an error.
func rmdirCgroup(dir string, deadline time.Time) error {
	for delay := 10 * time.Millisecond; ; delay *= 2 {
		err := unix.Rmdir(dir)
		switch {
		case err == nil || errors.Is(err, unix.ENOENT):
			return nil
		case !errors.Is(err, unix.EBUSY):
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		case time.Now().After(deadline):
			return busyCgroupError(dir)
		}
		time.Sleep(delay)
	}
}

// busyCgroupError says what keeps cgroup dir busy and what to do about it.
func busyCgroupError(dir string) error {
	data, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if pids := strings.Fields(string(data)); len(pids) > 0 {
		return fmt.Errorf("cgroup %s still holds processes %s, left running: see what they are (ps -o pid,args -p %s), stop them, then delete the workload again",
			dir, strings.Join(pids, " "), strings.Join(pids, ","))
	}
	return fmt.Errorf("cgroup %s is busy though it holds no processes (a child cgroup?): remove what is in it, then delete the workload again", dir)
}

// RemoveCgroupParent removes a node's cgroup parent, as given in
// Options.CgroupParent, from every hierarchy where no workload's cgroup is
// left in it. A daemon calls it when it shuts down cleanly, once it creates
// no more workloads: workloads that keep running across the restart keep
// the parent busy and it stays, and a node with none leaves nothing behind.
// The parent of several nodes ("/hypercore" for /hypercore/<node>) must not
// be given, as another node may be creating a workload in it.
func RemoveCgroupParent(parent string) error {
	parent = path.Clean("/" + parent)
	if parent == "/" {
		return nil
	}
	mounts, err := cgroupMounts("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("list cgroup mounts to remove cgroup %s: %w", parent, err)
	}
	var errs []error
	for _, m := range mounts {
		err := unix.Rmdir(filepath.Join(m.point, parent))
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", filepath.Join(m.point, parent), err))
		}
	}
	return errors.Join(errs...)
}
