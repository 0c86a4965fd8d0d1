package driver

import (
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// StopSignalAnnotation is the OCI annotation that carries the image's
// StopSignal into a container's config.json, where Stop reads it back.
const StopSignalAnnotation = "org.opencontainers.image.stopSignal"

// StopSignal is the signal that asks a workload to end gracefully: the
// image's StopSignal ("SIGQUIT", "QUIT" or "3", as Docker takes it), or
// SIGTERM when the image names none or one that is not a signal.
func StopSignal(name string) syscall.Signal {
	name = strings.ToUpper(strings.TrimSpace(name))
	if name == "" {
		return syscall.SIGTERM
	}
	if n, err := strconv.Atoi(name); err == nil {
		if n > 0 && n < 65 {
			return syscall.Signal(n)
		}
		return syscall.SIGTERM
	}
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if s := unix.SignalNum(name); s != 0 {
		return s
	}
	return syscall.SIGTERM
}
