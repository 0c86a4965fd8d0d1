package guest

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Paths inside the initramfs the node builds (see internal/driver/qemu).
const (
	// ModulesDir holds the kernel modules and ModulesDep.
	ModulesDir = "/lib/modules"
	// ModulesDep lists each module with the modules it needs, in the
	// format of depmod's modules.dep: "a.ko: b.ko c.ko".
	ModulesDep = ModulesDir + "/modules.dep"
	// ProbeArg on the kernel command line makes the agent print
	// ProbeReady on the console and power off: the node's check that a
	// KVM can boot this kernel.
	ProbeArg   = "hypercore.probe"
	ProbeReady = "hypercore: guest agent up"
	// Marker is a file only the node's initramfs has; with PID 1 it
	// tells this binary that it is a VM's init.
	Marker   = "/.hypercore-guest"
	rootDisk = "/dev/vda"
	newRoot  = "/run/root"
)

// IsInit reports whether this process is a VM's init: PID 1 with the
// initramfs's Marker present. A container whose entrypoint happens to be
// hypercore is PID 1 too, but has no such file.
func IsInit() bool {
	if os.Getpid() != 1 {
		return false
	}
	_, err := os.Stat(Marker)
	return err == nil
}

// Init is the guest's PID 1: it sets the VM up, serves the host, and powers
// off when the workload ends. It never returns; a PID 1 that exits panics
// the kernel, which (panic=-1) resets the VM too, so even a failure ends
// the VM rather than leaving it hung.
func Init() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := initVM(log); err != nil {
		log.Error("guest init failed; powering off", "err", err)
	}
	powerOff()
}

func initVM(log *slog.Logger) error {
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"devpts", "/dev/pts", "devpts"}, {"tmpfs", "/run", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fs, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fs, m.dst, err)
		}
	}
	if err := LoadModules(ModulesDep); err != nil {
		return err
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	if slices.Contains(strings.Fields(string(cmdline)), ProbeArg) {
		fmt.Fprintln(os.Stderr, ProbeReady)
		return nil
	}
	ports, err := findPorts(10*time.Second, PortAgent, PortLog, PortStatus)
	if err != nil {
		return err
	}
	stream, err := os.OpenFile(ports[PortAgent], os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open agent port: %w", err)
	}
	output, err := os.OpenFile(ports[PortLog], os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open log port: %w", err)
	}
	status, err := os.OpenFile(ports[PortStatus], os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open status port: %w", err)
	}
	exited := make(chan int, 1)
	a := NewAgent(AgentOptions{
		Stream: stream, Reconnect: true, Output: output, Status: status, Log: log,
		Setup:  setupGuest,
		Exited: func(code int) { exited <- code },
	})
	go func() { _ = a.Serve() }()
	fmt.Fprintln(os.Stderr, ProbeReady)
	<-exited
	// Give the host a moment to read the last frames before the VM goes.
	time.Sleep(100 * time.Millisecond)
	return nil
}

// powerOff ends the VM. Reset rather than power off: it needs no ACPI, and
// the node starts QEMU with -no-reboot, which makes a reset an exit.
func powerOff() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	for {
		time.Sleep(time.Hour)
	}
}

// LoadModules loads every module listed in the modules.dep-format file at
// dep, each after the modules it depends on, with finit_module. Paths in
// the file are relative to its directory. A module the kernel already has
// (EEXIST) counts as loaded.
func LoadModules(dep string) error {
	f, err := os.Open(dep)
	if err != nil {
		return fmt.Errorf("read module list: %w", err)
	}
	defer f.Close()
	deps := map[string][]string{}
	var order []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		order = append(order, mod)
		deps[mod] = strings.Fields(rest)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read module list: %w", err)
	}
	dir := filepath.Dir(dep)
	loaded := map[string]bool{}
	var load func(mod string, depth int) error
	load = func(mod string, depth int) error {
		if loaded[mod] {
			return nil
		}
		if depth > 32 {
			return fmt.Errorf("module %s: dependency loop", mod)
		}
		for _, d := range deps[mod] {
			if err := load(d, depth+1); err != nil {
				return err
			}
		}
		loaded[mod] = true
		mf, err := os.Open(filepath.Join(dir, mod))
		if err != nil {
			return fmt.Errorf("load module %s: %w", mod, err)
		}
		defer mf.Close()
		if err := unix.FinitModule(int(mf.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load module %s: %w", mod, err)
		}
		return nil
	}
	for _, m := range order {
		if err := load(m, 0); err != nil {
			return err
		}
	}
	return nil
}

// findPorts waits for the named virtio-serial ports and returns their
// device paths. Drivers probe as their modules load, but the device nodes
// may appear a moment later.
func findPorts(wait time.Duration, names ...string) (map[string]string, error) {
	deadline := time.Now().Add(wait)
	for {
		found := map[string]string{}
		entries, _ := os.ReadDir("/sys/class/virtio-ports")
		for _, e := range entries {
			name, err := os.ReadFile(filepath.Join("/sys/class/virtio-ports", e.Name(), "name"))
			if err != nil {
				continue
			}
			dev := "/dev/" + e.Name()
			if _, err := os.Stat(dev); err == nil {
				found[strings.TrimSpace(string(name))] = dev
			}
		}
		missing := []string{}
		for _, n := range names {
			if found[n] == "" {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return found, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("virtio-serial ports %v did not appear; is the VMM giving the VM a virtio-serial device with them?", missing)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// setupGuest mounts the workload's root, writes its files, names the
// guest and configures eth0. It returns the root.
func setupGuest(cfg Config) (string, error) {
	if err := waitFor(rootDisk, 10*time.Second); err != nil {
		return "", err
	}
	lower, rw := "/run/lower", "/run/rw"
	for _, d := range []string{lower, rw, newRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	if err := unix.Mount(rootDisk, lower, "ext4", unix.MS_RDONLY, "noload"); err != nil {
		return "", fmt.Errorf("mount the image disk %s: %w", rootDisk, err)
	}
	opts := "mode=0755"
	if cfg.OverlayMiB > 0 {
		opts += fmt.Sprintf(",size=%dm", cfg.OverlayMiB)
	}
	if err := unix.Mount("tmpfs", rw, "tmpfs", 0, opts); err != nil {
		return "", fmt.Errorf("mount the overlay's tmpfs: %w", err)
	}
	for _, d := range []string{rw + "/upper", rw + "/work"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	ov := fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lower, rw, rw)
	if err := unix.Mount("overlay", newRoot, "overlay", 0, ov); err != nil {
		return "", fmt.Errorf("mount the overlay root: %w", err)
	}
	for _, m := range []struct {
		src, dst, fs string
		flags        uintptr
		data         string
	}{
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "dev", "devtmpfs", unix.MS_NOSUID, ""},
		{"devpts", "dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
		{"tmpfs", "dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		dst := filepath.Join(newRoot, m.dst)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return "", err
		}
		if err := unix.Mount(m.src, dst, m.fs, m.flags, m.data); err != nil {
			return "", fmt.Errorf("mount %s in the workload's root: %w", m.dst, err)
		}
	}
	if err := devLinks(filepath.Join(newRoot, "dev")); err != nil {
		return "", err
	}
	if err := mountVolumes(cfg.Volumes); err != nil {
		return "", err
	}
	for p, content := range cfg.Files {
		dst := filepath.Join(newRoot, filepath.Clean("/"+p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		// Remove first: the image may have a symlink there.
		_ = os.Remove(dst)
		if err := os.WriteFile(dst, []byte(content), 0o644); err != nil {
			return "", fmt.Errorf("write %s: %w", p, err)
		}
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return "", fmt.Errorf("set hostname: %w", err)
		}
	}
	if err := configureNetwork(cfg.Network); err != nil {
		return "", err
	}
	return newRoot, nil
}

// devLinks makes the links of /dev that runc makes in a container, which
// devtmpfs lacks: stdin, stdout, stderr and fd into /proc/self (so an
// image's "access.log -> /dev/stdout", as Docker's nginx image has, writes
// to the workload's output, and bash's process substitution works), and
// ptmx into the workload's own devpts instance.
func devLinks(dev string) error {
	for name, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx",
	} {
		p := filepath.Join(dev, name)
		_ = os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return fmt.Errorf("link /dev/%s in the workload's root: %w", name, err)
		}
	}
	return nil
}

func waitFor(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear; does the VM have the image disk?", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// configureNetwork brings lo up and gives eth0 its address and default
// route. The address comes over the agent stream, not the kernel command
// line, so one initramfs and command line serve every VM.
func configureNetwork(n Network) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("look up lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	if n.Address == "" {
		return nil
	}
	addr, err := netlink.ParseAddr(n.Address)
	if err != nil {
		return fmt.Errorf("eth0 address %q: %w", n.Address, err)
	}
	var eth netlink.Link
	deadline := time.Now().Add(10 * time.Second)
	for {
		if eth, err = netlink.LinkByName("eth0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("eth0 did not appear; does the VM have a virtio-net device? %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := netlink.AddrReplace(eth, addr); err != nil {
		return fmt.Errorf("set eth0 address %s: %w", n.Address, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring eth0 up: %w", err)
	}
	if n.Gateway != "" {
		gw := net.ParseIP(n.Gateway)
		if gw == nil {
			return fmt.Errorf("gateway %q is not an IP address", n.Gateway)
		}
		route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("set default route via %s: %w", n.Gateway, err)
		}
	}
	return nil
}
