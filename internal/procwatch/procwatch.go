// Package procwatch learns of process exits without polling: the daemon is
// a child subreaper, so a container's init becomes its child once the
// runtime that started it exits, and each watched process is held by a
// pidfd that the Go netpoller wakes on when the process ends. Watching
// costs nothing while the process runs: no thread, no timer, no fork.
//
// It also reaps the orphans a subreaper inherits and that nobody else
// waits for (runtime helper processes whose parent exited first, a
// sandbox's gofer), which would otherwise stay zombies until the daemon
// exits.
package procwatch

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrGone means the process is not there any more, or the pid now names
// another process (its start time differs from the one recorded).
var ErrGone = errors.New("process is gone")

var (
	enableOnce sync.Once
	enableErr  error
	// adopting is held for reading by whoever is about to watch a process
	// that is, or becomes, our child (Hold), and for writing by the orphan
	// reaper, which so never reaps a child between the moment it becomes
	// ours and the moment its watcher holds a pidfd on it.
	adopting sync.RWMutex

	// watched are the children a Process watches. Their watchers reap
	// them, so the orphan reaper skips them without reading their
	// /proc entries: a node's hundreds of workloads are all children.
	watched sync.Map // pid -> struct{}
)

// Enable makes this process a child subreaper (PR_SET_CHILD_SUBREAPER) and
// starts the orphan reaper. It is idempotent; every call returns the first
// call's error.
func Enable() error {
	enableOnce.Do(func() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			enableErr = fmt.Errorf("become child subreaper (prctl PR_SET_CHILD_SUBREAPER, Linux 3.4 or newer): %w", err)
			return
		}
		go reapLoop()
	})
	return enableErr
}

// Hold keeps the orphan reaper from reaping until release is called. A
// caller that starts a process through a runtime holds it from before the
// start until Open returned, so that a process which exits at once stays a
// zombie for its watcher, exit code included.
func Hold() (release func()) {
	adopting.RLock()
	return adopting.RUnlock
}

// reapLoop reaps orphans at each SIGCHLD, and once a minute in case a
// zombie's pidfd holder let go of it without waiting.
//
// Why this cannot steal a child that someone else waits for: it never
// calls wait on any pid (no wait(-1), no P_ALL). It lists its own zombie
// children and reaps only those no pidfd in this process refers to. Every
// child os/exec starts (go-runc's runtime invocations included) gets a
// pidfd at clone time (CLONE_PIDFD, Go 1.23 and later on Linux 5.4 and
// later), held until exec.Cmd.Wait has reaped it; every process a Process
// watches has its pidfd open until Wait reaped it. A zombie's pid cannot be
// reused before it is reaped, so a pid read as a pidfd target names the
// same zombie when wait4 runs. What is left are processes that were never
// started by this process: orphans reparented to it because it is a
// subreaper, which no one else will wait for.
func reapLoop() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-sig:
		case <-t.C:
		}
		ReapOrphans()
	}
}

// ReapOrphans reaps the zombie children no one holds a pidfd on, and
// returns how many. reapLoop calls it; tests call it to not wait.
func ReapOrphans() int {
	adopting.Lock()
	defer adopting.Unlock()
	zombies := zombieChildren()
	if len(zombies) == 0 {
		return 0
	}
	owned := pidfdTargets()
	n := 0
	for _, pid := range zombies {
		if owned[pid] {
			continue
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			n++
		}
	}
	return n
}

// Zombies lists this process's children that have exited and that nobody
// has reaped yet, watched ones included.
func Zombies() []int {
	var out []int
	watched.Range(func(k, _ any) bool {
		if st, err := readStat(k.(int)); err == nil && st.state == 'Z' {
			out = append(out, k.(int))
		}
		return true
	})
	return append(out, zombieChildren()...)
}

// zombieChildren lists this process's children that have exited and wait
// to be reaped. The kernel lists children per thread, so every thread's
// list is read.
func zombieChildren() []int {
	tasks, _ := os.ReadDir("/proc/self/task")
	var out []int
	for _, t := range tasks {
		data, err := os.ReadFile(filepath.Join("/proc/self/task", t.Name(), "children"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			if _, ok := watched.Load(pid); ok {
				continue
			}
			if st, err := readStat(pid); err == nil && st.state == 'Z' {
				out = append(out, pid)
			}
		}
	}
	return out
}

// pidfdTargets names the processes that some pidfd open in this process
// refers to.
func pidfdTargets() map[int]bool {
	fds, _ := os.ReadDir("/proc/self/fd")
	out := map[int]bool{}
	for _, fd := range fds {
		if l, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); l != "anon_inode:[pidfd]" {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", fd.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Pid:"); ok {
				if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && pid > 0 {
					out[pid] = true
				}
			}
		}
	}
	return out
}

// stat is what this package reads of /proc/<pid>/stat.
type stat struct {
	state     byte
	ppid      int
	startTime uint64 // clock ticks after boot, field 22
}

func readStat(pid int) (stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	// The command name, field 2, is in parentheses and may hold spaces
	// and parentheses itself: the fields that follow start after the
	// last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return stat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return stat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// f[0] is field 3 (state), so field N is f[N-3].
	ppid, _ := strconv.Atoi(f[1])
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return stat{state: f[0][0], ppid: ppid, startTime: start}, nil
}

// StartTime returns pid's start time in clock ticks after boot (field 22
// of /proc/<pid>/stat), which with the pid names one process across pid
// reuse.
func StartTime(pid int) (uint64, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrGone, err)
	}
	return st.startTime, nil
}

// Exit is how a watched process ended.
type Exit struct {
	// Code is the exit status, 128+n for a process killed by signal n, or
	// -1 when it cannot be known.
	Code int
	// Reason says why Code is -1; empty when Code is known.
	Reason string
	// At is when the exit was noticed.
	At time.Time
}

// Process is a process watched through a pidfd.
type Process struct {
	// Pid and StartTime name the process.
	Pid       int
	StartTime uint64
	// Child says whether it is this process's child, whose exit code
	// Wait can read.
	Child bool
	f     *os.File
}

// Open watches pid. With a non-zero startTime, a process whose start time
// differs (the pid was reused) is ErrGone; with zero, the current start
// time is recorded in the result. A caller that just started the process
// holds Hold across the start and Open.
func Open(pid int, startTime uint64) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("%w: no pid", ErrGone)
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("%w: pid %d", ErrGone, pid)
		}
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			return nil, fmt.Errorf("pidfd_open %d: %w: the daemon holds one per workload; raise its open-files limit (`ulimit -n`, LimitNOFILE= in its service unit, fs.file-max)", pid, err)
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// Read after the pidfd exists: if the pid was reused before the open,
	// the start time shows it; if the process ended since, the pidfd
	// still refers to it and Wait reports the exit.
	st, err := readStat(pid)
	if err != nil || (startTime != 0 && st.startTime != startTime) {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: pid %d is not the recorded process any more", ErrGone, pid)
	}
	// A nonblocking fd goes to the netpoller, so Wait parks a goroutine,
	// not a thread.
	p := &Process{Pid: pid, StartTime: st.startTime, Child: st.ppid == os.Getpid(),
		f: os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))}
	if p.Child {
		watched.Store(pid, struct{}{})
	}
	return p, nil
}

// Wait blocks until the process exits and says how; it returns os.ErrClosed
// if Close is called first. For a child the exit code is read (and the
// child reaped); for any other process it cannot be, and Code is -1.
func (p *Process) Wait() (Exit, error) {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return Exit{}, err
	}
	var exit Exit
	var done bool
	err = rc.Read(func(fd uintptr) bool {
		exit, done = p.check(int(fd))
		return done
	})
	if err != nil {
		return Exit{}, err
	}
	exit.At = time.Now().UTC()
	return exit, nil
}

// check says whether the process has exited, and how.
func (p *Process) check(fd int) (Exit, bool) {
	if p.Child {
		var ws unix.WaitStatus
		got, err := unix.Wait4(p.Pid, &ws, unix.WNOHANG, nil)
		switch {
		case err == nil && got == p.Pid:
			watched.Delete(p.Pid)
			if ws.Signaled() {
				return Exit{Code: 128 + int(ws.Signal())}, true
			}
			return Exit{Code: ws.ExitStatus()}, true
		case err == nil:
			return Exit{}, false // still running
		}
		// ECHILD: not ours to wait for after all; fall back to the pidfd.
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 0); err != nil || n == 0 || fds[0].Revents&unix.POLLIN == 0 {
		return Exit{}, false
	}
	return Exit{Code: -1, Reason: "its exit code is unknown: it was not a child of this daemon (it was started by an earlier daemon process), and only a process's parent can read its exit code"}, true
}

// Signal sends sig to the process through its pidfd, which cannot reach
// another process that reused the pid.
func (p *Process) Signal(sig syscall.Signal) error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		return err
	}
	return serr
}

// Close stops watching; a Wait under way returns os.ErrClosed. A child
// that exits later is reaped by the orphan reaper.
func (p *Process) Close() error {
	if p.Child {
		// If Wait reaped it and the pid now names another watched
		// child, this drops that one's entry too: the reaper then reads
		// its /proc entry, and its pidfd still keeps it from reaping it.
		watched.CompareAndDelete(p.Pid, struct{}{})
	}
	return p.f.Close()
}
