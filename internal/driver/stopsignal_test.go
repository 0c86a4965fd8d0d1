package driver

import (
	"syscall"
	"testing"
)

func TestStopSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{
		"": syscall.SIGTERM, "SIGQUIT": syscall.SIGQUIT, "quit": syscall.SIGQUIT, "3": syscall.SIGQUIT,
		"SIGWINCH": syscall.SIGWINCH, "SIGNOPE": syscall.SIGTERM, "99": syscall.SIGTERM,
	} {
		if got := StopSignal(in); got != want {
			t.Errorf("StopSignal(%q) = %v, want %v", in, got, want)
		}
	}
}
