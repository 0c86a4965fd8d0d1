// Package portmux serves everything a node offers other nodes on one port,
// so that two nodes on one host never reach into each other's ports: the
// node given IP:P uses UDP and TCP P and nothing else. UDP carries gossip
// packets; a TCP connection is told apart by its first byte: a TLS
// handshake (node RPC, joins and raft, which the TLS server then tells
// apart by ALPN) or anything else, gossip's own streams (whose first byte
// is a memberlist message type, never 0x16).
package portmux

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// tlsHandshake is the content type of a TLS record carrying a handshake,
// the first byte a TLS client sends.
const tlsHandshake = 0x16

// peekTimeout bounds how long a new connection may stay silent before it
// is dropped; every client of the port speaks first.
const peekTimeout = 10 * time.Second

// Mux is one node's cluster port.
type Mux struct {
	tcp    *net.TCPListener
	udp    *net.UDPConn
	tls    *Listener
	gossip *Listener
	wg     sync.WaitGroup
}

// Listen binds TCP and UDP on bind (IP:port; port 0 picks one, the same
// for both) and starts sorting connections.
func Listen(bind string) (*Mux, error) {
	addr, err := net.ResolveTCPAddr("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("cluster port %q: %w; use IP:port such as 0.0.0.0:7946", bind, err)
	}
	tcp, err := net.ListenTCP("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster port: listen on TCP %s: %w (gossip, node RPC and raft share this port; give each node its own --cluster-bind-addr)", bind, err)
	}
	port := tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: addr.IP, Port: port})
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("cluster port: listen on UDP %s: %w (gossip, node RPC and raft share this port; give each node its own --cluster-bind-addr)", net.JoinHostPort(addr.IP.String(), fmt.Sprint(port)), err)
	}
	m := &Mux{tcp: tcp, udp: udp, tls: NewListener(tcp.Addr()), gossip: NewListener(tcp.Addr())}
	m.wg.Add(1)
	go m.accept()
	return m, nil
}

// Addr is the TCP address bound, with the port picked if 0 was asked.
func (m *Mux) Addr() *net.TCPAddr { return m.tcp.Addr().(*net.TCPAddr) }

// TLS is the connections that open with a TLS handshake.
func (m *Mux) TLS() *Listener { return m.tls }

// Gossip is the other connections, for gossip streams, and the UDP socket
// for gossip packets.
func (m *Mux) Gossip() (*Listener, *net.UDPConn) { return m.gossip, m.udp }

// Close stops the port: both sockets and both listeners.
func (m *Mux) Close() error {
	err := errors.Join(m.tcp.Close(), m.udp.Close())
	m.tls.Close()
	m.gossip.Close()
	m.wg.Wait()
	return err
}

func (m *Mux) accept() {
	defer m.wg.Done()
	var delay time.Duration
	for {
		c, err := m.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as
			// net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go m.sort(c)
	}
}

// sort reads the first byte of c and hands c, that byte included, to the
// listener it belongs to.
func (m *Mux) sort(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(peekTimeout))
	r := bufio.NewReaderSize(c, 16)
	first, err := r.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, r: r}
	if first[0] == tlsHandshake {
		m.tls.Offer(pc)
	} else {
		m.gossip.Offer(pc)
	}
}

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Listener is a net.Listener fed by Offer rather than by a socket.
type Listener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// NewListener returns a Listener that reports addr as its address.
func NewListener(addr net.Addr) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Offer hands c to the next Accept; it closes c if the listener is closed
// instead. It reports whether c was taken.
func (l *Listener) Offer(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener; connections already accepted stay open.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Done is closed when the listener is.
func (l *Listener) Done() <-chan struct{} { return l.done }

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr { return l.addr }
