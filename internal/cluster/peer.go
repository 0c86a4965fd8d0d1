package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1"
	"github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1/clusterv1connect"
	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/node"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
)

// localPrefix is where a node serves its own workload API to peers: the
// same handlers as the public API, bound to its local workloads, so a peer
// can stop, remove, read logs of or exec into a workload hosted here.
const localPrefix = "/local"

// peerService answers PeerService calls from other nodes.
type peerService struct{ c *Cluster }

var _ clusterv1connect.PeerServiceHandler = peerService{}

// Apply commits a forwarded raft command; see PeerService.Apply.
func (p peerService) Apply(ctx context.Context, req *connect.Request[clusterv1.ApplyRequest]) (*connect.Response[clusterv1.ApplyResponse], error) {
	index, err := p.c.raft.ApplyEncoded(req.Msg.Command)
	if err != nil {
		// A refused command is in the log too; the index travels in
		// the error's metadata so the caller still waits for it.
		ce := toConnect(err).(*connect.Error)
		ce.Meta().Set(indexHeader, strconv.FormatUint(index, 10))
		return nil, ce
	}
	return connect.NewResponse(&clusterv1.ApplyResponse{Index: index}), nil
}

// AddPeer adds the calling node to raft; see PeerService.AddPeer.
func (p peerService) AddPeer(ctx context.Context, req *connect.Request[clusterv1.AddPeerRequest]) (*connect.Response[clusterv1.AddPeerResponse], error) {
	if caller := peerName(ctx); caller != req.Msg.NodeName {
		// A node may add only itself: its certificate names it.
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("node %s may not add %s", caller, req.Msg.NodeName))
	}
	if err := p.c.addPeer(ctx, req.Msg.NodeName, req.Msg.RaftAddr, req.Msg.Voter); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&clusterv1.AddPeerResponse{}), nil
}

// Run starts a placed workload here; see PeerService.Run.
func (p peerService) Run(ctx context.Context, req *connect.Request[clusterv1.RunRequest]) (*connect.Response[clusterv1.RunResponse], error) {
	var w store.Workload
	if err := json.Unmarshal(req.Msg.Workload, &w); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("decode workload: %w", err))
	}
	// The record came from a peer's raft state, but it is still input
	// from the network: check it as the API would.
	if err := spec.ValidateID(w.ID); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err := w.Spec.Check(); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	got, err := p.c.local.Run(ctx, w)
	if err != nil {
		return nil, toConnect(err)
	}
	data, err := json.Marshal(got)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&clusterv1.RunResponse{Workload: data}), nil
}

// indexHeader carries the log index of a refused Apply.
const indexHeader = "Hypercore-Raft-Index"

type peerNameKey struct{}

// peerName is the verified node name of the caller, put in the context by
// requirePeer.
func peerName(ctx context.Context) string {
	s, _ := ctx.Value(peerNameKey{}).(string)
	return s
}

// requirePeer lets through only requests whose client certificate the TLS
// layer verified against the cluster CA. The listener already demands one;
// this keeps a handler from ever running without a peer identity, even if
// the listener's set-up changes.
func requirePeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, err := pki.PeerNode(r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerNameKey{}, name)))
	})
}

// Barrier answers the leader's applied index; see PeerService.Barrier.
func (p peerService) Barrier(ctx context.Context, _ *connect.Request[clusterv1.BarrierRequest]) (*connect.Response[clusterv1.BarrierResponse], error) {
	idx, err := p.c.raft.LeaderBarrier(raftstore.ApplyTimeout)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&clusterv1.BarrierResponse{AppliedIndex: idx}), nil
}

// errorKinds are the errors that must keep their meaning across a peer
// call. The peer names the kind in a header beside the Connect code, so
// the caller tells them apart even where codes coincide (a peer that is
// not the leader and a registry that is down are both "unavailable", as
// is a peer that cannot be reached at all).
var errorKinds = []struct {
	kind string
	err  error
	code connect.Code
}{
	{"exists", raftstore.ErrExists, connect.CodeAlreadyExists},
	{"conflict", raftstore.ErrConflict, connect.CodeAborted},
	{"not-found", store.ErrNotFound, connect.CodeNotFound},
	{"no-image", image.ErrNotFound, connect.CodeInvalidArgument},
	{"registry", image.ErrRegistry, connect.CodeUnavailable},
	{"no-capacity", node.ErrNoCapacity, connect.CodeResourceExhausted},
	{"unsupported", node.ErrUnsupported, connect.CodeFailedPrecondition},
}

// kindHeader carries an errorKinds kind, or "not-leader".
const kindHeader = "Hypercore-Error"

func toConnect(err error) error {
	code, kind := connect.CodeInternal, ""
	var nl raftstore.ErrNotLeader
	if errors.As(err, &nl) {
		code, kind = connect.CodeUnavailable, "not-leader"
	} else {
		for _, e := range errorKinds {
			if errors.Is(err, e.err) {
				code, kind = e.code, e.kind
				break
			}
		}
	}
	ce := connect.NewError(code, err)
	if kind != "" {
		ce.Meta().Set(kindHeader, kind)
	}
	return ce
}

// fromConnect turns a peer's answer back into an error that errors.Is
// and errors.As recognise, keeping the peer's message. An unavailable
// answer the peer did not write itself means the peer was not reached.
func fromConnect(node string, err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	kind := ce.Meta().Get(kindHeader)
	if kind == "not-leader" {
		return fmt.Errorf("node %s: %w", node, raftstore.ErrNotLeader{})
	}
	for _, e := range errorKinds {
		if kind == e.kind {
			return fmt.Errorf("%w: on node %s: %s", e.err, node, ce.Message())
		}
	}
	if kind == "" && ce.Code() == connect.CodeUnavailable {
		return fmt.Errorf("%w: %s: %s", errHostDown, node, ce.Message())
	}
	return fmt.Errorf("node %s: %s", node, ce.Message())
}

// peers holds one HTTP client per peer node. Peers are called over
// HTTP/1.1 because exec and attach forward an Upgrade, which HTTP/2 does
// not carry; the pooled connections make that cheap.
type peers struct {
	mat *pki.Material
	mu  sync.Mutex
	by  map[string]*http.Client
}

func newPeers(mat *pki.Material) *peers {
	return &peers{mat: mat, by: map[string]*http.Client{}}
}

// client returns the HTTP client for node name, which verifies that the
// peer's certificate names that node.
func (p *peers) client(name string) *http.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.by[name]; ok {
		return c
	}
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     p.mat.ClientTLS(name),
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}}
	p.by[name] = c
	return c
}

// forget drops the pooled connections of a node that left or failed, so a
// node that comes back at a new address is dialled afresh.
func (p *peers) forget(name string) {
	p.mu.Lock()
	c := p.by[name]
	delete(p.by, name)
	p.mu.Unlock()
	if c != nil {
		c.CloseIdleConnections()
	}
}

func (p *peers) service(name, rpcAddr string) clusterv1connect.PeerServiceClient {
	return clusterv1connect.NewPeerServiceClient(p.client(name), "https://"+rpcAddr)
}

// dialTunnel opens a tunnel to target (a workload's ip:port) on node name.
func (p *peers) dialTunnel(ctx context.Context, name, rpcAddr, target string) (net.Conn, error) {
	cfg := p.mat.ClientTLS(name)
	cfg.NextProtos = []string{tunnelALPN}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", rpcAddr)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte(target + "\n")); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}
