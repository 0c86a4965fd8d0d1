package guest

import (
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reaper collects every child that exits. As PID 1 the agent inherits each
// orphan of the guest, and a zombie left there lives until the VM ends, so
// it waits for any pid (wait4(-1)) rather than for the processes it knows,
// and hands the status of those to whoever started them.
type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan int
}

var (
	reaperOnce sync.Once
	theReaper  *reaper
)

// newReaper returns the process's one reaper: two would steal each
// other's children, as wait4(-1) takes any.
func newReaper() *reaper {
	reaperOnce.Do(func() { theReaper = startReaper() })
	return theReaper
}

func startReaper() *reaper {
	r := &reaper{waiting: map[int]chan int{}}
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, syscall.SIGCHLD)
	go func() {
		// The tick covers SIGCHLDs merged or lost while reaping.
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-sig:
			case <-t.C:
			}
			r.reap()
		}
	}()
	return r
}

// start starts cmd and returns where its exit code will arrive. The lock is
// held across the start so a process that exits at once is still known
// when its status is reaped.
func (r *reaper) start(cmd *exec.Cmd) (<-chan int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan int, 1)
	r.waiting[cmd.Process.Pid] = ch
	return ch, nil
}

func (r *reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		r.mu.Lock()
		ch := r.waiting[pid]
		delete(r.waiting, pid)
		r.mu.Unlock()
		if ch != nil {
			ch <- exitCode(ws)
		}
	}
}

// exitCode is the shell's convention: the status, or 128 plus the signal.
func exitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return -1
}
