package guest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"

	"github.com/hypercore-dev/hypercore/internal/wire"
)

// workload is the main process of the VM. Its output goes to the Output
// port (the host's log file) and to every attached session.
type workload struct {
	pid int
	// stopSignal is what shutdown sends first: the image's StopSignal.
	stopSignal syscall.Signal
	stdin      io.WriteCloser
	pty        console.Console
	code       int
	exited     chan struct{} // closed after code is set and output is drained

	mu   sync.Mutex
	subs map[*subscriber]bool
}

// subscriber is an attached session. Its output is queued and written by
// a goroutine of its own: a write to the agent stream blocks while no host
// is connected, and that must never hold up the workload or its log.
type subscriber struct {
	out  func(wire.Type) io.Writer
	q    chan frame
	done chan struct{}
}

// subscriberQueue bounds what an attached session may fall behind by;
// beyond it, its output is dropped, as a terminal that cannot keep up would.
// The host's flow-control window is what makes a session fall behind when
// its host reads slowly.
const subscriberQueue = 256

// subscribe attaches a session whose writer of data frames of a type is
// out.
func (wl *workload) subscribe(out func(wire.Type) io.Writer) *subscriber {
	s := &subscriber{out: out, q: make(chan frame, subscriberQueue), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for f := range s.q {
			_, _ = s.out(f.t).Write(f.p)
		}
	}()
	wl.mu.Lock()
	if wl.subs == nil {
		wl.subs = map[*subscriber]bool{}
	}
	wl.subs[s] = true
	wl.mu.Unlock()
	return s
}

// unsubscribe stops s's output and returns once what was queued is
// written (or abandoned, when abandon is set: its host is gone).
func (wl *workload) unsubscribe(s *subscriber, abandon bool) {
	wl.mu.Lock()
	if wl.subs[s] {
		delete(wl.subs, s)
		close(s.q)
	}
	wl.mu.Unlock()
	if !abandon {
		<-s.done
	}
}

// tee is the writer of one of the workload's streams.
type tee struct {
	wl  *workload
	out io.Writer
	t   wire.Type
}

func (t tee) Write(p []byte) (int, error) {
	// The log comes first and is never skipped: it is what `logs` shows.
	_, _ = t.out.Write(p)
	t.wl.mu.Lock()
	defer t.wl.mu.Unlock()
	for s := range t.wl.subs {
		select {
		case s.q <- frame{t.t, append([]byte(nil), p...)}:
		default:
		}
	}
	return len(p), nil
}

// start runs the main process. Its stdin stays open for attached sessions
// for as long as it runs.
func (wl *workload) start(a *Agent, root string, p Process) error {
	if len(p.Args) == 0 {
		return errors.New("the workload has no command: the image sets no entrypoint or cmd and the spec no args")
	}
	wl.stopSignal = syscall.SIGTERM
	if p.StopSignal > 0 {
		wl.stopSignal = syscall.Signal(p.StopSignal)
	}
	cmd := command(root, p)
	out := a.opts.Output
	var pumps sync.WaitGroup
	var childFiles []*os.File
	if p.Tty {
		master, slave, err := openPty(p.Rows, p.Cols)
		if err != nil {
			return err
		}
		wl.pty, wl.stdin = master, master
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr.Setctty = true
		childFiles = append(childFiles, slave)
		pumps.Add(1)
		go func() { defer pumps.Done(); _, _ = io.Copy(tee{wl, out, wire.Stdout}, master) }()
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return err
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			return err
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			return err
		}
		wl.stdin = inW
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
		childFiles = append(childFiles, inR, outW, errW)
		pumps.Add(2)
		go func() { defer pumps.Done(); _, _ = io.Copy(tee{wl, out, wire.Stdout}, outR); outR.Close() }()
		go func() { defer pumps.Done(); _, _ = io.Copy(tee{wl, out, wire.Stderr}, errR); errR.Close() }()
	}
	done, err := a.reaper.start(cmd)
	for _, f := range childFiles {
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("run %q: %w", p.Args[0], err)
	}
	wl.pid = cmd.Process.Pid
	go func() {
		code := <-done
		// Processes the workload left behind may hold its pipes open;
		// its own output is in by now or lost with it.
		waitTimeout(&pumps, 2*time.Second)
		wl.code = code
		close(wl.exited)
	}()
	return nil
}

func (wl *workload) signal(sig syscall.Signal) error {
	select {
	case <-wl.exited:
		return errors.New("the workload has exited")
	default:
	}
	if err := syscall.Kill(wl.pid, sig); err != nil {
		return fmt.Errorf("signal %d to the workload: %w", sig, err)
	}
	return nil
}

// lookPath finds name as execve in the chroot root would, searching the
// process's PATH when name has no slash. It returns the path as seen from
// inside root; a name not found is returned as it is, so execve reports it.
func lookPath(root, name string, env []string) string {
	if strings.Contains(name, "/") {
		return name
	}
	search := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			search = v
		}
	}
	for _, dir := range filepath.SplitList(search) {
		if dir == "" || !path.IsAbs(dir) {
			continue
		}
		cand := path.Join(dir, name)
		// Lstat: a symlink's absolute target means something only inside
		// root, which this process may not be in.
		st, err := os.Lstat(filepath.Join(root, cand))
		if err == nil && (st.Mode()&os.ModeSymlink != 0 || st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0) {
			return cand
		}
	}
	return name
}
