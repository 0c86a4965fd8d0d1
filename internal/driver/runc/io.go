package runc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// fileIO gives the runtime real files for the container's stdio. When the
// runtime is detached (create, run -d) it passes its own stdio fds on to
// the container as they are, so the container writes straight into the log
// file and reads straight from the FIFO, and nothing of ours has to stay
// alive to copy bytes. It implements go-runc's IO.
type fileIO struct {
	stdin, out *os.File
}

func (f *fileIO) Set(cmd *exec.Cmd) {
	cmd.Stdin = f.stdin
	cmd.Stdout = f.out
	cmd.Stderr = f.out
}

func (f *fileIO) Close() error {
	return errors.Join(f.stdin.Close(), f.out.Close())
}

// The container owns its streams; there is nothing for us to read or write.
func (f *fileIO) Stdin() io.WriteCloser { return nil }
func (f *fileIO) Stdout() io.ReadCloser { return nil }
func (f *fileIO) Stderr() io.ReadCloser { return nil }

// openStdinFIFO opens the workload's stdin FIFO, making it if needed. It is
// opened read-write: the container then always holds a writer itself and
// never sees end-of-file while no one is attached, and opening does not
// block waiting for a peer. The fd is left blocking, as a process expects
// its stdin to be.
func openStdinFIFO(path string) (*os.File, error) {
	if err := unix.Mkfifo(path, 0o600); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create stdin FIFO: %w", err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdin FIFO: %w", err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// pipeIO connects an exec'd process to the caller through pipes; the copy
// goroutines are run by Exec. It implements go-runc's IO and StartCloser.
type pipeIO struct {
	stdin          *os.File // child's end, nil for /dev/null
	stdout, stderr *os.File // child's ends
}

func (p *pipeIO) Set(cmd *exec.Cmd) {
	if p.stdin != nil {
		cmd.Stdin = p.stdin
	}
	cmd.Stdout = p.stdout
	cmd.Stderr = p.stderr
}

// CloseAfterStart closes our copies of the child's ends, so that our reads
// see end-of-file when the process (and whatever inherited them) is done.
func (p *pipeIO) CloseAfterStart() error { return p.Close() }

func (p *pipeIO) Close() error {
	var errs []error
	for _, f := range []*os.File{p.stdin, p.stdout, p.stderr} {
		if f != nil {
			if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (p *pipeIO) Stdin() io.WriteCloser { return nil }
func (p *pipeIO) Stdout() io.ReadCloser { return nil }
func (p *pipeIO) Stderr() io.ReadCloser { return nil }

// ttyIO makes a pty slave the runtime's stdio and controlling terminal, so
// that resizing the pty signals it (SIGWINCH). It implements go-runc's IO
// and StartCloser.
type ttyIO struct {
	slave *os.File
}

func (t *ttyIO) Set(cmd *exec.Cmd) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = t.slave, t.slave, t.slave
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// A new session whose controlling terminal is the slave (fd 0 in the
	// child). A session leader cannot also move to a new process group.
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0
	cmd.SysProcAttr.Setpgid = false
}

// CloseAfterStart closes our copy of the slave, so reads of the master end
// (EIO) once the runtime is gone.
func (t *ttyIO) CloseAfterStart() error { return t.Close() }

func (t *ttyIO) Close() error {
	if err := t.slave.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

func (t *ttyIO) Stdin() io.WriteCloser { return nil }
func (t *ttyIO) Stdout() io.ReadCloser { return nil }
func (t *ttyIO) Stderr() io.ReadCloser { return nil }
