package runc

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// ociVersion is the newest runtime spec runc 1.1 and crun 1.8 understand;
// buildSpec uses no field added after it.
const ociVersion = "1.0.2"

// Annotations in config.json carry what the driver needs to redo host setup
// for a stopped workload without the node's Config (Start after a reboot).
const (
	annLowerDir = "dev.hypercore.lowerdir"
	annOwnNetNS = "dev.hypercore.own-netns"
	annTty      = "dev.hypercore.tty"
)

// Resource settings that are the same for every workload.
const (
	cpuPeriod = 100000 // µs, the kernel default CFS period
	minQuota  = 1000   // µs, the smallest CFS quota the kernel accepts
	pidsLimit = 4096
)

// defaultCaps is Docker's default capability set.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// maskedPaths and readonlyPaths are Docker's defaults: kernel interfaces
// that leak host information or would let a container reconfigure the host.
var (
	maskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// buildSpec turns a workload's Config into the OCI runtime spec of its
// bundle. netnsPath is the network namespace to join; ownNetNS says the
// driver made it. swapLimit says the kernel can limit swap (memsw), so
// memory+swap is set to the memory limit and the workload never swaps.
func buildSpec(cfg driver.Config, p paths, netnsPath string, ownNetNS, swapLimit bool) (*specs.Spec, error) {
	args := driver.ProcessArgs(cfg)
	if len(args) == 0 {
		return nil, errors.New("nothing to run: the image has no entrypoint or cmd and the spec gives no args")
	}
	user, err := driver.ResolveUser(cfg.Rootfs, cfg.ImageConfig.User)
	if err != nil {
		return nil, err
	}
	hostname := driver.HostnameOf(cfg)
	env := driver.ProcessEnv(cfg, user.Home)
	cwd := cfg.ImageConfig.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return nil, fmt.Errorf("image working dir %q is not an absolute path", cwd)
	}

	s := &specs.Spec{
		Version: ociVersion,
		Process: &specs.Process{
			Args: args,
			Env:  env,
			Cwd:  cwd,
			User: specs.User{UID: user.UID, GID: user.GID, AdditionalGids: user.Groups},
			// Without a terminal the workload's stdio are a log file and
			// a FIFO. With one the runtime makes a pty in the container
			// and hands us the master (see tty.go).
			Terminal:        cfg.Spec.Tty,
			ConsoleSize:     consoleSize(cfg.Spec.Tty),
			Capabilities:    capsFor(user.UID),
			Rlimits:         []specs.POSIXRlimit{nofileLimit()},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: p.rootfs},
		Hostname: hostname,
		Mounts:   append(defaultMounts(p), volumeMounts(cfg)...),
		Annotations: map[string]string{
			annLowerDir: cfg.Rootfs,
			annOwnNetNS: strconv.FormatBool(ownNetNS),
			annTty:      strconv.FormatBool(cfg.Spec.Tty),
			// Stop reads it back: the signal the image asks to stop with.
			driver.StopSignalAnnotation: cfg.ImageConfig.StopSignal,
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: netnsPath},
			},
			// With the cgroupfs driver this is the path below each
			// hierarchy's root: /sys/fs/cgroup/<controller>/hypercore/<id>.
			// The driver puts it under its Options.CgroupParent.
			CgroupsPath: "/hypercore/" + cfg.ID.String(),
			Resources:   resources(cfg, swapLimit),
			Sysctl: map[string]string{
				// As Docker does: a non-root workload may bind low ports
				// and ping without any capability, inside its own netns.
				"net.ipv4.ip_unprivileged_port_start": "0",
				"net.ipv4.ping_group_range":           "0 2147483647",
			},
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
	return s, nil
}

// consoleSize is the size a workload's terminal starts with.
func consoleSize(tty bool) *specs.Box {
	if !tty {
		return nil
	}
	return &specs.Box{Height: defaultRows, Width: defaultCols}
}

// nofileLimit keeps the daemon's hard limit on open files: going above it
// needs CAP_SYS_RESOURCE, which a sandboxed host may deny even to root. The
// soft limit of 1024 keeps select()-based programs safe; programs that need
// more raise it up to the hard limit themselves.
func nofileLimit() specs.POSIXRlimit {
	hard := uint64(1 << 20)
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Max < hard {
		hard = rl.Max
	}
	return specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Soft: min(1024, hard), Hard: hard}
}

// capsFor gives root Docker's default capabilities. Other users only get
// them in the bounding set, so that a non-root process has none unless it
// executes a file with file capabilities.
func capsFor(uid uint32) *specs.LinuxCapabilities {
	c := &specs.LinuxCapabilities{Bounding: defaultCaps}
	if uid == 0 {
		c.Effective, c.Permitted = defaultCaps, defaultCaps
	}
	return c
}

func resources(cfg driver.Config, swapLimit bool) *specs.LinuxResources {
	pids := int64(pidsLimit)
	r := &specs.LinuxResources{
		// Deny every device; the runtime adds the standard ones (null,
		// zero, random, tty, pts...) on top.
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
		Pids:    &specs.LinuxPids{Limit: &pids},
	}
	if cores := cfg.Spec.Cores; cores > 0 {
		quota := max(int64(math.Round(cores*cpuPeriod)), minQuota)
		period := uint64(cpuPeriod)
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if mib := cfg.Spec.MemoryMiB; mib > 0 {
		limit := mib << 20
		r.Memory = &specs.LinuxMemory{Limit: &limit}
		if swapLimit {
			swap := limit
			r.Memory.Swap = &swap
		}
	}
	return r
}

func defaultMounts(p paths) []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		{Destination: "/etc/hosts", Type: "bind", Source: p.hosts, Options: []string{"rbind", "rprivate"}},
		{Destination: "/etc/hostname", Type: "bind", Source: p.hostname, Options: []string{"rbind", "rprivate"}},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: p.resolv, Options: []string{"rbind", "rprivate"}},
	}
}

// cgroupPath is where the runtime puts the workload's cgroup.
func (d *Driver) cgroupPath(id spec.ID) string { return path.Join(d.opts.CgroupParent, id.String()) }

// writeSpec writes config.json atomically, so a crash never leaves a
// bundle the runtime cannot parse.
func writeSpec(path string, s *specs.Spec) error {
	data, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return fmt.Errorf("encode OCI spec: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write OCI spec: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write OCI spec: %w", err)
	}
	return nil
}

// readSpec reads a bundle's config.json back.
func readSpec(path string) (*specs.Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return &s, nil
}
