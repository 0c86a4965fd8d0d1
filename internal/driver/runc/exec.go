package runc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/console"
	gorunc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// outputGrace is how long Exec keeps copying output after the process
// ended, for a background child that still holds the stream open.
const outputGrace = time.Second

// Exec runs a process in the running workload, as the workload's user,
// with its environment plus cfg.Env, and returns the process's exit code.
// If ctx ends first, the process is killed. A goroutine reading cfg.Stdin
// may outlive Exec until the caller's Stdin returns from Read.
func (d *Driver) Exec(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error) {
	if len(cfg.Args) == 0 {
		return -1, fmt.Errorf("exec in %s: no command given", id)
	}
	p := d.paths(id)
	c, err := d.state(ctx, id)
	if errors.Is(err, errUnknown) {
		if _, serr := os.Stat(p.config); serr != nil {
			return -1, fmt.Errorf("exec in %s: %w", id, driver.ErrNotFound)
		}
		return -1, fmt.Errorf("exec in %s: workload is stopped; start it first", id)
	}
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	if c.Status != rtRunning {
		return -1, fmt.Errorf("exec in %s: workload is %s, not running; start it first", id, c.Status)
	}
	s, err := readSpec(p.config)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	proc := execProcess(*s.Process, cfg)
	if cfg.User != "" {
		// Resolved in the workload's own root, as its main user was.
		u, err := driver.ResolveUser(p.rootfs, cfg.User)
		if err != nil {
			return -1, fmt.Errorf("exec in %s: --user: %w", id, err)
		}
		proc.User = specs.User{UID: u.UID, GID: u.GID, AdditionalGids: u.Groups}
		proc.Capabilities = capsFor(u.UID)
		proc.Env = driver.MergeEnv(proc.Env, []string{"HOME=" + u.Home})
		proc.Env = driver.MergeEnv(proc.Env, cfg.Env)
	}

	ol, err := newOpLog(p.dir)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	defer ol.remove()
	pidFile := ol.path + ".pid"
	defer os.Remove(pidFile)
	opts := &gorunc.ExecOpts{LogFile: ol.path, PidFile: pidFile}
	kill := func() { killPidFile(pidFile) }
	if d.name == "runsc" {
		// runsc writes its own pid to --pid-file, and the process runs in
		// the sandbox where no host signal reaches it: it is killed through
		// runsc by its pid inside the sandbox.
		internal := ol.path + ".internal-pid"
		defer os.Remove(internal)
		opts.ExtraArgs = []string{"--internal-pid-file", internal}
		kill = func() { d.killInSandbox(id, internal) }
	}

	// The runtime must not be killed when ctx ends: that would orphan the
	// process. The process is killed instead, and the runtime then returns.
	stop := context.AfterFunc(ctx, kill)
	rt := d.withLog(ol.path)
	rctx := context.WithoutCancel(ctx)
	if cfg.Tty {
		err = execTty(rctx, rt, id, proc, cfg.IO, opts)
	} else {
		err = execPipes(rctx, rt, id, proc, cfg.IO, opts)
	}
	if !stop() {
		// ctx ended and the process was killed: its exit code is ours.
		return -1, fmt.Errorf("exec in %s: %w", id, ctx.Err())
	}
	code, err := exitCode(err, ol)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %s exec: %w", id, d.name, err)
	}
	return code, nil
}

// execProcess is the workload's process spec, changed to run cfg.
func execProcess(base specs.Process, cfg driver.ExecConfig) specs.Process {
	proc := base
	proc.Args = cfg.Args
	proc.Env = driver.MergeEnv(base.Env, cfg.Env)
	if cfg.WorkDir != "" {
		proc.Cwd = cfg.WorkDir
	}
	proc.Terminal = cfg.Tty
	if cfg.Tty && !driver.HasEnv(proc.Env, "TERM") {
		proc.Env = append(proc.Env, "TERM=xterm")
	}
	proc.ConsoleSize = nil
	return proc
}

// exitCode tells the process's exit code from a failure of the runtime
// itself, which also exits non-zero but logs an error first.
func exitCode(err error, ol *opLog) (int, error) {
	if err == nil {
		return 0, nil
	}
	if msg := ol.messages(); msg != "" {
		return -1, fmt.Errorf("%s: %w", msg, err)
	}
	var ee *gorunc.ExitError
	if errors.As(err, &ee) {
		return ee.Status, nil
	}
	return -1, err
}

// killPidFile kills the process whose pid the runtime wrote to path.
func killPidFile(path string) {
	if pid := readPidFile(path); pid > 0 {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// killInSandbox kills the exec'd process of a runsc sandbox whose pid in
// the sandbox runsc wrote to path.
func (d *Driver) killInSandbox(id spec.ID, path string) {
	pid := readPidFile(path)
	if pid <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	_ = d.rt.Kill(ctx, id.String(), int(unix.SIGKILL), &gorunc.KillOpts{ExtraArgs: []string{"--pid", strconv.Itoa(pid)}})
}

// readPidFile returns the pid the runtime wrote to path, waiting a little
// for the runtime to write it if the process is only starting, or 0.
func readPidFile(path string) int {
	for range 40 {
		data, err := os.ReadFile(path)
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && perr == nil && pid > 0 {
			return pid
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0
}

// execPipes runs proc with its stdio connected to stdio through pipes.
func execPipes(ctx context.Context, rt *gorunc.Runc, id spec.ID, proc specs.Process, stdio driver.IO, opts *gorunc.ExecOpts) error {
	pio := &pipeIO{}
	defer pio.Close()
	var guard writerGuard
	defer guard.close()
	var outputs sync.WaitGroup
	var readers []*os.File
	for _, s := range []struct {
		w     io.Writer
		child **os.File
	}{{stdio.Stdout, &pio.stdout}, {stdio.Stderr, &pio.stderr}} {
		r, w, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("make pipe: %w", err)
		}
		*s.child = w
		readers = append(readers, r)
		outputs.Go(func() {
			_, _ = io.Copy(guard.wrap(s.w), r)
		})
	}
	defer func() {
		for _, r := range readers {
			r.Close()
		}
	}()

	closeStdin := func() {}
	if stdio.Stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("make pipe: %w", err)
		}
		pio.stdin = r
		var once sync.Once
		closeStdin = func() { once.Do(func() { w.Close() }) }
		go func() {
			_, _ = io.Copy(w, stdio.Stdin)
			closeStdin() // end-of-file for the process
		}()
	}
	defer closeStdin()

	opts.IO = pio
	err := rt.Exec(ctx, id.String(), proc, opts)
	pio.Close()
	waitTimeout(&outputs, outputGrace)
	return err
}

// execTty runs proc on a terminal. runc only hands a pty master over a
// console socket when it detaches, and a detached exec has no exit code to
// return, so the runtime runs attached instead: its stdio and controlling
// terminal are the slave of a pty of ours. The runtime makes the
// workload's terminal, copies between the two, and on SIGWINCH (sent when
// we resize ours) copies the size over.
func execTty(ctx context.Context, rt *gorunc.Runc, id spec.ID, proc specs.Process, stdio driver.IO, opts *gorunc.ExecOpts) error {
	con, slavePath, err := console.NewPty()
	if err != nil {
		return fmt.Errorf("make pty: %w", err)
	}
	defer con.Close()
	if size, ok := latestSize(stdio.Resize); ok {
		// Both, as the runtime copies our size over only once the process
		// runs, and a process may ask for it at once.
		proc.ConsoleSize = &specs.Box{Height: uint(size.Rows), Width: uint(size.Cols)}
		if err := con.Resize(console.WinSize{Height: size.Rows, Width: size.Cols}); err != nil {
			return fmt.Errorf("size pty: %w", err)
		}
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open pty slave: %w", err)
	}
	tio := &ttyIO{slave: slave}
	defer tio.Close()
	master, err := pollable(con)
	if err != nil {
		return err
	}
	defer master.Close()

	var guard writerGuard
	defer guard.close()
	var output sync.WaitGroup
	output.Go(func() {
		// EIO, once the runtime closed the slave, is the end.
		_, _ = io.Copy(guard.wrap(stdio.Stdout), master)
	})
	if stdio.Stdin != nil {
		go func() { _, _ = io.Copy(master, stdio.Stdin) }()
	}
	stopResize := make(chan struct{})
	defer close(stopResize)
	if stdio.Resize != nil {
		go func() {
			for {
				select {
				case <-stopResize:
					return
				case sz, ok := <-stdio.Resize:
					if !ok {
						return
					}
					_ = con.Resize(console.WinSize{Height: sz.Rows, Width: sz.Cols})
				}
			}
		}()
	}
	opts.IO = tio
	err = rt.Exec(ctx, id.String(), proc, opts)
	tio.Close()
	waitTimeout(&output, outputGrace)
	return err
}

// latestSize takes the resize events already queued, so the terminal can
// have the caller's size before the process first looks at it.
func latestSize(ch <-chan driver.TermSize) (driver.TermSize, bool) {
	var last driver.TermSize
	got := false
	for ch != nil {
		select {
		case sz, ok := <-ch:
			if !ok {
				return last, got
			}
			last, got = sz, true
		default:
			return last, got
		}
	}
	return last, got
}

// pollable returns a non-blocking duplicate of the pty master, which Go's
// poller serves, so that closing it ends a Read blocked on it.
func pollable(con console.Console) (*os.File, error) {
	fd, err := unix.Dup(int(con.Fd()))
	if err != nil {
		return nil, fmt.Errorf("dup pty master: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pty master: %w", err)
	}
	return os.NewFile(uintptr(fd), "pty-master"), nil
}

// waitTimeout waits for wg, or for timeout when something still holds the
// streams open; the deferred closes then end the copies.
func waitTimeout(wg *sync.WaitGroup, timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// guardedWriter serialises writes to the caller's writers, which are often
// one and the same, and drops writes once closed so that nothing is written
// to them after Exec returned.
type guardedWriter struct {
	mu     *sync.Mutex
	closed *bool
	w      io.Writer
}

func (g *guardedWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if *g.closed {
		return 0, os.ErrClosed
	}
	return g.w.Write(p)
}

// writerGuard hands out guardedWriters sharing one lock.
type writerGuard struct {
	mu     sync.Mutex
	closed bool
}

func (g *writerGuard) wrap(w io.Writer) io.Writer {
	return &guardedWriter{mu: &g.mu, closed: &g.closed, w: orDiscard(w)}
}

func (g *writerGuard) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
