package qemu

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hypercore-dev/hypercore/internal/logfile"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Log rotation, as the container driver does it: QEMU appends to
// output.log with O_APPEND (chardev append=on), so copy-and-truncate
// rotation works under it without QEMU noticing.
const (
	logMaxBytes   = 10 << 20
	logKeep       = 3
	logCheckEvery = time.Minute
)

// RotateLogs rotates every VM's output log that has reached 10 MiB,
// keeping 3 generations. The Driver calls it every minute.
func (d *Driver) RotateLogs() error {
	entries, err := os.ReadDir(d.opts.StateDir)
	if err != nil {
		return fmt.Errorf("rotate VM logs: %w", err)
	}
	var errs []error
	for _, e := range entries {
		// The state dir holds more than VMs (the initramfs, the accel
		// probe): only a name that parses as an id is a workload's.
		id, err := spec.ParseID(e.Name())
		if !e.IsDir() || err != nil {
			continue
		}
		if err := logfile.Rotate(d.paths(id).log, logMaxBytes, logKeep); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("workload %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (d *Driver) rotateLoop() {
	t := time.NewTicker(logCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-d.quit:
			return
		case <-t.C:
			// Retried on the next tick; a log that cannot be rotated
			// keeps growing, which is safe.
			_ = d.RotateLogs()
		}
	}
}

// Close stops the driver's background work. VMs keep running.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() { close(d.quit) })
	return nil
}
