package runc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/procwatch"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// A workload's main process is watched through a pidfd (package
// procwatch), so Status, Stop and the node learn of its exit without
// asking the runtime. The runtime writes the process's pid to the bundle's
// pid file; the driver records it with its start time in the init file, by
// which a restarted daemon finds the same process again and not one that
// reused the pid.
//
// For runc and crun the pid is the container's init, whose exit status is
// the workload's. For runsc it is the sandbox process: runsc's `boot`
// exits with the container's exit status when its one container ends, so
// the code is the workload's there too.

// watch follows one workload's main process.
type watch struct {
	proc *procwatch.Process
	// started is false between the runtime's create and start: the
	// process exists but waits, and only the runtime can say so.
	started bool
	done    chan struct{} // closed once exit is set
	exit    procwatch.Exit
}

// watches are the watched workloads of a Driver.
type watches struct {
	mu     sync.Mutex
	m      map[spec.ID]*watch
	onExit func(spec.ID, driver.Exit)
}

// NotifyExit makes the driver call fn, from a goroutine of its own, when
// the main process of a workload it watches exits. It implements
// driver.ExitNotifier. Call it before the first workload is created.
func (d *Driver) NotifyExit(fn func(spec.ID, driver.Exit)) {
	d.watches.mu.Lock()
	d.watches.onExit = fn
	d.watches.mu.Unlock()
}

// watching returns id's watch, or nil.
func (d *Driver) watching(id spec.ID) *watch {
	d.watches.mu.Lock()
	defer d.watches.mu.Unlock()
	return d.watches.m[id]
}

// watchNew watches the process whose pid the runtime just wrote to the
// pid file and, once started, records it for a later daemon. The caller holds
// procwatch.Hold from before the runtime started it, so the process is
// still there, as a zombie at worst, with its exit code.
func (d *Driver) watchNew(id spec.ID, p paths, started bool) error {
	data, err := os.ReadFile(p.pidFile)
	if err != nil {
		return fmt.Errorf("read the pid file %s wrote: %w", d.name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("pid file %s: %w", p.pidFile, err)
	}
	proc, err := procwatch.Open(pid, 0)
	if err != nil {
		return fmt.Errorf("watch the workload's process: %w", err)
	}
	if started {
		if err := record(proc, p); err != nil {
			proc.Close()
			return err
		}
	}
	d.startWatch(id, proc, started)
	return nil
}

// record writes proc's pid and start time to the init file, which a
// restarted daemon finds it by. Only a started process is recorded: one
// still waiting for start would look like a running workload.
func record(proc *procwatch.Process, p paths) error {
	data := fmt.Sprintf("%d %d\n", proc.Pid, proc.StartTime)
	if err := os.WriteFile(p.init, []byte(data), 0o644); err != nil {
		return fmt.Errorf("record the workload's process: %w", err)
	}
	return nil
}

// watchRecorded watches the process recorded in the init file, as a
// restarted daemon does. procwatch.ErrGone means it is not running.
func (d *Driver) watchRecorded(id spec.ID, p paths) (*watch, error) {
	if w := d.watching(id); w != nil {
		return w, nil
	}
	data, err := os.ReadFile(p.init)
	if err != nil {
		return nil, fmt.Errorf("%w: no record of the workload's process: %v", procwatch.ErrGone, err)
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscan(string(data), &pid, &start); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", procwatch.ErrGone, p.init, err)
	}
	proc, err := procwatch.Open(pid, start)
	if err != nil {
		return nil, err
	}
	return d.startWatch(id, proc, true), nil
}

// startWatch makes proc id's watch, replacing an older one, and waits for
// its exit in a goroutine parked on the netpoller.
func (d *Driver) startWatch(id spec.ID, proc *procwatch.Process, started bool) *watch {
	w := &watch{proc: proc, started: started, done: make(chan struct{})}
	d.watches.mu.Lock()
	if d.watches.m == nil {
		d.watches.m = map[spec.ID]*watch{}
	}
	old := d.watches.m[id]
	d.watches.m[id] = w
	d.watches.mu.Unlock()
	if old != nil {
		old.proc.Close()
	}
	go func() {
		exit, err := proc.Wait()
		if err != nil {
			return // unwatched: the workload was deleted or the driver closed
		}
		proc.Close()
		w.exit = exit
		// Closed before the hook runs: the hook may wait for a lock
		// held by whoever waits on done (a Stop).
		close(w.done)
		d.watches.mu.Lock()
		fn, current := d.watches.onExit, d.watches.m[id] == w
		d.watches.mu.Unlock()
		// Told even before Start marked it started: the process may exit
		// the moment the runtime starts it. The node ignores an exit of a
		// workload it does not know as running.
		if fn != nil && current {
			fn(id, driver.Exit{Pid: proc.Pid, Code: exit.Code, Reason: exit.Reason, At: exit.At})
		}
	}()
	return w
}

// isStarted reads started under the lock that Start sets it under.
func (w *watch) isStarted(d *Driver) bool {
	d.watches.mu.Lock()
	defer d.watches.mu.Unlock()
	return w.started
}

// markStarted says the runtime started id's watched process, and records
// it; false when id is not watched.
func (d *Driver) markStarted(id spec.ID, p paths) bool {
	d.watches.mu.Lock()
	w := d.watches.m[id]
	if w != nil {
		w.started = true
	}
	d.watches.mu.Unlock()
	if w == nil {
		return false
	}
	_ = record(w.proc, p) // without it, a restarted daemon asks the runtime
	return true
}

// exited says whether w's process ended, and how.
func (w *watch) exited() (procwatch.Exit, bool) {
	select {
	case <-w.done:
		return w.exit, true
	default:
		return procwatch.Exit{}, false
	}
}

// unwatch stops watching id.
func (d *Driver) unwatch(id spec.ID) {
	d.watches.mu.Lock()
	w := d.watches.m[id]
	delete(d.watches.m, id)
	d.watches.mu.Unlock()
	if w != nil {
		w.proc.Close()
	}
}

// unwatchAll stops watching every workload; they keep running.
func (d *Driver) unwatchAll() {
	d.watches.mu.Lock()
	m := d.watches.m
	d.watches.m = nil
	d.watches.mu.Unlock()
	for _, w := range m {
		w.proc.Close()
	}
}
