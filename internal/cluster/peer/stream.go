package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"connectrpc.com/connect"

	clusterv1 "github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// streamChunk is the most one stdin, stdout, stderr or log message
// carries; longer writes are split.
const streamChunk = 64 << 10

// maxWorkDir bounds an exec's working directory (PATH_MAX).
const maxWorkDir = 4096

// input is what ExecRequest and AttachRequest have in common after the
// first message.
type input interface {
	GetStdin() []byte
	GetResize() *clusterv1.TermSize
	GetCloseStdin() *clusterv1.CloseStdin
}

// session is the host's side of an exec or attach: the process's stdin,
// resizes and output, pumped from and to the stream.
type session struct {
	stdinR *io.PipeReader
	stdinW *io.PipeWriter
	resize chan driver.TermSize

	mu   sync.Mutex // serialises sends, which a stream needs
	done bool       // the handler returned: the stream is not to be used
	send func(stderr bool, p []byte) error
}

// newSession returns a session and the IO to run its process with.
func newSession(tty bool, size *clusterv1.TermSize, send func(stderr bool, p []byte) error) (*session, driver.IO) {
	s := &session{resize: make(chan driver.TermSize, 4), send: send}
	s.stdinR, s.stdinW = io.Pipe()
	if size != nil {
		s.resize <- termSize(size)
	}
	stdio := driver.IO{Stdin: s.stdinR, Stdout: outWriter{s, false}, Stderr: outWriter{s, true}, Tty: tty, Resize: s.resize}
	if tty {
		stdio.Stderr = stdio.Stdout // a terminal has one output
	}
	return s, stdio
}

// pump feeds stdin and resizes from the stream until the caller ends its
// side of it; stdin then ends too.
func (s *session) pump(receive func() (input, error)) {
	defer close(s.resize)
	defer s.stdinW.Close()
	for {
		msg, err := receive()
		if err != nil {
			return
		}
		switch {
		case msg.GetStdin() != nil:
			// An error means the process stopped reading stdin; keep
			// serving resizes.
			_, _ = s.stdinW.Write(msg.GetStdin())
		case msg.GetResize() != nil:
			size := termSize(msg.GetResize())
			select {
			case s.resize <- size:
			default:
				// A slow consumer needs only the latest size.
				select {
				case <-s.resize:
				default:
				}
				select {
				case s.resize <- size:
				default:
				}
			}
		case msg.GetCloseStdin() != nil:
			s.stdinW.Close()
		}
	}
}

// finish ends the session once the handler is done: later output is
// dropped, and a stdin write the process will never read ends.
func (s *session) finish() {
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	s.stdinR.Close()
}

// last sends the final message, unless the session has finished.
func (s *session) last(fn func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil
	}
	err := fn()
	s.done = true
	return err
}

// outWriter sends a process's stdout or stderr.
type outWriter struct {
	s      *session
	stderr bool
}

func (w outWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	n := 0
	for len(p) > 0 {
		if w.s.done {
			return n, io.ErrClosedPipe
		}
		chunk := p[:min(len(p), streamChunk)]
		if err := w.s.send(w.stderr, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

func termSize(t *clusterv1.TermSize) driver.TermSize {
	return driver.TermSize{Rows: uint16(min(t.GetRows(), 65535)), Cols: uint16(min(t.GetCols(), 65535))}
}

// Exec implements PeerService.Exec.
func (h service) Exec(ctx context.Context, stream *connect.BidiStream[clusterv1.ExecRequest, clusterv1.ExecResponse]) error {
	if h.s.Exec == nil {
		return unimplemented("Exec")
	}
	first, err := stream.Receive()
	if err != nil {
		return invalid(fmt.Errorf("exec: no start message: %w", err))
	}
	start := first.GetStart()
	if start == nil {
		return invalid(errors.New("exec: the first message must be start"))
	}
	id, err := spec.ParseID(start.GetId())
	if err != nil {
		return invalid(err)
	}
	if err := spec.ValidateExec(start.GetArgs(), start.GetEnv()); err != nil {
		return invalid(err)
	}
	if wd := start.GetWorkDir(); len(wd) > maxWorkDir || strings.ContainsRune(wd, 0) {
		return invalid(fmt.Errorf("exec: work_dir: is over %d bytes or holds a NUL byte", maxWorkDir))
	}
	if u := start.GetUser(); u != "" {
		if err := spec.ValidateUser(u); err != nil {
			return invalid(fmt.Errorf("exec: %w", err))
		}
	}
	sess, stdio := newSession(start.GetTty(), start.GetSize(), func(stderr bool, p []byte) error {
		if stderr {
			return stream.Send(&clusterv1.ExecResponse{Output: &clusterv1.ExecResponse_Stderr{Stderr: p}})
		}
		return stream.Send(&clusterv1.ExecResponse{Output: &clusterv1.ExecResponse_Stdout{Stdout: p}})
	})
	go sess.pump(func() (input, error) { return stream.Receive() })
	code, err := h.s.Exec(ctx, id, driver.ExecConfig{Args: start.GetArgs(), Env: start.GetEnv(), WorkDir: start.GetWorkDir(), User: start.GetUser(), IO: stdio})
	if err != nil {
		sess.finish()
		return toConnect(err)
	}
	err = sess.last(func() error {
		return stream.Send(&clusterv1.ExecResponse{Output: &clusterv1.ExecResponse_ExitCode{ExitCode: int32(code)}})
	})
	sess.finish()
	return err
}

// Attach implements PeerService.Attach.
func (h service) Attach(ctx context.Context, stream *connect.BidiStream[clusterv1.AttachRequest, clusterv1.AttachResponse]) error {
	if h.s.Attach == nil {
		return unimplemented("Attach")
	}
	first, err := stream.Receive()
	if err != nil {
		return invalid(fmt.Errorf("attach: no start message: %w", err))
	}
	start := first.GetStart()
	if start == nil {
		return invalid(errors.New("attach: the first message must be start"))
	}
	id, err := spec.ParseID(start.GetId())
	if err != nil {
		return invalid(err)
	}
	sess, stdio := newSession(start.GetTty(), start.GetSize(), func(stderr bool, p []byte) error {
		if stderr {
			return stream.Send(&clusterv1.AttachResponse{Output: &clusterv1.AttachResponse_Stderr{Stderr: p}})
		}
		return stream.Send(&clusterv1.AttachResponse{Output: &clusterv1.AttachResponse_Stdout{Stdout: p}})
	})
	go sess.pump(func() (input, error) { return stream.Receive() })
	err = h.s.Attach(ctx, id, stdio)
	sess.finish()
	return toConnect(err)
}

// Logs implements PeerService.Logs.
func (h service) Logs(ctx context.Context, req *connect.Request[clusterv1.LogsRequest], stream *connect.ServerStream[clusterv1.LogsResponse]) error {
	if h.s.Logs == nil {
		return unimplemented("Logs")
	}
	id, err := spec.ParseID(req.Msg.GetId())
	if err != nil {
		return invalid(err)
	}
	if req.Msg.GetTail() > spec.MaxLogTail {
		return invalid(fmt.Errorf("logs: tail: %d is over %d lines", req.Msg.GetTail(), spec.MaxLogTail))
	}
	rc, err := h.s.Logs(ctx, id, driver.LogOptions{Follow: req.Msg.GetFollow(), Tail: int(req.Msg.GetTail())})
	if err != nil {
		return toConnect(err)
	}
	defer rc.Close()
	// The log is open: say so before the first line, which may be long
	// in coming when following.
	if err := stream.Send(&clusterv1.LogsResponse{}); err != nil {
		return err
	}
	buf := make([]byte, streamChunk)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if serr := stream.Send(&clusterv1.LogsResponse{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // the caller went away
			}
			return toConnect(err)
		}
	}
}

// Logs opens workload id's log on node. It returns once the node has
// opened it, so a missing workload is an error here rather than on the
// first Read; reading ends with io.EOF at the end of the log (or, when
// following, once ctx ends or Close is called).
func (p *Pool) Logs(ctx context.Context, node, rpcAddr string, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := p.Service(node, rpcAddr).Logs(ctx, connect.NewRequest(&clusterv1.LogsRequest{
		Id: id.String(), Follow: opts.Follow, Tail: uint32(min(max(opts.Tail, 0), spec.MaxLogTail)),
	}))
	if err != nil {
		cancel()
		return nil, fromConnect(node, err)
	}
	if !stream.Receive() {
		err := stream.Err()
		stream.Close()
		cancel()
		if err == nil {
			err = fmt.Errorf("node %s: the log stream ended before it opened", node)
		} else {
			err = fromConnect(node, err)
		}
		return nil, err
	}
	return &logReader{node: node, stream: stream, cancel: cancel}, nil
}

// logReader reads a log stream.
type logReader struct {
	node   string
	stream *connect.ServerStreamForClient[clusterv1.LogsResponse]
	cancel context.CancelFunc
	cur    []byte
	err    error
	once   sync.Once
}

func (r *logReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if !r.stream.Receive() {
			r.err = io.EOF
			if err := r.stream.Err(); err != nil && !errors.Is(err, context.Canceled) {
				r.err = fromConnect(r.node, err)
			}
			continue
		}
		r.cur = r.stream.Msg().GetData()
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

func (r *logReader) Close() error {
	r.once.Do(func() {
		r.cancel()
		r.stream.Close()
	})
	return nil
}

// clientStream is what the caller's side of an exec or attach needs of
// its bidi stream, whichever the message types.
type clientStream struct {
	mu        sync.Mutex // serialises the request side
	closed    bool       // the request side is closed
	sendStdin func([]byte) error
	sendSize  func(driver.TermSize) error
	sendClose func() error
	closeReq  func() error
}

// send runs fn on the request side unless it is closed.
func (c *clientStream) send(fn func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return io.ErrClosedPipe
	}
	return fn()
}

// close closes the request side once.
func (c *clientStream) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		c.closeReq()
	}
}

// pumpStdin sends stdin, then close-stdin at its end; pumpResize sends
// resizes. Both stop when the request side closes.
func (c *clientStream) pump(stdio driver.IO) {
	if stdio.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := stdio.Stdin.Read(buf)
				if n > 0 {
					if c.send(func() error { return c.sendStdin(buf[:n]) }) != nil {
						return
					}
				}
				if err != nil {
					c.send(c.sendClose)
					return
				}
			}
		}()
	} else {
		c.send(c.sendClose)
	}
	if stdio.Resize != nil {
		go func() {
			for size := range stdio.Resize {
				if c.send(func() error { return c.sendSize(size) }) != nil {
					return
				}
			}
		}()
	}
}

// firstSize takes a terminal size already waiting on resize, to start the
// process with it.
func firstSize(resize <-chan driver.TermSize) *clusterv1.TermSize {
	if resize == nil {
		return nil
	}
	select {
	case size, ok := <-resize:
		if ok {
			return &clusterv1.TermSize{Rows: uint32(size.Rows), Cols: uint32(size.Cols)}
		}
	default:
	}
	return nil
}

func protoSize(size driver.TermSize) *clusterv1.TermSize {
	return &clusterv1.TermSize{Rows: uint32(size.Rows), Cols: uint32(size.Cols)}
}

// output writes a process's output to w, a nil w dropping it.
func output(w io.Writer, p []byte) error {
	if w == nil {
		return nil
	}
	_, err := w.Write(p)
	return err
}

// Exec runs cfg in workload id on node and returns its exit code, pumping
// cfg's IO over one stream: stdin (and its end) and resizes to the node,
// stdout and stderr back. A Stdin that never ends is left in its Read
// when the process has ended; the caller's own closing of it ends that.
func (p *Pool) Exec(ctx context.Context, node, rpcAddr string, id spec.ID, cfg driver.ExecConfig) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := p.Service(node, rpcAddr).Exec(ctx)
	// HTTP/2 notices the end of ctx only once the request body ends: end
	// it then. (Closing the request side is safe beside a Send.)
	defer context.AfterFunc(ctx, func() { stream.CloseRequest() })()
	cs := &clientStream{
		sendStdin: func(b []byte) error {
			return stream.Send(&clusterv1.ExecRequest{Input: &clusterv1.ExecRequest_Stdin{Stdin: b}})
		},
		sendSize: func(s driver.TermSize) error {
			return stream.Send(&clusterv1.ExecRequest{Input: &clusterv1.ExecRequest_Resize{Resize: protoSize(s)}})
		},
		sendClose: func() error {
			return stream.Send(&clusterv1.ExecRequest{Input: &clusterv1.ExecRequest_CloseStdin{CloseStdin: &clusterv1.CloseStdin{}}})
		},
		closeReq: stream.CloseRequest,
	}
	defer stream.CloseResponse()
	defer cs.close()
	start := &clusterv1.ExecStart{
		Id: id.String(), Args: cfg.Args, Env: cfg.Env, WorkDir: cfg.WorkDir, User: cfg.User, Tty: cfg.Tty, Size: firstSize(cfg.Resize),
	}
	// A failed send shows as the stream's error, which Receive returns.
	if cs.send(func() error {
		return stream.Send(&clusterv1.ExecRequest{Input: &clusterv1.ExecRequest_Start{Start: start}})
	}) == nil {
		cs.pump(cfg.IO)
	}
	code, exited := -1, false
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			return -1, fromConnect(node, err)
		}
		switch o := msg.GetOutput().(type) {
		case *clusterv1.ExecResponse_Stdout:
			err = output(cfg.Stdout, o.Stdout)
		case *clusterv1.ExecResponse_Stderr:
			err = output(cfg.Stderr, o.Stderr)
		case *clusterv1.ExecResponse_ExitCode:
			code, exited = int(o.ExitCode), true
		}
		if err != nil {
			return -1, fmt.Errorf("exec in %s on node %s: writing its output: %w", id, node, err)
		}
	}
	if !exited {
		return -1, fmt.Errorf("node %s: exec in %s ended without an exit code", node, id)
	}
	return code, nil
}

// Attach connects stdio to workload id's main process on node, as Exec
// does, until the process ends, ctx ends, or the node drops the stream.
func (p *Pool) Attach(ctx context.Context, node, rpcAddr string, id spec.ID, stdio driver.IO) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := p.Service(node, rpcAddr).Attach(ctx)
	// HTTP/2 notices the end of ctx only once the request body ends: end
	// it then. (Closing the request side is safe beside a Send.)
	defer context.AfterFunc(ctx, func() { stream.CloseRequest() })()
	cs := &clientStream{
		sendStdin: func(b []byte) error {
			return stream.Send(&clusterv1.AttachRequest{Input: &clusterv1.AttachRequest_Stdin{Stdin: b}})
		},
		sendSize: func(s driver.TermSize) error {
			return stream.Send(&clusterv1.AttachRequest{Input: &clusterv1.AttachRequest_Resize{Resize: protoSize(s)}})
		},
		sendClose: func() error {
			return stream.Send(&clusterv1.AttachRequest{Input: &clusterv1.AttachRequest_CloseStdin{CloseStdin: &clusterv1.CloseStdin{}}})
		},
		closeReq: stream.CloseRequest,
	}
	defer stream.CloseResponse()
	defer cs.close()
	start := &clusterv1.AttachStart{Id: id.String(), Tty: stdio.Tty, Size: firstSize(stdio.Resize)}
	if cs.send(func() error {
		return stream.Send(&clusterv1.AttachRequest{Input: &clusterv1.AttachRequest_Start{Start: start}})
	}) == nil {
		cs.pump(stdio)
	}
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fromConnect(node, err)
		}
		switch o := msg.GetOutput().(type) {
		case *clusterv1.AttachResponse_Stdout:
			err = output(stdio.Stdout, o.Stdout)
		case *clusterv1.AttachResponse_Stderr:
			err = output(stdio.Stderr, o.Stderr)
		}
		if err != nil {
			return fmt.Errorf("attach to %s on node %s: writing its output: %w", id, node, err)
		}
	}
}
