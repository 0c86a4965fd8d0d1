package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/logfile"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

func (d *Driver) dropClient(id spec.ID) {
	d.mu.Lock()
	c := d.clients[id]
	delete(d.clients, id)
	d.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// Stop asks the agent to end the workload (SIGTERM, then SIGKILL after
// timeout) and power off, and kills QEMU if the VM is still there after
// timeout plus a margin for the guest to sync. A timeout of 0 kills QEMU
// at once.
func (d *Driver) Stop(ctx context.Context, id spec.ID, timeout time.Duration) error {
	unlock := d.locks.Lock(id.String())
	defer unlock()
	_, p, err := d.readState(id)
	if err != nil {
		return err
	}
	pid := livePid(p)
	if pid == 0 {
		d.dropClient(id)
		return nil
	}
	if timeout > 0 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := d.client(cctx, id, p)
		if err == nil {
			err = c.Shutdown(cctx, timeout)
		}
		cancel()
		if err != nil {
			d.log.Warn("graceful stop of VM failed; killing it", "id", id, "err", err)
		} else if waitGone(ctx, p, pid, timeout+shutdownMargin) {
			d.dropClient(id)
			return nil
		}
	}
	if err := writeTime(p.killed); err != nil {
		return err
	}
	kill(pid)
	d.dropClient(id)
	if !waitGone(ctx, p, pid, 10*time.Second) {
		return fmt.Errorf("stop %s: QEMU (pid %d) did not die after SIGKILL", id, pid)
	}
	return nil
}

// waitGone waits up to d for pid to stop being p's QEMU.
func waitGone(ctx context.Context, p paths, pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for livePid(p) == pid {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// Delete kills the VM if it runs and removes its state, logs included.
func (d *Driver) Delete(ctx context.Context, id spec.ID) error {
	unlock := d.locks.Lock(id.String())
	defer unlock()
	p := d.paths(id)
	if _, err := os.Stat(p.dir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", id, driver.ErrNotFound)
	}
	if pid := livePid(p); pid > 0 {
		kill(pid)
		waitGone(ctx, p, pid, 10*time.Second)
	}
	d.dropClient(id)
	d.secrets.drop(id)
	_ = os.Remove(p.sock)
	if err := os.RemoveAll(p.dir); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}

// Recover re-adopts a VM after a daemon restart. QEMU and its files need
// nothing redone; the agent connection is made again on first use.
func (d *Driver) Recover(ctx context.Context, cfg driver.Config) (driver.Status, error) {
	_, p, err := d.readState(cfg.ID)
	if err != nil {
		return driver.Status{}, err
	}
	d.dropClient(cfg.ID)
	return d.status(p), nil
}

// Logs streams the workload's output from the file QEMU appends it to, so
// it outlives the VM.
func (d *Driver) Logs(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error) {
	p := d.paths(id)
	r, err := logfile.OpenContext(ctx, p.log, logfile.Options{Tail: opts.Tail, Follow: opts.Follow, Poll: 100 * time.Millisecond})
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("logs of %s: %w", id, driver.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", id, err)
	}
	return r, nil
}

// Exec runs a process in the guest, as the workload's user and with its
// env plus cfg.Env, and returns its exit code.
func (d *Driver) Exec(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error) {
	st, p, err := d.readState(id)
	if err != nil {
		return -1, err
	}
	if livePid(p) == 0 {
		return -1, fmt.Errorf("exec in %s: the VM is not running; start it first", id)
	}
	c, err := d.client(ctx, id, p)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	proc := st.Guest.Process
	proc.Args, proc.Env = cfg.Args, driver.MergeEnv(proc.Env, cfg.Env)
	if cfg.WorkDir != "" {
		proc.WorkDir = cfg.WorkDir
	}
	if cfg.User != "" {
		u, ok := driver.NumericUser(cfg.User)
		if !ok {
			return -1, fmt.Errorf("exec in %s: --user %q: a microVM's exec takes a numeric uid or uid:gid", id, cfg.User)
		}
		proc.UID, proc.GID, proc.Groups = u.UID, u.GID, nil
	}
	if cfg.Tty && !driver.HasEnv(proc.Env, "TERM") {
		proc.Env = append(proc.Env, "TERM=xterm")
	}
	code, err := c.Exec(ctx, proc, cfg.IO)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	return code, nil
}

// Attach connects stdio to the workload's main process until ctx ends or
// the process exits.
func (d *Driver) Attach(ctx context.Context, id spec.ID, stdio driver.IO) error {
	_, p, err := d.readState(id)
	if err != nil {
		return err
	}
	if livePid(p) == 0 {
		return fmt.Errorf("attach to %s: the VM is not running; start it first", id)
	}
	c, err := d.client(ctx, id, p)
	if err != nil {
		return fmt.Errorf("attach to %s: %w", id, err)
	}
	if err := c.Attach(ctx, stdio); err != nil {
		return fmt.Errorf("attach to %s: %w", id, err)
	}
	return nil
}

// Stats reports the QEMU process's CPU time and resident memory: what the
// VM costs the host, guest kernel included.
func (d *Driver) Stats(ctx context.Context, id spec.ID) (driver.Stats, error) {
	st, p, err := d.readState(id)
	if err != nil {
		return driver.Stats{}, err
	}
	out := driver.Stats{MemoryLimit: uint64(st.MemoryMiB) << 20}
	pid := livePid(p)
	if pid == 0 {
		return out, nil
	}
	out.MemoryBytes = RSS(pid)
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if f := statFields(string(b)); len(f) > 14 {
			u, _ := strconv.ParseUint(f[13], 10, 64)
			s, _ := strconv.ParseUint(f[14], 10, 64)
			// USER_HZ is 100 on every Linux the node runs on.
			out.CPUNanos = (u + s) * uint64(10*time.Millisecond)
		}
	}
	out.Pids = 1
	return out, nil
}

// RSS is a process's resident set in bytes, 0 if it is gone.
func RSS(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// statFields splits /proc/<pid>/stat after the command name, which may
// hold spaces; field 3 (state) comes first, so index i is field i+3.
func statFields(stat string) []string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return append([]string{"", ""}, strings.Fields(stat[i+1:])...)
}

// livePid returns the pid of p's QEMU if it runs, else 0. The pid file
// alone could name a recycled pid, so the process must also be a live
// (not zombie) process whose command line names this VM's agent socket.
func livePid(p paths) int {
	b, err := os.ReadFile(p.pid)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	if f := statFields(string(stat)); len(f) < 3 || f[2] == "Z" || f[2] == "X" {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), p.sock) {
		return 0
	}
	return pid
}

func kill(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }
