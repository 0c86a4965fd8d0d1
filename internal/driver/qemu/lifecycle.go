package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/guest"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/network"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// socketDir holds the agent sockets. A workload dir path plus a 36-byte id
// can pass the 108 bytes a socket address may have, so sockets are named
// by a hash of their workload dir in a short directory instead.
const socketDir = "/run/hypercore-vm"

func socketPath(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join(socketDir, hex.EncodeToString(sum[:10])+".sock")
}

// shutdownMargin is what a guest gets, beyond the caller's grace period,
// to sync and reset once its workload has ended.
const shutdownMargin = 5 * time.Second

// Create makes the VM's disk and network ready and records what Start
// needs; no VM runs yet.
func (d *Driver) Create(ctx context.Context, cfg driver.Config) error {
	mem := cfg.Spec.MemoryMiB
	if mem < d.minMemoryMiB {
		// Specs below spec.MinMicroVMMemoryMiB are refused, but a large
		// initramfs needs more than that to unpack. Such a VM gets more
		// than the node reserved for it, which the warning tells.
		d.log.Warn("microVM memory raised to the minimum, beyond what the node reserved; spawn it with at least vm_mib",
			"id", cfg.ID, "spec_mib", mem, "vm_mib", d.minMemoryMiB)
		mem = d.minMemoryMiB
	}
	unlock := d.locks.Lock(cfg.ID.String())
	defer unlock()
	p := d.paths(cfg.ID)
	if pid := livePid(p); pid > 0 {
		kill(pid)
	}
	if err := os.RemoveAll(p.dir); err != nil {
		return fmt.Errorf("create %s: clear leftovers: %w", cfg.ID, err)
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", cfg.ID, err)
	}
	disk, err := image.Ext4(ctx, cfg.Rootfs)
	if err != nil {
		return fmt.Errorf("create %s: %w", cfg.ID, err)
	}
	proc, err := mainProcess(cfg)
	if err != nil {
		return fmt.Errorf("create %s: %w", cfg.ID, err)
	}
	hostname := driver.HostnameOf(cfg)
	st := vmState{
		ID: cfg.ID.String(), Cores: vcpus(cfg.Spec.Cores), MemoryMiB: mem, Disk: disk,
		NetNS: cfg.Network.NetNSPath,
		Guest: guest.Config{
			Hostname: hostname,
			Process:  proc,
			Files:    driver.EtcFiles(hostname, cfg.Network.IP),
			// Writes live in guest memory; a quarter of it leaves the
			// workload the rest. A smaller spec disk lowers the cap.
			OverlayMiB: int(overlayMiB(mem, cfg.Spec.DiskMiB)),
		},
	}
	st.Volumes, st.Guest.Volumes = volumeDisks(cfg.Volumes)
	if st.NetNS != "" {
		tap, err := network.EnsureTap(st.NetNS)
		if err != nil {
			return fmt.Errorf("create %s: %w", cfg.ID, err)
		}
		st.MAC = tap.MAC.String()
		st.Guest.Network = guest.Network{Address: tap.Address, Gateway: tap.Gateway}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	// The log exists from the start, so `logs` of a created VM is empty
	// rather than an error.
	if err := os.WriteFile(p.log, nil, 0o640); err != nil {
		return fmt.Errorf("create %s: %w", cfg.ID, err)
	}
	// 0600: the guest config holds the workload's env; its secrets stay
	// in memory (secrets.go).
	if err := os.WriteFile(p.vm, b, 0o600); err != nil {
		return fmt.Errorf("create %s: %w", cfg.ID, err)
	}
	d.secrets.put(cfg.ID, cfg.SecretEnv)
	return nil
}

// Start boots the VM and hands the agent the workload; it returns once the
// workload's process runs in the guest.
func (d *Driver) Start(ctx context.Context, id spec.ID) error {
	unlock := d.locks.Lock(id.String())
	defer unlock()
	st, p, err := d.readState(id)
	if err != nil {
		return err
	}
	if livePid(p) > 0 {
		return nil
	}
	for _, f := range []string{p.pid, p.killed, p.status, p.started} {
		_ = os.Remove(f)
	}
	if err := d.launch(ctx, id, st, p); err != nil {
		return fmt.Errorf("start %s: %w", id, err)
	}
	bootCtx, cancel := context.WithTimeout(ctx, d.opts.BootTimeout)
	defer cancel()
	err = func() error {
		c, err := d.client(bootCtx, id, p)
		if err != nil {
			return err
		}
		g := st.Guest
		g.Process.Env = driver.MergeEnv(g.Process.Env, d.secrets.get(id))
		return c.Configure(bootCtx, g)
	}()
	if err != nil {
		if pid := livePid(p); pid > 0 {
			kill(pid)
		}
		d.dropClient(id)
		return fmt.Errorf("start %s: %w; the guest console is in %s", id, err, p.console)
	}
	return nil
}

// Args returns QEMU's command line for a VM: the part shared with the
// benchmark's raw boot. Devices the caller does not want (disk "", no MAC)
// are left out.
func (d *Driver) Args(name string, cores int, memMiB int64, disk, mac, sock, logPath, statusPath, consolePath string) []string {
	args := []string{
		"-name", name,
	}
	args = append(args, machineArgs(d.accel, d.opts.Kernel, d.initramfs, "")...)
	args = append(args,
		"-smp", strconv.Itoa(cores), "-m", strconv.FormatInt(memMiB, 10),
		"-chardev", "file,id=console,path="+consolePath, "-serial", "chardev:console",
		"-device", "virtio-serial-device,max_ports=4",
		"-chardev", "socket,id=agent,path="+sock+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name="+guest.PortAgent,
		"-chardev", "file,id=log,append=on,path="+logPath,
		"-device", "virtserialport,chardev=log,name="+guest.PortLog,
		"-chardev", "file,id=status,append=on,path="+statusPath,
		"-device", "virtserialport,chardev=status,name="+guest.PortStatus,
	)
	// Free page reporting: memory the guest frees (the initramfs once
	// unpacked, say) goes back to the host instead of staying resident.
	args = append(args, "-device", "virtio-balloon-device,free-page-reporting=on")
	if disk != "" {
		args = append(args,
			"-drive", "id=root,file="+disk+",format=raw,if=none,readonly=on",
			"-device", "virtio-blk-device,drive=root")
	}
	if mac != "" {
		args = append(args,
			"-netdev", "tap,id=net0,ifname="+network.TapName+",script=no,downscript=no,vhost=off",
			"-device", "virtio-net-device,netdev=net0,mac="+mac)
	}
	return args
}

// machineArgs is the machine, CPU, kernel and initramfs part of a QEMU
// command line, shared by VMs and the accelerator probe; extra goes on the
// kernel command line.
func machineArgs(accel string, k Kernel, initrd, extra string) []string {
	cpu := "host"
	cmdline := "console=ttyS0 quiet panic=-1 reboot=t rdinit=/init i8042.noaux i8042.nomux i8042.nopnp"
	if accel != "kvm" {
		// TCG: the kernel cannot calibrate the TSC against an emulated
		// PIT in time and would take seconds over it; the value only
		// needs to be plausible, as kvm-clock is absent either way.
		cpu = "max"
		cmdline += " tsc_early_khz=2000000"
	}
	if extra != "" {
		cmdline += " " + extra
	}
	return []string{
		"-machine", "microvm,pit=on,rtc=on,acpi=on,x-option-roms=off", "-accel", accel, "-cpu", cpu,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", k.Vmlinuz(), "-initrd", initrd, "-append", cmdline,
	}
}

// launch starts QEMU daemonized in the workload's netns and returns once
// it has set the VM up (QEMU's parent exits then) or failed to. The VM is
// named after id, the checked id Start was given, rather than the copy in
// vm.json.
func (d *Driver) launch(ctx context.Context, id spec.ID, st vmState, p paths) error {
	if err := os.MkdirAll(socketDir, 0o700); err != nil {
		return fmt.Errorf("create agent socket dir %s: %w", socketDir, err)
	}
	_ = os.Remove(p.sock)
	args := d.Args("hypercore-vm-"+id.String(), st.Cores, st.MemoryMiB, st.Disk, st.MAC, p.sock, p.log, p.status, p.console)
	args = append(args, volumeArgs(st.Volumes)...)
	args = append(args, "-pidfile", p.pid, "-daemonize")
	cmd := exec.CommandContext(ctx, d.opts.QEMU, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// Its own session: a signal to the daemon's process group (a ^C in
	// a terminal) must not reach the VMs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := writeTime(p.started); err != nil {
		return err
	}
	if err := runInNetNS(st.NetNS, cmd); err != nil {
		return fmt.Errorf("run qemu: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	if livePid(p) == 0 {
		return fmt.Errorf("qemu exited at start: %s; the guest console is in %s", bytes.TrimSpace(stderr.Bytes()), p.console)
	}
	return nil
}

// runInNetNS runs cmd to its end with cmd forked from a thread inside the
// netns at nsPath, so cmd (and QEMU's daemonized child) lives there.
// Go forks from the calling thread, which carries its netns to the child.
func runInNetNS(nsPath string, cmd *exec.Cmd) error {
	if nsPath == "" {
		return cmd.Run()
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open workload netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter workload netns %s: %w", nsPath, err)
			return
		}
		err = cmd.Start()
		// A thread that cannot go back is never unlocked: Go drops it.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		return err
	}
	return cmd.Wait()
}

// client returns the connection to id's agent, connecting if needed. One
// connection per VM: QEMU's chardev takes one client at a time.
func (d *Driver) client(ctx context.Context, id spec.ID, p paths) (*guest.Client, error) {
	if c := d.liveClient(id); c != nil {
		return c, nil
	}
	// Serialise dials per VM without holding d.mu across one. Another
	// caller may have connected while this one waited for the lock.
	unlock := d.locks.Lock("dial:" + id.String())
	defer unlock()
	if c := d.liveClient(id); c != nil {
		return c, nil
	}
	var conn net.Conn
	var err error
	for {
		// QEMU makes the socket before it daemonizes, but a VM being
		// recovered may be gone: give up once QEMU is.
		conn, err = guest.DialUnix(ctx, p.sock)
		if err == nil {
			break
		}
		if livePid(p) == 0 {
			return nil, fmt.Errorf("the VM is not running: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
	c, err := guest.Handshake(ctx, conn)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.clients[id] = c
	d.mu.Unlock()
	return c, nil
}

// liveClient returns the connection to id's agent, or nil if there is none
// or it has ended (the VM stopped, or the agent hung up).
func (d *Driver) liveClient(id spec.ID) *guest.Client {
	d.mu.Lock()
	c := d.clients[id]
	d.mu.Unlock()
	if c == nil {
		return nil
	}
	select {
	case <-c.Done():
		return nil
	default:
		return c
	}
}

// overlayMiB is the size of the guest tmpfs that takes a VM's writes: a
// quarter of its memory, or the spec's disk if that is less. The host's
// disk is never written, so --default-disk does not apply.
func overlayMiB(memMiB, diskMiB int64) int64 {
	if diskMiB > 0 && diskMiB < memMiB/4 {
		return diskMiB
	}
	return memMiB / 4
}
