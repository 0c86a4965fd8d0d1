// Package cluster makes nodes one cluster: serf membership with an
// encrypted keyring, raft-replicated workload state, placement with the
// scheduler, node-to-node calls over mutual TLS, and failover.
//
// Every node keeps running its own workloads with internal/node and its
// local store, exactly as a node alone does; this package decides which
// node runs what, records it in raft, and reconciles each node's local
// workloads with that record. A node with no one to join is the first
// server of a new cluster, so a single node is a cluster of one and runs
// the same path.
//
// Ports, from the gossip address IP:P (--cluster-bind-addr, default
// 0.0.0.0:7946): gossip on P (TCP and UDP), node RPC with mutual TLS on
// P+1 (also where new nodes join with a token), raft with mutual TLS on
// P+2.
package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
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
	"sync"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1"
	"github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1/clusterv1connect"
	"github.com/hypercore-dev/hypercore/internal/cluster/membership"
	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/cluster/scheduler"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/node"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/server"
	"github.com/hypercore-dev/hypercore/internal/store"
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
	// BindAddr is the gossip address IP:port; RPC and raft use the next
	// two ports.
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
	// FastFailure detects failed nodes in 2-3 s rather than 4 s, at the
	// cost of more probe traffic; see membership.
	FastFailure bool
	Log         *slog.Logger
}

// Cluster is the API's backend on a node that is part of a cluster. It
// implements server.Backend and server.Cluster.
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	local  *node.Node
	routes *proxy.Table

	mat     *pki.Material
	auth    *pki.Authority // nil except on the node that made the CA
	mem     *membership.Membership
	raft    *raftstore.Store
	peers   *peers
	tunnels *tunnels
	rpc     *http.Server
	rpcAddr string

	mu         sync.Mutex
	lastRemote map[string]bool // ids routed through tunnels last sync

	quit chan struct{}
	wg   sync.WaitGroup
}

var (
	_ server.Backend = (*Cluster)(nil)
	_ server.Cluster = (*Cluster)(nil)
)

// Start brings this node into the cluster with the identity Identify
// settled: it serves node RPC, starts raft and gossip, waits until it can
// read the cluster state, and starts reconciling. local must already be
// started, under id.Name.
func Start(ctx context.Context, cfg Config, id *Identity, local *node.Node, routes *proxy.Table) (_ *Cluster, err error) {
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
		cfg: cfg, log: cfg.Log.With("component", "cluster"), local: local, routes: routes,
		lastRemote: map[string]bool{}, quit: make(chan struct{}),
	}
	rpcBind, raftBind, err := PeerAddrs(cfg.BindAddr)
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(cfg.BindAddr)
	advertise := id.AdvertiseIP
	c.mat, c.auth = id.mat, id.auth
	rpcAdvertise, raftAdvertise, _ := PeerAddrs(net.JoinHostPort(advertise, port))
	c.rpcAddr = rpcAdvertise

	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	c.peers = newPeers(c.mat)
	c.tunnels = newTunnels(c.peers, c.log)
	closers = append(closers, c.tunnels.close)

	dir := filepath.Join(cfg.DataDir, "cluster")
	stream, err := listenRaft(raftBind, raftAdvertise, cfg.NodeName, c.mat)
	if err != nil {
		return nil, err
	}
	c.raft, err = raftstore.Open(raftstore.Config{
		NodeID: cfg.NodeName, DataDir: filepath.Join(dir, "raft"), Bootstrap: first, Log: cfg.Log,
		Stream: stream, BindAddr: raftAdvertise, Forward: c.forwardApply,
	})
	if err != nil {
		stream.Close()
		return nil, err
	}
	closers = append(closers, func() { c.raft.Close() })

	if err := c.serveRPC(rpcBind); err != nil {
		return nil, err
	}
	closers = append(closers, func() { c.rpc.Close() })

	c.mem, err = membership.Start(membership.Config{
		NodeName: cfg.NodeName, BindAddr: cfg.BindAddr, AdvertiseAddr: advertise,
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
	if c.raft.Bootstrapped() {
		c.adoptLocal()
	}
	if c.auth != nil {
		if err := c.auth.WriteJoinToken(filepath.Join(cfg.DataDir, JoinTokenFile), c.rpcAddr); err != nil {
			return nil, err
		}
	}
	c.wg.Add(2)
	go c.reconcileLoop()
	go c.failoverLoop()
	c.log.Info("cluster member ready", "node", cfg.NodeName, "server", cfg.Server, "rpc", c.rpcAddr, "gossip", cfg.BindAddr)
	return c, nil
}

// Close leaves the cluster gracefully (so the others do not wait out a
// failure timeout) and stops this node's part in it. Workloads keep
// running; the next start re-adopts them.
func (c *Cluster) Close() {
	close(c.quit)
	c.wg.Wait()
	if err := c.mem.Leave(); err != nil {
		c.log.Warn("leave cluster", "err", err)
	}
	c.mem.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	c.rpc.Shutdown(ctx)
	cancel()
	c.raft.Close()
	c.tunnels.close()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// serveRPC serves the node-to-node port: PeerService, this node's own
// workload API under /local, tunnels, and joins on the node with the CA.
func (c *Cluster) serveRPC(bind string) error {
	mux := http.NewServeMux()
	mux.Handle(clusterv1connect.NewPeerServiceHandler(peerService{c}))
	mux.Handle(localPrefix+"/", http.StripPrefix(localPrefix, server.Handler(c.local, server.Options{Log: c.log})))
	c.rpc = &http.Server{Handler: requirePeer(mux), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(c.log.Handler(), slog.LevelDebug)}
	if c.auth != nil {
		if err := c.auth.EnableJoin(c.rpc, c.mat, c.admit); err != nil {
			return err
		}
	} else {
		c.rpc.TLSConfig = c.mat.ServerTLS()
		c.rpc.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	c.rpc.TLSConfig.NextProtos = []string{"http/1.1", tunnelALPN}
	c.rpc.TLSNextProto[tunnelALPN] = func(_ *http.Server, conn *tls.Conn, _ http.Handler) {
		serveTunnel(conn, c.local.List, c.log)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return fmt.Errorf("cluster: node RPC listen on %s: %w (RPC uses the gossip port + 1)", bind, err)
	}
	go func() {
		if err := c.rpc.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("node RPC server stopped", "err", err)
		}
	}()
	return nil
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
	for _, w := range locals {
		w.Node = c.cfg.NodeName
		if err := c.raft.Create(w); err != nil && !errors.Is(err, raftstore.ErrExists) {
			c.log.Error("adopt local workload", "id", w.ID, "err", err)
			continue
		}
		c.log.Info("adopted a workload this node ran before the cluster existed", "id", w.ID)
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
		resp, err := c.peers.service(leader, rpc).Barrier(ctx, connect.NewRequest(&clusterv1.BarrierRequest{}))
		if err != nil {
			return fromConnect(leader, err)
		}
		index = resp.Msg.AppliedIndex
	}
	for c.raft.AppliedIndex() < index {
		select {
		case <-ctx.Done():
			return fmt.Errorf("state stuck at index %d of %d", c.raft.AppliedIndex(), index)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
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
		_, err := c.peers.service(m.Name, m.Tags.RPCAddr).AddPeer(ctx, connect.NewRequest(&clusterv1.AddPeerRequest{
			NodeName: c.cfg.NodeName, RaftAddr: c.raft.Addr(), Voter: c.cfg.Server,
		}))
		if err == nil {
			return nil
		}
		lastErr = fromConnect(m.Name, err)
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
	_, err := c.peers.service(leader, rpc).AddPeer(ctx, connect.NewRequest(&clusterv1.AddPeerRequest{NodeName: name, RaftAddr: raftAddr, Voter: voter}))
	if err != nil {
		return fromConnect(leader, err)
	}
	return nil
}

// forwardApply carries a raft write to the leader (raftstore.Config.Forward).
func (c *Cluster) forwardApply(leaderID, _ string, command []byte) (uint64, error) {
	rpc, ok := c.rpcAddrOf(leaderID)
	if !ok {
		return 0, raftstore.ErrNotLeader{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), raftstore.ApplyTimeout+2*time.Second)
	defer cancel()
	resp, err := c.peers.service(leaderID, rpc).Apply(ctx, connect.NewRequest(&clusterv1.ApplyRequest{Command: command}))
	if err != nil {
		var ce *connect.Error
		var index uint64
		if errors.As(err, &ce) {
			index, _ = strconv.ParseUint(ce.Meta().Get(indexHeader), 10, 64)
		}
		return index, fromConnect(leaderID, err)
	}
	return resp.Msg.Index, nil
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

// Members implements server.Cluster.
func (c *Cluster) Members() []server.Member {
	_, leader := c.raft.Leader()
	counts := map[string]int{}
	list, _ := c.raft.List()
	for _, w := range list {
		if w.Desired == store.DesiredRunning {
			counts[w.Node]++
		}
	}
	var out []server.Member
	for _, m := range c.mem.Members() {
		out = append(out, server.Member{
			Name: m.Name, State: string(m.State), Role: m.Tags.Role, Leader: m.Name == leader,
			Addr: m.Addr, APIAddr: m.Tags.APIAddr, Public: m.Tags.Public, Cores: m.Tags.Cores,
			MemoryMiB: m.Tags.MemoryMiB, FreeMemoryMiB: m.Tags.FreeMemoryMiB,
			Isolations: m.Tags.Isolations, Workloads: counts[m.Name],
		})
	}
	slices.SortFunc(out, func(a, b server.Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Get implements server.Backend from the cluster state.
func (c *Cluster) Get(id string) (store.Workload, error) { return c.raft.Get(id) }

// List implements server.Backend from the cluster state.
func (c *Cluster) List() ([]store.Workload, error) { return c.raft.List() }

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
func (c *Cluster) Info() node.Info { return c.local.Info() }

// URL implements server.Backend.
func (c *Cluster) URL(id string) string { return c.local.URL(id) }

// Stop implements server.Backend: the record says stopped first, so no
// reconciler starts it again, then the hosting node stops it.
func (c *Cluster) Stop(ctx context.Context, id string, timeout time.Duration) (store.Workload, error) {
	w, err := c.raft.Update(id, func(w *store.Workload) error {
		w.Desired = store.DesiredStopped
		return nil
	})
	if err != nil {
		return store.Workload{}, err
	}
	got, err := c.onHost(ctx, w.Node, func(b hostAPI) (store.Workload, error) { return b.Stop(ctx, id, timeout) })
	if err != nil {
		if errors.Is(err, errHostDown) {
			return w, nil // its reconciler stops it when it is back
		}
		return store.Workload{}, err
	}
	return c.observe(got)
}

// Remove implements server.Backend: the hosting node removes the workload,
// then the record goes. A host that is down removes it when it is back,
// because it finds no record for it.
func (c *Cluster) Remove(ctx context.Context, id string) error {
	w, err := c.raft.Get(id)
	if err != nil {
		return err
	}
	_, err = c.onHost(ctx, w.Node, func(b hostAPI) (store.Workload, error) { return store.Workload{}, b.Remove(ctx, id) })
	if err != nil && !errors.Is(err, errHostDown) && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return c.raft.Delete(id)
}

// Logs implements server.Backend, reading from the hosting node.
func (c *Cluster) Logs(ctx context.Context, id string, opts driver.LogOptions) (io.ReadCloser, error) {
	w, err := c.raft.Get(id)
	if err != nil {
		return nil, err
	}
	if w.Node == c.cfg.NodeName {
		return c.local.Logs(ctx, id, opts)
	}
	rpc, ok := c.liveRPCAddr(w.Node)
	if !ok {
		return nil, fmt.Errorf("%w: node %s, which hosts %s, is down", errHostDown, w.Node, id)
	}
	follow := 0
	if opts.Follow {
		follow = 1
	}
	host := &remoteHost{c: c, name: w.Node, rpc: rpc}
	return host.open(ctx, http.MethodGet, fmt.Sprintf("/v1/workloads/%s/logs?follow=%d&tail=%d", id, follow, opts.Tail))
}

// Exec implements server.Backend for workloads on this node; the API
// forwards exec of others to their node (see Forward).
func (c *Cluster) Exec(ctx context.Context, id string, cfg driver.ExecConfig) (int, error) {
	if err := c.mustBeLocal(id); err != nil {
		return -1, err
	}
	return c.local.Exec(ctx, id, cfg)
}

// Attach implements server.Backend like Exec.
func (c *Cluster) Attach(ctx context.Context, id string, stdio driver.IO) error {
	if err := c.mustBeLocal(id); err != nil {
		return err
	}
	return c.local.Attach(ctx, id, stdio)
}

func (c *Cluster) mustBeLocal(id string) error {
	w, err := c.raft.Get(id)
	if err != nil {
		return err
	}
	if w.Node != c.cfg.NodeName {
		return fmt.Errorf("workload %s runs on node %s; call that node's API", id, w.Node)
	}
	return nil
}

// errHostDown means the node that hosts a workload is not reachable now.
var errHostDown = errors.New("hosting node is down")

// hostAPI is the part of a node's API the cluster calls on a host.
type hostAPI interface {
	Stop(ctx context.Context, id string, timeout time.Duration) (store.Workload, error)
	Remove(ctx context.Context, id string) error
}

// onHost runs fn against the node that hosts a workload: this node
// directly, or a peer through its /local API.
func (c *Cluster) onHost(ctx context.Context, name string, fn func(hostAPI) (store.Workload, error)) (store.Workload, error) {
	if name == c.cfg.NodeName {
		return fn(c.local)
	}
	rpc, ok := c.liveRPCAddr(name)
	if !ok {
		return store.Workload{}, fmt.Errorf("%w: %s", errHostDown, name)
	}
	return fn(&remoteHost{c: c, name: name, rpc: rpc})
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

// remoteHost is hostAPI on a peer, over its /local REST routes.
type remoteHost struct {
	c         *Cluster
	name, rpc string
}

// open sends a body-less request to the peer's /local API and returns the
// answer's body, or an error: ErrNotFound for 404, errHostDown when the
// peer cannot be reached.
func (r *remoteHost) open(ctx context.Context, method, path string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, method, "https://"+r.rpc+localPrefix+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.c.peers.client(r.name).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errHostDown, r.name, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.Body, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%w: on node %s", store.ErrNotFound, r.name)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return nil, fmt.Errorf("node %s: %s: %s", r.name, resp.Status, msg)
}

// call is open for answers that are JSON, decoded into out (if not nil).
func (r *remoteHost) call(ctx context.Context, method, path string, out any) error {
	body, err := r.open(ctx, method, path)
	if err != nil {
		return err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, 1<<20))
	if err != nil || out == nil {
		return err
	}
	return json.Unmarshal(data, out)
}

// Stop stops the workload on the peer and records what it answered.
func (r *remoteHost) Stop(ctx context.Context, id string, timeout time.Duration) (store.Workload, error) {
	var view struct {
		State    string `json:"state"`
		ExitCode int    `json:"exit_code"`
	}
	// The API takes whole seconds, 0 meaning the node's default.
	path := fmt.Sprintf("/v1/workloads/%s/stop?timeout=%d", id, int(timeout.Seconds()))
	if err := r.call(ctx, http.MethodPost, path, &view); err != nil {
		return store.Workload{}, err
	}
	return r.c.raft.Update(id, func(w *store.Workload) error {
		w.State, w.ExitCode, w.Ready, w.Pid = store.State(view.State), view.ExitCode, false, 0
		return nil
	})
}

// Remove removes the workload from the peer.
func (r *remoteHost) Remove(ctx context.Context, id string) error {
	return r.call(ctx, http.MethodDelete, "/v1/workloads/"+id, nil)
}

// errMoved means a host reported on a workload the cluster has since
// placed on another node; its report is stale and dropped.
var errMoved = errors.New("workload was placed on another node meanwhile")

// observe copies what the host observed into the cluster record, unless
// the record has moved to another node since.
func (c *Cluster) observe(got store.Workload) (store.Workload, error) {
	return c.raft.Update(got.ID, func(w *store.Workload) error {
		if got.Node != "" && w.Node != got.Node {
			return fmt.Errorf("%w: %s is on %s now, not %s", errMoved, got.ID, w.Node, got.Node)
		}
		copyObserved(w, got)
		return nil
	})
}

// copyObserved copies the observed fields of a host's local record.
func copyObserved(dst *store.Workload, src store.Workload) {
	dst.State, dst.IP, dst.Pid, dst.ExitCode = src.State, src.IP, src.Pid, src.ExitCode
	dst.Ready, dst.ImageDigest, dst.Error = src.Ready, src.ImageDigest, src.Error
}

func sameObserved(a, b store.Workload) bool {
	return a.State == b.State && a.IP == b.IP && a.Pid == b.Pid && a.ExitCode == b.ExitCode &&
		a.Ready == b.Ready && a.ImageDigest == b.ImageDigest && a.Error == b.Error
}

func splitBind(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("--cluster-bind-addr %q: %w; use IP:port such as 0.0.0.0:7946", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65533 {
		return "", 0, fmt.Errorf("--cluster-bind-addr %q: port must be 1-65533 (RPC and raft use the next two)", addr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// PeerAddrs are the node RPC and raft addresses that go with a gossip
// address: the same IP, its port + 1 and + 2. The daemon reserves them
// from workloads' raw TCP ports; Start listens on them.
func PeerAddrs(gossip string) (rpc, raft string, err error) {
	host, port, err := splitBind(gossip)
	if err != nil {
		return "", "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(port+1)), net.JoinHostPort(host, strconv.Itoa(port+2)), nil
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
