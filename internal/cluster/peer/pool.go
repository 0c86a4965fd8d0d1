package peer

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1"
	"github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1/clusterv1connect"
	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
)

// HTTP/2 settings of the peer connections, client and server alike.
const (
	// maxStreams is how many streams (calls and tunnels) one peer
	// connection carries at once. Tunnels live as long as the proxied
	// connections, and the proxy keeps hundreds alive to a busy workload,
	// so this is far above what a node needs; past it, a new stream
	// waits for one to end.
	maxStreams = 8192
	// streamWindow is how much one stream may have in flight unread. It
	// bounds what a stalled tunnel holds in memory; at 512 KiB a stream
	// still moves about 500 MB/s across a LAN's half-millisecond round
	// trip.
	streamWindow = 512 << 10
	// connWindow is what all streams of a connection may have in flight
	// together. It is a bound, not memory: each stream is bounded by
	// streamWindow. Large, so that a few stalled tunnels cannot stop the
	// others (HTTP/2 counts unread bytes against the connection too).
	connWindow = 1 << 30
	// pingAfter is how long a connection may stay silent before a ping
	// checks that its peer is still there; pingTimeout is how long the
	// answer may take before the connection is dropped and its calls
	// fail, so a peer that vanished without a FIN is noticed.
	pingAfter   = 15 * time.Second
	pingTimeout = 5 * time.Second
	// idleTimeout closes a peer connection that carried no stream for
	// this long.
	idleTimeout = 5 * time.Minute
	// MaxMessageBytes bounds one PeerService message either way. The
	// largest are allocations, whose specs spec bounds well below it, and
	// raft commands that carry them.
	MaxMessageBytes = 4 << 20
)

// Pool is this node's clients of its peers: one HTTP/2 connection per
// peer, over mutual TLS, that carries PeerService calls and tunnels
// alike. The client checks that the peer's certificate names the node it
// means to call. It is safe for concurrent use.
type Pool struct {
	mat *pki.Material
	mu  sync.Mutex
	by  map[string]*peerClient // by node name
}

// peerClient is the client of one peer at one address.
type peerClient struct {
	rpcAddr   string
	transport *http.Transport
	service   clusterv1connect.PeerServiceClient
}

// NewPool returns a pool that calls peers as the node mat names.
func NewPool(mat *pki.Material) *Pool {
	return &Pool{mat: mat, by: map[string]*peerClient{}}
}

// peer returns the client of node at rpcAddr. A node that moved to
// another address gets a new client; the old one's connection closes.
func (p *Pool) peer(node, rpcAddr string) *peerClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc, ok := p.by[node]; ok {
		if pc.rpcAddr == rpcAddr {
			return pc
		}
		pc.transport.CloseIdleConnections()
	}
	pc := &peerClient{rpcAddr: rpcAddr, transport: newTransport(p.mat, node)}
	pc.service = clusterv1connect.NewPeerServiceClient(&http.Client{Transport: pc.transport}, "https://"+rpcAddr,
		connect.WithReadMaxBytes(MaxMessageBytes), connect.WithSendMaxBytes(MaxMessageBytes),
		// Peers share a LAN: gzip on every exec or log message would
		// cost more CPU than the bytes it saves.
		connect.WithAcceptCompression("gzip", nil, nil))
	p.by[node] = pc
	return pc
}

// newTransport is an HTTP/2-only transport to one peer.
func newTransport(mat *pki.Material, node string) *http.Transport {
	protos := new(http.Protocols)
	protos.SetHTTP2(true)
	return &http.Transport{
		Proxy:               nil, // peers are never reached through an environment proxy
		TLSClientConfig:     mat.ClientTLS(node),
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		IdleConnTimeout:     idleTimeout,
		// One connection: without the limit, calls made at once before
		// the first connection is up would each dial their own.
		MaxConnsPerHost: 1,
		Protocols:       protos,
		HTTP2: &http.HTTP2Config{
			// At the peer's stream limit, wait for a stream to end on
			// the one connection rather than dial another, which
			// MaxConnsPerHost would hold back until this one closes.
			StrictMaxConcurrentRequests:   true,
			MaxReceiveBufferPerStream:     streamWindow,
			MaxReceiveBufferPerConnection: connWindow,
			SendPingTimeout:               pingAfter,
			PingTimeout:                   pingTimeout,
		},
	}
}

// Service is the PeerService client of node at rpcAddr, for the calls
// this package has no helper for.
func (p *Pool) Service(node, rpcAddr string) clusterv1connect.PeerServiceClient {
	return p.peer(node, rpcAddr).service
}

// Forget drops the connection to a node that left or failed, so a node
// that comes back is dialled afresh. Calls and tunnels in flight on it
// go on until they end.
func (p *Pool) Forget(node string) {
	p.mu.Lock()
	pc := p.by[node]
	delete(p.by, node)
	p.mu.Unlock()
	if pc != nil {
		pc.transport.CloseIdleConnections()
	}
}

// Close drops every peer connection that carries nothing.
func (p *Pool) Close() {
	p.mu.Lock()
	by := p.by
	p.by = map[string]*peerClient{}
	p.mu.Unlock()
	for _, pc := range by {
		pc.transport.CloseIdleConnections()
	}
}

// serverHTTP2 is the HTTP/2 configuration of a node's RPC server, the
// counterpart of the pool's clients.
func serverHTTP2() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxConcurrentStreams:          maxStreams,
		MaxReceiveBufferPerStream:     streamWindow,
		MaxReceiveBufferPerConnection: connWindow,
		SendPingTimeout:               pingAfter,
		PingTimeout:                   pingTimeout,
	}
}

// ConfigureServer makes srv, a node's RPC server, speak HTTP/2 as the
// pool's clients do (srv.HTTP2, srv.Protocols). It keeps HTTP/1.1 on: a
// node of the previous release calls Apply, AddPeer and Barrier over it
// while a cluster is upgraded. It works with and without
// pki.Authority.EnableJoin, in either order: the join ALPN is served by
// srv.TLSNextProto, which an explicit srv.Protocols leaves alone.
func ConfigureServer(srv *http.Server) {
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	srv.Protocols = protos
	srv.HTTP2 = serverHTTP2()
}

// Apply commits a raft command on the leader, node at rpcAddr, and
// returns the index it took in the log; a command the leader refused has
// one too, which is returned with the error.
func (p *Pool) Apply(ctx context.Context, node, rpcAddr string, command []byte) (uint64, error) {
	resp, err := p.Service(node, rpcAddr).Apply(ctx, connect.NewRequest(&clusterv1.ApplyRequest{Command: command}))
	if err != nil {
		return indexOf(err), fromConnect(node, err)
	}
	return resp.Msg.GetIndex(), nil
}

// AddPeer asks node at rpcAddr, a server, to add name to raft.
func (p *Pool) AddPeer(ctx context.Context, node, rpcAddr, name, raftAddr string, voter bool) error {
	_, err := p.Service(node, rpcAddr).AddPeer(ctx, connect.NewRequest(&clusterv1.AddPeerRequest{NodeName: name, RaftAddr: raftAddr, Voter: voter}))
	if err != nil {
		return fromConnect(node, err)
	}
	return nil
}

// Barrier asks the leader, node at rpcAddr, for the index everything it
// has committed is applied up to.
func (p *Pool) Barrier(ctx context.Context, node, rpcAddr string) (uint64, error) {
	resp, err := p.Service(node, rpcAddr).Barrier(ctx, connect.NewRequest(&clusterv1.BarrierRequest{}))
	if err != nil {
		return 0, fromConnect(node, err)
	}
	return resp.Msg.GetAppliedIndex(), nil
}
