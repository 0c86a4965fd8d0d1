package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"sync"
	"time"
)

// Proxy serves HTTP for the workloads in its Table.
type Proxy struct {
	base      string // lower case, no leading dot
	table     *Table
	rp        *httputil.ReverseProxy
	transport *backendTransport // rp's, which the fast path (Serve) shares
	log       *slog.Logger
}

// New returns a proxy for hosts under baseDomain (such as "localhost" or
// "deployments.example.com").
func New(baseDomain string, table *Table, log *slog.Logger) *Proxy {
	if log == nil {
		log = slog.Default()
	}
	p := &Proxy{base: strings.ToLower(strings.Trim(baseDomain, ".")), table: table, transport: newBackendTransport(), log: log}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// ServeHTTP put the backend in In.URL; Out is its clone.
			pr.SetXForwarded()
		},
		Transport:    p.transport,
		BufferPool:   bufferPool{},
		ErrorHandler: p.backendError,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return p
}

// newTransport keeps connections to workloads alive and pooled, so a busy
// route costs no new TCP handshake per request.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // never send workload traffic through an environment proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          maxIdleConns,
		MaxIdleConnsPerHost:   maxIdleConnsPerHost,
		IdleConnTimeout:       idleConnTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// Handler serves one public HTTP port (80 or 443). A workload that maps
// only one of the two is reached on the other too: on :80 without TLS
// configured, and on :443 because :80 then redirects to it. Serve gives
// a server with this handler the proxy's fast path.
func (p *Proxy) Handler(publicPort uint16) http.Handler {
	return &portHandler{p: p, port: publicPort}
}

// portHandler is the Handler of one public port.
type portHandler struct {
	p    *Proxy
	port uint16
}

// ServeHTTP implements http.Handler.
func (h *portHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if hc, ok := r.Context().Value(handedKey{}).(*handedConn); ok && hc.pending != nil {
		// The fast path sent this request to the workload already;
		// the transport reads its response.
		pending := hc.pending
		hc.pending = nil
		defer func() {
			if pr, ok := pending.take(); ok && pr.bc != nil {
				pr.bc.conn.Close() // not routed to the workload after all
			}
		}()
		r = r.WithContext(context.WithValue(r.Context(), pendingKey{}, pending))
	}
	h.p.serve(w, r, h.port)
}

// Why a request is or is not routed (pick).
type routing uint8

const (
	routed     routing = iota
	noWorkload         // no such workload on this cluster
	noPort             // the workload maps neither HTTP port
	starting           // the workload is not ready yet
)

// backendKey is what kept-alive workload connections are pooled by: the
// address, and the node it is an address on ("" for this one), since
// nodes may hand out the same workload addresses.
type backendKey struct{ via, addr string }

// backend is where a request goes: a workload's address, and how to reach
// it (nil: plain TCP).
type backendAddr struct {
	backendKey
	dial func(ctx context.Context, target string) (net.Conn, error)
}

// remoteKey is the context key under which serve passes a *backend on
// another node to backendTransport. Requests to this node's workloads
// carry none, so they cost no allocation for it.
type remoteKey struct{}

// pick returns the backend of workload id's HTTP port for publicPort, or
// why there is none. It allocates nothing: every request calls it.
func (p *Proxy) pick(id string, publicPort uint16) (backendAddr, routing) {
	route, ok := p.table.Lookup(id)
	if !ok {
		return backendAddr{}, noWorkload
	}
	target, ok := route.HTTP[publicPort]
	if !ok {
		target, ok = route.HTTP[otherHTTPPort(publicPort)]
	}
	if !ok {
		return backendAddr{}, noPort
	}
	if !route.Ready {
		return backendAddr{}, starting
	}
	return backendAddr{backendKey{route.Via, target}, route.Dial}, routed
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, publicPort uint16) {
	id, ok := p.workloadID(r.Host)
	if !ok {
		http.Error(w, "404 no workload is served at "+r.Host+"\n", http.StatusNotFound)
		return
	}
	if r.TLS != nil && r.TLS.ServerName != "" {
		// A client may reuse a connection made for one workload to reach
		// another the wildcard also covers (HTTP/2 coalescing). 421 makes
		// it open a connection of the right name, so each workload's
		// traffic stays on connections made for it.
		if sni, _ := p.workloadID(r.TLS.ServerName); sni != id {
			http.Error(w, "421 this connection was opened for "+r.TLS.ServerName+", not "+r.Host+"\n", http.StatusMisdirectedRequest)
			return
		}
	}
	be, why := p.pick(id, publicPort)
	switch why {
	case noWorkload:
		http.Error(w, "404 no workload "+id+" on this cluster\n", http.StatusNotFound)
		return
	case noPort:
		http.Error(w, "404 workload "+id+" does not expose this port over HTTP\n", http.StatusNotFound)
		return
	case starting:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "503 workload "+id+" is starting\n", http.StatusServiceUnavailable)
		return
	}
	r.URL.Scheme = "http"
	r.URL.Host = be.addr
	if be.via != "" || be.dial != nil {
		// On another node: the transport learns how to reach it from
		// the context. A copy, so that be itself stays on the stack.
		r = r.WithContext(context.WithValue(r.Context(), remoteKey{}, &backendAddr{be.backendKey, be.dial}))
	}
	p.rp.ServeHTTP(w, r)
}

// otherHTTPPort pairs 80 with 443: one stands in for the other.
func otherHTTPPort(port uint16) uint16 {
	switch port {
	case 80:
		return 443
	case 443:
		return 80
	}
	return 0
}

// workloadID extracts <id> from "<id>.<base>[:port]". Only one label is
// accepted, so "a.b.<base>" never matches workload "a.b".
func (p *Proxy) workloadID(host string) (string, bool) {
	if strings.IndexByte(host, ':') >= 0 { // most Host headers have no port; SplitHostPort's error would allocate
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	host = strings.TrimSuffix(host, ".")
	if len(host) <= len(p.base)+1 || host[len(host)-len(p.base)-1] != '.' ||
		!strings.EqualFold(host[len(host)-len(p.base):], p.base) {
		return "", false
	}
	id := strings.ToLower(host[:len(host)-len(p.base)-1])
	if id == "" || strings.IndexByte(id, '.') >= 0 {
		return "", false
	}
	return id, true
}

func (p *Proxy) backendError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, http.ErrAbortHandler) || r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	p.log.Debug("proxy: backend failed", "host", r.Host, "backend", r.URL.Host, "err", err)
	http.Error(w, "502 workload is not answering\n", http.StatusBadGateway)
}

// bufferPool lends copy buffers to the reverse proxy, so streaming a body
// does not allocate 32 KiB per request.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// backendTransport carries requests to workloads. The common request, a
// GET or HEAD with no body and no protocol upgrade, goes over a pooled
// keep-alive connection in the request's own goroutine: the request is
// written, then its response read, with no other goroutine involved.
// Everything else (request bodies, WebSocket and other upgrades) goes
// through http.Transport.
//
// http.Transport hands each request to a writer and a reader goroutine of
// the connection and keeps a read pending on every idle connection, which
// costs goroutine switches, channel operations and a system call per
// request; under load that was a fifth of the proxy's CPU time
// (bench/proxy).
type backendTransport struct {
	slow   *http.Transport
	dialer *net.Dialer

	mu       sync.Mutex
	remote   map[string]*http.Transport    // slow's counterparts, by Route.Via
	idle     map[backendKey][]*backendConn // most recently used last
	nIdle    int
	sweeping bool // a sweep of expired idle connections is scheduled
}

// The pool's limits are newTransport's, so both paths keep the same
// number of connections alive for the same time.
const (
	maxIdleConns        = 4096
	maxIdleConnsPerHost = 512
	idleConnTimeout     = 90 * time.Second
	// maxResponseHeaderBytes bounds what a workload's response headers may
	// make the proxy read (http.Transport's default).
	maxResponseHeaderBytes = 10 << 20
	// max1xxResponses bounds the 1xx responses before the final one that
	// nobody looks at; ReverseProxy forwards them, so it rarely applies.
	max1xxResponses = 5
)

func newBackendTransport() *backendTransport {
	return &backendTransport{
		slow:   newTransport(),
		dialer: &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		remote: map[string]*http.Transport{},
		idle:   map[backendKey][]*backendConn{},
	}
}

// slowFor is the http.Transport for requests to workloads on node via
// ("" for this node). Each node has its own, since http.Transport pools
// connections by address alone.
func (t *backendTransport) slowFor(via string) *http.Transport {
	if via == "" {
		return t.slow
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.remote[via]
	if tr == nil {
		tr = newTransport()
		tr.DialContext = t.dialRemote
		t.remote[via] = tr
	}
	return tr
}

// dialRemote is the DialContext of the transports of other nodes: it
// dials with the Dial of the request's route, which http.Transport passes
// in the context's values.
func (t *backendTransport) dialRemote(ctx context.Context, network, addr string) (net.Conn, error) {
	if rb, ok := ctx.Value(remoteKey{}).(*backendAddr); ok && rb.dial != nil {
		ctx, cancel := context.WithTimeout(ctx, t.dialer.Timeout)
		defer cancel()
		return rb.dial(ctx, addr)
	}
	return t.dialer.DialContext(ctx, network, addr)
}

// backendConn is one kept-alive connection to a workload.
type backendConn struct {
	key   backendKey
	conn  net.Conn
	br    *bufio.Reader // reads through the backendConn, which counts and limits
	bw    *bufio.Writer
	nread int64     // bytes read from conn so far
	limit int64     // bytes that may still be read; -1: no limit
	since time.Time // when it went idle

	// await makes the next write through bw (its Flush) wait, after the
	// write, until the connection is readable (sysConn.writeAwaitRead).
	// Set only around the Flush of a whole request, none of which was
	// written before, so that its response is all that can come.
	await    bool
	nwritten int64 // bytes written to conn so far
}

// Write writes to the connection; see await.
func (bc *backendConn) Write(p []byte) (n int, err error) {
	if sc, ok := bc.conn.(*sysConn); ok && bc.await {
		n, err = sc.writeAwaitRead(p)
	} else {
		n, err = bc.conn.Write(p)
	}
	bc.nwritten += int64(n)
	return n, err
}

// Read reads from the connection, within the header limit if one is set.
func (bc *backendConn) Read(p []byte) (int, error) {
	if bc.limit == 0 {
		return 0, errHeaderTooLong
	}
	if bc.limit > 0 && int64(len(p)) > bc.limit {
		p = p[:bc.limit]
	}
	n, err := bc.conn.Read(p)
	bc.nread += int64(n)
	if bc.limit > 0 {
		bc.limit -= int64(n)
	}
	return n, err
}

var errHeaderTooLong = fmt.Errorf("proxy: the workload's response headers exceed %d bytes", maxResponseHeaderBytes)

// pooled reports whether req takes the pooled path: nothing to send after
// the headers, nothing that would turn the connection into something
// other than HTTP/1.1, and an address with a port (as routes have).
func pooled(req *http.Request) bool {
	if (req.Method != http.MethodGet && req.Method != http.MethodHead) ||
		(req.Body != nil && req.Body != http.NoBody) ||
		req.URL.Scheme != "http" || req.Close || len(req.TransferEncoding) != 0 ||
		len(req.Header["Upgrade"]) != 0 || len(req.Header["Connection"]) != 0 {
		return false
	}
	_, _, err := net.SplitHostPort(req.URL.Host)
	return err == nil
}

// RoundTrip implements http.RoundTripper.
func (t *backendTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if pending, ok := req.Context().Value(pendingKey{}).(*pendingResponse); ok {
		if pr, ok := pending.take(); ok {
			if pr.err != nil {
				return nil, pr.err
			}
			return t.readResponse(pr.bc, req, false, t.abortOnDone(pr.bc, req))
		}
	}
	be := backendAddr{backendKey: backendKey{addr: req.URL.Host}}
	if rb, ok := req.Context().Value(remoteKey{}).(*backendAddr); ok {
		be.via, be.dial = rb.via, rb.dial
	}
	if !pooled(req) {
		return t.slowFor(be.via).RoundTrip(req)
	}
	if err := validHeader(req.Header); err != nil {
		return nil, err
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	bc := t.get(be.backendKey)
	reused := bc != nil
	for {
		if bc == nil {
			var err error
			if bc, err = t.dial(ctx, be); err != nil {
				return nil, err
			}
		}
		resp, err := t.roundTrip(bc, req, reused)
		if err == nil || !reused || !errors.Is(err, errStale) || ctx.Err() != nil {
			return resp, err
		}
		// The workload closed the idle connection before it read the
		// request. A GET or HEAD may be sent again, as http.Transport
		// does: once, on a new connection.
		bc, reused = nil, false
	}
}

// errStale marks a request that failed on a reused connection before any
// of its response came back.
var errStale = errors.New("proxy: the workload closed the kept-alive connection")

type staleError struct{ err error }

func (e staleError) Error() string   { return e.err.Error() }
func (e staleError) Unwrap() []error { return []error{e.err, errStale} }

// roundTrip sends req on bc and reads the response headers. The body is
// read by the caller; reading it to the end gives bc back to the pool.
func (t *backendTransport) roundTrip(bc *backendConn, req *http.Request, reused bool) (*http.Response, error) {
	stop := t.abortOnDone(bc, req)
	fail := func(err error) (*http.Response, error) {
		stop()
		bc.conn.Close()
		return nil, err
	}
	if err := req.Write(bc.bw); err != nil {
		return fail(staleError{err})
	}
	if err := bc.bw.Flush(); err != nil {
		return fail(staleError{err})
	}
	return t.readResponse(bc, req, reused, stop)
}

// abortOnDone makes the end of req's context, which comes when its client
// goes away, end whatever bc is waiting for, even in the middle of a
// streamed body. Calling the function it returns undoes that.
func (t *backendTransport) abortOnDone(bc *backendConn, req *http.Request) (stop func() bool) {
	return context.AfterFunc(req.Context(), func() { bc.conn.SetDeadline(aLongTimeAgo) })
}

// readResponse reads the response to req, sent on bc, up to its body,
// which the caller reads; stop is abortOnDone's.
func (t *backendTransport) readResponse(bc *backendConn, req *http.Request, reused bool, stop func() bool) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) {
		stop()
		bc.conn.Close()
		return nil, err
	}
	ctx := req.Context()
	start := bc.nread
	bc.limit = maxResponseHeaderBytes
	trace := httptrace.ContextClientTrace(ctx)
	for n1xx := 0; ; {
		resp, err := http.ReadResponse(bc.br, req)
		if err != nil {
			if bc.nread == start {
				err = staleError{err}
			}
			return fail(err)
		}
		code := resp.StatusCode
		switch {
		case code == http.StatusRequestTimeout && reused:
			// What a server sends on an idle connection as it closes
			// it, before it read this request (http.Transport reads
			// it as a closed connection too).
			return fail(staleError{errors.New("proxy: 408 on an idle connection")})
		case code == http.StatusSwitchingProtocols:
			return fail(errors.New("proxy: the workload switched protocols unasked"))
		case code >= 100 && code <= 199:
			if trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
					return fail(err)
				}
				bc.limit = maxResponseHeaderBytes // the 1xx went on; a new limit for the next
			} else if n1xx++; n1xx > max1xxResponses {
				return fail(errors.New("proxy: too many 1xx responses from the workload"))
			}
			continue
		}
		bc.limit = -1
		body := &backendBody{t: t, bc: bc, stop: stop, keep: !resp.Close}
		if resp.Body == http.NoBody {
			body.finish(true)
		} else {
			body.rc = resp.Body
			resp.Body = body
		}
		return resp, nil
	}
}

// aLongTimeAgo is a deadline in the past: it ends pending I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// validHeader rejects header names and values http.Transport would not
// send (Request.Write would pass them, or mangle them).
func validHeader(h http.Header) error {
	for k, vv := range h {
		if k == "" {
			return errors.New("proxy: empty header field name")
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
				return fmt.Errorf("proxy: invalid header field name %q", k)
			}
		}
		for _, v := range vv {
			for i := 0; i < len(v); i++ {
				if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
					return fmt.Errorf("proxy: invalid header field value for %q", k)
				}
			}
		}
	}
	return nil
}

// backendBody is a response body read from a backendConn. Read to the end,
// it gives the connection back to the pool; closed before that, it closes
// the connection.
type backendBody struct {
	t    *backendTransport
	bc   *backendConn
	rc   io.ReadCloser
	stop func() bool
	keep bool // the response allows another request on the connection
	done bool
}

func (b *backendBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

func (b *backendBody) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

// finish ends the response. The connection goes back to the pool only if
// the whole response was read, it may be kept, and the request's context
// did not end meanwhile (which spoils the connection's deadline).
func (b *backendBody) finish(complete bool) {
	b.done = true
	if b.stop() && complete && b.keep {
		b.t.put(b.bc)
	} else {
		b.bc.conn.Close()
	}
}

// dial connects to be: over TCP, or with be.dial for a workload on
// another node, within the dialer's timeout either way.
func (t *backendTransport) dial(ctx context.Context, be backendAddr) (*backendConn, error) {
	var c net.Conn
	var err error
	if be.dial != nil {
		dctx, cancel := context.WithTimeout(ctx, t.dialer.Timeout)
		c, err = be.dial(dctx, be.addr)
		cancel()
	} else {
		c, err = t.dialer.DialContext(ctx, "tcp", be.addr)
	}
	if err != nil {
		return nil, err
	}
	c = newSysConn(c) // a tunnel stays as it is
	bc := &backendConn{key: be.backendKey, conn: c, limit: -1}
	bc.bw = bufio.NewWriter(bc)
	bc.br = bufio.NewReader(bc)
	return bc, nil
}

// get takes the most recently used idle connection to key, or nil if
// there is none that has been idle less than idleConnTimeout.
func (t *backendTransport) get(key backendKey) *backendConn {
	t.mu.Lock()
	l := t.idle[key]
	if len(l) == 0 {
		t.mu.Unlock()
		return nil
	}
	bc := l[len(l)-1]
	l[len(l)-1] = nil
	t.idle[key] = l[:len(l)-1]
	t.nIdle--
	t.mu.Unlock()
	if time.Since(bc.since) > idleConnTimeout {
		bc.conn.Close() // the others are older still: the sweep closes them
		return nil
	}
	return bc
}

// put makes bc idle, or closes it when the pool is full.
func (t *backendTransport) put(bc *backendConn) {
	if bc.br.Buffered() > 0 {
		bc.conn.Close() // the workload sent more than its response
		return
	}
	bc.since = time.Now()
	t.mu.Lock()
	l := t.idle[bc.key]
	if len(l) >= maxIdleConnsPerHost || t.nIdle >= maxIdleConns {
		t.mu.Unlock()
		bc.conn.Close()
		return
	}
	t.idle[bc.key] = append(l, bc)
	t.nIdle++
	if !t.sweeping {
		t.sweeping = true
		time.AfterFunc(idleConnTimeout/2, t.sweep)
	}
	t.mu.Unlock()
}

// sweep closes the connections idle for longer than idleConnTimeout, and
// runs again later while any connection is idle. No goroutine waits for
// it in between.
func (t *backendTransport) sweep() {
	var expired []*backendConn
	t.mu.Lock()
	for key, l := range t.idle {
		n := 0 // l is oldest first
		for n < len(l) && time.Since(l[n].since) > idleConnTimeout {
			n++
		}
		if n == 0 {
			continue
		}
		expired = append(expired, l[:n]...)
		if n == len(l) {
			delete(t.idle, key)
		} else {
			k := copy(l, l[n:])
			clear(l[k:])
			t.idle[key] = l[:k]
		}
		t.nIdle -= n
	}
	t.sweeping = t.nIdle > 0
	if t.sweeping {
		time.AfterFunc(idleConnTimeout/2, t.sweep)
	}
	t.mu.Unlock()
	for _, bc := range expired {
		bc.conn.Close()
	}
}

// CloseIdleConnections closes every idle connection to workloads.
func (t *backendTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.nIdle = map[backendKey][]*backendConn{}, 0
	remote := make([]*http.Transport, 0, len(t.remote))
	for _, tr := range t.remote {
		remote = append(remote, tr)
	}
	t.mu.Unlock()
	for _, l := range idle {
		for _, bc := range l {
			bc.conn.Close()
		}
	}
	t.slow.CloseIdleConnections()
	for _, tr := range remote {
		tr.CloseIdleConnections()
	}
}
