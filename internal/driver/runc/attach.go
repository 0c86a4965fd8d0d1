package runc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/logfile"
)

// How often Attach checks whether the workload still runs, and how often a
// following reader looks for new output.
const (
	attachPoll = 500 * time.Millisecond
	followPoll = 100 * time.Millisecond
)

// Attach writes stdio.Stdin to the workload's stdin FIFO and streams its
// new output (stdout and stderr together, to stdio.Stdout) until ctx ends or
// the workload stops. Either way ends the attachment without error. The
// workload keeps its stdin open, so detaching does not end its input.
// Workloads with a terminal (spec Tty) cannot be attached to yet: they run
// without one, since a pty master would need a process of ours to hold it.
func (d *Driver) Attach(ctx context.Context, id string, stdio driver.IO) error {
	if err := checkID(id); err != nil {
		return err
	}
	p := d.paths(id)
	s, err := readSpec(p.config)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("attach to %s: %w", id, driver.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("attach to %s: %w", id, err)
	}
	if tty, _ := strconv.ParseBool(s.Annotations[annTty]); tty || stdio.Tty {
		return fmt.Errorf("attach to %s: attaching with a terminal is not supported by the %s driver yet; use exec with a tty, or logs", id, d.name)
	}
	if running, err := d.alive(ctx, id); err != nil || !running {
		if err == nil {
			err = errors.New("workload is not running; start it first")
		}
		return fmt.Errorf("attach to %s: %w", id, err)
	}

	out, err := logfile.Open(p.log, logfile.Options{SkipExisting: true, Follow: true, Poll: followPoll})
	if err != nil {
		return fmt.Errorf("attach to %s: %w", id, err)
	}
	defer out.Close()
	if stdio.Stdin != nil {
		// Non-blocking, so that opening fails (ENXIO) rather than hangs if
		// the container's end is gone; Go's poller then serves the writes.
		fifo, err := os.OpenFile(p.stdin, os.O_WRONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("attach to %s: open stdin: %w", id, err)
		}
		defer fifo.Close()
		go func() { _, _ = io.Copy(fifo, stdio.Stdin) }()
	}

	var guard writerGuard
	defer guard.close()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(guard.wrap(stdio.Stdout), out)
	}()
	tick := time.NewTicker(attachPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			out.Close()
			<-copied
			return nil
		case <-copied:
			// The log file is gone: the workload was deleted.
			return nil
		case <-tick.C:
			if running, err := d.alive(ctx, id); err == nil && !running {
				// Deliver what it wrote before it stopped, then end.
				out.Drain()
				<-copied
				return nil
			}
		}
	}
}

// alive reports whether the workload is created or running.
func (d *Driver) alive(ctx context.Context, id string) (bool, error) {
	c, err := d.state(ctx, id)
	if errors.Is(err, errUnknown) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return c.Status != rtStopped, nil
}
