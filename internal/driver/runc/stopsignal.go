package runc

import (
	"syscall"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// stopSignal is the signal Stop sends first: the image's StopSignal, which
// Create wrote into config.json, or SIGTERM.
func (d *Driver) stopSignal(id spec.ID) syscall.Signal {
	s, err := readSpec(d.paths(id).config)
	if err != nil {
		return syscall.SIGTERM
	}
	return driver.StopSignal(s.Annotations[driver.StopSignalAnnotation])
}
