// Package runc runs workloads as OCI containers with runc or crun.
//
// Nothing of hypercore stays alive per workload: the runtime is started
// detached, the container's stdout and stderr are an O_APPEND log file and
// its stdin a FIFO, all handed straight to the container. A daemon killed
// with -9 leaves its containers running and logging, and a new Driver on the
// same StateDir picks them up with Recover.
//
// A workload with a terminal runs on a pty instead. The container itself
// keeps the pty master open (queued in a socket it holds), a goroutine of
// the daemon copies the terminal's output to the log and to attached
// clients, and a restarted daemon takes the master back with pidfd_getfd;
// see tty.go.
//
// Each workload lives in <StateDir>/<id>/: the OCI bundle (config.json), the
// overlay upper/ and work/ dirs over the shared image rootfs, the merged
// rootfs/, the log, the stdin FIFO, /etc files and, when the node gave no
// network namespace, the workload's own netns bind mount.
package runc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gorunc "github.com/containerd/go-runc"

	"github.com/hypercore-dev/hypercore/internal/diskimage"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/keylock"
	"github.com/hypercore-dev/hypercore/internal/procwatch"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Defaults for Options fields left at zero.
const (
	DefaultLogMaxBytes   = 10 << 20
	DefaultLogKeep       = 3
	DefaultLogCheckEvery = time.Minute
)

// Options configures a Driver.
type Options struct {
	// Runtime is "runc" (the default), "crun" or gVisor's "runsc", as a
	// name found in PATH or a path. The driver tells them apart by the
	// binary's name, so a wrapper script must be named after its runtime.
	Runtime string
	// StateDir holds one directory per workload and the runtime's own
	// state (its --root). It must be on a local filesystem that can be an
	// overlay upper dir, such as ext4 or xfs.
	StateDir string
	// LogMaxBytes is the size at which a workload's log is rotated.
	LogMaxBytes int64
	// LogKeep is how many rotated log generations are kept.
	LogKeep int
	// CgroupParent is the cgroup, below each hierarchy's root, that holds
	// one cgroup per workload; "/hypercore" by default. Nodes that share a
	// kernel (tests run several on one machine) need different parents, or
	// killing a workload on one would kill the same id on another.
	CgroupParent string
	// DefaultDiskMiB is the writable layer's size for a workload whose
	// spec gives none; 0 leaves such workloads unbounded.
	DefaultDiskMiB int64
	// LogCheckEvery is how often the Driver checks logs for rotation in
	// the background. Negative turns the check off; call RotateLogs instead.
	LogCheckEvery time.Duration
	// Rootless is set when the daemon runs in a user namespace without
	// the host's root (see package rootless): workloads then get no
	// cgroup and no limits (the host's cgroups cannot be written), no
	// user namespace of their own (they share the daemon's), and no disk
	// limit (loop devices need the host's root). Limits reports which.
	Rootless bool
	// MappedGIDs is how many group ids from 0 on the daemon's user
	// namespace maps; with Rootless, ping_group_range names no more.
	MappedGIDs uint64
}

// Limits says which of a workload's limits this driver enforces; a
// rootless daemon logs it at start.
func (d *Driver) Limits() (enforced, notEnforced []string) {
	all := []string{"cores", "memory", "pids", "disk", "user namespace per workload"}
	if d.opts.Rootless {
		return []string{"seccomp"}, all
	}
	return append(all, "seccomp"), nil
}

// Driver runs workloads as containers with an OCI runtime. It implements
// driver.Driver.
type Driver struct {
	opts    Options
	name    string // "runc" or "crun", for messages
	rt      *gorunc.Runc
	rtState string      // the runtime's --root
	locks   keylock.Map // lifecycle changes per workload never interleave
	ttys    ttyPumps
	// spare holds a formatted disk image of DefaultDiskMiB ready, so a
	// workload's disk is a rename at Create; nil without a default.
	spare   *diskimage.Spare
	ids     idRanges    // host id ranges of user namespaces
	noIDMap atomic.Bool // idmapped mounts failed once: copy instead
	watches watches

	stopRotation chan struct{}
	rotationDone chan struct{}
	closeOnce    sync.Once
}

var _ driver.Driver = (*Driver)(nil)

// New checks that the runtime is installed, prepares StateDir and starts
// the background log rotation. Close stops the rotation; the workloads keep
// running.
func New(opts Options) (*Driver, error) {
	if opts.Runtime == "" {
		opts.Runtime = "runc"
	}
	if opts.StateDir == "" {
		return nil, errors.New("runc driver: StateDir is required (for example <data-dir>/containers)")
	}
	stateDir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("runc driver: state dir: %w", err)
	}
	opts.StateDir = stateDir
	if opts.CgroupParent == "" {
		opts.CgroupParent = "/hypercore"
	}
	if opts.LogMaxBytes <= 0 {
		opts.LogMaxBytes = DefaultLogMaxBytes
	}
	if opts.LogKeep <= 0 {
		opts.LogKeep = DefaultLogKeep
	}
	if opts.LogCheckEvery == 0 {
		opts.LogCheckEvery = DefaultLogCheckEvery
	}

	binary, err := exec.LookPath(opts.Runtime)
	if err != nil {
		pkg := filepath.Base(opts.Runtime)
		return nil, fmt.Errorf("runc driver: OCI runtime %q not found: %w; install it with `apt-get install %s` or `make deps`", opts.Runtime, err, pkg)
	}
	// The runtime exits once the container runs; as a subreaper the daemon
	// becomes the container's parent and so learns its exit code.
	if err := procwatch.Enable(); err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}
	if err := ensureCgroupMounts(); err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}
	name := runtimeName(binary)
	d := &Driver{
		opts:         opts,
		name:         name,
		rtState:      filepath.Join(stateDir, name+"-root"),
		stopRotation: make(chan struct{}),
		rotationDone: make(chan struct{}),
	}
	for _, dir := range []string{stateDir, d.rtState} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("runc driver: create state dir: %w", err)
		}
	}
	if opts.DefaultDiskMiB > 0 {
		if d.spare, err = diskimage.NewSpare(filepath.Join(stateDir, "spare-disks"), opts.DefaultDiskMiB); err != nil {
			return nil, fmt.Errorf("runc driver: %w", err)
		}
	}
	command := binary
	if name == "crun" {
		if command, err = crunCommand(binary, stateDir); err != nil {
			return nil, err
		}
	}
	d.rt = &gorunc.Runc{
		Command: command,
		Root:    d.rtState,
		// A process group of its own keeps the runtime, and the container
		// it forks, out of reach of signals sent to the daemon's group
		// (Ctrl-C in a terminal).
		Setpgid: true,
	}
	go d.rotateLoop()
	return d, nil
}

// Close stops the background log rotation and lets go of the workloads'
// terminals. Workloads are not touched: each keeps its own terminal open,
// and a new Driver takes them over (Recover, or on first use).
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		close(d.stopRotation)
		<-d.rotationDone
		d.ttys.closeAll()
		if d.spare != nil {
			d.spare.Wait()
		}
		d.unwatchAll()
	})
	return nil
}

// runtimeName tells which runtime binary is: "crun", "runsc" or "runc".
func runtimeName(binary string) string {
	base := filepath.Base(binary)
	switch {
	case strings.Contains(base, "crun"):
		return "crun"
	case strings.Contains(base, "runsc"):
		return "runsc"
	}
	return "runc"
}

// Capabilities reports what this driver supports. Tty is true: Exec can
// give a process a terminal, and a workload created with spec Tty runs on
// one that Attach connects to, resizes included.
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Isolation: spec.IsolationContainer, Exec: true, Attach: true, Tty: true}
}

// paths names the files of one workload.
type paths struct {
	// bundle is what the runtime's create reads: dir, or a copy on
	// tmpfs that holds secrets (see sealedBundle).
	bundle                                              string
	dir, config, rootfs, upper, work, log, stdin, netns string
	// disk holds upper/ and work/; with a disk limit it is the mount
	// point of diskImage, an ext4 image of the limit's size.
	disk, diskImage                                string
	hosts, resolv, hostname, startedAt, finishedAt string
	// pidFile is where the runtime writes the main process's pid, init
	// where the driver records it with its start time.
	pidFile, init string
}

// diskMiB is the writable layer size of a workload of s; 0 is unbounded.
func (d *Driver) diskMiB(s spec.Spec) int64 {
	if s.DiskMiB > 0 {
		return s.DiskMiB
	}
	return d.opts.DefaultDiskMiB
}

func (d *Driver) paths(id spec.ID) paths {
	dir := filepath.Join(d.opts.StateDir, id.String())
	p := paths{
		bundle:     dir,
		dir:        dir,
		config:     filepath.Join(dir, "config.json"),
		rootfs:     filepath.Join(dir, "rootfs"),
		disk:       filepath.Join(dir, "disk"),
		diskImage:  filepath.Join(dir, "disk.ext4"),
		upper:      filepath.Join(dir, "disk", "upper"),
		work:       filepath.Join(dir, "disk", "work"),
		log:        filepath.Join(dir, "container.log"),
		stdin:      filepath.Join(dir, "stdin"),
		netns:      filepath.Join(dir, "netns"),
		hosts:      filepath.Join(dir, "hosts"),
		resolv:     filepath.Join(dir, "resolv.conf"),
		hostname:   filepath.Join(dir, "hostname"),
		startedAt:  filepath.Join(dir, "started-at"),
		finishedAt: filepath.Join(dir, "finished-at"),
		pidFile:    filepath.Join(dir, "pid"),
		init:       filepath.Join(dir, "init"),
	}
	// Workloads made before disk limits keep upper/ and work/ at the top.
	if _, err := os.Stat(filepath.Join(dir, "upper")); err == nil {
		p.upper, p.work = filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	}
	return p
}

// withLog returns a copy of the runtime client that writes the runtime's
// own messages, as JSON, to logPath. Commands whose stderr belongs to the
// container or the caller use it so their errors can still be reported.
func (d *Driver) withLog(logPath string) *gorunc.Runc {
	r := *d.rt
	r.Log = logPath
	r.LogFormat = gorunc.JSON
	return &r
}
