package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/wire"
)

// ErrDisconnected means the stream to the agent ended: the VM stopped, or
// another connection replaced this one. Dial again to go on.
var ErrDisconnected = errors.New("guest agent: connection lost")

// Client is the host's end of the agent stream. Its methods may be called
// concurrently: each opens its own channel.
type Client struct {
	conn net.Conn
	w    *wire.Writer

	mu    sync.Mutex
	next  uint32
	chans map[uint32]*session
	err   error
	done  chan struct{}

	// peakQueued is the most data, in window cost, that one channel's
	// inbox has held: what the guest made the host buffer. Only readLoop
	// writes it.
	peakQueued atomic.Int64
}

// DialUnix connects to a Unix socket that carries the agent stream as it
// is, such as QEMU's chardev socket behind the agent's virtio-serial port.
func DialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to guest agent socket %s (is the VM running?): %w", path, err)
	}
	return c, nil
}

// DialHybridVsock connects to a guest vsock port through a Firecracker or
// Cloud Hypervisor hybrid vsock socket: the VMM's Unix socket at path,
// then "CONNECT <port>\n", answered by "OK <host port>\n". What follows is
// the same stream DialUnix gives on QEMU.
func DialHybridVsock(ctx context.Context, path string, port uint32) (net.Conn, error) {
	c, err := DialUnix(ctx, path)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, fmt.Errorf("hybrid vsock %s: send CONNECT: %w", path, err)
	}
	// Byte by byte: anything after the newline is already the agent's.
	var line []byte
	one := make([]byte, 1)
	for len(line) < 64 {
		if _, err := io.ReadFull(c, one); err != nil {
			c.Close()
			return nil, fmt.Errorf("hybrid vsock %s: read CONNECT answer (is the agent listening on port %d?): %w", path, port, err)
		}
		if one[0] == '\n' {
			break
		}
		line = append(line, one[0])
	}
	if !strings.HasPrefix(string(line), "OK ") {
		c.Close()
		return nil, fmt.Errorf("hybrid vsock %s: CONNECT %d answered %q", path, port, line)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// Handshake starts the protocol on conn: it sends Hello and waits, until
// ctx ends, for the agent's echo, skipping anything an earlier connection
// left in the stream. A VM that is still booting answers once its agent
// runs, so ctx bounds the boot too. The Client owns conn from then on.
func Handshake(ctx context.Context, conn net.Conn) (*Client, error) {
	c := &Client{conn: conn, w: wire.NewWriter(conn), chans: map[uint32]*session{}, done: make(chan struct{})}
	nonce := newNonce()
	// A cancelled ctx must unblock the read; a deadline does that.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*Client, error) {
		stop()
		conn.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w); the VM may still be booting, or run an agent of another protocol version than %q (restart it with this hypercore)", ctx.Err(), err, helloMagic)
		}
		return nil, fmt.Errorf("guest agent handshake: %w", err)
	}
	if err := c.w.WriteFrame(Hello, helloPayload(nonce)); err != nil {
		return fail(err)
	}
	// Repeat the Hello while waiting: an agent that was in the middle of
	// a frame from the previous connection may take this one's Hello as
	// that frame's payload. Extra echoes are skipped by readLoop.
	answered := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-answered:
				return
			case <-t.C:
				if c.w.WriteFrame(Hello, helloPayload(nonce)) != nil {
					return
				}
			}
		}
	}()
	br := bufio.NewReaderSize(conn, 64<<10)
	err := scanFor(br, helloFrame(nonce))
	close(answered)
	if err != nil {
		return fail(err)
	}
	if !stop() {
		return fail(errors.New("cancelled"))
	}
	go c.readLoop(br)
	return c, nil
}

// Close ends the connection; sessions in flight fail with ErrDisconnected.
func (c *Client) Close() error { return c.conn.Close() }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

func (c *Client) readLoop(r *bufio.Reader) {
	var err error
loop:
	for {
		var t wire.Type
		var p []byte
		if t, p, err = wire.ReadFrame(r); err != nil {
			break
		}
		if t == Hello {
			continue
		}
		id, data, perr := splitChan(p)
		if perr != nil {
			err = perr
			break
		}
		c.mu.Lock()
		s := c.chans[id]
		c.mu.Unlock()
		if s == nil {
			continue
		}
		switch t {
		case Window:
			n, werr := decodeWindow(data)
			if werr != nil {
				err = werr
				break loop
			}
			s.out.grant(n)
			continue
		case wire.Stdout, wire.Stderr, wire.Exit, wire.Error:
		default:
			// Nothing else is the agent's to send; queueing it would let
			// the guest fill the host's memory with frames no one reads.
			continue
		}
		if perr := s.in.put(frame{t, data}); perr != nil {
			// The session sees perr at once; the agent is told to stop
			// the channel (killing an exec) so it stops sending. Not from
			// this goroutine: the write may wait on the link, and the
			// reader must keep serving the other channels.
			go func() { _ = s.send(Close, nil) }()
		}
		if q := s.in.queuedBytes(); q > c.peakQueued.Load() {
			c.peakQueued.Store(q)
		}
	}
	c.conn.Close()
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %w", ErrDisconnected, err)
	for id, s := range c.chans {
		s.in.close(c.err)
		s.out.close(c.err)
		delete(c.chans, id)
	}
	c.mu.Unlock()
	close(c.done)
}

// session is one channel as the host sees it.
type session struct {
	c   *Client
	id  uint32
	in  *inbox
	out *sendWindow // the agent's window for the channel's stdin
}

func (c *Client) open(req Request) (*session, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s request: %w", req.Op, err)
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.next++
	s := &session{c: c, id: c.next, out: newSendWindow()}
	s.in = newInbox(func(n uint32) { _ = s.send(Window, encodeWindow(n)) })
	c.chans[s.id] = s
	c.mu.Unlock()
	if err := c.w.WriteFrame(Open, putChan(s.id, body)); err != nil {
		s.release()
		return nil, fmt.Errorf("%w: send %s request: %w", ErrDisconnected, req.Op, err)
	}
	return s, nil
}

func (s *session) send(t wire.Type, p []byte) error {
	return s.c.w.WriteFrame(t, putChan(s.id, p))
}

// abandon tells the agent to end the session, then forgets it.
func (s *session) abandon() {
	_ = s.send(Close, nil)
	s.release()
}

func (s *session) release() {
	s.c.mu.Lock()
	delete(s.c.chans, s.id)
	s.c.mu.Unlock()
	// Stdin waiting for window ends with the session.
	s.out.close(errChannelEnded)
}

// remoteError turns an Error frame into an error, recognising the ones
// callers test for.
func remoteError(p []byte) error {
	msg := string(p)
	if msg == ErrConfigured.Error() {
		return ErrConfigured
	}
	return errors.New(msg)
}

// call runs a request that takes no input and returns what the agent wrote
// to Stdout before Exit 0.
func (c *Client) call(ctx context.Context, req Request) ([]byte, error) {
	s, err := c.open(req)
	if err != nil {
		return nil, err
	}
	defer s.release()
	var out []byte
	for {
		f, err := s.in.get(ctx)
		if err != nil {
			if ctx.Err() != nil {
				s.abandon()
			}
			return nil, fmt.Errorf("guest agent %s: %w", req.Op, err)
		}
		switch f.t {
		case wire.Stdout:
			out = append(out, f.p...)
		case wire.Exit:
			code, err := wire.DecodeExit(f.p)
			if err == nil && code != 0 {
				err = fmt.Errorf("guest agent %s: exit status %d", req.Op, code)
			}
			return out, err
		case wire.Error:
			return nil, fmt.Errorf("guest agent %s: %w", req.Op, remoteError(f.p))
		}
	}
}

// Ping returns once the agent serves requests.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.call(ctx, Request{Op: OpPing})
	return err
}

// Configure sends the workload's configuration and returns once its
// process runs. It fails with ErrConfigured if the VM has one already.
func (c *Client) Configure(ctx context.Context, cfg Config) error {
	_, err := c.call(ctx, Request{Op: OpConfigure, Config: &cfg})
	return err
}

// Signal sends sig to the workload's main process.
func (c *Client) Signal(ctx context.Context, sig int) error {
	_, err := c.call(ctx, Request{Op: OpSignal, Signal: sig})
	return err
}

// Shutdown asks the agent to end the workload, SIGTERM first and SIGKILL
// after grace, and to power the VM off. It returns once the agent has
// taken the request; the VMM exits when the guest is done.
func (c *Client) Shutdown(ctx context.Context, grace time.Duration) error {
	_, err := c.call(ctx, Request{Op: OpShutdown, GraceMillis: grace.Milliseconds()})
	return err
}

// Exec runs p in the guest with stdio and returns its exit code. Cancelling
// ctx kills the process.
func (c *Client) Exec(ctx context.Context, p Process, stdio driver.IO) (int, error) {
	p.Tty = stdio.Tty
	return c.stream(ctx, Request{Op: OpExec, Process: &p}, stdio)
}

// Attach connects stdio to the workload's main process until ctx ends or
// the process exits; either ends it without error. Detaching leaves the
// process's input open.
func (c *Client) Attach(ctx context.Context, stdio driver.IO) error {
	_, err := c.stream(ctx, Request{Op: OpAttach}, stdio)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// stream runs a session with standard streams: input and resizes go to the
// agent, output comes back until Exit or Error.
func (c *Client) stream(ctx context.Context, req Request, stdio driver.IO) (int, error) {
	s, err := c.open(req)
	if err != nil {
		return -1, err
	}
	defer s.release()
	finished := make(chan struct{})
	defer close(finished)
	if stdio.Stdin != nil {
		go func() {
			// Stdin waits for the agent's window; CloseStdin comes after
			// it on this goroutine, and resizes and Close never wait.
			in := flowWriter{w: c.w, id: s.id, t: wire.Stdin, win: s.out}
			buf := make([]byte, 32<<10)
			for {
				n, err := stdio.Stdin.Read(buf)
				if n > 0 {
					if _, werr := in.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					select {
					case <-finished:
					default:
						_ = s.send(wire.CloseStdin, nil)
					}
					return
				}
			}
		}()
	} else if req.Op == OpExec {
		_ = s.send(wire.CloseStdin, nil)
	}
	if stdio.Tty && stdio.Resize != nil {
		go func() {
			for {
				select {
				case <-finished:
					return
				case sz, ok := <-stdio.Resize:
					if !ok {
						return
					}
					if s.send(wire.Resize, wire.EncodeResize(sz.Rows, sz.Cols)) != nil {
						return
					}
				}
			}
		}()
	}
	for {
		f, err := s.in.get(ctx)
		if err != nil {
			if ctx.Err() != nil {
				s.abandon()
			}
			return -1, fmt.Errorf("guest agent %s: %w", req.Op, err)
		}
		switch f.t {
		case wire.Stdout:
			if stdio.Stdout != nil {
				_, _ = stdio.Stdout.Write(f.p)
			}
		case wire.Stderr:
			if stdio.Stderr != nil {
				_, _ = stdio.Stderr.Write(f.p)
			}
		case wire.Exit:
			return wire.DecodeExit(f.p)
		case wire.Error:
			return -1, fmt.Errorf("guest agent %s: %w", req.Op, remoteError(f.p))
		}
	}
}
