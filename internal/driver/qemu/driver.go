// Package qemu runs workloads as QEMU microVMs (`-M microvm`), with the
// hypercore binary as the guest's init and agent (internal/guest).
//
// The VMM is the only process per workload: QEMU is started with
// -daemonize, so it is nobody's child and outlives a daemon killed with -9.
// QEMU itself writes the workload's output and its status journal into
// host files (virtio-serial ports on file chardevs), so logs and exit
// codes need no process of ours either. The agent stream is a chardev
// socket QEMU listens on; a restarted daemon simply connects again.
//
// QEMU runs inside the workload's network namespace and uses a TAP there
// that is wired to the namespace's veth (network.EnsureTap), so the VM
// keeps the workload's address on the node bridge and every rule that
// applies to a container applies to it.
//
// Each workload lives in <StateDir>/<id>/:
//
//	vm.json        what Start needs: command line parts and the guest config
//	qemu.pid       QEMU's pid, written by QEMU
//	output.log     the workload's stdout and stderr, appended by QEMU
//	status.jsonl   the guest's status journal, appended by QEMU
//	console.log    the guest kernel's console
//	started        when Start launched QEMU
//	killed         present when the host killed QEMU: exit code 137
//
// The agent socket lives under /run/hypercore-vm, where its path fits
// the 108 bytes a Unix socket address allows.
package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/guest"
	"github.com/hypercore-dev/hypercore/internal/keylock"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Options configures a Driver.
type Options struct {
	// StateDir holds one directory per workload.
	StateDir string
	// Kernel is the guest kernel (see Prepare and FindKernel).
	Kernel Kernel
	// Agent is the binary that becomes the guest's /init; the running
	// executable if empty.
	Agent string
	// QEMU is the qemu-system-x86_64 binary; found in PATH if empty.
	QEMU string
	// Accel forces "kvm" or "tcg"; empty probes once (see DetectAccel).
	Accel string
	// BootTimeout bounds how long Start waits for the agent; 60s if zero.
	BootTimeout time.Duration
	Log         *slog.Logger
}

// Driver runs microVMs.
type Driver struct {
	opts         Options
	initramfs    string
	accel        string
	minMemoryMiB int64
	log          *slog.Logger

	locks   keylock.Map
	mu      sync.Mutex
	clients map[spec.ID]*guest.Client
	// secrets are the VMs' secret env, never written to disk (secrets.go).
	secrets secretEnvs

	quit      chan struct{}
	closeOnce sync.Once
}

// New checks that QEMU and the kernel are usable, builds (or finds) the
// initramfs and settles the accelerator.
func New(ctx context.Context, opts Options) (*Driver, error) {
	if opts.StateDir == "" {
		return nil, errors.New("qemu driver: no state dir; pass the data dir's vm subdirectory")
	}
	if opts.BootTimeout == 0 {
		opts.BootTimeout = 60 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.QEMU == "" {
		p, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			return nil, fmt.Errorf("qemu driver: qemu-system-x86_64 not found; install qemu-system-x86 (scripts/deps.sh): %w", err)
		}
		opts.QEMU = p
	}
	if opts.Agent == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("qemu driver: find own binary for the guest agent: %w", err)
		}
		opts.Agent = exe
	}
	if _, err := os.Stat(opts.Kernel.Vmlinuz()); err != nil {
		return nil, fmt.Errorf("qemu driver: guest kernel: %w; run `hypercore vm prepare`", err)
	}
	abs, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	opts.StateDir = abs
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("qemu driver: create state dir %s: %w", abs, err)
	}
	initrd, err := BuildInitramfs(opts.Agent, opts.Kernel, filepath.Join(abs, "initramfs"))
	if err != nil {
		return nil, fmt.Errorf("qemu driver: %w", err)
	}
	d := &Driver{opts: opts, initramfs: initrd, log: opts.Log, clients: map[spec.ID]*guest.Client{}, quit: make(chan struct{})}
	d.minMemoryMiB = spec.MinMicroVMMemoryMiB
	if st, err := os.Stat(initrd); err == nil {
		// The guest holds the initramfs image and its unpacked copy at
		// once, and the kernel decompresses itself beside them: 64 MiB
		// plus four times the initramfs boots; less panics at unpack.
		d.minMemoryMiB = max(spec.MinMicroVMMemoryMiB, 64+4*((st.Size()+(1<<20)-1)>>20))
	}
	d.accel = opts.Accel
	if d.accel == "" {
		d.accel = DetectAccel(ctx, opts.QEMU, opts.Kernel, initrd, filepath.Join(abs, "accel"), opts.Log)
	}
	go d.rotateLoop()
	return d, nil
}

// MinMemoryMiB is the least memory this driver gives a VM:
// spec.MinMicroVMMemoryMiB, or more for a large initramfs (a binary built
// with debug info, say).
func (d *Driver) MinMemoryMiB() int64 { return d.minMemoryMiB }

// Accel is the accelerator VMs run with: "kvm" or "tcg".
func (d *Driver) Accel() string { return d.accel }

// Initramfs is the path of the initramfs VMs boot.
func (d *Driver) Initramfs() string { return d.initramfs }

// Capabilities reports a microVM driver with exec, attach and terminals.
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Isolation: spec.IsolationMicroVM, Exec: true, Attach: true, Tty: true}
}

type paths struct {
	dir, vm, pid, log, status, console, started, killed, sock string
}

func (d *Driver) paths(id spec.ID) paths {
	dir := filepath.Join(d.opts.StateDir, id.String())
	return paths{
		dir: dir, vm: filepath.Join(dir, "vm.json"), pid: filepath.Join(dir, "qemu.pid"),
		log: filepath.Join(dir, "output.log"), status: filepath.Join(dir, "status.jsonl"),
		console: filepath.Join(dir, "console.log"), started: filepath.Join(dir, "started"),
		killed: filepath.Join(dir, "killed"), sock: socketPath(dir),
	}
}

// vmState is vm.json: everything Start and Exec need, written by Create.
type vmState struct {
	// ID is for whoever reads the file; the driver goes by the id it is
	// given, which is also the name of the file's dir.
	ID        string       `json:"id"`
	Cores     int          `json:"cores"`
	MemoryMiB int64        `json:"memory_mib"`
	Disk      string       `json:"disk"`
	NetNS     string       `json:"netns,omitempty"`
	MAC       string       `json:"mac,omitempty"`
	Guest     guest.Config `json:"guest"`
	// Volumes are the ext4 images of the workload's named volumes, each
	// attached as a disk (volumes.go).
	Volumes []volumeDisk `json:"volumes,omitempty"`
}

func (d *Driver) readState(id spec.ID) (vmState, paths, error) {
	p := d.paths(id)
	var st vmState
	b, err := os.ReadFile(p.vm)
	if errors.Is(err, os.ErrNotExist) {
		return st, p, fmt.Errorf("%s: %w", id, driver.ErrNotFound)
	}
	if err != nil {
		return st, p, fmt.Errorf("read state of %s: %w", id, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, p, fmt.Errorf("read state of %s (delete the workload and spawn it again): %w", id, err)
	}
	return st, p, nil
}

// vcpus turns a spec's fractional cores into whole vCPUs: at least one,
// and a ceiling, so 1.5 cores can use two.
func vcpus(cores float64) int { return max(1, int(math.Ceil(cores))) }

// Status reports the VM's state: running while QEMU runs, then stopped
// with the exit code from the guest's journal (137 if the host killed it).
func (d *Driver) Status(ctx context.Context, id spec.ID) (driver.Status, error) {
	_, p, err := d.readState(id)
	if err != nil {
		return driver.Status{}, err
	}
	return d.status(p), nil
}

func (d *Driver) status(p paths) driver.Status {
	started := readTime(p.started)
	if started.IsZero() {
		return driver.Status{State: driver.StateCreated}
	}
	if pid := livePid(p); pid > 0 {
		return driver.Status{State: driver.StateRunning, Pid: pid, StartedAt: started}
	}
	st := driver.Status{State: driver.StateStopped, StartedAt: started, ExitCode: 255}
	if ev, ok := lastEvent(p.status); ok && ev.State == "exited" {
		st.ExitCode, st.FinishedAt = ev.ExitCode, ev.Time
		return st
	}
	if t := readTime(p.killed); !t.IsZero() {
		st.ExitCode, st.FinishedAt = 137, t
	}
	return st
}

// lastEvent returns the last complete line of the status journal.
func lastEvent(path string) (guest.Event, bool) {
	f, err := os.Open(path)
	if err != nil {
		return guest.Event{}, false
	}
	defer f.Close()
	var last guest.Event
	ok := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev guest.Event
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			last, ok = ev, true
		}
	}
	return last, ok
}

func writeTime(path string) error {
	return os.WriteFile(path, []byte(time.Now().UTC().Format(time.RFC3339Nano)), 0o600)
}

func readTime(path string) time.Time {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	return t
}

// QEMU is the qemu-system-x86_64 binary the driver runs.
func (d *Driver) QEMU() string { return d.opts.QEMU }
