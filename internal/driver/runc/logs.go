package runc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/logfile"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Logs streams the workload's log file: stdout and stderr interleaved as
// written, rotated generations included. With Follow the stream stays open
// until ctx ends or the workload is deleted.
func (d *Driver) Logs(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error) {
	p := d.paths(id)
	if tty, err := isTty(p); err == nil && tty {
		// Output of a workload with a terminal reaches the log only while
		// a pump reads the terminal; a restarted daemon may not have
		// adopted it yet. Attach reports why adopting fails.
		_, _ = d.ensureTTY(ctx, id)
	}
	r, err := logfile.OpenContext(ctx, p.log, logfile.Options{Tail: opts.Tail, Follow: opts.Follow, Poll: followPoll})
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(p.dir); serr != nil {
			return nil, fmt.Errorf("logs of %s: %w", id, driver.ErrNotFound)
		}
		// Created but the runtime never ran: no output yet.
		return io.NopCloser(eofReader{}), nil
	}
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", id, err)
	}
	return r, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// RotateLogs rotates every workload log that has reached LogMaxBytes. The
// Driver calls it every LogCheckEvery; a node may call it itself.
func (d *Driver) RotateLogs() error {
	entries, err := os.ReadDir(d.opts.StateDir)
	if err != nil {
		return fmt.Errorf("rotate logs: %w", err)
	}
	var errs []error
	for _, e := range entries {
		// The state dir holds more than workloads (the runtime's --root,
		// for one): only a name that parses as an id is a workload's.
		id, err := spec.ParseID(e.Name())
		if !e.IsDir() || err != nil {
			continue
		}
		if err := logfile.Rotate(d.paths(id).log, d.opts.LogMaxBytes, d.opts.LogKeep); err != nil {
			errs = append(errs, fmt.Errorf("workload %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (d *Driver) rotateLoop() {
	defer close(d.rotationDone)
	if d.opts.LogCheckEvery < 0 {
		<-d.stopRotation
		return
	}
	t := time.NewTicker(d.opts.LogCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-d.stopRotation:
			return
		case <-t.C:
			// Errors are retried on the next tick; a log that cannot be
			// rotated keeps growing, which is safe.
			_ = d.RotateLogs()
		}
	}
}
