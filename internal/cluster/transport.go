package cluster

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
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

// listenRaft listens on bind with the node's server TLS and advertises
// name@advertise.
func listenRaft(bind, advertise, name string, mat *pki.Material) (*raftStream, error) {
	l, err := tls.Listen("tcp", bind, mat.ServerTLS())
	if err != nil {
		return nil, fmt.Errorf("cluster: raft listen on %s: %w", bind, err)
	}
	return &raftStream{Listener: l, self: nodeAddr{name, advertise}, mat: mat}, nil
}

// Addr is what raft advertises for this server.
func (s *raftStream) Addr() net.Addr { return s.self }

// Dial opens a TLS connection to the raft peer at address.
func (s *raftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	a, err := parseNodeAddr(string(address))
	if err != nil {
		return nil, err
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.mat.ClientTLS(a.name)}
	return d.Dial("tcp", a.hostport)
}
