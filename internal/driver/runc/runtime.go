package runc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	gorunc "github.com/containerd/go-runc"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// errUnknown means the runtime holds no container with the id.
var errUnknown = errors.New("runtime knows no such container")

// The states runc and crun report.
const (
	rtCreated = "created"
	rtRunning = "running"
	rtPaused  = "paused"
	rtStopped = "stopped"
)

// known reports whether the runtime keeps state for id. runc and crun keep
// a directory named after the container under their --root, runsc a file
// <sandbox>_sandbox:<container>.state; asking this way avoids parsing their
// different "does not exist" messages.
func (d *Driver) known(id spec.ID) bool {
	if d.name == "runsc" {
		// The sandbox id is the container id for the one container of a
		// workload, but the pattern does not rely on it.
		m, _ := filepath.Glob(filepath.Join(d.rtState, "*_sandbox:"+id.String()+".state"))
		return len(m) > 0
	}
	_, err := os.Stat(filepath.Join(d.rtState, id.String()))
	return err == nil
}

// state asks the runtime about id, or returns errUnknown.
func (d *Driver) state(ctx context.Context, id spec.ID) (*gorunc.Container, error) {
	if !d.known(id) {
		return nil, errUnknown
	}
	c, err := d.rt.State(ctx, id.String())
	if err != nil {
		if !d.known(id) {
			return nil, errUnknown
		}
		return nil, fmt.Errorf("%s state %s: %w", d.name, id, err)
	}
	return c, nil
}

// forceDelete removes the runtime's container, killing it if it runs. A
// container the runtime does not know is not an error.
func (d *Driver) forceDelete(ctx context.Context, id spec.ID) error {
	if !d.known(id) {
		return nil
	}
	err := d.rt.Delete(ctx, id.String(), &gorunc.DeleteOpts{Force: true})
	if err != nil && d.known(id) {
		return fmt.Errorf("%s delete --force %s: %w", d.name, id, err)
	}
	return nil
}

// opLog is a scratch file in the workload dir for the runtime's own log of
// one command, read back when the command fails.
type opLog struct{ path string }

func newOpLog(dir string) (*opLog, error) {
	f, err := os.CreateTemp(dir, "runtime-*.log")
	if err != nil {
		return nil, fmt.Errorf("create runtime log: %w", err)
	}
	f.Close()
	return &opLog{path: f.Name()}, nil
}

// messages returns the error messages the runtime logged, joined.
func (l *opLog) messages() string {
	f, err := os.Open(l.path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var msgs []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		var e struct{ Level, Msg string }
		if json.Unmarshal(s.Bytes(), &e) != nil {
			continue
		}
		if e.Level == "error" || e.Level == "fatal" {
			msgs = append(msgs, e.Msg)
		}
	}
	return strings.Join(msgs, "; ")
}

// wrap adds what the runtime logged to err.
func (l *opLog) wrap(err error) error {
	if msg := l.messages(); msg != "" {
		return fmt.Errorf("%s: %w", msg, err)
	}
	return err
}

func (l *opLog) remove() { _ = os.Remove(l.path) }
