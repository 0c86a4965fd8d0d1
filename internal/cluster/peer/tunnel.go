package peer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"
)

// A tunnel carries one TCP connection to a workload on another node. A
// workload's address is private to its node's bridge, so another node's
// proxy reaches it through the host node: it opens an HTTP/2 stream on the
// connection it already keeps to that node (POST TunnelPath, the target
// in targetHeader), and the host joins the stream to the workload's port
// once it has checked that the port is one a running workload there
// publishes. Raw bytes cross the tunnel, so HTTP, WebSocket and raw TCP
// public ports all work through it unchanged.
//
// Bytes to the workload are the request body, as they come; the end of
// the body is the caller's half-close. Bytes from the workload are the
// response body in frames, a 4-byte big-endian length and that many
// bytes, and a frame of length 0 is the workload's half-close: an HTTP/2
// server cannot end its response while it still reads the request, so the
// end of that direction is said inside the stream. Each end of the stream
// ends when both directions have ended (or either side resets it).

// TunnelPath is where a node's RPC server takes tunnel requests.
const TunnelPath = "/hypercore.cluster.v1.Tunnel/Open"

// targetHeader carries a tunnel's target, the workload's "ip:port".
const targetHeader = "Hypercore-Tunnel-Target"

// tunnelChunk is the most a frame from the workload holds.
const tunnelChunk = 32 << 10

// ErrNoTarget means a peer refused a tunnel because the target is not a
// port a running workload on it publishes.
var ErrNoTarget = errors.New("tunnel target is not a published port of a running workload on that node")

// dialTimeout bounds connecting to a workload on the host side; the
// proxy's own dial timeout bounds the whole Dial.
const dialTimeout = 5 * time.Second

// Dial opens a tunnel to target, a workload's "ip:port" on node (whose
// RPC address is rpcAddr), over the one connection this node keeps to it.
// It returns once the host has connected to the workload; ctx bounds
// only that, not the connection's life. The connection passes a
// half-close both ways (CloseWrite) and honours deadlines, as a
// *net.TCPConn does.
func (p *Pool) Dial(ctx context.Context, node, rpcAddr, target string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return nil, fmt.Errorf("tunnel to node %s: target %q is not ip:port: %w", node, target, err)
	}
	pc := p.peer(node, rpcAddr)
	life, cancel := context.WithCancel(context.Background())
	bodyR, bodyW := net.Pipe()
	fail := func(err error) (net.Conn, error) {
		cancel()
		bodyW.Close()
		return nil, err
	}
	req, err := http.NewRequestWithContext(life, http.MethodPost, "https://"+rpcAddr+TunnelPath, bodyR)
	if err != nil {
		return fail(fmt.Errorf("tunnel to node %s: %w", node, err))
	}
	req.ContentLength = -1
	req.Header.Set(targetHeader, ap.String())
	stop := context.AfterFunc(ctx, cancel)
	resp, err := pc.transport.RoundTrip(req)
	if !stop() {
		if err == nil {
			resp.Body.Close()
		}
		return fail(fmt.Errorf("tunnel to %s on node %s: %w", target, node, context.Cause(ctx)))
	}
	if err != nil {
		return fail(fmt.Errorf("%w: %s: tunnel to %s: %v", ErrUnreachable, node, target, err))
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		if resp.StatusCode == http.StatusForbidden {
			return fail(fmt.Errorf("tunnel to %s on node %s: %w", target, node, ErrNoTarget))
		}
		return fail(fmt.Errorf("tunnel to %s on node %s: %s: %s", target, node, resp.Status, printable(msg)))
	}
	c := &tunnelConn{
		node: node, target: ap, w: bodyW, body: resp.Body, cancel: cancel,
		chunks: make(chan *[]byte), closed: make(chan struct{}), readDL: newDeadline(),
	}
	go c.readLoop()
	return c, nil
}

// chunks lends the buffers of frames from the workload, so an idle tunnel
// holds none.
var chunks = sync.Pool{New: func() any { b := make([]byte, 4+tunnelChunk); return &b }}

// putChunk gives a buffer of chunks back whole.
func putChunk(bp *[]byte) {
	*bp = (*bp)[:cap(*bp)]
	chunks.Put(bp)
}

// tunnelConn is the caller's end of a tunnel.
type tunnelConn struct {
	node   string
	target netip.AddrPort
	w      net.Conn      // writes go to the request body through this pipe
	body   io.ReadCloser // the framed response
	cancel context.CancelFunc

	// readLoop hands each frame over chunks, and closes it after setting
	// rerr. cur is the rest of the frame Read is on, in buf.
	chunks chan *[]byte
	rerr   error
	buf    *[]byte
	cur    []byte
	readDL deadline

	closed    chan struct{}
	closeOnce sync.Once
}

func (c *tunnelConn) readLoop() {
	defer close(c.chunks)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(c.body, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			c.rerr = fmt.Errorf("tunnel to %s on node %s: %w", c.target, c.node, err)
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 {
			c.rerr = io.EOF // the workload's half-close
			return
		}
		if n > tunnelChunk {
			c.rerr = fmt.Errorf("tunnel to %s on node %s: a frame of %d bytes, over the %d a peer sends", c.target, c.node, n, tunnelChunk)
			return
		}
		bp := chunks.Get().(*[]byte)
		if _, err := io.ReadFull(c.body, (*bp)[:n]); err != nil {
			chunks.Put(bp)
			c.rerr = fmt.Errorf("tunnel to %s on node %s: %w", c.target, c.node, io.ErrUnexpectedEOF)
			return
		}
		*bp = (*bp)[:n]
		select {
		case c.chunks <- bp:
		case <-c.closed:
			putChunk(bp)
			return
		}
	}
}

// Read implements net.Conn.
func (c *tunnelConn) Read(p []byte) (int, error) {
	if isClosed(c.closed) {
		return 0, net.ErrClosed
	}
	if len(c.cur) == 0 {
		if c.buf != nil {
			putChunk(c.buf)
			c.buf = nil
		}
		if isClosed(c.readDL.wait()) {
			return 0, os.ErrDeadlineExceeded
		}
		select {
		case bp, ok := <-c.chunks:
			if !ok {
				return 0, c.rerr
			}
			c.buf, c.cur = bp, *bp
		case <-c.readDL.wait():
			return 0, os.ErrDeadlineExceeded
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}

// Write implements net.Conn.
func (c *tunnelConn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil && errors.Is(err, io.ErrClosedPipe) {
		if isClosed(c.closed) {
			err = net.ErrClosed
		} else {
			// The stream ended under it: the host reset it, or the
			// caller closed its writing side before.
			err = fmt.Errorf("tunnel to %s on node %s: %w", c.target, c.node, net.ErrClosed)
		}
	}
	return n, err
}

// CloseWrite ends the bytes to the workload, which reads an EOF; the
// workload's answer still comes.
func (c *tunnelConn) CloseWrite() error { return c.w.Close() }

// Close ends the tunnel both ways at once.
func (c *tunnelConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.cancel() // resets the stream if it is still open
		c.w.Close()
		c.body.Close()
	})
	return nil
}

// LocalAddr implements net.Conn: the tunnel, as a name.
func (c *tunnelConn) LocalAddr() net.Addr { return tunnelAddr(c.node) }

// RemoteAddr implements net.Conn: the workload's address.
func (c *tunnelConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.target) }

// SetDeadline implements net.Conn.
func (c *tunnelConn) SetDeadline(t time.Time) error {
	c.readDL.set(t)
	return c.w.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (c *tunnelConn) SetReadDeadline(t time.Time) error {
	c.readDL.set(t)
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *tunnelConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

// tunnelAddr names the node a tunnel goes through.
type tunnelAddr string

// Network implements net.Addr.
func (a tunnelAddr) Network() string { return "hypercore-tunnel" }

// String implements net.Addr.
func (a tunnelAddr) String() string { return "via " + string(a) }

// serveTunnel is the host's end of a tunnel: it checks the target with
// s.Target, connects to it and joins the two until both directions end.
func (s *Server) serveTunnel(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "tunnels are opened with POST", http.StatusMethodNotAllowed)
		return
	}
	if r.ProtoMajor < 2 {
		// Over HTTP/1 the response could not flow while the request
		// does.
		http.Error(w, "tunnels need HTTP/2", http.StatusHTTPVersionNotSupported)
		return
	}
	target, err := netip.ParseAddrPort(r.Header.Get(targetHeader))
	if err != nil {
		http.Error(w, "tunnel target: "+err.Error(), http.StatusBadRequest)
		return
	}
	if s.Target == nil || !s.Target(target) {
		s.log().Warn("tunnel refused: not a published port of a running workload on this node", "target", target, "peer", Caller(r.Context()))
		http.Error(w, ErrNoTarget.Error(), http.StatusForbidden)
		return
	}
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	back, err := d.DialContext(r.Context(), "tcp", target.String())
	if err != nil {
		http.Error(w, "the workload is not answering: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer back.Close()
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	// The end of the stream (the caller's Close, or its node going away)
	// ends both copies.
	stop := context.AfterFunc(r.Context(), func() { back.Close() })
	defer stop()

	up := make(chan struct{})
	go func() {
		defer close(up)
		bp := chunks.Get().(*[]byte)
		defer chunks.Put(bp)
		if _, err := io.CopyBuffer(onlyWriter{back}, r.Body, *bp); err != nil {
			back.Close()
			return
		}
		closeWrite(back)
	}()
	bp := chunks.Get().(*[]byte)
	defer chunks.Put(bp)
	buf := *bp
	for {
		n, err := back.Read(buf[4:])
		if n > 0 {
			binary.BigEndian.PutUint32(buf, uint32(n))
			if _, werr := w.Write(buf[:4+n]); werr != nil {
				back.Close()
				break
			}
			if rc.Flush() != nil {
				back.Close()
				break
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				binary.BigEndian.PutUint32(buf, 0)
				if _, werr := w.Write(buf[:4]); werr == nil {
					rc.Flush()
				}
			} else {
				back.Close()
			}
			break
		}
	}
	<-up
}

// onlyWriter hides a *net.TCPConn's ReadFrom, which for a reader that is
// not a file only adds a step before the same copy.
type onlyWriter struct{ io.Writer }

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// printable keeps a peer's message to one readable line.
func printable(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r == '\n' || r == '\r' || r == '\t' {
			r = ' '
		}
		if r < ' ' || r == 0x7f {
			continue
		}
		out = append(out, r)
	}
	return string(out)
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}
