package runc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/logfile"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// How often Attach checks whether the workload still runs, and how often a
// following reader looks for new output.
const (
	attachPoll = 500 * time.Millisecond
	followPoll = 100 * time.Millisecond
)

// Attach connects stdio to the workload's main process until ctx ends or
// the workload stops; either way ends the attachment without error.
// Detaching never ends the workload's input.
//
// A workload with a terminal (spec Tty) is attached to its pty: stdio.Stdin
// is typed into the terminal, stdio.Stdout gets what the terminal shows,
// and stdio.Resize (when stdio.Tty) resizes it. A workload without one gets
// stdio.Stdin through its stdin FIFO, and its new output (stdout and stderr
// together, to stdio.Stdout) read from its log; stdio.Tty asks for nothing
// more there, as the workload has no terminal to resize.
func (d *Driver) Attach(ctx context.Context, id spec.ID, stdio driver.IO) error {
	p := d.paths(id)
	tty, err := isTty(p)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("attach to %s: %w", id, driver.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("attach to %s: %w", id, err)
	}
	if running, err := d.alive(ctx, id); err != nil || !running {
		if err == nil {
			err = errors.New("workload is not running; start it first")
		}
		return fmt.Errorf("attach to %s: %w", id, err)
	}
	if tty {
		if err := d.attachTty(ctx, id, stdio); err != nil {
			return fmt.Errorf("attach to %s: %w", id, err)
		}
		return nil
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
func (d *Driver) alive(ctx context.Context, id spec.ID) (bool, error) {
	c, err := d.state(ctx, id)
	if errors.Is(err, errUnknown) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return c.Status != rtStopped, nil
}

// attachTty connects stdio to the workload's terminal through its pump.
func (d *Driver) attachTty(ctx context.Context, id spec.ID, stdio driver.IO) error {
	pump, err := d.ensureTTY(ctx, id)
	if err != nil {
		return err
	}
	if pump == nil {
		return nil // it stopped meanwhile
	}
	// Subscribe before any input goes in, so no answer to it is missed.
	sub := pump.subscribe()
	if sub == nil {
		return nil // the terminal closed: the workload stopped
	}
	defer pump.unsubscribe(sub)
	input, err := pump.writer()
	if err != nil {
		return err
	}
	defer input.Close()

	var resize <-chan driver.TermSize
	if stdio.Tty {
		resize = stdio.Resize
	}
	if size, ok := latestSize(resize); ok {
		if err := pump.resize(size); err != nil {
			return err
		}
	}

	stop := make(chan struct{})
	var workers sync.WaitGroup
	defer func() {
		close(stop)
		input.Close() // ends a write blocked on a workload that does not read
		workers.Wait()
	}()

	// Input and resizes go through one goroutine, resizes first: a client
	// sends its size before what it types, and the program reading the
	// line may well ask for the size next.
	var typed chan []byte
	if stdio.Stdin != nil {
		typed = make(chan []byte)
		go readChunks(stdio.Stdin, typed, stop)
	}
	workers.Go(func() {
		for {
			select {
			case <-stop:
				return
			case size, ok := <-resize:
				if !ok {
					resize = nil
					continue
				}
				_ = pump.resize(size)
			case chunk, ok := <-typed:
				if !ok {
					// The client's input ended; the workload's does not.
					typed = nil
					continue
				}
				if size, ok := latestSize(resize); ok {
					_ = pump.resize(size)
				}
				if _, err := input.Write(chunk); err != nil {
					return
				}
			}
		}
	})

	var guard writerGuard
	defer guard.close()
	out := guard.wrap(stdio.Stdout)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		for chunk := range sub.ch {
			if _, err := out.Write(chunk); err != nil {
				return
			}
		}
	}()
	select {
	case <-ctx.Done():
		return nil
	case <-copied:
		if pump.wasBehind(sub) {
			return errClientBehind
		}
		// The terminal closed: the workload stopped, and all it wrote was
		// delivered.
		return nil
	}
}

// readChunks sends what r yields to ch until r ends or stop is closed; ch
// is closed when r ends. It may stay blocked in r.Read after stop.
func readChunks(r io.Reader, ch chan<- []byte, stop <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case ch <- bytes.Clone(buf[:n]):
			case <-stop:
				return
			}
		}
		if err != nil {
			select {
			case <-stop:
			default:
				close(ch)
			}
			return
		}
	}
}
