// Package driver defines the seam between a node and the thing that isolates
// a workload: an OCI runtime, gVisor, or a microVM. A node holds one Driver
// per isolation and never needs to know which one it is talking to.
package driver

import (
	"context"
	"errors"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// ErrNotFound is returned when a driver holds no workload with the given id.
var ErrNotFound = errors.New("workload not found in driver")

// State is a driver's view of one workload's lifecycle.
type State string

// The states a driver reports.
const (
	StateCreated State = "created"
	StateRunning State = "running"
	StateStopped State = "stopped"
	StateUnknown State = "unknown"
)

// Status is what a driver observes about a workload right now.
type Status struct {
	State    State
	Pid      int
	ExitCode int
	// StartedAt and FinishedAt are zero when not known.
	StartedAt  time.Time
	FinishedAt time.Time
}

// Exit is how a workload's main process ended, as an ExitNotifier tells.
type Exit struct {
	// Pid is the process that exited, so a late notice about an earlier
	// run of the workload can be told apart.
	Pid int
	// Code is the exit status (128+n when killed by signal n), or -1 when
	// it cannot be known; Reason then says why.
	Code   int
	Reason string
	At     time.Time
}

// ExitNotifier is a Driver that learns of a workload's exit as it happens,
// so that nobody needs to poll Status for it.
type ExitNotifier interface {
	// NotifyExit makes the driver call fn, from a goroutine of its own,
	// each time the main process of a started workload exits by itself or
	// is stopped. Call it once, before the first workload is created.
	NotifyExit(fn func(id spec.ID, e Exit))
}

// Runner is a Driver that can create and start a workload in one step,
// cheaper than Create followed by Start.
type Runner interface {
	// Run does what Create and then Start do.
	Run(ctx context.Context, cfg Config) error
}

// Capabilities says what a driver can do on this node.
type Capabilities struct {
	Isolation spec.Isolation
	Exec      bool
	Attach    bool
	Tty       bool
}

// Network is the workload's place on the node's network, made before Create.
type Network struct {
	// NetNSPath is the bind-mounted network namespace the workload joins.
	NetNSPath string
	// IP is the workload's address on the node bridge, without prefix.
	IP string
}

// Config is everything a driver needs to create one workload.
type Config struct {
	// ID names the workload; it was checked at the edge, so a driver may
	// use it as a file name or a runtime's container id as it is.
	ID   spec.ID
	Spec spec.Spec
	// Rootfs is the image's unpacked root filesystem. It is shared by all
	// workloads of the image and must never be written to.
	Rootfs string
	// ImageConfig carries the image's entrypoint, cmd, env, workdir and user.
	ImageConfig v1.Config
	Network     Network
	// Hostname is set inside the workload.
	Hostname string
	// SecretEnv is the workload's secrets as KEY=VALUE, added to its
	// environment. A driver must never write them to a file on disk.
	SecretEnv []string
	// SecretFiles are the same secrets by secret name, for drivers that
	// also offer them as files on a tmpfs at /run/secrets/NAME inside the
	// workload; never on disk either.
	SecretFiles map[string][]byte
	// Volumes are the workload's named volumes, made ready by the node.
	Volumes []VolumeMount
}

// VolumeMount is one named volume of a workload: where it is mounted
// inside, and what the node made ready on the host: a directory to bind
// (containers and gVisor), or an ext4 image to attach as a disk (microVMs;
// it is not mounted on the host meanwhile).
type VolumeMount struct {
	Name   string
	Target string
	// HostDir is the directory a container binds at Target.
	HostDir string
	// Image is the ext4 image a microVM attaches as a disk.
	Image string
}

// TermSize is a terminal's size in character cells.
type TermSize struct {
	Rows, Cols uint16
}

// IO connects a process's standard streams to a caller. Nil streams are
// discarded (Stdout, Stderr) or empty (Stdin). With a tty, Stderr is unused
// and Resize delivers window size changes until it is closed.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Tty    bool
	Resize <-chan TermSize
}

// ExecConfig describes a process to run inside a running workload.
type ExecConfig struct {
	Args    []string
	Env     []string
	WorkDir string
	// User runs the process as this user (a name, uid or uid:gid,
	// resolved in the workload's /etc/passwd); empty is the workload's.
	User string
	IO
}

// LogOptions selects what Logs returns.
type LogOptions struct {
	// Follow keeps the stream open and sends new output as it is written,
	// until ctx is done or the workload is deleted.
	Follow bool
	// Tail, when above zero, starts the stream this many lines from the end.
	Tail int
}

// Stats is a snapshot of a workload's resource use.
type Stats struct {
	CPUNanos    uint64
	MemoryBytes uint64
	MemoryLimit uint64
	Pids        uint64
}

// Driver runs workloads with one kind of isolation. Every method is safe to
// call again after a crash: Create replaces leftovers, Stop and Delete succeed
// on workloads that are already stopped or gone. Drivers keep their own state
// on disk, so a new process can Recover what an old one started, and keep no
// process of hypercore's running per workload. Ids arrive as spec.ID, checked
// once at the edge: a driver does not check them again.
type Driver interface {
	// Capabilities reports what this driver supports on this node.
	Capabilities() Capabilities
	// Create prepares a workload without starting its process.
	Create(ctx context.Context, cfg Config) error
	// Start runs a created workload's process.
	Start(ctx context.Context, id spec.ID) error
	// Stop asks the workload to end (SIGTERM), and kills it after timeout.
	Stop(ctx context.Context, id spec.ID, timeout time.Duration) error
	// Delete removes every trace of the workload from the host, logs included.
	Delete(ctx context.Context, id spec.ID) error
	// Status reports the workload's state, or ErrNotFound.
	Status(ctx context.Context, id spec.ID) (Status, error)
	// Recover re-adopts a workload after the daemon restarted, redoing any
	// host setup that does not survive a restart, and reports its status.
	Recover(ctx context.Context, cfg Config) (Status, error)
	// Logs streams the workload's combined stdout and stderr.
	Logs(ctx context.Context, id spec.ID, opts LogOptions) (io.ReadCloser, error)
	// Exec runs a process inside the running workload and returns its exit code.
	Exec(ctx context.Context, id spec.ID, cfg ExecConfig) (int, error)
	// Attach connects to the workload's main process until ctx is done or
	// the process exits.
	Attach(ctx context.Context, id spec.ID, stdio IO) error
	// Stats reports current resource use.
	Stats(ctx context.Context, id spec.ID) (Stats, error)
}

// OwnNetwork is a Driver whose endpoint networks its workloads itself (a
// CRI endpoint with its own CNI set-up): the node makes no attachment for
// them and asks the driver for the workload's address once it runs.
type OwnNetwork interface {
	// WorkloadIP is the running workload's address, reachable from the node.
	WorkloadIP(ctx context.Context, id spec.ID) (string, error)
}
