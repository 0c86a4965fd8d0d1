// Package peer is how the nodes of a cluster speak to each other: the
// typed PeerService (api/hypercore/cluster/v1) and tunnels to workloads,
// all over one HTTP/2 connection per peer with mutual TLS from the
// cluster CA (internal/cluster/pki).
//
// A node serves its peers with a Server, whose fields are the node's own
// functions (raft, and its local workloads), mounted on its RPC port with
// Server.Handler; it calls them through a Pool. Every message is checked
// on the way in as API input is, since a peer is still the network; past
// that, the functions get typed values (spec.ID, workload.Allocation).
// Errors keep their meaning across a call: the errors.Is targets of
// errorKinds, raftstore.ErrNotLeader, and ErrUnreachable for a peer that
// could not be reached.
package peer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1"
	"github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1/clusterv1connect"
	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// Server is what a node serves its peers. Each field is the node's own
// function for one call; a nil field answers "unimplemented". The
// functions run with the verified name of the calling node in ctx
// (Caller).
type Server struct {
	// NodeName is this node's name: Run refuses an allocation for
	// another node.
	NodeName string

	// Apply commits a raft command on this node, the leader, and returns
	// its log index, also when the command is refused.
	Apply func(ctx context.Context, command []byte) (uint64, error)
	// AddPeer adds a node to raft, or passes the call on to the leader.
	// The handler has checked that the caller adds only itself.
	AddPeer func(ctx context.Context, name, raftAddr string, voter bool) error
	// Barrier, on the leader, returns the index up to which everything
	// committed is applied.
	Barrier func(ctx context.Context) (uint64, error)

	// Run starts an allocation here and returns the log index of the
	// report of its start.
	Run func(ctx context.Context, a workload.Allocation) (reportIndex uint64, err error)
	// Stop stops a workload here and returns the log index of the report
	// of its stop.
	Stop func(ctx context.Context, id spec.ID, timeout time.Duration) (reportIndex uint64, err error)
	// Remove deletes a workload here.
	Remove func(ctx context.Context, id spec.ID) error
	// Logs opens a workload's log.
	Logs func(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error)
	// Exec runs a process in a workload and returns its exit code.
	Exec func(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error)
	// Attach connects to a workload's main process.
	Attach func(ctx context.Context, id spec.ID, stdio driver.IO) error

	// Target reports whether a tunnel may reach target: a port that a
	// workload running on this node publishes, at its address. Anything
	// else (the host, another node's workload) is refused, so a tunnel
	// cannot be used to reach what the proxy would not. Nil refuses every
	// tunnel.
	Target func(target netip.AddrPort) bool

	// Log gets the refused tunnels; nil is slog.Default().
	Log *slog.Logger
}

// Handler serves PeerService and tunnels, only to callers whose client
// certificate the TLS layer verified against the cluster CA. Serve it on
// the node's RPC listener with TLS from pki (and ConfigureServer, for
// HTTP/2).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(clusterv1connect.NewPeerServiceHandler(service{s},
		connect.WithReadMaxBytes(MaxMessageBytes), connect.WithSendMaxBytes(MaxMessageBytes)))
	mux.HandleFunc(TunnelPath, s.serveTunnel)
	return RequirePeer(mux)
}

type callerKey struct{}

// Caller is the verified node name of the peer that made the call ctx
// belongs to, or "" outside a call RequirePeer let through.
func Caller(ctx context.Context) string {
	s, _ := ctx.Value(callerKey{}).(string)
	return s
}

// RequirePeer lets through only requests whose client certificate the TLS
// layer verified against the cluster CA, and puts the peer's node name in
// the request's context (Caller). The listener already demands such a
// certificate; this keeps a handler from ever running without a peer
// identity, even if the listener's set-up changes.
func RequirePeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, err := pki.PeerNode(r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, name)))
	})
}

// service is the Connect face of a Server.
type service struct{ s *Server }

var _ clusterv1connect.PeerServiceHandler = service{}

func unimplemented(call string) error {
	return connect.NewError(connect.CodeUnimplemented, fmt.Errorf("this node does not serve %s", call))
}

// Apply implements PeerService.Apply.
func (h service) Apply(ctx context.Context, req *connect.Request[clusterv1.ApplyRequest]) (*connect.Response[clusterv1.ApplyResponse], error) {
	if h.s.Apply == nil {
		return nil, unimplemented("Apply")
	}
	index, err := h.s.Apply(ctx, req.Msg.GetCommand())
	if err != nil {
		return nil, withIndex(err, index)
	}
	return connect.NewResponse(&clusterv1.ApplyResponse{Index: index}), nil
}

// AddPeer implements PeerService.AddPeer.
func (h service) AddPeer(ctx context.Context, req *connect.Request[clusterv1.AddPeerRequest]) (*connect.Response[clusterv1.AddPeerResponse], error) {
	if h.s.AddPeer == nil {
		return nil, unimplemented("AddPeer")
	}
	name := req.Msg.GetNodeName()
	if caller := Caller(ctx); caller != name {
		// A node may add only itself: its certificate names it.
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("node %s may not add %s", caller, truncate(name, 80)))
	}
	if err := checkRaftAddr(name, req.Msg.GetRaftAddr()); err != nil {
		return nil, invalid(err)
	}
	if err := h.s.AddPeer(ctx, name, req.Msg.GetRaftAddr(), req.Msg.GetVoter()); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&clusterv1.AddPeerResponse{}), nil
}

// Barrier implements PeerService.Barrier.
func (h service) Barrier(ctx context.Context, _ *connect.Request[clusterv1.BarrierRequest]) (*connect.Response[clusterv1.BarrierResponse], error) {
	if h.s.Barrier == nil {
		return nil, unimplemented("Barrier")
	}
	index, err := h.s.Barrier(ctx)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&clusterv1.BarrierResponse{AppliedIndex: index}), nil
}

// maxRaftAddr bounds a raft address from a peer: a node name, "@", and a
// host:port.
const maxRaftAddr = maxNodeName + 1 + 300

// checkRaftAddr checks the raft address a node asks to join with before it
// goes into the raft configuration, where every server keeps it and dials
// it: "name@host:port", naming the node itself.
func checkRaftAddr(name, addr string) error {
	if len(addr) > maxRaftAddr {
		return fmt.Errorf("raft address: %d bytes, over the %d one may have", len(addr), maxRaftAddr)
	}
	n, hostport, ok := strings.Cut(addr, "@")
	if !ok || n != name {
		return fmt.Errorf("raft address %q is not %s@host:port", truncate(addr, 80), truncate(name, 80))
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		return fmt.Errorf("raft address %q: %w", truncate(addr, 80), err)
	}
	return nil
}

// Run implements PeerService.Run.
func (h service) Run(ctx context.Context, req *connect.Request[clusterv1.RunRequest]) (*connect.Response[clusterv1.RunResponse], error) {
	if h.s.Run == nil {
		return nil, unimplemented("Run")
	}
	a, err := AllocationFromProto(req.Msg.GetAllocation())
	if err != nil {
		return nil, invalid(err)
	}
	if h.s.NodeName != "" && a.Node != h.s.NodeName {
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("allocation %s is for node %s, and this is node %s", a.ID, a.Node, h.s.NodeName))
	}
	index, err := h.s.Run(ctx, a)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&clusterv1.RunResponse{ReportIndex: index}), nil
}

// Stop implements PeerService.Stop.
func (h service) Stop(ctx context.Context, req *connect.Request[clusterv1.StopRequest]) (*connect.Response[clusterv1.StopResponse], error) {
	if h.s.Stop == nil {
		return nil, unimplemented("Stop")
	}
	id, err := spec.ParseID(req.Msg.GetId())
	if err != nil {
		return nil, invalid(err)
	}
	timeout := time.Duration(req.Msg.GetTimeoutSeconds()) * time.Second
	if timeout > spec.MaxStopTimeout {
		return nil, invalid(fmt.Errorf("timeout: %d seconds is over the %v a stop may wait", req.Msg.GetTimeoutSeconds(), spec.MaxStopTimeout))
	}
	index, err := h.s.Stop(ctx, id, timeout)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&clusterv1.StopResponse{ReportIndex: index}), nil
}

// Remove implements PeerService.Remove.
func (h service) Remove(ctx context.Context, req *connect.Request[clusterv1.RemoveRequest]) (*connect.Response[clusterv1.RemoveResponse], error) {
	if h.s.Remove == nil {
		return nil, unimplemented("Remove")
	}
	id, err := spec.ParseID(req.Msg.GetId())
	if err != nil {
		return nil, invalid(err)
	}
	if err := h.s.Remove(ctx, id); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&clusterv1.RemoveResponse{}), nil
}

// Run starts allocation a on node, at rpcAddr, which must be a's node,
// and returns the log index of that node's report of the start: wait
// until this node's copy of the state has applied it, then read the
// observation from it.
func (p *Pool) Run(ctx context.Context, node, rpcAddr string, a workload.Allocation) (uint64, error) {
	resp, err := p.Service(node, rpcAddr).Run(ctx, connect.NewRequest(&clusterv1.RunRequest{Allocation: AllocationToProto(a)}))
	if err != nil {
		return 0, fromConnect(node, err)
	}
	return resp.Msg.GetReportIndex(), nil
}

// Stop stops workload id on node and returns the log index of that node's
// report of the stop. The peer takes whole seconds; timeout is rounded up
// to the next one.
func (p *Pool) Stop(ctx context.Context, node, rpcAddr string, id spec.ID, timeout time.Duration) (uint64, error) {
	secs := (timeout + time.Second - 1) / time.Second
	resp, err := p.Service(node, rpcAddr).Stop(ctx, connect.NewRequest(&clusterv1.StopRequest{Id: id.String(), TimeoutSeconds: uint32(max(secs, 0))}))
	if err != nil {
		return 0, fromConnect(node, err)
	}
	return resp.Msg.GetReportIndex(), nil
}

// Remove deletes workload id on node.
func (p *Pool) Remove(ctx context.Context, node, rpcAddr string, id spec.ID) error {
	_, err := p.Service(node, rpcAddr).Remove(ctx, connect.NewRequest(&clusterv1.RemoveRequest{Id: id.String()}))
	if err != nil {
		return fromConnect(node, err)
	}
	return nil
}
