package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	gorunc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/logfile"
	"github.com/hypercore-dev/hypercore/internal/mountutil"
	"github.com/hypercore-dev/hypercore/internal/procwatch"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// How Stop waits.
const (
	stopPoll = 50 * time.Millisecond
	// killWait bounds the wait after SIGKILL, which only a process stuck
	// in the kernel (D state, frozen cgroup) survives for long.
	killWait = 10 * time.Second
)

// Create prepares the workload's bundle, mounts its rootfs and has the
// runtime create the container, whose process waits for Start. Anything
// left of an earlier Create of the same id is removed first.
func (d *Driver) Create(ctx context.Context, cfg driver.Config) error {
	return d.prepare(ctx, "create", cfg, func(p paths) error {
		if err := d.runtimeCreate(ctx, cfg.ID, p); err != nil {
			return err
		}
		return d.writeSecretFiles(ctx, cfg.ID, p, cfg.SecretFiles)
	})
}

// Run creates and starts the workload as Create and Start do, with one
// runtime process (`run --detach`) where nothing has to happen between
// the two. A workload with a terminal still takes create and start: its
// pty master is received and handed to the container in between, and so
// does one with secret files, which are written into its tmpfs then. It
// implements driver.Runner.
func (d *Driver) Run(ctx context.Context, cfg driver.Config) error {
	return d.prepare(ctx, "run", cfg, func(p paths) error {
		if cfg.Spec.Tty || len(cfg.SecretFiles) > 0 {
			if err := d.runtimeCreate(ctx, cfg.ID, p); err != nil {
				return err
			}
			if err := d.writeSecretFiles(ctx, cfg.ID, p, cfg.SecretFiles); err != nil {
				return err
			}
			return d.runtimeStart(ctx, cfg.ID, p)
		}
		return d.runtimeRun(ctx, cfg.ID, p)
	})
}

// prepare removes what an earlier attempt left of cfg's workload, sets up
// its host side and calls runtime; if anything fails, it leaves nothing
// half made.
func (d *Driver) prepare(ctx context.Context, op string, cfg driver.Config, runtime func(paths) error) error {
	if !filepath.IsAbs(cfg.Rootfs) {
		return fmt.Errorf("%s %s: image rootfs %q is not an absolute path", op, cfg.ID, cfg.Rootfs)
	}
	if fi, err := os.Stat(cfg.Rootfs); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s %s: image rootfs %q is not a directory (is the image unpacked?): %v", op, cfg.ID, cfg.Rootfs, err)
	}
	unlock := d.locks.Lock(cfg.ID.String())
	defer unlock()

	if err := d.destroy(ctx, cfg.ID); err != nil {
		return fmt.Errorf("%s %s: remove what an earlier attempt left: %w", op, cfg.ID, err)
	}
	p := d.paths(cfg.ID)
	err := d.setupHost(cfg, p)
	if err == nil {
		// With secrets, the runtime reads a bundle on tmpfs (p.bundle),
		// gone once the container exists.
		var cleanup func()
		cleanup, err = d.sealedBundle(cfg.ID, &p, cfg.SecretEnv, len(cfg.SecretFiles) > 0)
		if err == nil {
			err = runtime(p)
			cleanup()
		}
	}
	if err != nil {
		// Leave nothing half made; the error says what went wrong.
		_ = d.destroy(context.WithoutCancel(ctx), cfg.ID)
		return fmt.Errorf("%s %s: %w", op, cfg.ID, err)
	}
	return nil
}

// setupHost makes everything on the host a workload needs from cfg: dirs,
// overlay mount, netns, /etc files and config.json. Each step is skipped
// when already done, so Recover can run it on a half-intact workload.
func (d *Driver) setupHost(cfg driver.Config, p paths) error {
	if cfg.Spec.Tty && d.name == "runsc" {
		// A tty workload's pty master is kept in a socket inside the
		// container (tty.go), which runsc cannot pass in (no
		// --preserve-fds), and a restarted daemon could not take it back
		// from the sandbox with pidfd_getfd.
		return errors.New("a workload with a terminal (tty) cannot run in gVisor; spawn it without tty, or with isolation container")
	}
	if d.opts.Rootless && d.diskMiB(cfg.Spec) > 0 {
		return errors.New("this node runs rootless and cannot limit disk use (loop devices need the host's root): spawn without disk, or run the node as root")
	}
	if err := mkdirs(p, d.diskMiB(cfg.Spec), d.spare); err != nil {
		return err
	}
	sb, err := d.sandboxFor(cfg, p)
	if err != nil {
		return err
	}
	if err := d.mountRootfs(cfg.Rootfs, p, sb); err != nil {
		return err
	}
	netns, own := cfg.Network.NetNSPath, cfg.Network.NetNSPath == ""
	if own {
		if err := ensureNetNS(p.netns); err != nil {
			return err
		}
		netns = p.netns
	} else if err := removeNetNS(p.netns); err != nil {
		// The node now provides the netns; drop one we made earlier.
		return err
	}
	if err := writeEtcFiles(p, driver.HostnameOf(cfg), cfg.Network.IP); err != nil {
		return err
	}
	s, err := buildSpec(cfg, p, netns, own, canLimitSwap())
	if err != nil {
		return err
	}
	s.Linux.CgroupsPath = d.cgroupPath(cfg.ID)
	if d.opts.Rootless {
		d.unprivileged(s)
	}
	if err := sb.apply(s, p, netns); err != nil {
		return err
	}
	return writeSpec(p.config, s)
}

// remount redoes the mounts a stopped workload needs to start again, as
// recorded in its config.json: after a reboot they are gone.
func (d *Driver) remount(p paths, s *specs.Spec) error {
	lower := s.Annotations[annLowerDir]
	if lower == "" {
		return fmt.Errorf("%s names no image rootfs; create the workload again", p.config)
	}
	if err := mountDisk(p); err != nil {
		return err
	}
	if err := d.mountRootfs(lower, p, sandboxOf(s)); err != nil {
		return err
	}
	if own, _ := strconv.ParseBool(s.Annotations[annOwnNetNS]); own {
		if err := ensureNetNS(p.netns); err != nil {
			return err
		}
	}
	return remountSandbox(s, p)
}

// runtimeCreate has the runtime create the container with the log file as
// stdout and stderr and the FIFO as stdin, or, for a workload with a
// terminal, on a pty whose output a pump copies to the log.
func (d *Driver) runtimeCreate(ctx context.Context, id spec.ID, p paths) error {
	tty, err := isTty(p)
	if err != nil {
		return err
	}
	// From before the runtime starts the process until it is watched,
	// so its exit, however early, is not reaped by anyone else.
	release := procwatch.Hold()
	defer release()
	if tty {
		err = d.runtimeCreateTty(ctx, id, p)
	} else {
		err = d.runtimeCreatePlain(ctx, id, p)
	}
	if err != nil {
		return err
	}
	if err := d.watchNew(id, p, false); err != nil {
		_ = d.forceDelete(context.WithoutCancel(ctx), id)
		return err
	}
	return nil
}

// runtimeRun has the runtime create and start the container in one
// process, with the same stdio as runtimeCreate, and watches it.
func (d *Driver) runtimeRun(ctx context.Context, id spec.ID, p paths) error {
	release := procwatch.Hold()
	defer release()
	err := d.runtimeDetached(ctx, id, p, func(r *gorunc.Runc, opts *gorunc.CreateOpts) error {
		opts.Detach = true
		_, err := r.Run(ctx, id.String(), p.bundle, opts)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s run: %w", d.name, err)
	}
	_ = os.Remove(p.finishedAt)
	writeTime(p.startedAt)
	if err := d.watchNew(id, p, true); err != nil {
		_ = d.forceDelete(context.WithoutCancel(ctx), id)
		return err
	}
	return nil
}

// runtimeCreatePlain has the runtime create a container without a
// terminal.
func (d *Driver) runtimeCreatePlain(ctx context.Context, id spec.ID, p paths) error {
	err := d.runtimeDetached(ctx, id, p, func(r *gorunc.Runc, opts *gorunc.CreateOpts) error {
		return r.Create(ctx, id.String(), p.bundle, opts)
	})
	if err != nil {
		return fmt.Errorf("%s create: %w", d.name, err)
	}
	return nil
}

// runtimeDetached calls the runtime through call with the log file as the
// container's stdout and stderr, the FIFO as its stdin and the pid file
// set, and adds what the runtime logged to an error.
func (d *Driver) runtimeDetached(ctx context.Context, id spec.ID, p paths, call func(*gorunc.Runc, *gorunc.CreateOpts) error) error {
	out, err := logfile.OpenWriter(p.log)
	if err != nil {
		return err
	}
	in, err := openStdinFIFO(p.stdin)
	if err != nil {
		out.Close()
		return err
	}
	// The container holds its own copies once created.
	stdio := &fileIO{stdin: in, out: out}
	defer stdio.Close()
	ol, err := newOpLog(p.dir)
	if err != nil {
		return err
	}
	defer ol.remove()
	if err := call(d.withLog(ol.path), &gorunc.CreateOpts{IO: stdio, PidFile: p.pidFile}); err != nil {
		return ol.wrap(err)
	}
	return nil
}

// Start starts a created workload. A running workload is left alone. A
// stopped one, or one the runtime forgot (host reboot), is created again
// from its bundle and started, appending to the same log.
func (d *Driver) Start(ctx context.Context, id spec.ID) error {
	unlock := d.locks.Lock(id.String())
	defer unlock()
	p := d.paths(id)

	if w := d.watching(id); w != nil {
		// Known without asking the runtime, unless it ended.
		if _, done := w.exited(); !done {
			if !w.isStarted(d) {
				return d.runtimeStart(ctx, id, p)
			}
			d.adoptIfTty(ctx, id, p)
			return nil
		}
	}
	c, err := d.state(ctx, id)
	switch {
	case errors.Is(err, errUnknown):
		if err := d.recreate(ctx, id, p); err != nil {
			return err
		}
	case err != nil:
		return err
	case c.Status == rtRunning || c.Status == rtPaused:
		d.adoptIfTty(ctx, id, p)
		return nil
	case c.Status == rtCreated:
		// Ready: the process waits for the start below.
	case c.Status == rtStopped:
		if err := d.forceDelete(ctx, id); err != nil {
			return fmt.Errorf("start %s: %w", id, err)
		}
		if err := d.recreate(ctx, id, p); err != nil {
			return err
		}
	}

	return d.runtimeStart(ctx, id, p)
}

// runtimeStart has the runtime start a created container and marks its
// process started, or, when an earlier daemon created it, watches it.
func (d *Driver) runtimeStart(ctx context.Context, id spec.ID, p paths) error {
	ol, err := newOpLog(p.dir)
	if err != nil {
		return fmt.Errorf("start %s: %w", id, err)
	}
	defer ol.remove()
	if err := d.withLog(ol.path).Start(ctx, id.String()); err != nil {
		return fmt.Errorf("start %s: %s start: %w", id, d.name, ol.wrap(err))
	}
	_ = os.Remove(p.finishedAt)
	writeTime(p.startedAt)
	if !d.markStarted(id, p) {
		// Created by an earlier daemon: find its process by the pid file.
		release := procwatch.Hold()
		_ = d.watchNew(id, p, true) // without it, Status asks the runtime
		release()
	}
	// Created by an earlier daemon: take its terminal over.
	d.adoptIfTty(ctx, id, p)
	return nil
}

// adoptIfTty starts pumping a running tty workload's terminal if this
// Driver does not yet, so that its output reaches the log. Failing is not
// fatal to the workload; Attach reports why.
func (d *Driver) adoptIfTty(ctx context.Context, id spec.ID, p paths) {
	if tty, err := isTty(p); err == nil && tty {
		_, _ = d.adoptTTY(ctx, id)
	}
}

// recreate creates the runtime's container again from an existing bundle.
func (d *Driver) recreate(ctx context.Context, id spec.ID, p paths) error {
	s, err := readSpec(p.config)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("start %s: %w", id, driver.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", id, err)
	}
	if err := d.remount(p, s); err != nil {
		return fmt.Errorf("start %s: %w", id, err)
	}
	if err := d.runtimeCreate(ctx, id, p); err != nil {
		return fmt.Errorf("start %s: %w", id, err)
	}
	return nil
}

// Stop sends SIGTERM to the workload's main process, waits up to timeout
// for it to end, then kills every process in it. A workload that is
// stopped or gone is not an error.
func (d *Driver) Stop(ctx context.Context, id spec.ID, timeout time.Duration) error {
	unlock := d.locks.Lock(id.String())
	defer unlock()

	c, err := d.stateFast(ctx, id)
	if errors.Is(err, errUnknown) {
		d.ttys.finish(id, outputGrace)
		return nil
	}
	if err != nil {
		return err
	}
	switch c.Status {
	case rtStopped:
		d.ttys.finish(id, outputGrace)
		return nil
	case rtPaused:
		// A frozen process cannot act on SIGTERM.
		if err := d.rt.Resume(ctx, id.String()); err != nil {
			return fmt.Errorf("stop %s: %s resume: %w", id, d.name, err)
		}
	case rtCreated:
		// The process has not started: nothing to shut down gracefully.
		timeout = 0
	}
	sig := d.stopSignal(id)
	if timeout > 0 && !catchesSignal(c.Pid, sig) {
		// The workload's init is PID 1 of its namespace: the kernel drops
		// signals it has no handler for, so waiting would only delay the
		// kill (busybox httpd, most static servers).
		timeout = 0
	}
	if timeout > 0 {
		if err := d.rt.Kill(ctx, id.String(), int(sig), nil); err != nil {
			if stopped, _ := d.isStopped(ctx, id); !stopped {
				return fmt.Errorf("stop %s: %s kill %v: %w", id, d.name, sig, err)
			}
		}
		if stopped, err := d.waitStopped(ctx, id, timeout); err != nil || stopped {
			return d.stopped(id, err)
		}
	}
	// --all finds the processes through the workload's cgroup; a rootless
	// workload has none, but its own pid namespace, which dies with its
	// first process.
	kill := &gorunc.KillOpts{All: !d.opts.Rootless}
	if err := d.rt.Kill(ctx, id.String(), int(syscall.SIGKILL), kill); err != nil {
		if stopped, _ := d.isStopped(ctx, id); !stopped {
			return fmt.Errorf("stop %s: %s kill KILL (all: %v): %w", id, d.name, kill.All, err)
		}
	}
	stopped, err := d.waitStopped(ctx, id, killWait)
	if err == nil && !stopped {
		err = fmt.Errorf("still running %v after SIGKILL", killWait)
	}
	return d.stopped(id, err)
}

// stopped records when the workload stopped, unless stopping failed, and
// closes its terminal once the pump has read what it wrote last.
func (d *Driver) stopped(id spec.ID, err error) error {
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	d.ttys.finish(id, outputGrace)
	writeTime(d.paths(id).finishedAt)
	return nil
}

// stateFast is what the watch knows of a started workload, or else what
// the runtime says.
func (d *Driver) stateFast(ctx context.Context, id spec.ID) (*gorunc.Container, error) {
	if w := d.watching(id); w != nil && w.isStarted(d) {
		if _, done := w.exited(); done {
			return &gorunc.Container{ID: id.String(), Status: rtStopped}, nil
		}
		return &gorunc.Container{ID: id.String(), Status: rtRunning, Pid: w.proc.Pid}, nil
	}
	return d.state(ctx, id)
}

func (d *Driver) isStopped(ctx context.Context, id spec.ID) (bool, error) {
	c, err := d.stateFast(ctx, id)
	if errors.Is(err, errUnknown) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return c.Status == rtStopped, nil
}

// waitStopped waits until the workload stopped or timeout: for its watch
// to see the exit, or else polling the runtime.
func (d *Driver) waitStopped(ctx context.Context, id spec.ID, timeout time.Duration) (bool, error) {
	if w := d.watching(id); w != nil && w.isStarted(d) {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-w.done:
			return true, nil
		case <-t.C:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		stopped, err := d.isStopped(ctx, id)
		if err != nil || stopped || time.Now().After(deadline) {
			return stopped, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(stopPoll):
		}
	}
}

// Delete kills the workload if it runs and removes it from the runtime and
// the host: mounts, netns, logs, everything. Deleting what is not there is
// not an error.
func (d *Driver) Delete(ctx context.Context, id spec.ID) error {
	unlock := d.locks.Lock(id.String())
	defer unlock()
	if err := d.destroy(ctx, id); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}

// destroy removes every trace of id. The rootfs mount point is removed with
// os.Remove, which refuses a non-empty dir, before anything is removed
// recursively: a recursive removal must never walk into a mounted rootfs.
func (d *Driver) destroy(ctx context.Context, id spec.ID) error {
	p := d.paths(id)
	// A deleted workload's end is not an exit to report; the orphan
	// reaper takes the process.
	d.unwatch(id)
	if err := d.forceDelete(ctx, id); err != nil {
		return err
	}
	// Before anything else goes: processes left in the cgroup may still
	// use the rootfs, and the bundle lets a later Delete try again.
	if err := removeCgroupOf(p); err != nil {
		return err
	}
	d.ttys.finish(id, 0)
	if err := mountutil.UnmountAll(p.rootfs); err != nil {
		return err
	}
	if err := unmountDisk(p); err != nil {
		return err
	}
	if err := unmountSandbox(p); err != nil {
		return err
	}
	if err := removeNetNS(p.netns); err != nil {
		return err
	}
	if err := os.Remove(p.rootfs); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove rootfs mount point (still mounted?): %w", err)
	}
	if err := os.RemoveAll(p.dir); err != nil {
		return fmt.Errorf("remove workload dir: %w", err)
	}
	d.ids.release(id)
	return nil
}

// removeCgroupOf removes the cgroup the workload's config.json put it in.
// That path, rather than one made from Options, is the one the runtime was
// given, even if the node's cgroup parent changed since. Without a
// readable config.json no runtime ever ran the workload, so there is no
// cgroup (writeSpec replaces the file atomically).
func removeCgroupOf(p paths) error {
	s, err := readSpec(p.config)
	if err != nil || s.Linux == nil || s.Linux.CgroupsPath == "" {
		return nil
	}
	return removeCgroup(s.Linux.CgroupsPath)
}

// Status reports the workload's state. For a started workload it is what
// its watch knows, exit code included, without asking the runtime. Else
// it asks the runtime, which keeps no exit code: a stopped workload's is
// -1 then.
func (d *Driver) Status(ctx context.Context, id spec.ID) (driver.Status, error) {
	p := d.paths(id)
	st := driver.Status{StartedAt: readTime(p.startedAt)}
	if w := d.watching(id); w != nil && w.isStarted(d) {
		exit, done := w.exited()
		if !done {
			st.State, st.Pid = driver.StateRunning, w.proc.Pid
			return st, nil
		}
		st.State, st.ExitCode, st.FinishedAt = driver.StateStopped, exit.Code, readTime(p.finishedAt)
		if st.FinishedAt.IsZero() {
			st.FinishedAt = exit.At
		}
		return st, nil
	}
	c, err := d.state(ctx, id)
	switch {
	case errors.Is(err, errUnknown):
		if _, err := os.Stat(p.config); err != nil {
			return driver.Status{}, fmt.Errorf("workload %s: %w", id, driver.ErrNotFound)
		}
		// A bundle the runtime forgot, as after a reboot: Start brings it back.
		st.State, st.ExitCode = driver.StateStopped, -1
	case err != nil:
		return driver.Status{}, err
	case c.Status == rtCreated:
		st.State, st.Pid = driver.StateCreated, c.Pid
	case c.Status == rtRunning || c.Status == rtPaused:
		// A paused workload still has its processes; hypercore has no
		// paused state of its own.
		st.State, st.Pid = driver.StateRunning, c.Pid
	case c.Status == rtStopped:
		st.State, st.ExitCode = driver.StateStopped, -1
	default:
		st.State = driver.StateUnknown
	}
	if st.State == driver.StateStopped {
		st.FinishedAt = readTime(p.finishedAt)
	}
	return st, nil
}

// Recover adopts a workload after the daemon restarted. A workload that is
// still running needs nothing but, if it has a terminal, to have its pty
// read again (see tty.go). For a stopped one (or one the runtime lost
// in a reboot) the host setup is redone from cfg, remounting its rootfs
// if needed, so that Start works; nothing is set up twice.
func (d *Driver) Recover(ctx context.Context, cfg driver.Config) (driver.Status, error) {
	unlock := d.locks.Lock(cfg.ID.String())
	defer unlock()
	p := d.paths(cfg.ID)

	// The recorded process, if it still runs, needs no runtime call: the
	// pidfd watches it from now on.
	if w, err := d.watchRecorded(cfg.ID, p); err == nil {
		if _, done := w.exited(); !done {
			d.adoptIfTty(ctx, cfg.ID, p)
			return d.Status(ctx, cfg.ID)
		}
	}
	c, err := d.state(ctx, cfg.ID)
	if err != nil && !errors.Is(err, errUnknown) {
		return driver.Status{}, fmt.Errorf("recover %s: %w", cfg.ID, err)
	}
	if err == nil && c.Status != rtStopped {
		d.adoptIfTty(ctx, cfg.ID, p)
		return d.Status(ctx, cfg.ID)
	}
	if _, err := os.Stat(p.config); err != nil {
		return driver.Status{}, fmt.Errorf("recover %s: %w", cfg.ID, driver.ErrNotFound)
	}
	if err := d.setupHost(cfg, p); err != nil {
		return driver.Status{}, fmt.Errorf("recover %s: %w", cfg.ID, err)
	}
	return d.Status(ctx, cfg.ID)
}

func writeTime(path string) {
	// Best effort: only Status reads it, and a missing time reads as zero.
	_ = os.WriteFile(path, []byte(time.Now().UTC().Format(time.RFC3339Nano)), 0o644)
}

func readTime(path string) time.Time {
	data, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, string(data))
	return t
}

// catchesSignal reports whether process pid has a handler for sig, from
// the SigCgt mask in /proc/<pid>/status. When it cannot tell, it says yes,
// so the caller keeps the graceful path.
func catchesSignal(pid int, sig syscall.Signal) bool {
	if pid <= 0 {
		return true
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(data), "\n") {
		if mask, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			bits, err := strconv.ParseUint(strings.TrimSpace(mask), 16, 64)
			return err != nil || bits&(1<<(uint(sig)-1)) != 0
		}
	}
	return true
}
