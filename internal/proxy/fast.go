package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Serve serves srv on l: as srv.ServeTLS(l, "", "") does when srv.TLSConfig
// is set (whose NextProtos, as HTTPSServer sets them, decide ALPN), as
// srv.Serve(l) does otherwise.
//
// When srv.Handler is a Proxy's Handler (as on the proxy's public ports),
// each HTTP/1.1 connection is served first by the proxy's fast path, which
// forwards the common request (GET or HEAD, no body, no upgrade, a response
// with a Content-Length) on its own: one goroutine per connection, headers
// parsed where they lie in the read buffer, and nothing allocated per
// request. Under bench/proxy, net/http and httputil.ReverseProxy took about
// 80 µs of CPU time a request, the fast path under 30, most of it the
// kernel's (bench/README.md). At the first request the fast path leaves
// alone (a body, an upgrade, HTTP/2, an error to answer, an unusual
// response), the connection is handed to srv for the rest of its life,
// with the bytes read so far, so every other behaviour is srv's and the
// Handler's.
//
// Serve sets srv.ConnContext, calling the one set before. srv.Shutdown
// closes idle fast-path connections and ends the others after the response
// in flight, but does not wait for that response (it waits for those of
// the connections srv serves). srv.ConnState is not told about fast-path
// connections.
func Serve(srv *http.Server, l net.Listener) error {
	ph, ok := srv.Handler.(*portHandler)
	if !ok || srv.ReadTimeout != 0 || srv.WriteTimeout != 0 {
		// The fast path does not enforce whole-request timeouts: servers
		// that set them are served by net/http alone.
		if srv.TLSConfig != nil {
			return srv.ServeTLS(l, "", "")
		}
		return srv.Serve(l)
	}
	f := &fastServer{
		p:       ph.p,
		port:    ph.port,
		srv:     srv,
		tlsConf: srv.TLSConfig,
		l:       l,
		conns:   map[*fastConn]struct{}{},
	}
	f.handoff = &handoffListener{Listener: l, f: f, conns: make(chan net.Conn), done: make(chan struct{})}
	prev := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if prev != nil {
			ctx = prev(ctx, c)
		}
		if hc := asHanded(c); hc != nil && hc.pending != nil {
			ctx = context.WithValue(ctx, handedKey{}, hc)
		}
		return ctx
	}
	go f.acceptLoop()
	go f.sweep()
	return srv.Serve(f.handoff)
}

// fastServer is the fast path in front of one http.Server.
type fastServer struct {
	p       *Proxy
	port    uint16
	srv     *http.Server
	tlsConf *tls.Config // nil: plain HTTP
	l       net.Listener
	handoff *handoffListener

	closing atomic.Bool // the server is shutting down
	mu      sync.Mutex
	conns   map[*fastConn]struct{}
}

// acceptLoop accepts connections until l fails or is closed, backing off
// on temporary errors (out of file descriptors) as net/http does.
func (f *fastServer) acceptLoop() {
	var delay time.Duration
	for {
		c, err := f.l.Accept()
		if err != nil {
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() && !f.closing.Load() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				f.logf("http: Accept error: %v; retrying in %v", err, delay)
				time.Sleep(delay)
				continue
			}
			f.handoff.stop(err)
			return
		}
		delay = 0
		sc, ok := newSysConn(c).(*sysConn)
		if !ok {
			f.handoff.give(c) // not TCP: net/http's
			continue
		}
		fc := &fastConn{f: f, sc: sc, conn: sc}
		f.mu.Lock()
		if f.closing.Load() {
			f.mu.Unlock()
			c.Close()
			continue
		}
		f.conns[fc] = struct{}{}
		f.mu.Unlock()
		go fc.serve()
	}
}

// shutdown closes the idle connections; the busy ones close themselves
// after their response.
func (f *fastServer) shutdown() {
	f.closing.Store(true)
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		if c.idle.Load() {
			c.conn.Close()
		}
	}
}

// sweepEvery is how often the sweeper looks at idle connections, and so
// about how long a client that shut its side down with its last request
// waits for the proxy to close the connection (see sysConn.serveLoop).
const sweepEvery = time.Second

// sweep closes, until the server shuts down, the connections whose
// client has left while they were idle in a way their loop has not seen:
// a FIN that came with the last request. Each connection is looked at
// once in each time it is idle, after it has been idle a while, with one
// system call that takes nothing from the socket.
func (f *fastServer) sweep() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	var idle []*fastConn
	for {
		select {
		case <-f.handoff.done:
			return
		case <-t.C:
		}
		idle = idle[:0]
		f.mu.Lock()
		for c := range f.conns {
			if n := c.served.Load(); !c.idle.Load() || n != c.seen {
				c.seen, c.checked = n, false // busy since the last look
			} else if !c.checked {
				c.checked = true
				idle = append(idle, c)
			}
		}
		f.mu.Unlock()
		for _, c := range idle {
			if !c.sc.peerLeft() {
				continue
			}
			// Wake the loop, which reads the end and closes; unless the
			// connection has been handed to net/http meanwhile.
			f.mu.Lock()
			if _, ok := f.conns[c]; ok && c.idle.Load() {
				c.poked.Store(true)
				c.sc.SetReadDeadline(aLongTimeAgo)
			}
			f.mu.Unlock()
		}
		clear(idle)
	}
}

func (f *fastServer) forget(c *fastConn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

func (f *fastServer) logf(format string, args ...any) {
	if f.srv.ErrorLog != nil {
		f.srv.ErrorLog.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

// handoffListener is the listener srv serves: it yields the connections
// the fast path hands over. Closing it (srv.Shutdown, srv.Close) closes
// the real listener and shuts the fast path down.
type handoffListener struct {
	net.Listener
	f     *fastServer
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error // why Accept fails; set before done is closed
}

// Accept implements net.Listener.
func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close implements net.Listener.
func (l *handoffListener) Close() error {
	l.stop(net.ErrClosed)
	err := l.Listener.Close()
	l.f.shutdown()
	return err
}

func (l *handoffListener) stop(err error) {
	l.once.Do(func() { l.err = err; close(l.done) })
}

// give hands c to srv, or closes it if srv no longer accepts.
func (l *handoffListener) give(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// handedConn is a connection the fast path handed to net/http after it
// had read from it: Read returns those bytes first.
type handedConn struct {
	net.Conn
	buf []byte
	// pending is the response to the first request in buf, which the fast
	// path had already sent to the workload when it found the response
	// to be one for net/http; the Handler reads it instead of sending the
	// request again.
	pending *pendingResponse
}

// Read implements net.Conn.
func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// handedTLSConn is a handedConn over TLS. net/http sets Request.TLS from
// ConnectionState, as it does for a *tls.Conn.
type handedTLSConn struct {
	*handedConn
	tls *tls.Conn
}

// ConnectionState returns the TLS state of the connection.
func (c handedTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

func asHanded(c net.Conn) *handedConn {
	switch c := c.(type) {
	case *handedConn:
		return c
	case handedTLSConn:
		return c.handedConn
	}
	return nil
}

// handedKey is the context key of the handedConn whose first request has
// a pending response.
type handedKey struct{}

// pendingKey is the context key under which the Handler passes a pending
// response to backendTransport.
type pendingKey struct{}

// pendingResponse is a request the fast path sent to a workload, and the
// connection its response is to be read from (or why there is none).
type pendingResponse struct {
	bc  *backendConn
	err error
}

// take returns the pending response once; later calls report false.
func (p *pendingResponse) take() (pendingResponse, bool) {
	if p.bc == nil && p.err == nil {
		return pendingResponse{}, false
	}
	pr := *p
	*p = pendingResponse{}
	return pr, true
}

// fastConn is one client connection on the fast path.
type fastConn struct {
	f     *fastServer
	sc    *sysConn // as accepted
	conn  net.Conn // sc, or a *tls.Conn over it
	br    *bufio.Reader
	bw    *bufio.Writer
	xff   string // the client's IP address, for X-Forwarded-For
	https bool
	sni   string // the workload id the TLS server name names, if any
	idle  atomic.Bool
	rdl   time.Time // the read deadline readHead last set; zero: none

	// Where step is: still before the first request's head; the read
	// deadline set for the head being read, and the shorter one for the
	// rest of a head begun; and how the connection ends.
	first, deadlineSet, slow bool
	end                      step
	pending                  *pendingResponse // for net/http, with stepHandOff

	// served counts requests; poked is set by the sweeper to have the
	// loop read the socket (see sweep). seen and checked are the
	// sweeper's own.
	served  atomic.Uint32
	poked   atomic.Bool
	seen    uint32
	checked bool

	// Host headers repeat on a connection: the last one and the workload
	// id it names are kept, so routing a request allocates nothing.
	host, hostID string
	hostOK       bool

	// The watch for a client that leaves while its request is in
	// flight; see arm.
	timer     *time.Timer
	mu        sync.Mutex
	watch     watchState
	watchDone chan struct{}
	gone      bool     // the client left (set by the watcher)
	cur       net.Conn // the workload connection the request is on
	headLen   int      // the length of the request's head, still in br
	extra     [1]byte  // a byte the watcher read, for Read to return first
	hasExtra  bool
}

type watchState uint8

const (
	watchOff   watchState = iota
	watchArmed            // the timer is set
	watchOn               // the watcher is reading
)

// watchDelay is how long a request may be in flight before the proxy
// starts watching its client's connection. Watching takes a goroutine and
// two deadline changes; a quick response needs neither, and a client
// that left is still noticed within this delay.
const watchDelay = 50 * time.Millisecond

// Buffers of client connections; 4 KiB each way as net/http's.
var (
	fastReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	fastWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// Read reads from the client connection, the watcher's byte first. Only
// c.br calls it.
func (c *fastConn) Read(p []byte) (int, error) {
	if c.hasExtra && len(p) > 0 {
		c.hasExtra = false
		p[0] = c.extra[0]
		return 1, nil
	}
	return c.conn.Read(p)
}

// Outcomes of a request on the fast path.
type step uint8

const (
	stepNext    step = iota // done; read the next request
	stepHandOff             // hand the connection to net/http
	stepClose               // close the connection
)

func (c *fastConn) serve() {
	handed := false
	defer func() {
		c.f.forget(c)
		if !handed {
			c.conn.Close()
		}
		if c.timer != nil {
			c.timer.Stop()
		}
		c.sc.closePeer()
		if c.br != nil {
			c.br.Reset(nil)
			fastReaders.Put(c.br)
			c.bw.Reset(nil)
			fastWriters.Put(c.bw)
		}
	}()
	if ip, _, err := net.SplitHostPort(c.sc.RemoteAddr().String()); err == nil {
		c.xff = ip
	}
	if c.f.tlsConf != nil {
		if !c.handshake() {
			return
		}
		c.https = true
		st := c.conn.(*tls.Conn).ConnectionState()
		if p := st.NegotiatedProtocol; p != "" && p != "http/1.1" {
			c.f.handoff.give(c.conn) // HTTP/2, or an ACME challenge
			handed = true
			return
		}
		if st.ServerName != "" {
			c.sni, _ = c.f.p.workloadID(st.ServerName)
		}
	}
	c.br = fastReaders.Get().(*bufio.Reader)
	c.br.Reset(c)
	c.bw = fastWriters.Get().(*bufio.Writer)
	c.bw.Reset(c.conn)
	c.first, c.end = true, stepClose
	for {
		err := c.sc.serveLoop(c.step)
		if err == nil || !c.poked.Swap(false) {
			break
		}
		// The sweeper woke the loop through the read deadline: the
		// deadline readHead sets is to be set again.
		c.rdl, c.deadlineSet = time.Time{}, false
		c.conn.SetReadDeadline(c.rdl)
	}
	if c.end == stepHandOff {
		c.idle.Store(false)
		c.f.forget(c) // out of the sweeper's sight
		if c.poked.Load() {
			c.conn.SetReadDeadline(time.Time{})
		}
		handed = c.handOff(c.pending)
	}
}

// step serves the requests the client has sent, inside serveLoop. It
// returns false when it has to wait for more from the client, and true
// when the connection is done on the fast path, with c.end saying how.
func (c *fastConn) step() bool {
	for {
		c.idle.Store(true)
		if c.f.closing.Load() {
			c.end = stepClose
			return true
		}
		head, st := c.readHead()
		switch st {
		case headWait:
			return false
		case headClosed:
			c.end = stepClose
			return true
		case headTooLong:
			c.end = stepHandOff // net/http's limit applies
			return true
		}
		c.idle.Store(false)
		c.first, c.deadlineSet = false, false
		c.served.Add(1)
		var req fastRequest
		if !parseRequest(head, &req) {
			c.end = stepHandOff
			return true
		}
		be, ok := c.route(req.host)
		if !ok {
			c.end = stepHandOff
			return true
		}
		s, pending := c.forward(&req, be)
		if s != stepNext {
			c.end, c.pending = s, pending
			return true
		}
		c.br.Discard(len(head))
	}
}

// handshake runs the TLS handshake, within the time net/http allows it,
// and answers a plain HTTP request as net/http does.
func (c *fastConn) handshake() bool {
	tc := tls.Server(c.sc, c.f.tlsConf)
	c.conn = tc
	to := c.f.srv.ReadHeaderTimeout
	if to > 0 {
		c.sc.SetDeadline(time.Now().Add(to))
	}
	if err := tc.HandshakeContext(context.Background()); err != nil {
		reason := err.Error()
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && recordLooksLikeHTTP(re.RecordHeader) {
			io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			reason = "client sent an HTTP request to an HTTPS server"
		}
		c.f.logf("http: TLS handshake error from %s: %v", c.sc.RemoteAddr(), reason)
		return false
	}
	if to > 0 {
		c.sc.SetDeadline(time.Time{})
	}
	return true
}

func recordLooksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// handOff gives the connection to net/http with what has been read from
// it, and the pending response of its first request if there is one.
func (c *fastConn) handOff(pending *pendingResponse) bool {
	if c.f.closing.Load() {
		if pending != nil && pending.bc != nil {
			pending.bc.conn.Close()
		}
		return false
	}
	var conn net.Conn = c.conn
	if n := c.br.Buffered(); n > 0 || c.hasExtra || pending != nil {
		b, _ := c.br.Peek(n)
		buf := make([]byte, n, n+1)
		copy(buf, b)
		if c.hasExtra {
			buf = append(buf, c.extra[0])
		}
		hc := &handedConn{Conn: c.conn, buf: buf, pending: pending}
		conn = hc
		if tc, ok := c.conn.(*tls.Conn); ok {
			conn = handedTLSConn{hc, tc}
		}
	}
	c.f.handoff.give(conn)
	return true
}

// What readHead found.
type headState uint8

const (
	headOK      headState = iota
	headWait              // the head is not all there yet
	headTooLong           // the head does not fit in c.br
	headClosed            // closed, idle for too long, or too slow to send its headers
)

// readHead returns the head (request line and headers) of the next
// request, still in c.br, once it is all there.
func (c *fastConn) readHead() ([]byte, headState) {
	srv := c.f.srv
	headerTO := srv.ReadHeaderTimeout
	if !c.deadlineSet {
		// A client may take IdleTimeout to start its next request, and
		// ReadHeaderTimeout to send the headers of its first, as with
		// net/http.
		c.deadlineSet, c.slow = true, c.first
		if c.br.Buffered() == 0 {
			wait := srv.IdleTimeout
			if c.first {
				wait = headerTO
			}
			c.setReadTimeout(wait)
		}
	}
	for {
		b, _ := c.br.Peek(c.br.Buffered())
		if n := headEnd(b); n >= 0 {
			return b[:n], headOK
		}
		if len(b) == c.br.Size() {
			return nil, headTooLong
		}
		if len(b) > 0 && !c.slow && headerTO > 0 {
			// Begun: the rest within ReadHeaderTimeout.
			c.rdl = time.Now().Add(headerTO)
			c.conn.SetReadDeadline(c.rdl)
			c.slow = true
		}
		if _, err := c.br.Peek(len(b) + 1); err != nil {
			if errors.Is(err, errWouldBlock) {
				return nil, headWait
			}
			return nil, headClosed
		}
	}
}

// setReadTimeout makes c's reads fail d from now, or never if d is 0. As
// readHead calls it before every request with the same d, the deadline is
// moved only when it has come closer than d by more than a little (a
// second at most): that spares a timer update per request, and an idle
// connection is closed between d less that little and d.
func (c *fastConn) setReadTimeout(d time.Duration) {
	if d <= 0 {
		if !c.rdl.IsZero() {
			c.rdl = time.Time{}
			c.conn.SetReadDeadline(c.rdl)
		}
		return
	}
	now := time.Now()
	if c.rdl.IsZero() || c.rdl.Sub(now) < d-min(d/10, time.Second) {
		c.rdl = now.Add(d)
		c.conn.SetReadDeadline(c.rdl)
	}
}

// route returns the backend a request for host goes to, when the fast
// path may take it: the workload exists, is ready, maps the port, and,
// over TLS, is the one the connection was opened for. Every other case
// has an answer net/http gives.
func (c *fastConn) route(host []byte) (backendAddr, bool) {
	if string(host) != c.host || c.host == "" {
		c.host = string(host)
		c.hostID, c.hostOK = c.f.p.workloadID(c.host)
	}
	if !c.hostOK || (c.https && c.sni != c.hostID) {
		return backendAddr{}, false
	}
	be, why := c.f.p.pick(c.hostID, c.f.port)
	return be, why == routed
}

// forward sends req, at the head of c.br, to be and copies the response
// to the client. A response the fast path does not copy is left pending
// for net/http, which is then handed the connection.
func (c *fastConn) forward(req *fastRequest, be backendAddr) (step, *pendingResponse) {
	t := c.f.p.transport
	bc := t.get(be.backendKey)
	reused := bc != nil
	for {
		if bc == nil {
			var err error
			if bc, err = t.dial(context.Background(), be); err != nil {
				return stepHandOff, nil // net/http tries again and answers 502
			}
		}
		s, pending, stale := c.exchange(bc, req, reused)
		if !stale {
			return s, pending
		}
		// The workload closed the kept-alive connection before it read
		// the request: once more on a new one, as backendTransport does.
		bc, reused = nil, false
	}
}

// exchange is forward on one workload connection. stale reports that a
// reused connection failed before any of the response came.
func (c *fastConn) exchange(bc *backendConn, req *fastRequest, reused bool) (s step, pending *pendingResponse, stale bool) {
	written := bc.nwritten
	c.writeRequest(bc.bw, req)
	// The watch starts before the Flush, which also waits for the
	// response to begin (backendConn.await), unless part of the request
	// went out already (a head longer than bw's buffer): a workload may
	// answer before it has all of it, and the wait would miss that.
	c.arm(bc.conn, req.size)
	bc.await = bc.nwritten == written
	err := bc.bw.Flush()
	bc.await = false
	if err != nil {
		gone := c.disarm()
		bc.conn.Close()
		if gone {
			return stepClose, nil, false
		}
		if reused {
			return 0, nil, true
		}
		return stepHandOff, &pendingResponse{err: err}, false
	}
	start := bc.nread
	head, err := responseHead(bc.br)
	var resp fastResponse
	fast := err == nil && head != nil && parseResponse(head, &resp)
	if !fast || (reused && resp.code == http.StatusRequestTimeout) {
		gone := c.disarm()
		switch {
		case gone:
			bc.conn.Close()
			return stepClose, nil, false
		case reused && ((err != nil && bc.nread == start) || resp.code == http.StatusRequestTimeout):
			// Closed before it read the request, or a 408, which a
			// server sends on an idle connection as it closes it.
			bc.conn.Close()
			return 0, nil, true
		case err != nil:
			bc.conn.Close()
			return stepHandOff, &pendingResponse{err: err}, false
		}
		return stepHandOff, &pendingResponse{bc: bc}, false
	}
	c.writeResponseHead(head, &resp)
	bc.br.Discard(len(head))
	length := resp.length
	if req.head {
		length = 0
	}
	err = c.copyBody(bc.br, length)
	if err == nil {
		err = c.bw.Flush()
	}
	gone := c.disarm()
	if err != nil || gone {
		bc.conn.Close()
		return stepClose, nil, false // the response is cut short, as net/http cuts it
	}
	if resp.keep {
		t := c.f.p.transport
		t.put(bc)
	} else {
		bc.conn.Close()
	}
	return stepNext, nil, false
}

// writeRequest writes the request to the workload: its request line and
// headers as the client sent them, less hop-by-hop headers and the
// client's own X-Forwarded-* and Forwarded, plus the proxy's
// X-Forwarded-For, -Host and -Proto, as httputil.ProxyRequest.SetXForwarded
// sets them. The caller flushes w; a write that failed meanwhile is
// Flush's error.
func (c *fastConn) writeRequest(w *bufio.Writer, req *fastRequest) {
	w.Write(req.line)
	w.WriteString("\r\n")
	for rest := req.fields; len(rest) > 0; {
		var line []byte
		line, rest, _ = nextLine(rest)
		name, _, _ := splitField(line)
		switch fieldKind(name) {
		case fConnection, fForwarded:
			continue
		}
		w.Write(line)
		w.WriteString("\r\n")
	}
	if c.xff != "" {
		w.WriteString("X-Forwarded-For: ")
		w.WriteString(c.xff)
		w.WriteString("\r\n")
	}
	w.WriteString("X-Forwarded-Host: ")
	w.Write(req.host)
	if c.https {
		w.WriteString("\r\nX-Forwarded-Proto: https\r\n\r\n")
	} else {
		w.WriteString("\r\nX-Forwarded-Proto: http\r\n\r\n")
	}
}

// writeResponseHead writes the response's status line as net/http does
// (its own reason phrase) and its headers as the workload sent them, less
// Connection and Keep-Alive.
func (c *fastConn) writeResponseHead(head []byte, resp *fastResponse) {
	w := c.bw
	w.WriteString("HTTP/1.1 ")
	w.Write(resp.status)
	w.WriteByte(' ')
	w.WriteString(http.StatusText(resp.code))
	w.WriteString("\r\n")
	_, rest, _ := nextLine(head)
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = nextLine(rest)
		if len(line) == 0 {
			break
		}
		name, _, _ := splitField(line)
		switch fieldKind(name) {
		case fConnection, fKeepAlive:
			continue
		}
		w.Write(line)
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
}

// copyBody copies n bytes of body from the workload to the client. What
// the workload has sent is passed on before the proxy waits for more, so
// a slow body streams.
func (c *fastConn) copyBody(br *bufio.Reader, n int64) error {
	w := c.bw
	if n > int64(w.Available()) {
		// More than fits with the head: through a 32 KiB buffer straight
		// to the connection, as ReverseProxy copies, rather than in
		// writes of 4 KiB.
		if err := w.Flush(); err != nil {
			return err
		}
		bp := buffers.Get().(*[]byte)
		defer buffers.Put(bp)
		for n > 0 {
			m, err := br.Read((*bp)[:min(int64(len(*bp)), n)])
			if _, werr := c.conn.Write((*bp)[:m]); werr != nil {
				return werr
			}
			n -= int64(m)
			if err != nil && n > 0 {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		return nil
	}
	for n > 0 {
		if w.Available() == 0 || (br.Buffered() == 0 && w.Buffered() > 0) {
			if err := w.Flush(); err != nil {
				return err
			}
		}
		buf := w.AvailableBuffer()
		buf = buf[:min(int64(cap(buf)), n)]
		m, err := br.Read(buf)
		w.Write(buf[:m])
		n -= int64(m)
		if err != nil && n > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// arm starts the watch for the client leaving while its request is in
// flight on the workload connection bc. net/http reads from every
// connection in the background while its handler runs; the fast path
// does so only for requests that take longer than watchDelay.
func (c *fastConn) arm(bc net.Conn, headLen int) {
	c.mu.Lock()
	c.watch = watchArmed
	c.cur = bc
	c.headLen = headLen
	c.gone = false
	c.mu.Unlock()
	if c.timer == nil {
		c.watchDone = make(chan struct{}, 1)
		c.timer = time.AfterFunc(watchDelay, c.watchClient)
	} else {
		c.timer.Reset(watchDelay)
	}
}

// watchClient reads from the client until it sends something or leaves.
// If it leaves, the request's workload connection is ended, as the
// request's context ends on net/http's path.
func (c *fastConn) watchClient() {
	c.mu.Lock()
	if c.watch != watchArmed || c.br.Buffered() > c.headLen || c.hasExtra {
		// Disarmed meanwhile, or the client already sent its next
		// request, which is all net/http would learn too.
		c.mu.Unlock()
		return
	}
	// The request's goroutine holds the socket's read lock (serveLoop):
	// the watch reads from a descriptor of its own.
	if c.sc.watchPeer() != nil {
		c.watch = watchOff
		c.mu.Unlock()
		return
	}
	c.watch = watchOn
	c.mu.Unlock()
	n, err := c.conn.Read(c.extra[:])
	c.sc.endWatch()
	c.hasExtra = n > 0
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		c.mu.Lock()
		c.gone = true
		c.cur.SetDeadline(aLongTimeAgo)
		c.mu.Unlock()
	}
	c.watchDone <- struct{}{}
}

// disarm ends the watch and reports whether the client left. After it,
// c.br and c.hasExtra are the request goroutine's again.
func (c *fastConn) disarm() (gone bool) {
	c.timer.Stop()
	c.mu.Lock()
	was := c.watch
	c.watch = watchOff
	if was == watchOn {
		c.sc.stopWatch() // ends the watcher's read
	}
	c.mu.Unlock()
	if was == watchOn {
		<-c.watchDone
	}
	c.mu.Lock()
	gone = c.gone
	c.mu.Unlock()
	return gone
}

// fastRequest is a request head the fast path forwards; its slices point
// into the client connection's read buffer.
type fastRequest struct {
	line   []byte // the request line
	fields []byte // the header lines, each ending in CRLF
	host   []byte
	head   bool // a HEAD request: the response has no body
	size   int  // the length of the head
}

// fastResponse is what the fast path needs of a response head.
type fastResponse struct {
	status []byte // the three digits
	code   int
	length int64
	keep   bool // the workload keeps the connection open
}

// headEnd returns the length of the head at the start of b, up to and
// including the empty line that ends it, or -1 if b holds no empty line.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		line := b[i : i+j]
		i += j + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return i
		}
	}
}

// nextLine splits off the first line of b, which must end in CRLF.
func nextLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

// parseRequest reads a request head the fast path may forward: GET or
// HEAD in origin form over HTTP/1.1, well-formed header lines, one Host,
// no body, and no header that calls for more than forwarding it as it is
// (Transfer-Encoding, Upgrade, Expect, TE, Trailer, Proxy-*, Connection
// other than keep-alive). Anything else is net/http's to answer.
func parseRequest(head []byte, r *fastRequest) bool {
	line, rest, ok := nextLine(head)
	if !ok {
		return false
	}
	r.line, r.size = line, len(head)
	switch {
	case hasPrefix(line, "GET "):
		line = line[4:]
	case hasPrefix(line, "HEAD "):
		line, r.head = line[5:], true
	default:
		return false
	}
	const version = " HTTP/1.1"
	if len(line) <= len(version) || string(line[len(line)-len(version):]) != version || !validURI(line[:len(line)-len(version)]) {
		return false
	}
	if len(rest) < 2 {
		return false
	}
	r.fields = rest[:len(rest)-2] // less the empty line, if the head ends in CRLF (checked below)
	hosts := 0
	for len(rest) > 2 {
		if line, rest, ok = nextLine(rest); !ok {
			return false
		}
		name, value, ok := splitField(line)
		if !ok {
			return false
		}
		switch fieldKind(name) {
		case fHost:
			for _, ch := range value {
				if !hostByte[ch] {
					return false // net/http answers 400
				}
			}
			r.host = value
			hosts++
		case fConnection:
			if !equalFold(value, "keep-alive") {
				return false
			}
		case fRefuse, fKeepAlive, fContentLength:
			return false
		}
	}
	return string(rest) == "\r\n" && hosts == 1 && len(r.host) > 0
}

// validURI accepts an origin-form request target that net/url and
// httputil.ReverseProxy pass on unchanged, so that the workload sees the
// same target on both paths: a path url.URL.RequestURI keeps as it is, and
// a query without the semicolons or bad escapes ReverseProxy re-encodes.
func validURI(u []byte) bool {
	if len(u) == 0 || u[0] != '/' {
		return false
	}
	query := false
	for i := 0; i < len(u); i++ {
		ch := u[i]
		switch {
		case ch == '?':
			query = true
		case ch == '#' || ch <= ' ' || ch >= 0x7f || (query && ch == ';'):
			return false
		case ch == '%':
			if i+2 >= len(u) || unhex(u[i+1]) < 0 || unhex(u[i+2]) < 0 {
				return false
			}
			i += 2
		case query:
		case !pathByte[ch]:
			return false
		}
	}
	return true
}

// pathByte marks what a path may hold unescaped (url's validEncoded).
var pathByte = func() (t [256]bool) {
	for _, ch := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@[]/") {
		t[ch] = true
	}
	return t
}()

func unhex(ch byte) int {
	switch {
	case '0' <= ch && ch <= '9':
		return int(ch - '0')
	case 'a' <= ch && ch <= 'f':
		return int(ch - 'a' + 10)
	case 'A' <= ch && ch <= 'F':
		return int(ch - 'A' + 10)
	}
	return -1
}

// responseHead waits for the head of the workload's response in br, and
// returns it (still in br), or nil if it does not fit in br's buffer.
func responseHead(br *bufio.Reader) ([]byte, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if n := headEnd(b); n >= 0 {
			return b[:n], nil
		}
		if len(b) == br.Size() {
			return nil, nil
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			return nil, err
		}
	}
}

// parseResponse reads a response head the fast path may copy as it is: a
// final HTTP/1.1 response other than 204 and 304, framed by one
// Content-Length, with Date and (for a body) Content-Type, which net/http
// would otherwise add, and no hop-by-hop header but Connection
// (keep-alive or close) and Keep-Alive.
func parseResponse(head []byte, r *fastResponse) bool {
	line, rest, ok := nextLine(head)
	if !ok || len(line) < 12 || !hasPrefix(line, "HTTP/1.1 ") || (len(line) > 12 && line[12] != ' ') {
		return false
	}
	r.status = line[9:12]
	code, err := strconv.Atoi(string(r.status))
	if err != nil || code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified || http.StatusText(code) == "" {
		return false
	}
	r.code, r.length, r.keep = code, -1, true
	date, ctype := false, false
	for len(rest) > 2 {
		if line, rest, ok = nextLine(rest); !ok {
			return false
		}
		name, value, ok := splitField(line)
		if !ok {
			return false
		}
		switch fieldKind(name) {
		case fContentLength:
			if r.length >= 0 || len(value) == 0 || len(value) > 18 {
				return false
			}
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || value[0] == '+' || value[0] == '-' {
				return false
			}
			r.length = n
		case fConnection:
			switch {
			case equalFold(value, "keep-alive"):
			case equalFold(value, "close"):
				r.keep = false
			default:
				return false
			}
		case fDate:
			date = true
		case fContentType:
			ctype = true
		case fRefuse:
			return false
		}
	}
	return string(rest) == "\r\n" && r.length >= 0 && date && (ctype || r.length == 0)
}

// splitField splits a header line into its name and its value without
// surrounding blanks, and checks both as net/http does.
func splitField(line []byte) (name, value []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return nil, nil, false
	}
	name, value = line[:i], line[i+1:]
	for _, ch := range name {
		if !tokenByte[ch] {
			return nil, nil, false
		}
	}
	for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
		value = value[1:]
	}
	for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
		value = value[:len(value)-1]
	}
	for _, ch := range value {
		if (ch < ' ' && ch != '\t') || ch == 0x7f {
			return nil, nil, false
		}
	}
	return name, value, true
}

// hostByte marks the bytes net/http's server accepts in a Host field
// (httpguts.ValidHostHeader), so that the fast path takes no request
// net/http would refuse.
var hostByte = func() (t [256]bool) {
	for _, ch := range []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!$%&()*+,-.:;=[]'_~") {
		t[ch] = true
	}
	return t
}()

// tokenByte marks the bytes of an HTTP token (RFC 9110 5.6.2).
var tokenByte = func() (t [256]bool) {
	for _, ch := range []byte("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
		t[ch] = true
	}
	return t
}()

// Kinds of header field the fast path cares about.
type field uint8

const (
	fOther field = iota
	fHost
	fContentLength
	fContentType
	fDate
	fConnection
	fKeepAlive
	// fForwarded: X-Forwarded-For, -Host, -Proto and Forwarded, which
	// the proxy sets itself.
	fForwarded
	// fRefuse: headers that make a message one for net/http:
	// Transfer-Encoding, Upgrade, Expect, TE, Trailer, Proxy-Connection,
	// Proxy-Authenticate, Proxy-Authorization.
	fRefuse
)

var fieldNames = []struct {
	name string
	kind field
}{
	{"host", fHost},
	{"content-length", fContentLength},
	{"content-type", fContentType},
	{"date", fDate},
	{"connection", fConnection},
	{"keep-alive", fKeepAlive},
	{"x-forwarded-for", fForwarded},
	{"x-forwarded-host", fForwarded},
	{"x-forwarded-proto", fForwarded},
	{"forwarded", fForwarded},
	{"transfer-encoding", fRefuse},
	{"upgrade", fRefuse},
	{"expect", fRefuse},
	{"te", fRefuse},
	{"trailer", fRefuse},
	{"proxy-connection", fRefuse},
	{"proxy-authenticate", fRefuse},
	{"proxy-authorization", fRefuse},
}

// fieldsByLen is fieldNames by the length of the name: most header names
// are then told from these by their length alone.
var fieldsByLen = func() (t [20][]int) {
	for i, f := range fieldNames {
		t[len(f.name)] = append(t[len(f.name)], i)
	}
	return t
}()

func fieldKind(name []byte) field {
	if len(name) >= len(fieldsByLen) {
		return fOther
	}
	for _, i := range fieldsByLen[len(name)] {
		if equalFold(name, fieldNames[i].name) {
			return fieldNames[i].kind
		}
	}
	return fOther
}

// equalFold reports whether b is s, ignoring ASCII case; s is lower case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		ch := b[i]
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		if ch != s[i] {
			return false
		}
	}
	return true
}

func hasPrefix(b []byte, s string) bool { return len(b) >= len(s) && string(b[:len(s)]) == s }
