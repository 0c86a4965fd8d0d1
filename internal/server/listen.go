package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// PlainAllowed reports whether the API at addr may also speak plain HTTP:
// only when it listens on a loopback address, where no one else on the
// network can read or change the traffic. Any other address, including a
// wildcard, speaks TLS only.
func PlainAllowed(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TLSConfig is the API's TLS setup around cert: TLS 1.2 or later, and
// ALPN for HTTP/2 (gRPC) and HTTP/1.1.
func TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// sniffTimeout bounds how long a new connection may stay silent before its
// first byte tells TLS from plain HTTP.
const sniffTimeout = 10 * time.Second

// SplitTLS serves two listeners from l: connections whose first byte opens
// a TLS handshake go to tlsL, the others to plainL. It lets a loopback API
// answer both https:// and http:// on one port. Closing either closes l.
func SplitTLS(l net.Listener) (tlsL, plainL net.Listener) {
	s := &splitter{l: l, done: make(chan struct{})}
	t := &subListener{s: s, ch: make(chan net.Conn)}
	p := &subListener{s: s, ch: make(chan net.Conn)}
	go s.run(t, p)
	return t, p
}

type splitter struct {
	l    net.Listener
	once sync.Once
	done chan struct{}
	mu   sync.Mutex
	err  error // why Accept failed, when it failed before a Close
}

func (s *splitter) run(t, p *subListener) {
	for {
		c, err := s.l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			s.mu.Lock()
			select {
			case <-s.done: // closed: Accept failed because of it
			default:
				s.err = err
			}
			s.mu.Unlock()
			s.close()
			return
		}
		go func() {
			c.SetReadDeadline(time.Now().Add(sniffTimeout))
			br := bufio.NewReader(c)
			first, err := br.Peek(1)
			c.SetReadDeadline(time.Time{})
			if err != nil {
				c.Close()
				return
			}
			dst := p
			if first[0] == 0x16 { // TLS record type: handshake
				dst = t
			}
			select {
			case dst.ch <- &peekedConn{Conn: c, r: br}:
			case <-s.done:
				c.Close()
			}
		}()
	}
}

func (s *splitter) close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.l.Close()
	})
	return err
}

type subListener struct {
	s  *splitter
	ch chan net.Conn
}

func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.s.done:
		l.s.mu.Lock()
		defer l.s.mu.Unlock()
		if l.s.err != nil {
			return nil, l.s.err
		}
		return nil, net.ErrClosed
	}
}

func (l *subListener) Close() error   { return l.s.close() }
func (l *subListener) Addr() net.Addr { return l.s.l.Addr() }

// peekedConn replays the bytes read to tell TLS from plain HTTP.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// ServeAPI serves h on l as the API port: TLS with tlsCfg, and also plain
// HTTP (with cleartext HTTP/2 for gRPC) when plain is set, which callers
// allow on loopback only (PlainAllowed). It returns the servers to shut
// down, already serving; errors after the start go to onErr.
func ServeAPI(l net.Listener, h http.Handler, tlsCfg *tls.Config, plain bool, onErr func(error)) []*http.Server {
	newSrv := func() *http.Server {
		return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	}
	tlsSrv := newSrv()
	tlsSrv.TLSConfig = tlsCfg
	serve := func(f func() error) {
		go func() {
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				onErr(err)
			}
		}()
	}
	if !plain {
		serve(func() error { return tlsSrv.ServeTLS(l, "", "") })
		return []*http.Server{tlsSrv}
	}
	tl, pl := SplitTLS(l)
	plainSrv := newSrv()
	plainSrv.Protocols = new(http.Protocols)
	plainSrv.Protocols.SetHTTP1(true)
	plainSrv.Protocols.SetUnencryptedHTTP2(true) // gRPC clients without TLS
	serve(func() error { return tlsSrv.ServeTLS(tl, "", "") })
	serve(func() error { return plainSrv.Serve(pl) })
	return []*http.Server{tlsSrv, plainSrv}
}
