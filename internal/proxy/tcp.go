package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// TCPOptions tune the raw TCP forwarder. Zero values take the defaults.
type TCPOptions struct {
	// BindAddr is the host address public TCP ports listen on; "0.0.0.0"
	// by default.
	BindAddr string
	// IdleTimeout closes a connection that carried no byte either way for
	// this long; 10 minutes by default, as nginx's stream proxy_timeout.
	IdleTimeout time.Duration
	// MaxConns bounds open connections per public port; 1024 by default.
	// Each open connection can hold two copy buffers, so this bounds memory.
	MaxConns int
	// DialTimeout bounds connecting to the workload; 5 seconds by default.
	DialTimeout time.Duration
	Log         *slog.Logger
}

// TCP forwards the public ports that routes list under Route.TCP as raw
// TCP to the workload that owns each. A port's listener opens when the
// first route needs it and closes when none does.
type TCP struct {
	opts   TCPOptions
	dialer net.Dialer
	log    *slog.Logger

	mu     sync.Mutex // guards ports and closed
	ports  map[uint16]*tcpPort
	closed bool
}

// NewTCP starts forwarding the TCP ports of table's routes, now and as they
// change. Call Close to stop.
func NewTCP(table *Table, opts TCPOptions) *TCP {
	if opts.BindAddr == "" {
		opts.BindAddr = "0.0.0.0"
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1024
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	t := &TCP{
		opts:   opts,
		dialer: net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second},
		log:    opts.Log,
		ports:  map[uint16]*tcpPort{},
	}
	table.setWatcher(t)
	return t
}

// Ports returns the public ports that have a listener, in order.
func (t *TCP) Ports() []uint16 {
	t.mu.Lock()
	defer t.mu.Unlock()
	ports := make([]uint16, 0, len(t.ports))
	for p := range t.ports {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	return ports
}

// Close closes every listener and connection. Routes set later are ignored.
func (t *TCP) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for port, p := range t.ports {
		p.close()
		delete(t.ports, port)
	}
	return nil
}

// tcpTarget is who a port leads to, and how to reach it (Route.Via and
// Route.Dial).
type tcpTarget struct {
	id, addr, via string
	dial          func(ctx context.Context, target string) (net.Conn, error)
}

// same reports whether a and b lead to the same place. A route's Dial is
// not compared: it changes only with its Via.
func (a tcpTarget) same(b tcpTarget) bool {
	return a.id == b.id && a.addr == b.addr && a.via == b.via
}

func (t *TCP) routesChanged(routes map[string]*Route, reserved map[uint16]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	want := map[uint16]tcpTarget{}
	for _, r := range routes {
		for port, addr := range r.TCP {
			if owner, ok := reserved[port]; ok {
				t.log.Warn("tcp: public port is the daemon's own; not forwarding it", "port", port, "owner", owner, "id", r.ID)
				continue
			}
			next := tcpTarget{id: r.ID, addr: addr, via: r.Via, dial: r.Dial}
			if cur, ok := want[port]; ok {
				// Placement prevents this; records from before it did may
				// not. Keep the current owner, so a conflict never moves
				// live connections; else the smaller id, so it is stable.
				next = t.pickOwner(port, cur, next)
				t.log.Warn("tcp: two workloads claim one public port", "port", port, "a", cur.id, "b", r.ID, "serving", next.id)
			}
			want[port] = next
		}
	}
	for port, p := range t.ports {
		if _, ok := want[port]; !ok {
			p.close()
			delete(t.ports, port)
			t.log.Info("tcp: public port closed", "port", port)
		}
	}
	for port, target := range want {
		p := t.ports[port]
		if p == nil {
			addr := net.JoinHostPort(t.opts.BindAddr, strconv.Itoa(int(port)))
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.log.Error("tcp: cannot open public port; it is not forwarded", "port", port, "id", target.id, "err", err)
				continue
			}
			p = &tcpPort{t: t, port: port, l: l, sem: make(chan struct{}, t.opts.MaxConns), conns: map[*tcpConn]struct{}{}}
			t.ports[port] = p
			go p.serve()
			t.log.Info("tcp: public port open", "addr", l.Addr().String(), "id", target.id, "target", target.addr, "via", target.via)
		}
		p.setTarget(target)
	}
}

func (t *TCP) pickOwner(port uint16, a, b tcpTarget) tcpTarget {
	if p := t.ports[port]; p != nil {
		if cur := p.target.Load(); cur != nil && cur.id == b.id {
			return b
		} else if cur != nil && cur.id == a.id {
			return a
		}
	}
	if b.id < a.id {
		return b
	}
	return a
}

// portOwner finds a program outside hypercore on port by binding it, so a
// spawn fails at once instead of forwarding nothing.
func (t *TCP) portOwner(port uint16) (string, bool) {
	t.mu.Lock()
	_, ours := t.ports[port]
	t.mu.Unlock()
	if ours {
		return "", false // a workload's; the placer knows which
	}
	l, err := net.Listen("tcp", net.JoinHostPort(t.opts.BindAddr, strconv.Itoa(int(port))))
	if err != nil {
		return "another program (" + err.Error() + ")", true
	}
	l.Close()
	return "", false
}

// tcpPort is one public port's listener and its open connections.
type tcpPort struct {
	t      *TCP
	port   uint16
	l      net.Listener
	target atomic.Pointer[tcpTarget]
	sem    chan struct{} // one slot per open connection

	mu     sync.Mutex
	conns  map[*tcpConn]struct{}
	closed bool
}

// setTarget points the port at target. Connections to a previous target
// are closed: they lead to a workload that no longer owns the port.
func (p *tcpPort) setTarget(target tcpTarget) {
	if old := p.target.Swap(&target); old == nil || old.same(target) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.abort()
	}
}

func (p *tcpPort) close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for c := range p.conns {
		c.abort()
	}
}

func (p *tcpPort) serve() {
	var delay time.Duration
	for {
		c, err := p.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or the like: wait as net/http does
			// instead of spinning, and try again.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.t.log.Warn("tcp: accept failed; retrying", "port", p.port, "err", err, "in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		select {
		case p.sem <- struct{}{}:
			go func() {
				defer func() { <-p.sem }()
				p.forward(c)
			}()
		default:
			// Full: refuse at once rather than hold a client we cannot serve.
			p.t.log.Debug("tcp: connection limit reached; refusing", "port", p.port, "max", cap(p.sem))
			c.Close()
		}
	}
}

func (p *tcpPort) forward(client net.Conn) {
	c := &tcpConn{client: client}
	if !p.track(c) {
		client.Close()
		return
	}
	defer p.untrack(c)
	target := p.target.Load()
	backend, err := p.t.dial(target)
	if err != nil {
		p.t.log.Debug("tcp: workload is not answering", "port", p.port, "id", target.id, "target", target.addr, "via", target.via, "err", err)
		client.Close()
		return
	}
	if !c.setBackend(backend) {
		return // aborted while dialing
	}
	c.pipe(p.t.opts.IdleTimeout)
}

// dial connects to target: over TCP, or with its route's Dial for a
// workload on another node, within DialTimeout either way.
func (t *TCP) dial(target *tcpTarget) (net.Conn, error) {
	if target.dial == nil {
		return t.dialer.Dial("tcp", target.addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.opts.DialTimeout)
	defer cancel()
	return target.dial(ctx, target.addr)
}

func (p *tcpPort) track(c *tcpConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpPort) untrack(c *tcpConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

// tcpConn is one client connection and its connection to the workload.
type tcpConn struct {
	client net.Conn
	last   atomic.Int64 // unix nanoseconds of the last byte either way

	mu      sync.Mutex
	backend net.Conn
	aborted bool
}

func (c *tcpConn) setBackend(b net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		b.Close()
		return false
	}
	c.backend = b
	return true
}

// abort closes both sides, which ends both copies.
func (c *tcpConn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	c.client.Close()
	if c.backend != nil {
		c.backend.Close()
	}
}

// pipe copies both ways until both sides have finished sending. An EOF is
// passed on as a half-close, so protocols that send a request, shut down
// writing and then read the answer keep working.
func (c *tcpConn) pipe(idle time.Duration) {
	c.last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.copy(c.backend, c.client, idle)
	}()
	c.copy(c.client, c.backend, idle)
	<-done
	c.abort()
}

// copy moves bytes from src to dst until src says EOF or something fails.
// It reads with a deadline so a silent connection ends after idle; the
// deadline is forgiven while the other direction still moves bytes.
func (c *tcpConn) copy(dst, src net.Conn, idle time.Duration) {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			now := time.Now()
			c.last.Store(now.UnixNano())
			dst.SetWriteDeadline(now.Add(idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				c.abort()
				return
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			closeWrite(dst)
			return
		case isTimeout(err) && time.Since(time.Unix(0, c.last.Load())) < idle:
			// The other direction is busy; this one may be quiet.
		default:
			c.abort()
			return
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
