package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/wire"
)

// AgentOptions are the agent's connections to the world. Init fills them
// from the VM's devices; tests fill them with sockets and host paths.
type AgentOptions struct {
	// Stream carries the protocol, for Serve (ServeListener takes its
	// connections from a listener instead). Reconnect says that a read of
	// 0 bytes means "host not connected yet" rather than the end, as a
	// virtio-serial port reports; otherwise the end of Stream ends Serve.
	Stream    io.ReadWriter
	Reconnect bool
	// Output receives the workload's stdout and stderr as they are written.
	Output io.Writer
	// Status receives the status journal, one JSON Event per line.
	Status io.Writer
	// Setup prepares the guest for cfg (root, network, files) and returns
	// the directory the workload's processes are chrooted to; "" means no
	// chroot.
	Setup func(cfg Config) (root string, err error)
	// Exited is called once the workload has ended and its exit is in the
	// journal; the VM powers off there.
	Exited func(code int)
	Log    *slog.Logger
}

// Agent serves the host.
type Agent struct {
	opts   AgentOptions
	reaper *reaper

	mu       sync.Mutex
	sessions map[uint32]*agentSession
	wl       *workload
	root     string
	stopOnce sync.Once
}

// NewAgent returns an agent on opts.
func NewAgent(opts AgentOptions) *Agent {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Output == nil {
		opts.Output = io.Discard
	}
	if opts.Status == nil {
		opts.Status = io.Discard
	}
	if opts.Exited == nil {
		opts.Exited = func(int) {}
	}
	return &Agent{opts: opts, reaper: newReaper(), sessions: map[uint32]*agentSession{}}
}

// agentSession is one channel as the agent sees it.
type agentSession struct {
	id     uint32
	w      *wire.Writer // of the connection that opened it
	in     *inbox
	out    *sendWindow // the host's window for the channel's output
	cancel context.CancelFunc
}

// output is a writer of the session's data frames of type t.
func (s *agentSession) output(t wire.Type) io.Writer {
	return flowWriter{w: s.w, id: s.id, t: t, win: s.out}
}

// Serve serves opts.Stream until it ends (or forever, with Reconnect).
func (a *Agent) Serve() error {
	w := wire.NewWriter(a.opts.Stream)
	for {
		err := a.serveConn(bufio.NewReaderSize(a.opts.Stream, 64<<10), w)
		a.dropSessions()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if !a.opts.Reconnect {
				return nil
			}
			// The host is not connected: virtio-serial answers reads with
			// 0 bytes until it is, and poll says POLLHUP, so wait a little.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			// A malformed frame: look for the next Hello.
			a.opts.Log.Warn("agent stream out of step; waiting for the host's next hello", "err", err)
		}
	}
}

// ServeListener serves each connection l accepts, as a vsock listener
// gives them on Firecracker or Cloud Hypervisor: one host connection at a
// time, a new one replacing the old, the workload living on across them.
// It returns when l fails.
func (a *Agent) ServeListener(l net.Listener) error {
	var prev net.Conn
	for {
		conn, err := l.Accept()
		if err != nil {
			return err
		}
		if prev != nil {
			prev.Close()
		}
		prev = conn
		go func() {
			_ = a.serveConn(bufio.NewReaderSize(conn, 64<<10), wire.NewWriter(conn))
			conn.Close()
		}()
	}
}

// serveConn finds a Hello, answers it on w, and serves frames until an
// error.
func (a *Agent) serveConn(r *bufio.Reader, w *wire.Writer) error {
	if err := scanFor(r, helloHeader()); err != nil {
		return err
	}
	nonce := make([]byte, nonceLen)
	if _, err := io.ReadFull(r, nonce); err != nil {
		return err
	}
	if err := a.hello(w, nonce); err != nil {
		return err
	}
	for {
		t, p, err := wire.ReadFrame(r)
		if err != nil {
			return err
		}
		if t == Hello {
			if len(p) != len(helloMagic)+nonceLen || string(p[:len(helloMagic)]) != string(helloMagic) {
				return fmt.Errorf("malformed hello of %d bytes", len(p))
			}
			if err := a.hello(w, p[len(helloMagic):]); err != nil {
				return err
			}
			continue
		}
		id, data, err := splitChan(p)
		if err != nil {
			return err
		}
		switch t {
		case Open:
			var req Request
			if err := json.Unmarshal(data, &req); err != nil {
				_ = w.WriteFrame(wire.Error, putChan(id, []byte("malformed request: "+err.Error())))
				continue
			}
			a.open(w, id, req)
		case Close:
			if s := a.session(id); s != nil {
				s.cancel()
			}
		case Window:
			n, err := decodeWindow(data)
			if err != nil {
				return err
			}
			if s := a.session(id); s != nil {
				s.out.grant(n)
			}
		case wire.Stdin, wire.CloseStdin, wire.Resize:
			s := a.session(id)
			if s == nil {
				continue
			}
			if err := s.in.put(frame{t, data}); err != nil {
				// The host is ours, but a bug there must not cost the
				// guest its memory either: end the session, say why, and
				// serve the rest.
				a.opts.Log.Warn("host broke flow control; ending its session", "channel", id, "err", err)
				s.cancel()
				// Not on the reader's goroutine: a write may wait for the host.
				go s.replyErr(err)
			}
		}
	}
}

// hello starts a new host connection: sessions of the old one are dropped,
// since their host ends are gone.
func (a *Agent) hello(w *wire.Writer, nonce []byte) error {
	a.dropSessions()
	return w.WriteFrame(Hello, helloPayload(nonce))
}

func (a *Agent) session(id uint32) *agentSession {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sessions[id]
}

func (a *Agent) dropSessions() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, s := range a.sessions {
		s.cancel()
		s.in.close(io.EOF)
		s.out.close(errChannelEnded)
		delete(a.sessions, id)
	}
}

func (s *agentSession) reply(t wire.Type, p []byte) {
	_ = s.w.WriteFrame(t, putChan(s.id, p))
}

func (s *agentSession) replyErr(err error) {
	s.reply(wire.Error, []byte(err.Error()))
}

func (a *Agent) open(w *wire.Writer, id uint32, req Request) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &agentSession{id: id, w: w, out: newSendWindow(), cancel: cancel}
	s.in = newInbox(func(n uint32) { _ = w.WriteFrame(Window, putChan(id, encodeWindow(n))) })
	// Output waiting for window must not outlive the session.
	context.AfterFunc(ctx, func() { s.out.close(errChannelEnded) })
	a.mu.Lock()
	a.sessions[id] = s
	a.mu.Unlock()
	go func() {
		defer func() {
			cancel()
			a.mu.Lock()
			if a.sessions[id] == s {
				delete(a.sessions, id)
			}
			a.mu.Unlock()
		}()
		a.handle(ctx, s, req)
	}()
}

func (a *Agent) handle(ctx context.Context, s *agentSession, req Request) {
	switch req.Op {
	case OpPing:
		s.reply(wire.Exit, wire.EncodeExit(0))
	case OpConfigure:
		if req.Config == nil {
			s.replyErr(errors.New("configure without a config"))
			return
		}
		if err := a.configure(*req.Config); err != nil {
			s.replyErr(err)
			return
		}
		s.reply(wire.Exit, wire.EncodeExit(0))
	case OpExec:
		if req.Process == nil || len(req.Process.Args) == 0 {
			s.replyErr(errors.New("exec without a command"))
			return
		}
		a.exec(ctx, s, *req.Process)
	case OpAttach:
		a.attach(ctx, s)
	case OpSignal:
		wl := a.workload()
		if wl == nil {
			s.replyErr(errors.New("no workload is running yet"))
			return
		}
		if err := wl.signal(syscall.Signal(req.Signal)); err != nil {
			s.replyErr(err)
			return
		}
		s.reply(wire.Exit, wire.EncodeExit(0))
	case OpShutdown:
		s.reply(wire.Exit, wire.EncodeExit(0))
		a.shutdown(time.Duration(req.GraceMillis) * time.Millisecond)
	default:
		s.replyErr(fmt.Errorf("unknown request %q; is the agent older than the host?", req.Op))
	}
}

func (a *Agent) workload() *workload {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.wl
}

// configure sets the guest up and starts the workload, once.
func (a *Agent) configure(cfg Config) error {
	a.mu.Lock()
	if a.wl != nil {
		a.mu.Unlock()
		return ErrConfigured
	}
	// Claimed before the slow part, so a second configure cannot race in.
	a.wl = &workload{exited: make(chan struct{})}
	wl := a.wl
	a.mu.Unlock()

	root := ""
	var err error
	if a.opts.Setup != nil {
		root, err = a.opts.Setup(cfg)
	}
	if err == nil {
		a.mu.Lock()
		a.root = root
		a.mu.Unlock()
		err = wl.start(a, root, cfg.Process)
	}
	if err != nil {
		a.journal(Event{State: "exited", ExitCode: -1, Error: err.Error()})
		a.mu.Lock()
		a.wl = nil
		a.mu.Unlock()
		return fmt.Errorf("start workload: %w", err)
	}
	a.journal(Event{State: "running", Pid: wl.pid})
	go func() {
		<-wl.exited
		a.journal(Event{State: "exited", ExitCode: wl.code})
		a.opts.Exited(wl.code)
	}()
	return nil
}

func (a *Agent) journal(e Event) {
	e.Time = time.Now().UTC()
	b, _ := json.Marshal(e)
	_, _ = a.opts.Status.Write(append(b, '\n'))
}

// shutdown ends the workload: SIGTERM, then SIGKILL after grace. The exit
// path powers the VM off; with no workload, that happens at once.
func (a *Agent) shutdown(grace time.Duration) {
	a.stopOnce.Do(func() {
		wl := a.workload()
		if wl == nil || wl.pid == 0 {
			a.opts.Exited(0)
			return
		}
		go func() {
			_ = wl.signal(wl.stopSignal)
			select {
			case <-wl.exited:
			case <-time.After(grace):
				_ = wl.signal(syscall.SIGKILL)
			}
		}()
	})
}

// exec runs p beside the workload with its stdio on the session.
func (a *Agent) exec(ctx context.Context, s *agentSession, p Process) {
	a.mu.Lock()
	root := a.root
	a.mu.Unlock()
	cmd := command(root, p)
	out := s.output(wire.Stdout)
	var (
		stdin   io.WriteCloser
		pty     console.Console
		pumps   sync.WaitGroup
		closers []io.Closer
	)
	if p.Tty {
		master, slave, err := openPty(p.Rows, p.Cols)
		if err != nil {
			s.replyErr(err)
			return
		}
		pty, stdin = master, master
		closers = append(closers, master)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr.Setctty = true
		defer slave.Close()
		pumps.Add(1)
		go func() { defer pumps.Done(); _, _ = io.Copy(out, master) }()
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			s.replyErr(err)
			return
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			s.replyErr(err)
			return
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			s.replyErr(err)
			return
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
		defer inR.Close()
		defer outW.Close()
		defer errW.Close()
		stdin = inW
		closers = append(closers, inW, outR, errR)
		pumps.Add(2)
		go func() { defer pumps.Done(); _, _ = io.Copy(out, outR) }()
		go func() { defer pumps.Done(); _, _ = io.Copy(s.output(wire.Stderr), errR) }()
	}
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	done, err := a.reaper.start(cmd)
	if err != nil {
		s.replyErr(fmt.Errorf("run %q: %w", p.Args[0], err))
		return
	}
	// The child has its own copies now; ours would keep the pipes open.
	for _, f := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		if c, ok := f.(io.Closer); ok {
			c.Close()
		}
	}
	go a.feed(ctx, s, stdin, pty, false)
	select {
	case code := <-done:
		// A child the process left behind may hold its output open;
		// give up on that rather than wait for it forever. Output that
		// waits for the host to grant window is another matter: the host
		// is slow, not gone, and giving up would lose the end of it.
		for !waitTimeout(&pumps, 2*time.Second) && s.out.stalled() {
		}
		s.reply(wire.Exit, wire.EncodeExit(code))
	case <-ctx.Done():
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// feed copies a session's input to a process: Stdin frames to stdin,
// CloseStdin ends it (unless keepOpen, as attach to the workload wants),
// and Resize frames resize pty.
func (a *Agent) feed(ctx context.Context, s *agentSession, stdin io.WriteCloser, pty console.Console, keepOpen bool) {
	for {
		f, err := s.in.get(ctx)
		if err != nil {
			return
		}
		switch f.t {
		case wire.Stdin:
			if stdin != nil {
				_, _ = stdin.Write(f.p)
			}
		case wire.CloseStdin:
			switch {
			case keepOpen || stdin == nil:
			case pty != nil:
				// Closing the master would hang the terminal up (SIGHUP);
				// end of input on a terminal is ^D.
				_, _ = stdin.Write([]byte{4})
			default:
				stdin.Close()
			}
		case wire.Resize:
			if rows, cols, err := wire.DecodeResize(f.p); err == nil && pty != nil {
				_ = pty.Resize(console.WinSize{Height: rows, Width: cols})
			}
		}
	}
}

// attach connects the session to the workload's main process.
func (a *Agent) attach(ctx context.Context, s *agentSession) {
	wl := a.workload()
	if wl == nil || wl.pid == 0 {
		s.replyErr(errors.New("no workload is running yet"))
		return
	}
	sub := wl.subscribe(s.output)
	go a.feed(ctx, s, wl.stdin, wl.pty, true)
	select {
	case <-wl.exited:
		// Its output first, then the exit.
		wl.unsubscribe(sub, false)
		s.reply(wire.Exit, wire.EncodeExit(wl.code))
	case <-ctx.Done():
		wl.unsubscribe(sub, true)
	}
}

// waitTimeout waits up to d for wg and says whether it is done.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// command builds the exec.Cmd for p, chrooted to root when root is set.
func command(root string, p Process) *exec.Cmd {
	cmd := &exec.Cmd{Path: p.Args[0], Args: p.Args, Env: p.Env, Dir: p.WorkDir}
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Path = lookPath(root, p.Args[0], p.Env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if root != "" {
		cmd.SysProcAttr.Chroot = root
	}
	if os.Getuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: p.UID, Gid: p.GID, Groups: p.Groups}
	}
	return cmd
}

// openPty makes a terminal of rows×cols; the slave is opened for the child.
func openPty(rows, cols uint16) (console.Console, *os.File, error) {
	master, slavePath, err := console.NewPty()
	if err != nil {
		return nil, nil, fmt.Errorf("open a terminal: %w", err)
	}
	if rows > 0 && cols > 0 {
		_ = master.Resize(console.WinSize{Height: rows, Width: cols})
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open terminal %s: %w", slavePath, err)
	}
	return master, slave, nil
}
