package runc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	gorunc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/logfile"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// A workload spawned with a terminal (spec Tty) runs on a pty that the
// runtime makes inside the container (process.terminal), so it is the
// session leader with the pty as its controlling terminal: Ctrl-C, job
// control and SIGWINCH work as on any terminal. The runtime hands the pty
// master over a console socket.
//
// The master must outlive the daemon, and no process of ours may hold it.
// The container holds it instead: it is given one end of a datagram
// socketpair as an extra fd (holderFd), and the master is sent into that
// socket with SCM_RIGHTS and left unread. A queued message keeps its file
// open for as long as the receiving socket exists, and the socket exists
// as long as a process of the container has it open. A restarted daemon
// takes the socket from the container's init with pidfd_getfd and peeks at
// the message (MSG_PEEK installs copies of its files and leaves it queued),
// which gives it the master back.
//
// While a daemon runs, one goroutine per workload (a ttyPump) reads the
// master and appends everything to the workload's log, then hands it to
// attached clients. While no daemon runs nothing reads the master: output
// waits in the pty's buffer (some 64 KiB) and the workload blocks in write
// once that is full, until a daemon adopts the pty again.

// holderFd is the fd number of the holder socket in the container's init:
// the first fd after stdio, as the runtime's --preserve-fds passes it.
const holderFd = 3

// holderMarker is the payload of the message carrying the master, so that
// a restarted daemon knows the message is ours.
const holderMarker = "hypercore-pty-master/1"

// The size a workload's terminal has until someone attaches with theirs.
const (
	defaultRows = 24
	defaultCols = 80
)

// consoleWait bounds the wait for the runtime's pty master once create
// returned; the runtime sends it before create returns.
const consoleWait = 10 * time.Second

// subBacklog is how many chunks of output (up to ttyChunk bytes each) an
// attached client may fall behind before it is detached. The log has
// everything regardless.
const (
	subBacklog = 256
	ttyChunk   = 16 << 10
)

// errClientBehind ends an attachment whose client reads too slowly.
var errClientBehind = errors.New("the client fell too far behind the workload's output and was detached; attach again (the log has everything)")

// isTty reports whether the workload's bundle runs its process on a pty.
// Bundles written before workloads had a terminal say no, and are attached
// through their log and stdin FIFO as before.
func isTty(p paths) (bool, error) {
	s, err := readSpec(p.config)
	if err != nil {
		return false, err
	}
	return s.Process != nil && s.Process.Terminal, nil
}

// runtimeCreateTty has the runtime create a container whose process runs
// on a pty, gives the container the holder socket with the master in it,
// and starts the pump.
func (d *Driver) runtimeCreateTty(ctx context.Context, id spec.ID, p paths) error {
	cs, err := listenConsole()
	if err != nil {
		return err
	}
	defer cs.Close()
	inside, ours, err := holderPair()
	if err != nil {
		return err
	}
	defer inside.Close()
	defer ours.Close()
	ol, err := newOpLog(p.dir)
	if err != nil {
		return err
	}
	defer ol.remove()
	opts := &gorunc.CreateOpts{ConsoleSocket: cs, ExtraFiles: []*os.File{inside}, PidFile: p.pidFile}
	if err := d.withLog(ol.path).Create(ctx, id.String(), p.bundle, opts); err != nil {
		return fmt.Errorf("%s create: %w", d.name, ol.wrap(err))
	}
	pump, err := d.takeConsole(cs, ours, p)
	if err != nil {
		// A container whose terminal no one holds would be hung up.
		_ = d.forceDelete(context.WithoutCancel(ctx), id)
		return err
	}
	d.ttys.put(id, pump)
	return nil
}

// takeConsole receives the master of a container just created, sizes the
// terminal, queues the master in the holder socket and starts the pump.
func (d *Driver) takeConsole(cs *consoleSocket, ours *os.File, p paths) (*ttyPump, error) {
	master, err := cs.receive(consoleWait)
	if err != nil {
		return nil, fmt.Errorf("receive the workload's pty master from %s: %w", d.name, err)
	}
	// The process has not started: it sees this size from the start.
	if err := setWinsize(master, driver.TermSize{Rows: defaultRows, Cols: defaultCols}); err != nil {
		master.Close()
		return nil, err
	}
	if err := sendMaster(ours, master); err != nil {
		master.Close()
		return nil, err
	}
	return startPump(master, p.log)
}

// ensureTTY returns the pump of a tty workload that is created or running,
// adopting its pty from the container when this Driver has none (after a
// daemon restart). It returns nil, nil when the workload does not run.
func (d *Driver) ensureTTY(ctx context.Context, id spec.ID) (*ttyPump, error) {
	if pump := d.ttys.get(id); pump != nil {
		return pump, nil
	}
	unlock := d.locks.Lock(id.String())
	defer unlock()
	return d.adoptTTY(ctx, id)
}

// adoptTTY is ensureTTY for a caller holding id's lock.
func (d *Driver) adoptTTY(ctx context.Context, id spec.ID) (*ttyPump, error) {
	if pump := d.ttys.get(id); pump != nil {
		return pump, nil
	}
	c, err := d.state(ctx, id)
	if errors.Is(err, errUnknown) || (err == nil && c.Status == rtStopped) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	master, err := masterFromPid(c.Pid)
	if err != nil {
		return nil, fmt.Errorf("take the terminal back from the workload (pid %d): %w", c.Pid, err)
	}
	// The pid was read before it was opened: make sure it is still the
	// workload's, not a process that reused the number.
	if again, err := d.state(ctx, id); err != nil || again.Pid != c.Pid || again.Status == rtStopped {
		master.Close()
		return nil, nil
	}
	pump, err := startPump(master, d.paths(id).log)
	if err != nil {
		return nil, err
	}
	d.ttys.put(id, pump)
	return pump, nil
}

// holderPair makes the socketpair whose first end goes into the container.
func holderPair() (inside, ours *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("make the socket that holds the pty master: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "pty-holder"), os.NewFile(uintptr(fds[1]), "pty-holder-peer"), nil
}

// sendMaster queues master, unread, in the holder socket's peer.
func sendMaster(ours, master *os.File) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return fmt.Errorf("hand the pty master to the workload: %w", err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.Sendmsg(int(ours.Fd()), []byte(holderMarker), unix.UnixRights(int(fd)), nil, 0)
	})
	if err = errors.Join(err, serr); err != nil {
		return fmt.Errorf("hand the pty master to the workload: %w", err)
	}
	return nil
}

// masterFromPid takes the holder socket from process pid and peeks the pty
// master out of it, leaving it queued for the next daemon.
func masterFromPid(pid int) (*os.File, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		return nil, errors.New("the kernel lacks pidfd_open (Linux 5.6 or newer is needed)")
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	sock, err := unix.PidfdGetfd(pidfd, holderFd, 0)
	switch {
	case errors.Is(err, unix.EBADF):
		return nil, fmt.Errorf("the workload closed its fd %d, which held its terminal; the terminal is lost until the workload is restarted", holderFd)
	case errors.Is(err, unix.EPERM):
		return nil, fmt.Errorf("pidfd_getfd: %w (the daemon needs CAP_SYS_PTRACE, and Yama ptrace_scope below 3)", err)
	case err != nil:
		return nil, fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(sock)
	return peekMaster(sock)
}

// peekMaster reads the message holding the master without taking it off
// the socket's queue.
func peekMaster(sock int) (*os.File, error) {
	lost := fmt.Errorf("the workload's fd %d is not the socket holding its terminal (the workload replaced it); the terminal is lost until the workload is restarted", holderFd)
	if typ, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_DGRAM {
		return nil, lost
	}
	if dom, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || dom != unix.AF_UNIX {
		return nil, lost
	}
	buf := make([]byte, len(holderMarker)+1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var n, oobn int
	var err error
	for {
		n, oobn, _, _, err = unix.Recvmsg(sock, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if errors.Is(err, unix.EAGAIN) {
		return nil, errors.New("the socket that holds the workload's terminal is empty (something in the workload read it); the terminal is lost until the workload is restarted")
	}
	if err != nil {
		return nil, fmt.Errorf("peek at the pty master: %w", err)
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if rights, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, rights...)
			}
		}
	}
	if string(buf[:n]) != holderMarker || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, lost
	}
	fd := fds[0]
	// Only a pty master answers TIOCGPTN.
	if _, err := unix.IoctlGetInt(fd, unix.TIOCGPTN); err != nil {
		unix.Close(fd)
		return nil, lost
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pty master: %w", err)
	}
	return os.NewFile(uintptr(fd), "pty-master"), nil
}

// consoleSocket is where the runtime sends the pty master it made. It
// implements go-runc's ConsoleSocket.
type consoleSocket struct {
	dir string
	l   *net.UnixListener
}

// listenConsole listens in a new private dir under the temp dir; a unix
// socket path must be short, which StateDir may not be.
func listenConsole() (*consoleSocket, error) {
	dir, err := os.MkdirTemp("", "hypercore-console-")
	if err != nil {
		return nil, fmt.Errorf("make console socket dir: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "sock"), Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("listen on console socket: %w", err)
	}
	return &consoleSocket{dir: dir, l: l}, nil
}

func (c *consoleSocket) Path() string { return c.l.Addr().String() }

func (c *consoleSocket) Close() error {
	err := c.l.Close()
	return errors.Join(err, os.RemoveAll(c.dir))
}

// receive accepts the runtime's connection and returns the master it sent,
// made non-blocking so that Go's poller serves it.
func (c *consoleSocket) receive(timeout time.Duration) (*os.File, error) {
	deadline := time.Now().Add(timeout)
	if err := c.l.SetDeadline(deadline); err != nil {
		return nil, err
	}
	conn, err := c.l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var oobn int
	var rerr error
	// MSG_CMSG_CLOEXEC: a runtime forked meanwhile for another workload
	// must not inherit this master.
	err = rc.Read(func(fd uintptr) bool {
		_, oobn, _, _, rerr = unix.Recvmsg(int(fd), name, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err = errors.Join(err, rerr); err != nil {
		return nil, err
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if rights, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, rights...)
			}
		}
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("got %d fds, want the one pty master", len(fds))
	}
	fd := fds[0]
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "pty-master"), nil
}

// setWinsize sets the terminal size of a pty through its master; the
// kernel sends SIGWINCH to the terminal's foreground process group. It
// uses the fd without os.File.Fd, which would make it blocking.
func setWinsize(master *os.File, size driver.TermSize) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return fmt.Errorf("resize terminal: %w", err)
	}
	var ierr error
	err = rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Rows, Col: size.Cols})
	})
	if err = errors.Join(err, ierr); err != nil {
		return fmt.Errorf("resize terminal: %w", err)
	}
	return nil
}

// ttyPump reads one workload's pty master for as long as the workload's
// terminal is open, and writes what it reads to the workload's log and to
// every attached client.
type ttyPump struct {
	master *os.File // non-blocking, served by the poller
	log    *os.File // O_APPEND, so log rotation works as for other workloads

	mu    sync.Mutex // guards subs and ended
	subs  map[*ttySub]struct{}
	ended bool

	done chan struct{} // closed once the pump has stopped and closed its files
}

// ttySub is one attached client's view of the output.
type ttySub struct {
	ch     chan []byte // closed at the end of the output or when behind
	behind bool        // set before ch is closed because the client lagged
}

// startPump starts reading master, which the pump then owns.
func startPump(master *os.File, logPath string) (*ttyPump, error) {
	log, err := logfile.OpenWriter(logPath)
	if err != nil {
		master.Close()
		return nil, err
	}
	p := &ttyPump{master: master, log: log, subs: map[*ttySub]struct{}{}, done: make(chan struct{})}
	go p.run()
	return p, nil
}

func (p *ttyPump) run() {
	defer close(p.done)
	buf := make([]byte, ttyChunk)
	for {
		n, err := p.master.Read(buf)
		if n > 0 {
			chunk := bytes.Clone(buf[:n])
			// The log first: it must have everything, attached or not. A
			// failed write (disk full) loses output, as it would for a
			// workload writing its log itself.
			_, _ = p.log.Write(chunk)
			p.fanOut(chunk)
		}
		if err != nil {
			// EIO: every process holding the terminal is gone. Or the
			// master was closed by close.
			break
		}
	}
	p.mu.Lock()
	p.ended = true
	for s := range p.subs {
		close(s.ch)
		delete(p.subs, s)
	}
	p.mu.Unlock()
	p.master.Close()
	p.log.Close()
}

func (p *ttyPump) fanOut(chunk []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for s := range p.subs {
		select {
		case s.ch <- chunk:
		default:
			s.behind = true
			close(s.ch)
			delete(p.subs, s)
		}
	}
}

// subscribe returns a new client's output channel, or nil if the pump has
// ended.
func (p *ttyPump) subscribe() *ttySub {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return nil
	}
	s := &ttySub{ch: make(chan []byte, subBacklog)}
	p.subs[s] = struct{}{}
	return s
}

func (p *ttyPump) unsubscribe(s *ttySub) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.subs[s]; ok {
		close(s.ch)
		delete(p.subs, s)
	}
}

// wasBehind reports whether s was dropped for lagging; valid once s.ch is
// closed.
func (p *ttyPump) wasBehind(s *ttySub) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.behind
}

// writer returns a file of its own on the master for one client's input,
// so that closing it ends a write blocked on a workload that does not read.
func (p *ttyPump) writer() (*os.File, error) {
	rc, err := p.master.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("terminal input: %w", err)
	}
	nfd, derr := -1, error(nil)
	err = rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err = errors.Join(err, derr); err != nil {
		return nil, fmt.Errorf("terminal input: %w", err)
	}
	// The master is non-blocking (a flag of the open file, which the dup
	// shares), so the poller serves this file too.
	return os.NewFile(uintptr(nfd), "pty-master-input"), nil
}

func (p *ttyPump) resize(size driver.TermSize) error {
	if size.Rows == 0 || size.Cols == 0 {
		return nil
	}
	return setWinsize(p.master, size)
}

// close stops the pump and waits until it closed its files. The workload's
// terminal stays open: the container holds the master too.
func (p *ttyPump) close() {
	p.master.Close()
	<-p.done
}

// ttyPumps is a Driver's pumps by workload id.
type ttyPumps struct {
	mu     sync.Mutex
	m      map[spec.ID]*ttyPump
	closed bool
}

func (t *ttyPumps) get(id spec.ID) *ttyPump {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[id]
	if p != nil {
		select {
		case <-p.done:
			delete(t.m, id)
			return nil
		default:
		}
	}
	return p
}

// put makes p id's pump, stopping the one it replaces. After closeAll a
// new pump is stopped at once.
func (t *ttyPumps) put(id spec.ID, p *ttyPump) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		p.close()
		return
	}
	if t.m == nil {
		t.m = map[spec.ID]*ttyPump{}
	}
	old := t.m[id]
	t.m[id] = p
	t.mu.Unlock()
	if old != nil {
		old.close()
	}
}

// finish stops id's pump, first giving it up to grace to read what the
// workload wrote before it ended.
func (t *ttyPumps) finish(id spec.ID, grace time.Duration) {
	t.mu.Lock()
	p := t.m[id]
	delete(t.m, id)
	t.mu.Unlock()
	if p == nil {
		return
	}
	if grace > 0 {
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	p.close()
}

// closeAll stops every pump; the workloads keep their terminals.
func (t *ttyPumps) closeAll() {
	t.mu.Lock()
	t.closed = true
	pumps := t.m
	t.m = nil
	t.mu.Unlock()
	for _, p := range pumps {
		p.close()
	}
}
