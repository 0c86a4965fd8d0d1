package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
	"github.com/hypercore-dev/hypercore/internal/cluster/portmux"
)

// raftStream carries raft over mutual TLS. A raft address here is
// "node@ip:port": raft hands the transport only the address it dials, and
// the node name in it is what the peer's certificate must name, so one
// member cannot answer for another.
type raftStream struct {
	net.Listener
	self nodeAddr
	mat  *pki.Material
}

var _ raft.StreamLayer = (*raftStream)(nil)

// nodeAddr is a raft address with its node name; see raftStream.
type nodeAddr struct{ name, hostport string }

// Network implements net.Addr.
func (a nodeAddr) Network() string { return "tcp" }

// String implements net.Addr: it is the raft address, node@host:port.
func (a nodeAddr) String() string { return a.name + "@" + a.hostport }

func parseNodeAddr(s string) (nodeAddr, error) {
	name, hostport, ok := strings.Cut(s, "@")
	if !ok || name == "" {
		return nodeAddr{}, fmt.Errorf("raft address %q is not node@host:port", s)
	}
	return nodeAddr{name, hostport}, nil
}

// RaftALPN is the TLS protocol name under which raft shares the node's
// cluster port with node RPC (HTTP/2) and joins.
const RaftALPN = "hypercore-raft"

// newRaftStream takes raft connections from l, which serveRPC feeds with
// the TLS connections that asked for RaftALPN, and advertises
// name@advertise.
func newRaftStream(l net.Listener, advertise, name string, mat *pki.Material) *raftStream {
	return &raftStream{Listener: l, self: nodeAddr{name, advertise}, mat: mat}
}

// Addr is what raft advertises for this server.
func (s *raftStream) Addr() net.Addr { return s.self }

// Dial opens a TLS connection to the raft peer at address.
func (s *raftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	a, err := parseNodeAddr(string(address))
	if err != nil {
		return nil, err
	}
	cfg := s.mat.ClientTLS(a.name)
	cfg.NextProtos = []string{RaftALPN}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: cfg}
	c, err := d.Dial("tcp", a.hostport)
	if errors.Is(err, syscall.ECONNREFUSED) {
		// A cluster from before the one-port layout keeps its members'
		// raft addresses as they were, the cluster port + 2.
		if old, ok := oneportAddr(a.hostport); ok {
			if c2, err2 := d.Dial("tcp", old); err2 == nil {
				c, err = c2, nil
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if p := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != RaftALPN {
		c.Close()
		return nil, fmt.Errorf("raft peer %s at %s does not serve raft on its cluster port (it answered %q); is it an older release?", a.name, a.hostport, p)
	}
	return c, nil
}

// serveRaftConn hands c, which negotiated RaftALPN, to raft through l and
// holds it until raft closes it, l closes or stop does: the HTTP server
// that called it closes the connection as soon as it returns.
func serveRaftConn(l *portmux.Listener, c *tls.Conn, stop <-chan struct{}) {
	rc := &notifyConn{Conn: c, closed: make(chan struct{})}
	if !l.Offer(rc) {
		return
	}
	select {
	case <-rc.closed:
	case <-l.Done():
	case <-stop:
	}
}

// notifyConn reports its Close.
type notifyConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *notifyConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// oneportAddr is where a raft address of the layout before one port per
// node (raft on the cluster port + 2) is served now: the cluster port.
func oneportAddr(hostport string) (string, bool) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", false
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 3 {
		return "", false
	}
	return net.JoinHostPort(host, strconv.Itoa(p-2)), true
}
