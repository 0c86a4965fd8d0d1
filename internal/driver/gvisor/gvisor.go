// Package gvisor runs workloads in gVisor sandboxes through runsc, for
// `isolation: gvisor`.
//
// runsc is an OCI runtime, so this package is a thin layer over the
// container driver (package runc): the same overlay rootfs over the shared
// image, the same bundle, cgroup limits, log file and stdin FIFO handed to
// the sandbox as its stdio, the same exec and recovery. What differs is the
// runtime's global flags and what the workload sees: its system calls are
// served by gVisor's kernel (the Sentry) rather than the host's, through the
// systrap platform, which needs neither KVM nor ptrace.
//
// Per workload runsc leaves two processes of its own, the sandbox and its
// gofer; nothing of hypercore's stays.
//
// A workload with a terminal (spec Tty) cannot run here: the container
// driver keeps the pty master inside the container through an extra fd,
// which runsc cannot pass in, and takes it back with pidfd_getfd, which sees
// the sandbox's fds rather than the workload's. Create refuses it with an
// error that says so. exec -t works, as the runtime gets a terminal of its
// own for the length of the exec.
package gvisor

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/runc"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// DefaultPlatform is the gVisor platform used when Options.Platform is
// empty. systrap traps system calls with seccomp, so it runs where there is
// no /dev/kvm, and is faster than ptrace.
const DefaultPlatform = "systrap"

// Options configures a Driver.
type Options struct {
	// Runsc is the runsc binary, a name found in PATH or a path; "runsc" by
	// default. scripts/deps.sh links a systrap-capable one into
	// /usr/local/bin.
	Runsc string
	// Platform is gVisor's platform, DefaultPlatform when empty.
	Platform string
	// StateDir holds one directory per workload and runsc's own state. It
	// must not be shared with another driver.
	StateDir string
	// CgroupParent holds one cgroup per workload, as in runc.Options;
	// nodes sharing a kernel need different ones.
	CgroupParent string
	// DefaultDiskMiB is as in runc.Options: runsc writes through its
	// gofer to the same host overlay, whose upper dir is the limit.
	DefaultDiskMiB int64
	// LogMaxBytes, LogKeep and LogCheckEvery rotate workload logs as in
	// runc.Options.
	LogMaxBytes   int64
	LogKeep       int
	LogCheckEvery time.Duration
}

// Driver runs workloads in gVisor sandboxes. It implements driver.Driver
// with the container driver's methods, run with runsc; Capabilities,
// Create and Recover add what gVisor needs.
type Driver struct {
	*runc.Driver
	dir string // absolute StateDir
}

var _ driver.Driver = (*Driver)(nil)

// New checks that runsc is installed and prepares StateDir. It does not
// check that sandboxes can start here; Probe does. Close stops the
// background log rotation; the sandboxes keep running.
func New(opts Options) (*Driver, error) {
	if opts.StateDir == "" {
		return nil, errors.New("gvisor driver: StateDir is required (for example <data-dir>/gvisor)")
	}
	binary, err := lookRunsc(opts.Runsc)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("gvisor driver: state dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("gvisor driver: create state dir: %w", err)
	}
	wrapper, err := writeWrapper(binary, dir, opts.Platform)
	if err != nil {
		return nil, err
	}
	d, err := runc.New(runc.Options{
		Runtime:        wrapper,
		StateDir:       dir,
		CgroupParent:   opts.CgroupParent,
		DefaultDiskMiB: opts.DefaultDiskMiB,
		LogMaxBytes:    opts.LogMaxBytes,
		LogKeep:        opts.LogKeep,
		LogCheckEvery:  opts.LogCheckEvery,
	})
	if err != nil {
		return nil, fmt.Errorf("gvisor driver: %w", err)
	}
	return &Driver{Driver: d, dir: dir}, nil
}

// Capabilities reports what this driver supports: exec (with a terminal
// too) and attach, but no workload with a terminal of its own (Tty false,
// see the package doc).
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Isolation: spec.IsolationGVisor, Exec: true, Attach: true, Tty: false}
}

// stateDir is where the driver keeps its workloads.
func (d *Driver) stateDir() string { return d.dir }

// lookRunsc finds the runsc binary.
func lookRunsc(name string) (string, error) {
	if name == "" {
		name = "runsc"
	}
	binary, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("gvisor driver: runsc not found (%w); install it with `make deps` (scripts/deps.sh)", err)
	}
	if !strings.Contains(filepath.Base(binary), "runsc") {
		// The container driver tells runtimes apart by the binary's name.
		return "", fmt.Errorf("gvisor driver: %s is not named runsc; point it at the runsc binary or a link named runsc", binary)
	}
	return binary, nil
}

// Probe checks, once and cheaply, that sandboxes can run on this host: it
// asks runsc for its flags (an old runsc without systrap fails here) and has
// it run `true`-like work in a throwaway sandbox with no network. It
// returns runsc's version line. A node calls it before offering gvisor.
func Probe(ctx context.Context, runsc, platform string) (string, error) {
	binary, err := lookRunsc(runsc)
	if err != nil {
		return "", err
	}
	if platform == "" {
		platform = DefaultPlatform
	}
	out, err := exec.CommandContext(ctx, binary, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gvisor probe: %s --version: %w: %s", binary, err, out)
	}
	version, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	flags, _ := exec.CommandContext(ctx, binary, "flags").CombinedOutput()
	if !strings.Contains(string(flags), platform) {
		return version, fmt.Errorf("gvisor probe: %s (%s) has no %s platform; install a newer runsc with `make deps`", binary, version, platform)
	}
	if err := checkGoVersion(binary, version); err != nil {
		return version, fmt.Errorf("gvisor probe: %w", err)
	}
	root, err := os.MkdirTemp("", "hypercore-runsc-probe-")
	if err != nil {
		return version, fmt.Errorf("gvisor probe: %w", err)
	}
	defer os.RemoveAll(root)
	// `runsc do` runs a command in a sandbox over the host's root,
	// read-only through the gofer: it boots the Sentry on this platform
	// and so fails where sandboxes cannot run (no seccomp, no memfd...).
	cmd := exec.CommandContext(ctx, binary, "--root="+root, "--platform="+platform, "--network=none",
		"do", "--", "/bin/sh", "-c", "exit 0")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return version, fmt.Errorf("gvisor probe: %s cannot run a sandbox here: %w: %s", binary, err, strings.TrimSpace(string(out)))
	}
	return version, nil
}

// gvisorDate finds the release date, YYYYMMDD, in runsc's version line:
// "runsc version release-20240729.0" or Debian's "0.0~20240729.0".
var gvisorDate = regexp.MustCompile(`\b(20[0-9]{6})\b`)

// checkGoVersion refuses a runsc built with a Go released after that
// gVisor: gVisor reads the Go runtime's internal structures (goroutine
// ids), whose layout changes between Go versions, and a build with a Go it
// does not know boots fine but panics under load ("running on goroutine
// 0"). Debian sid's runsc 2024-07, built with Go 1.26, is such a build.
func checkGoVersion(binary, version string) error {
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return nil // not a Go binary we can read: let the probe sandbox decide
	}
	if goTooNew(info.GoVersion, version) {
		return fmt.Errorf("%s (%s) was built with %s, which came out after that gVisor release; gVisor depends on the Go runtime's internals, and such a build panics in the sandbox. Install runsc with `make deps` (bookworm-backports' build)", binary, version, info.GoVersion)
	}
	return nil
}

// goTooNew reports whether Go goVersion ("go1.26.2") came out after the
// gVisor release named in runsc's version line. Versions it cannot read
// are not too new.
func goTooNew(goVersion, runscVersion string) bool {
	m := gvisorDate.FindStringSubmatch(runscVersion)
	var minor int
	if m == nil || !strings.HasPrefix(goVersion, "go1.") {
		return false
	}
	if _, err := fmt.Sscanf(strings.TrimPrefix(goVersion, "go1."), "%d", &minor); err != nil || minor < 22 {
		return false
	}
	// Go 1.N comes out in February of even N's year and August of odd
	// N's: 1.22 in 2024-02, 1.23 in 2024-08, 1.24 in 2025-02.
	goRelease := (2024+(minor-22)/2)*100 + 2
	if minor%2 == 1 {
		goRelease = (2024+(minor-23)/2)*100 + 8
	}
	released, _ := strconv.Atoi(m[1][:6])
	return goRelease > released
}
