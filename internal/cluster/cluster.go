// Package cluster makes nodes one cluster and owns every workload's life:
// serf membership with an encrypted keyring, raft-replicated allocations
// and observations, placement with the scheduler, node-to-node calls over
// mutual TLS, routes, and failover.
//
// The cluster decides and the node reports. Allocations (what runs where)
// are written here only; each node runs what is allocated to it with
// internal/node and reports what it sees through one path (reporter) into
// raft; every node's proxy routes are derived from that state (syncRoutes).
// A node with no one to join is the first server of a new cluster, so a
// single node is a cluster of one and runs the same path.
//
// Ports: one, the cluster address IP:P (--cluster-bind-addr, default
// 0.0.0.0:7946), so that nodes sharing a host only need ports of their
// own. UDP P carries gossip; TCP P gossip's streams and, told apart by
// their first byte (internal/cluster/portmux), TLS: node RPC over HTTP/2,
// joins and raft, told apart by ALPN.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/membership"
	"github.com/hypercore-dev/hypercore/internal/cluster/peer"
	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
	"github.com/hypercore-dev/hypercore/internal/cluster/portmux"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/cluster/scheduler"
	"github.com/hypercore-dev/hypercore/internal/cluster/sealed"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/node"
	"github.com/hypercore-dev/hypercore/internal/nodeinfo"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/routing"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// Defaults for Config fields left at zero.
const (
	DefaultFailoverGrace = time.Second
	// JoinTokenFile is where the first node writes the join token, in
	// the data dir.
	JoinTokenFile = "join-token"
)

// Config says how this node takes part in the cluster.
type Config struct {
	// NodeName must be unique in the cluster.
	NodeName string
	// DataDir is the node's data dir; the cluster keeps its state in
	// DataDir/cluster and writes DataDir/join-token on the first node.
	DataDir string
	// BindAddr is the cluster address IP:port: gossip, node RPC and raft
	// all use this one port.
	BindAddr string
	// AdvertiseIP is the address peers reach this node at; empty picks
	// the first global address of an interface other than Bridge.
	AdvertiseIP string
	// Bridge is the node's workload bridge, never advertised.
	Bridge string
	// Joins are gossip addresses of existing members. None makes this
	// node the first server of a new cluster.
	Joins []string
	// JoinToken admits a new node; the first node writes it to
	// DataDir/join-token. Only needed on a node's first start.
	JoinToken string
	// Server makes this node a raft voter. The first node always is.
	Server bool
	// Public nodes take workloads with public TCP ports.
	Public bool
	// PortMin and PortMax bound the public TCP ports placed here.
	PortMin, PortMax uint16
	// Strategy scores nodes that fit: bin-packing or spread.
	Strategy scheduler.Strategy
	// FailoverGrace is how long a node must stay failed before its
	// workloads are placed elsewhere.
	FailoverGrace time.Duration
	// APIAddr is this node's API address, announced to the others.
	APIAddr string
	// BaseDomain is the domain workloads are served under: <id>.<base>.
	BaseDomain string
	// FastFailure detects failed nodes in 2-3 s rather than 4 s, at the
	// cost of more probe traffic; see membership.
	FastFailure bool
	// Ephemeral nodes stop and remove their workloads when they close,
	// before they leave: a batch job's node leaves nothing running, and
	// the cluster places the workloads again elsewhere.
	Ephemeral bool
	// Log is where the cluster logs; nil is slog.Default().
	Log *slog.Logger
}

// Cluster is the API's backend on every node: a single node is a cluster
// of one.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	local   *node.Node
	routes  *routing.Syncer
	reports *reporter

	mat     *pki.Material
	auth    *pki.Authority // nil except on the node that made the CA
	mem     *membership.Membership
	raft    *raftstore.Store
	peers   *peer.Pool
	rpc     *http.Server
	rpcAddr string
	port    *portmux.Mux
	// raftConns is where serveRPC hands raft its connections.
	raftConns *portmux.Listener
	// rpcStopping is closed when the RPC server shuts down, letting go
	// of the raft connections it holds.
	rpcStopping chan struct{}
	// enableJoin, on a server that did not make the CA, switches joins on
	// once it has opened the authority from the state (authority.go).
	enableJoin func(*pki.Authority) error

	// placeMu makes the spawns through this node rank and allocate one at
	// a time, so they see each other's reservations.
	placeMu sync.Mutex
	// driving are the workloads whose start a caller drives on this node
	// now (localHost.Run); the reconciler does not start them itself.
	driving callers
	// routesDirty wakes the reconcile loop to derive the routes again
	// after a local report.
	routesDirty chan struct{}

	// fencedFlag is set while this node has fenced itself (fence.go).
	fencedFlag atomic.Bool

	// boxOnce makes sealBox, which seals and opens secrets (secrets.go).
	boxOnce sync.Once
	sealBox *sealed.Box
	sealErr error

	quit chan struct{}
	wg   sync.WaitGroup
}

// Start brings this node into the cluster with the identity Identify
// settled: it serves node RPC, starts raft and gossip, waits until it can
// read the cluster state, and starts reconciling. It makes this node's
// internal/node from nodeCfg and parts, under id.Name, with the cluster's
// reporter as its one way to tell what it sees, and starts it once the
// state is caught up. The cluster is the only writer of routes.
func Start(ctx context.Context, cfg Config, id *Identity, nodeCfg node.Config, parts node.Parts, routes *proxy.Table) (_ *Cluster, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.FailoverGrace <= 0 {
		cfg.FailoverGrace = DefaultFailoverGrace
	}
	// The first node is the one that made the CA. A node that joined and
	// restarts without JOIN_ADDR is not: it rejoins the members its serf
	// snapshot remembers.
	first := len(cfg.Joins) == 0 && id.auth != nil
	if first {
		cfg.Server = true
	}
	cfg.NodeName = id.Name
	c := &Cluster{
		cfg: cfg, log: cfg.Log.With("component", "cluster"), routes: routing.NewSyncer(routes),
		routesDirty: make(chan struct{}, 1), quit: make(chan struct{}),
	}
	advertise := id.AdvertiseIP
	c.mat, c.auth = id.mat, id.auth

	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	if c.port, err = portmux.Listen(cfg.BindAddr); err != nil {
		return nil, err
	}
	closers = append(closers, func() { c.port.Close() })
	// Port 0 (tests) has picked one now; the others reach every service
	// at this one address.
	port := strconv.Itoa(c.port.Addr().Port)
	c.rpcAddr = net.JoinHostPort(advertise, port)
	raftAdvertise := c.rpcAddr
	bindIP, _, _ := net.SplitHostPort(cfg.BindAddr)
	cfg.BindAddr = net.JoinHostPort(bindIP, port)
	c.cfg.BindAddr = cfg.BindAddr

	c.peers = peer.NewPool(c.mat)
	closers = append(closers, c.peers.Close)

	dir := filepath.Join(cfg.DataDir, "cluster")
	c.raftConns = portmux.NewListener(c.port.Addr())
	c.rpcStopping = make(chan struct{})
	stream := newRaftStream(c.raftConns, raftAdvertise, cfg.NodeName, c.mat)
	c.raft, err = raftstore.Open(raftstore.Config{
		NodeID: cfg.NodeName, DataDir: filepath.Join(dir, "raft"), Bootstrap: first, Log: cfg.Log,
		Stream: stream, BindAddr: raftAdvertise, Forward: c.forwardApply,
	})
	if err != nil {
		stream.Close()
		return nil, err
	}
	closers = append(closers, func() { c.raft.Close() })
	c.reports = newReporter(c.raft, func(id spec.ID) (workload.Observation, bool) { return c.local.Observation(id) }, c.log, c.routesChanged)
	nodeCfg.Name, nodeCfg.Report, nodeCfg.Secrets = id.Name, c.reports.report, c.secretValues
	if c.local, err = node.New(nodeCfg, parts); err != nil {
		return nil, err
	}

	if err := c.serveRPC(); err != nil {
		return nil, err
	}
	closers = append(closers, func() { c.rpc.Close() })

	streams, packets := c.port.Gossip()
	c.mem, err = membership.Start(membership.Config{
		NodeName: cfg.NodeName, BindAddr: cfg.BindAddr, AdvertiseAddr: net.JoinHostPort(advertise, port),
		Packets: packets, Streams: streams,
		GossipKey: c.mat.GossipKey, KeyringFile: filepath.Join(dir, "serf", "keyring"),
		SnapshotPath: filepath.Join(dir, "serf", "snapshot"), Tags: c.tags(), Log: cfg.Log,
		FastFailure: cfg.FastFailure,
	})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { c.mem.Shutdown() })
	if len(cfg.Joins) > 0 {
		if _, err := c.mem.Join(cfg.Joins); err != nil {
			return nil, err
		}
	}
	if err := c.awaitState(ctx); err != nil {
		return nil, err
	}
	// A new cluster adopts what this node already ran, then the node
	// starts: what it recovers is reported against those allocations.
	if c.raft.Bootstrapped() {
		c.adoptLocal()
	}
	if err := c.local.Start(ctx); err != nil {
		return nil, err
	}
	closers = append(closers, c.local.Close)
	if c.auth != nil {
		if err := c.auth.WriteJoinToken(filepath.Join(cfg.DataDir, JoinTokenFile), c.rpcAddr); err != nil {
			return nil, err
		}
	}
	// The proxy opens once Start returns: it serves what the state says
	// from its first request, not after the reconcile loop's first pass,
	// which may first have local work to do.
	c.syncRoutes()
	c.shareAuthority()
	if c.enableJoin != nil {
		c.wg.Add(1)
		go c.takeAuthority()
	}
	c.wg.Add(4)
	go c.fenceLoop()
	go c.reconcileLoop()
	go c.failoverLoop()
	go func() { defer c.wg.Done(); c.reports.run(c.quit) }()
	c.log.Info("cluster member ready", "node", cfg.NodeName, "server", cfg.Server, "rpc", c.rpcAddr, "gossip", cfg.BindAddr)
	return c, nil
}

// Close leaves the cluster gracefully (so the others do not wait out a
// failure timeout) and stops this node's part in it, the local node's
// watching included. Workloads keep running; the next start re-adopts them.
func (c *Cluster) Close() {
	close(c.quit)
	c.wg.Wait()
	if c.cfg.Ephemeral {
		c.removeLocal()
	}
	c.local.Close()
	if _, err := c.reports.flush(); err != nil {
		c.log.Warn("last workload reports not written; the next start reports again", "err", err)
	}
	if err := c.mem.Leave(); err != nil {
		c.log.Warn("leave cluster", "err", err)
	}
	c.mem.Shutdown()
	stopServer(c.rpc, 3*time.Second)
	c.raft.Close()
	c.peers.Close()
	c.port.Close()
}

// ephemeralStopTimeout is how long each workload of an ephemeral node may
// take to stop gracefully when the node closes.
const ephemeralStopTimeout = 10 * time.Second

// removeLocal stops every workload on this node gracefully, then removes
// it, so that no process, mount or network namespace of it is left. It
// runs once the reconcile loop has stopped, which would start them again.
func (c *Cluster) removeLocal() {
	recs, err := c.local.List()
	if err != nil {
		c.log.Warn("ephemeral node: list workloads to remove", "err", err)
		return
	}
	ctx := context.Background()
	for _, r := range recs {
		if _, err := c.local.Stop(ctx, r.ID, ephemeralStopTimeout); err != nil {
			c.log.Warn("ephemeral node: stop workload", "id", r.ID, "err", err)
		}
		if err := c.local.Remove(ctx, r.ID); err != nil {
			c.log.Warn("ephemeral node: remove workload", "id", r.ID, "err", err)
			continue
		}
		c.log.Info("ephemeral node: workload stopped and removed", "id", r.ID)
	}
}

// stopServer lets srv's calls in flight end for up to grace, then closes
// every connection it still has. Tunnels and exec, attach or log streams
// can last as long as their clients like; Shutdown alone would leave them
// (and the goroutines serving them) running past Close.
func stopServer(srv *http.Server, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
}

// routesChanged asks the reconcile loop to derive the routes again.
func (c *Cluster) routesChanged() {
	select {
	case c.routesDirty <- struct{}{}:
	default:
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// serveRPC serves TLS on the cluster port: PeerService and tunnels to
// this node's workloads over HTTP/2, joins on the node with the CA, and
// raft, whose connections (ALPN RaftALPN) go to c.raftConns.
func (c *Cluster) serveRPC() error {
	c.rpc = &http.Server{Handler: c.peerServer().Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(c.log.Handler(), slog.LevelDebug)}
	if c.auth != nil {
		if err := c.auth.EnableJoin(c.rpc, c.mat, c.admit); err != nil {
			return err
		}
	} else if c.cfg.Server {
		c.enableJoin = pki.EnableJoinLater(c.rpc, c.mat, c.admit)
	} else {
		c.rpc.TLSConfig = c.mat.ServerTLS()
	}
	peer.ConfigureServer(c.rpc)
	// Raft is offered first: a client that asks for it gets it, and
	// every other client asks only for h2 or http/1.1.
	c.rpc.TLSConfig.NextProtos = append([]string{RaftALPN}, c.rpc.TLSConfig.NextProtos...)
	if c.rpc.TLSNextProto == nil {
		c.rpc.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	c.rpc.TLSNextProto[RaftALPN] = func(_ *http.Server, conn *tls.Conn, _ http.Handler) {
		serveRaftConn(c.raftConns, conn, c.rpcStopping)
	}
	c.rpc.RegisterOnShutdown(func() { close(c.rpcStopping) })
	ln := c.port.TLS()
	go func() {
		if err := c.rpc.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("node RPC server stopped", "err", err)
		}
	}()
	return nil
}

// dialVia returns how this node's proxy reaches workloads on node: a
// stream over the one connection to that peer.
func (c *Cluster) dialVia(node string) routing.DialFunc {
	return func(ctx context.Context, target string) (net.Conn, error) {
		rpc, ok := c.liveRPCAddr(node)
		if !ok {
			return nil, fmt.Errorf("%w: %s", errHostDown, node)
		}
		return c.peers.Dial(ctx, node, rpc, target)
	}
}

// adoptLocal records in a new cluster the workloads this node already
// runs: a node from before clustering, or one whose cluster state was
// lost, keeps them instead of removing them as unknown.
func (c *Cluster) adoptLocal() {
	locals, err := c.local.List()
	if err != nil {
		c.log.Error("adopt local workloads", "err", err)
		return
	}
	for _, r := range locals {
		a := workload.Allocation{
			ID: r.ID, Spec: r.Spec, Node: c.cfg.NodeName, Desired: r.Desired,
			Generation: max(r.Generation, 1), CreatedAt: r.CreatedAt,
		}
		if err := c.raft.Create(a); err != nil && !errors.Is(err, raftstore.ErrExists) {
			c.log.Error("adopt local workload", "id", r.ID, "err", err)
			continue
		}
		c.log.Info("adopted a workload this node ran before the cluster existed", "id", r.ID)
	}
}

// admit refuses a join under the name of a live member.
func (c *Cluster) admit(name string) error {
	if c.mem == nil {
		return nil
	}
	for _, m := range c.mem.Members() {
		if m.Name == name && m.State == membership.StateAlive {
			return fmt.Errorf("a live node is already named %s; pick another --node-name", name)
		}
	}
	return nil
}

// tags is what this node announces.
func (c *Cluster) tags() membership.Tags {
	info := c.local.Info()
	role := membership.RoleWorker
	if c.cfg.Server {
		role = membership.RoleServer
	}
	isos := make([]string, len(info.Isolations))
	for i, iso := range info.Isolations {
		isos[i] = string(iso)
	}
	return membership.Tags{
		Role: role, Cores: info.Cores, MemoryMiB: info.MemoryMiB, FreeMemoryMiB: info.FreeMemoryMiB,
		Public: c.cfg.Public, APIAddr: c.cfg.APIAddr, RPCAddr: c.rpcAddr,
		PortMin: c.cfg.PortMin, PortMax: c.cfg.PortMax, Isolations: isos,
	}
}

// awaitState waits until this node is in the raft configuration and its
// copy of the state has caught up, asking a server to add it meanwhile.
func (c *Cluster) awaitState(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if c.inConfig() {
			if lastErr = c.catchUp(ctx); lastErr == nil {
				return nil
			}
		} else {
			lastErr = c.askToJoin(ctx)
		}
		select {
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = errors.New("no raft leader elected")
			}
			return fmt.Errorf("cluster: could not reach the cluster state: %w; check that a majority of --server nodes is up and reachable", lastErr)
		case <-tick.C:
		}
	}
}

// catchUp waits until this node's copy of the state holds everything the
// leader had committed when asked. Until then a restarted node sees a
// replay of its old log, and acting on that (removing what looks deleted,
// starting what looks placed here) would undo later decisions.
func (c *Cluster) catchUp(ctx context.Context) error {
	var index uint64
	if c.raft.IsLeader() {
		i, err := c.raft.LeaderBarrier(raftstore.ApplyTimeout)
		if err != nil {
			return err
		}
		index = i
	} else {
		_, leader := c.raft.Leader()
		rpc, ok := c.rpcAddrOf(leader)
		if !ok {
			return errors.New("no raft leader known yet")
		}
		i, err := c.peers.Barrier(ctx, leader, rpc)
		if err != nil {
			return err
		}
		index = i
	}
	return c.raft.WaitApplied(ctx, index)
}

func (c *Cluster) inConfig() bool {
	servers, err := c.raft.Servers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if string(s.ID) == c.cfg.NodeName {
			return true
		}
	}
	return false
}

// askToJoin asks any live server to add this node to raft.
func (c *Cluster) askToJoin(ctx context.Context) error {
	var lastErr error = errors.New("no server is known yet")
	for _, m := range c.mem.Members() {
		if m.Name == c.cfg.NodeName || m.State != membership.StateAlive || m.Tags.Role != membership.RoleServer {
			continue
		}
		err := c.peers.AddPeer(ctx, m.Name, m.Tags.RPCAddr, c.cfg.NodeName, c.raft.Addr(), c.cfg.Server)
		if err == nil {
			return nil
		}
		lastErr = err
	}
	return lastErr
}

// addPeer adds a node to raft on the leader, or passes the call on to it.
func (c *Cluster) addPeer(ctx context.Context, name, raftAddr string, voter bool) error {
	if a, err := parseNodeAddr(raftAddr); err != nil || a.name != name {
		return fmt.Errorf("raft address %q does not belong to node %s", raftAddr, name)
	}
	if c.raft.IsLeader() {
		if voter {
			return c.raft.Join(name, raftAddr)
		}
		return c.raft.JoinNonvoter(name, raftAddr)
	}
	_, leader := c.raft.Leader()
	rpc, ok := c.rpcAddrOf(leader)
	if !ok {
		return raftstore.ErrNotLeader{}
	}
	return c.peers.AddPeer(ctx, leader, rpc, name, raftAddr, voter)
}

// forwardApply carries a raft write to the leader (raftstore.Config.Forward).
func (c *Cluster) forwardApply(leaderID, _ string, command []byte) (uint64, error) {
	rpc, ok := c.rpcAddrOf(leaderID)
	if !ok {
		return 0, raftstore.ErrNotLeader{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), raftstore.ApplyTimeout+2*time.Second)
	defer cancel()
	return c.peers.Apply(ctx, leaderID, rpc, command)
}

// rpcAddrOf finds a member's RPC address in its gossip tags.
func (c *Cluster) rpcAddrOf(name string) (string, bool) {
	if name == "" {
		return "", false
	}
	if name == c.cfg.NodeName {
		return c.rpcAddr, true
	}
	for _, m := range c.mem.Members() {
		if m.Name == name && m.Tags.RPCAddr != "" {
			return m.Tags.RPCAddr, true
		}
	}
	return "", false
}

// Members implements server.Backend: every member as gossip sees it, with
// how many workloads are allocated to it.
func (c *Cluster) Members() []nodeinfo.Member {
	_, leader := c.raft.Leader()
	counts := map[string]int{}
	list, _ := c.raft.List()
	for _, w := range list {
		if w.Desired == workload.DesiredRunning {
			counts[w.Node]++
		}
	}
	var out []nodeinfo.Member
	for _, m := range c.mem.Members() {
		out = append(out, nodeinfo.Member{
			Name: m.Name, State: string(m.State), Role: m.Tags.Role, Leader: m.Name == leader,
			Addr: m.Addr, APIAddr: m.Tags.APIAddr, Public: m.Tags.Public, Cores: m.Tags.Cores,
			MemoryMiB: m.Tags.MemoryMiB, FreeMemoryMiB: m.Tags.FreeMemoryMiB,
			Isolations: m.Tags.Isolations, Workloads: counts[m.Name],
		})
	}
	slices.SortFunc(out, func(a, b nodeinfo.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Get implements server.Backend from the cluster state.
func (c *Cluster) Get(id spec.ID) (workload.Workload, error) { return c.raft.Get(id) }

// List implements server.Backend from the cluster state.
func (c *Cluster) List() ([]workload.Workload, error) { return c.raft.List() }

// Pull implements server.Backend on this node.
func (c *Cluster) Pull(ctx context.Context, ref string, progress func(image.Progress)) (*image.Image, error) {
	return c.local.Pull(ctx, ref, progress)
}

// PruneImages implements server.Backend on this node: images are each
// node's own, so the node the caller talks to is the one pruned.
func (c *Cluster) PruneImages(ctx context.Context) (image.GCResult, error) {
	return c.local.PruneImages(ctx)
}

// Info implements server.Backend: this node's own description.
func (c *Cluster) Info() nodeinfo.Info {
	info := c.local.Info()
	info.APIAddr = c.cfg.APIAddr
	return info
}

// URL implements server.Backend.
func (c *Cluster) URL(id spec.ID) string { return string(id) + "." + c.cfg.BaseDomain }

// Logs implements server.Backend, reading from the hosting node.
func (c *Cluster) Logs(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error) {
	w, err := c.raft.Get(id)
	if err != nil {
		return nil, err
	}
	return c.hostOf(w.Node).Logs(ctx, id, opts)
}

// Exec implements server.Backend on the hosting node.
func (c *Cluster) Exec(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error) {
	w, err := c.raft.Get(id)
	if err != nil {
		return -1, err
	}
	return c.hostOf(w.Node).Exec(ctx, id, cfg)
}

// Attach implements server.Backend on the hosting node.
func (c *Cluster) Attach(ctx context.Context, id spec.ID, stdio driver.IO) error {
	w, err := c.raft.Get(id)
	if err != nil {
		return err
	}
	return c.hostOf(w.Node).Attach(ctx, id, stdio)
}

// liveRPCAddr is rpcAddrOf for members gossip sees alive.
func (c *Cluster) liveRPCAddr(name string) (string, bool) {
	for _, m := range c.mem.Members() {
		if m.Name == name {
			return m.Tags.RPCAddr, m.State == membership.StateAlive && m.Tags.RPCAddr != ""
		}
	}
	return "", false
}

// bindHost is the IP of the cluster bind address, 0.0.0.0 when it names
// none. internal/config checks the address a user gives; this error is
// for callers that build a Config themselves.
func bindHost(addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--cluster-bind-addr %q: %w; use IP:port such as 0.0.0.0:7946", addr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, nil
}

// pickAdvertiseIP is the bind IP when it is specific, else the first
// global IPv4 address of an interface that is up and is not the workload
// bridge or one of its veths.
func pickAdvertiseIP(bindIP, bridge string) (string, error) {
	if ip := net.ParseIP(bindIP); ip != nil && !ip.IsUnspecified() {
		return bindIP, nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || ifc.Name == bridge || len(ifc.Name) > 2 && ifc.Name[:2] == "hc" {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String(), nil
			}
		}
	}
	return "127.0.0.1", nil // a machine with no network: a cluster of one
}
